//! Officers: list with filters, decide paid applications, read history.

use evisa_core::users::Role;
use serde_json::json;

use crate::common::{complete_fields, spawn_app};

#[tokio::test]
async fn officers_take_paid_applications_through_to_a_decision() {
    let app = spawn_app().await;
    let officer = app.staff(Role::Officer).await;
    let applicant = app.applicant().await;

    // Fee-exempt, so paid on submission.
    let paid = app
        .draft(&applicant, &complete_fields("MY", "transit", "standard"))
        .await;
    assert_eq!(app.submit(&applicant, &paid).await.body["status"], "paid");
    let unpaid = app
        .draft(&applicant, &complete_fields("FR", "tourist", "standard"))
        .await;
    assert_eq!(
        app.submit(&applicant, &unpaid).await.body["status"],
        "submitted"
    );

    let decide = |id: &str, body: serde_json::Value| {
        let path = format!("/v1/admin/applications/{id}/decision");
        let officer = officer.clone();
        let app = &app;
        async move { app.post(&path, Some(&officer), &body).await }
    };

    // An unpaid application cannot be taken up; a paid one cannot be approved before processing.
    decide(&unpaid, json!({"decision": "begin_processing"}))
        .await
        .problem(409);
    decide(&paid, json!({"decision": "approve"}))
        .await
        .problem(409);

    let r = decide(&paid, json!({"decision": "begin_processing"})).await;
    assert_eq!(r.body["status"], "processing", "{}", r.body);

    // A rejection needs a reason; other decisions take none.
    let r = decide(&paid, json!({"decision": "reject"})).await;
    r.problem(422);
    assert_eq!(r.fields(), ["reason"]);
    let r = decide(&paid, json!({"decision": "approve", "reason": "fine"})).await;
    assert_eq!(r.fields(), ["reason"]);

    let r = decide(
        &paid,
        json!({"decision": "reject", "reason": "Passport expires too soon."}),
    )
    .await;
    assert_eq!(r.body["status"], "rejected", "{}", r.body);
    assert_eq!(r.body["decision_reason"], "Passport expires too soon.");
    assert!(r.body["decided_at"].is_string());
    decide(&paid, json!({"decision": "approve"}))
        .await
        .problem(409);

    let history = app
        .get(
            &format!("/v1/admin/applications/{paid}/history"),
            Some(&officer),
        )
        .await;
    let steps: Vec<(String, String)> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().into(),
                e["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("submit", "applicant"),
        ("fee_waived", "system"),
        ("begin_processing", "officer"),
        ("reject", "officer"),
    ];
    assert_eq!(steps, expected.map(|(a, b)| (a.to_string(), b.to_string())));

    let missing = uuid::Uuid::now_v7();
    decide(&missing.to_string(), json!({"decision": "approve"}))
        .await
        .problem(404);
}

#[tokio::test]
async fn officers_list_and_filter_all_applications() {
    let app = spawn_app().await;
    let admin = app.staff(Role::Admin).await;
    let ann = app.applicant().await;
    let bob = app.applicant().await;
    let fr = app
        .draft(&ann, &complete_fields("FR", "tourist", "standard"))
        .await;
    app.submit(&ann, &fr).await;
    let cn = app
        .draft(&bob, &complete_fields("CN", "business", "express"))
        .await;
    app.submit(&bob, &cn).await;
    let _draft = app.draft(&bob, &json!({})).await;

    let ids = |r: &crate::common::Answer| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = app.get("/v1/admin/applications", Some(&admin)).await;
    assert_eq!(ids(&all).len(), 3);
    let submitted = app
        .get("/v1/admin/applications?status=submitted", Some(&admin))
        .await;
    assert_eq!(ids(&submitted), [cn.clone(), fr.clone()]);
    let chinese = app
        .get("/v1/admin/applications?nationality=CN", Some(&admin))
        .await;
    assert_eq!(ids(&chinese), std::slice::from_ref(&cn));
    let business = app
        .get(
            "/v1/admin/applications?visa_type=business&status=submitted",
            Some(&admin),
        )
        .await;
    assert_eq!(ids(&business), std::slice::from_ref(&cn));
    let one = app
        .get(&format!("/v1/admin/applications/{fr}"), Some(&admin))
        .await;
    assert_eq!(one.body["full_name"], "Ann Lee");
    app.get("/v1/admin/applications?status=lost", Some(&admin))
        .await
        .problem(400);
}

#[tokio::test]
async fn rejection_refunds_the_fee_only_when_the_policy_says_so() {
    for (policy, refunded) in [("false", 0), ("true", 4000)] {
        let app = crate::common::spawn_app_with(&[("EVISA_REFUND_ON_REJECTION", policy)]).await;
        app.start_worker();
        let officer = app.staff(Role::Officer).await;
        let (token, application) = app.submitted_application().await;
        let r = app
            .pay(
                &token,
                &application,
                "pm_card_visa",
                &uuid::Uuid::now_v7().to_string(),
            )
            .await;
        let payment = r.body["id"].as_str().unwrap().to_string();
        app.wait_for_payment(&token, &payment, "succeeded", 10)
            .await;
        let decide = |body: serde_json::Value| {
            let (app, officer, application) = (&app, officer.clone(), application.clone());
            async move {
                app.post(
                    &format!("/v1/admin/applications/{application}/decision"),
                    Some(&officer),
                    &body,
                )
                .await
            }
        };
        decide(json!({"decision": "begin_processing"})).await;
        let r = decide(json!({"decision": "reject", "reason": "Incomplete documents."})).await;
        assert_eq!(r.body["status"], "rejected");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let p = app
                .get(&format!("/v1/payments/{payment}"), Some(&token))
                .await;
            if p.body["refunded_amount"] == refunded {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "policy {policy}: {}",
                p.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let refunds: i64 = sqlx::query_scalar("SELECT count(*) FROM refunds")
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(refunds, if policy == "true" { 1 } else { 0 });
    }
}
