//! Submitted applications left unpaid expire on schedule — but not while a payment is in flight —
//! and several worker processes expire each one once.

use std::time::Duration;

use serde_json::json;

use crate::common::{TestApp, spawn_app_with};

async fn status_of(app: &TestApp, token: &str, application: &str) -> String {
    app.get(&format!("/v1/applications/{application}"), Some(token))
        .await
        .body["status"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn wait_status(app: &TestApp, token: &str, application: &str, want: &str, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while status_of(app, token, application).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "application never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn unpaid_applications_expire_but_not_while_a_payment_is_in_flight() {
    let app = spawn_app_with(&[
        ("EVISA_APPLICATION_EXPIRY_SECONDS", "2"),
        ("EVISA_PAYMENT_EXPIRY_SECONDS", "6"),
        ("EVISA_RECONCILE_AFTER_SECONDS", "1"),
    ])
    .await;
    app.start_worker();
    let (token, idle) = app.submitted_application().await;
    let (token2, paying) = app.submitted_application().await;
    // 3-D Secure that nobody completes: in flight until the payment expires at 6 s.
    let r = app
        .pay(
            &token2,
            &paying,
            "pm_card_authenticationRequired",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    let payment = r.body["id"].as_str().unwrap().to_string();

    wait_status(&app, &token, &idle, "expired", 15).await;
    assert_eq!(
        status_of(&app, &token2, &paying).await,
        "submitted",
        "its payment is in flight"
    );
    app.wait_for_payment(&token2, &payment, "expired", 20).await;
    wait_status(&app, &token2, &paying, "expired", 15).await;

    // An expired application takes no new payment; a draft never expires.
    let r = app
        .pay(
            &token,
            &idle,
            "pm_card_visa",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    assert_eq!(r.problem(409)["type"], "/problems/not-payable");
    let draft = app.draft(&token, &json!({})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status_of(&app, &token, &draft).await, "draft");
}

#[tokio::test]
async fn two_worker_processes_expire_an_application_once() {
    let app = spawn_app_with(&[("EVISA_APPLICATION_EXPIRY_SECONDS", "2")]).await;
    let mut workers: Vec<_> = (0..2).map(|_| app.worker_process()).collect();
    let mut apps = Vec::new();
    for _ in 0..5 {
        apps.push(app.submitted_application().await);
    }
    for (token, application) in &apps {
        wait_status(&app, token, application, "expired", 20).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for w in &mut workers {
        w.kill().unwrap();
        w.wait().unwrap();
    }
    let expirations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM application_events WHERE event = 'expire'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(expirations, 5, "each application expired exactly once");
}
