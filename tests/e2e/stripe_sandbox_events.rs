//! Refunds and disputes driven through the Stripe sandbox, whose own signed events (delivered with
//! retries) are all the service hears: a refund pending at Stripe settled only by its webhook, a
//! refund made in the dashboard, and disputes opened by the dispute test card or by hand.

use std::time::Duration;

use evisa_core::users::Role;
use serde_json::{Value, json};

use crate::common::{Answer, TestApp, spawn_app};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A succeeded 4000 USD card payment with `method`: (application, payment, charge id).
async fn paid(app: &TestApp, method: &str) -> (String, String, String) {
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, method, &key()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 10)
        .await;
    let intent = app.intent_of(&payment).await;
    let charges: Vec<Value> = app
        .http
        .get(format!("{}/sandbox/charges", app.sandbox_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let charge = charges
        .iter()
        .find(|c| c["payment_intent"] == intent.as_str())
        .expect("the sandbox charged the intent")["id"]
        .as_str()
        .unwrap()
        .to_string();
    (application, payment, charge)
}

async fn refund(app: &TestApp, officer: &str, payment: &str, body: Value) -> Answer {
    app.send(
        app.http
            .post(app.url(&format!("/v1/admin/payments/{payment}/refunds")))
            .bearer_auth(officer)
            .header("idempotency-key", key())
            .json(&body),
    )
    .await
}

/// Polls `path` (as `officer`) until `done` holds of its body, or panics after 15 s.
async fn until(app: &TestApp, officer: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = app.get(path, Some(officer)).await;
        if done(&r.body) {
            return r.body;
        }
        if std::time::Instant::now() >= deadline {
            let inbox: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT event_type, state, note FROM gateway_inbox ORDER BY received_at",
            )
            .fetch_all(&app.db)
            .await
            .unwrap();
            panic!("{path} never got there: {}; inbox: {inbox:?}", r.body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No Stripe event the service stored was quarantined.
async fn nothing_quarantined(app: &TestApp) {
    let quarantined: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT event_type, note FROM gateway_inbox WHERE state = 'quarantined'")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert!(quarantined.is_empty(), "{quarantined:?}");
}

#[tokio::test]
async fn a_refund_pending_at_stripe_is_settled_by_its_webhook() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let (_, payment, _) = paid(&app, "pm_card_visa").await;
    let r = app
        .sandbox_post("/sandbox/faults", &json!({"refunds_pending": true}))
        .await;
    assert!(r.status().is_success());
    let refunds = format!("/v1/admin/payments/{payment}/refunds");

    let first = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 1000, "reason": "a"}),
    )
    .await;
    let second = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 500, "reason": "b"}),
    )
    .await;
    assert_eq!((first.status, second.status), (202, 202));
    // Stripe answered `pending` to both: each waits with Stripe's id, and nothing is refunded.
    let listed = until(&app, &officer, &refunds, |b| {
        b.as_array()
            .is_some_and(|l| l.len() == 2 && l.iter().all(|r| r["gateway_reference"].is_string()))
    })
    .await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "pending")
    );
    let payment_view = format!("/v1/admin/payments/{payment}");
    assert_eq!(
        app.get(&payment_view, Some(&officer)).await.body["refunded_amount"],
        0
    );

    // From here no refund job polls Stripe: only the webhooks can settle the refunds.
    app.stop_worker().await;
    // Stripe settles them: refund.updated succeeded for one, refund.failed for the other.
    let re = |i: usize| listed[i]["gateway_reference"].as_str().unwrap().to_string();
    for (i, outcome) in [(0, "succeeded"), (1, "failed")] {
        let r = app
            .sandbox_post(
                &format!("/sandbox/refunds/{}/settle", re(i)),
                &json!({"outcome": outcome}),
            )
            .await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let listed = until(&app, &officer, &refunds, |b| {
        b.as_array()
            .is_some_and(|l| l.iter().all(|r| r["status"] != "pending"))
    })
    .await;
    assert_eq!(listed[0]["status"], "succeeded");
    assert_eq!(listed[1]["status"], "failed");
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "no refund recorded twice"
    );
    assert_eq!(
        app.get(&payment_view, Some(&officer)).await.body["refunded_amount"],
        1000
    );
    // The failed 500 is free again: the rest (3000) can be refunded.
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 3000, "reason": "c"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    nothing_quarantined(&app).await;
}

#[tokio::test]
async fn a_refund_made_in_the_stripe_dashboard_is_recorded_once_and_reported() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let admin = app.staff(Role::Admin).await;
    let since = chrono::Utc::now().date_naive().to_string();
    let (_, payment, charge) = paid(&app, "pm_card_visa").await;

    let r = app
        .sandbox_post(
            &format!("/sandbox/charges/{charge}/refund"),
            &json!({"amount": 1500}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let refunds = format!("/v1/admin/payments/{payment}/refunds");
    let listed = until(&app, &officer, &refunds, |b| {
        b.as_array()
            .is_some_and(|l| l.len() == 1 && l[0]["status"] == "succeeded")
    })
    .await;
    assert_eq!(listed[0]["origin"], "gateway");
    assert_eq!(listed[0]["amount"], 1500);
    // refund.created and charge.refunded both arrived: still one refund, counted once.
    until(
        &app,
        &officer,
        &format!("/v1/admin/payments/{payment}"),
        |b| b["refunded_amount"] == 1500,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.get(&refunds, Some(&officer))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let report = app.reconciliation_report(&admin, &since).await;
    let found = report["disagreements"].as_array().unwrap();
    assert!(
        found.iter().any(|d| d["payment_id"] == payment.as_str()
            && d["detail"]
                .as_str()
                .unwrap()
                .contains("refunded outside evisa-pay")),
        "{report}"
    );
    assert!(
        !found
            .iter()
            .any(|d| d["detail"].as_str().unwrap().contains("unexplained")),
        "{report}"
    );
    nothing_quarantined(&app).await;
}

#[tokio::test]
async fn disputes_opened_at_stripe_hold_the_application_until_they_close() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    // The dispute test card: paid, then disputed as fraudulent. Any other charge, by hand.
    let (disputed, by_card, _) = paid(&app, "pm_card_createDispute").await;
    let (other, by_hand, charge) = paid(&app, "pm_card_visa").await;
    let r = app
        .sandbox_post(&format!("/sandbox/charges/{charge}/dispute"), &json!({}))
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    for ((application, payment), outcome) in
        [((&disputed, &by_card), "lost"), ((&other, &by_hand), "won")]
    {
        let path = format!("/v1/admin/payments/{payment}/disputes");
        let list = until(&app, &officer, &path, |b| {
            b.as_array().is_some_and(|l| l.len() == 1)
        })
        .await;
        assert_eq!(list[0]["open"], true);
        assert_eq!(list[0]["reason"], "fraudulent");
        let dp = list[0]["gateway_reference"].as_str().unwrap().to_string();
        let decision = format!("/v1/admin/applications/{application}/decision");
        let begin = json!({"decision": "begin_processing"});
        let decide = || app.post(&decision, Some(&officer), &begin);
        let r = decide().await;
        assert_eq!(r.problem(409)["type"], "/problems/application-on-hold");
        assert!(r.body["detail"].as_str().unwrap().contains(&dp));

        let r = app
            .sandbox_post(
                &format!("/sandbox/disputes/{dp}/close"),
                &json!({"outcome": outcome}),
            )
            .await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let list = until(&app, &officer, &path, |b| b[0]["open"] == false).await;
        assert_eq!(list[0]["outcome"], outcome);
        // The gateway's outcome alone does not release the hold: an officer resolves it.
        let r = decide().await;
        assert_eq!(r.problem(409)["type"], "/problems/application-on-hold");
        let ours = list[0]["id"].as_str().unwrap();
        let r = app
            .post(
                &format!("/v1/admin/disputes/{ours}/resolve"),
                Some(&officer),
                &json!({"resolution": "Looked at; processing goes on."}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = decide().await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let all = app.get("/v1/admin/disputes", Some(&officer)).await;
    assert_eq!(
        all.body["items"].as_array().unwrap().len(),
        2,
        "{}",
        all.body
    );
    nothing_quarantined(&app).await;
}
