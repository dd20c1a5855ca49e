//! Card testing through group payments: a declined group payment counts against every
//! application it was for, so a group cannot get round the per-application limit.

use serde_json::json;

use crate::common::spawn_app_with;
use crate::group::{family, pay_group};

#[tokio::test]
async fn a_declined_group_payment_counts_against_each_of_its_applications() {
    let app = spawn_app_with(&[
        ("EVISA_FAILED_PAYMENTS_PER_APPLICATION", "1"),
        ("EVISA_FAILED_PAYMENTS_PER_APPLICANT", "10"),
    ])
    .await;
    app.start_worker();
    let token = app.applicant().await;
    let ids = family(&app, &token, 3, "FR").await;
    let r = pay_group(
        &app,
        &token,
        &ids,
        json!({"provider": "stripe", "payment_method": "pm_card_chargeDeclined"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let payment = r.body["id"].as_str().unwrap();
    app.wait_for_payment(&token, payment, "failed", 10).await;

    // Each member has used its one failure: neither it alone nor a group with it reaches the
    // gateway again.
    let charges = app.sandbox.charges().len();
    let r = app
        .pay(
            &token,
            &ids[2],
            "pm_card_visa",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    r.problem(429);
    let fresh = family(&app, &token, 1, "FR").await;
    let r = pay_group(
        &app,
        &token,
        &[fresh[0].clone(), ids[1].clone()],
        json!({"provider": "stripe", "payment_method": "pm_card_visa"}),
    )
    .await;
    r.problem(429);
    assert_eq!(
        app.sandbox.charges().len(),
        charges,
        "nothing more was tried"
    );
    // An application outside the group is not affected.
    let r = app
        .pay(
            &token,
            &fresh[0],
            "pm_card_visa",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
}
