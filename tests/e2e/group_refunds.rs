//! Refunds of group payments: per applicant, never beyond that application's share (also under
//! concurrent requests), on rejection only the rejected application's share, and four eyes per
//! refund.

use std::time::Duration;

use evisa_core::users::Role;
use serde_json::{Value, json};

use crate::common::{Answer, TestApp, spawn_app, spawn_app_with};
use crate::group::{card, family, pay_group};

/// Three FR applications (4000 USD each) paid by one card payment: (token, ids, payment).
async fn paid_group(app: &TestApp) -> (String, Vec<String>, String) {
    let token = app.applicant().await;
    let ids = family(app, &token, 3, "FR").await;
    let r = pay_group(app, &token, &ids, card()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 15)
        .await;
    (token, ids, payment)
}

async fn refund(app: &TestApp, officer: &str, payment: &str, body: Value) -> Answer {
    app.send(
        app.http
            .post(app.url(&format!("/v1/admin/payments/{payment}/refunds")))
            .bearer_auth(officer)
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(&body),
    )
    .await
}

/// Waits until no refund of the payment is pending; returns the payment as officers see it.
async fn settled(app: &TestApp, officer: &str, payment: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let list = app
            .get(
                &format!("/v1/admin/payments/{payment}/refunds"),
                Some(officer),
            )
            .await;
        let pending = list
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["status"] == "pending");
        if !pending {
            return app
                .get(&format!("/v1/admin/payments/{payment}"), Some(officer))
                .await
                .body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "refunds still pending: {}",
            list.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What each application's share had given back, in the order of `ids`.
fn refunded_shares(view: &Value, ids: &[String]) -> Vec<i64> {
    ids.iter()
        .map(|id| {
            view["allocations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["application_id"] == id.as_str())
                .unwrap_or_else(|| panic!("no allocation for {id}: {view}"))["refunded_amount"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

async fn events_of(app: &TestApp, application: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event FROM application_events WHERE application_id = $1::uuid ORDER BY id",
    )
    .bind(application)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn one_applicants_share_is_refunded_and_the_others_stay_paid() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let (token, ids, payment) = paid_group(&app).await;
    let before = [
        events_of(&app, &ids[0]).await,
        events_of(&app, &ids[2]).await,
    ];

    // A group payment's refund must say whose share.
    let r = refund(&app, &officer, &payment, json!({"reason": "whose?"})).await;
    r.problem(422);
    assert_eq!(r.fields(), ["application_id"]);
    let (stranger_token, stranger) = app.submitted_application().await;
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"application_id": stranger, "reason": "not in the group"}),
    )
    .await;
    assert_eq!(r.problem(422)["errors"][0]["field"], "application_id");
    drop(stranger_token);

    // More than the share is 422, although the payment took more.
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"application_id": ids[1], "amount": 4001, "reason": "too much"}),
    )
    .await;
    let p = r.problem(422);
    assert_eq!(p["type"], "/problems/refund-exceeds-remainder");
    assert_eq!(p["errors"][0]["detail"], "must be at most 4000");

    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"application_id": ids[1], "reason": "visa no longer needed"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["application_id"], ids[1].as_str());
    assert_eq!(r.body["amount"], 4000);
    let view = settled(&app, &officer, &payment).await;
    assert_eq!(view["refunded_amount"], 4000);
    assert_eq!(refunded_shares(&view, &ids), [0, 4000, 0]);
    let at_gateway: Vec<i64> = app.sandbox.refunds().iter().map(|r| r.amount).collect();
    assert_eq!(at_gateway, [4000]);

    // Nothing is left of that share; a part of another share still goes.
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"application_id": ids[1], "amount": 1, "reason": "once more"}),
    )
    .await;
    r.problem(409);
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"application_id": ids[0], "amount": 1500, "reason": "goodwill"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"application_id": ids[0], "amount": 2501, "reason": "beyond the share"}),
    )
    .await;
    assert_eq!(
        r.problem(422)["errors"][0]["detail"],
        "must be at most 2500"
    );
    let view = settled(&app, &officer, &payment).await;
    assert_eq!(refunded_shares(&view, &ids), [1500, 4000, 0]);

    // The others are still paid, and their histories untouched.
    for id in &ids {
        let a = app
            .get(&format!("/v1/applications/{id}"), Some(&token))
            .await;
        assert_eq!(a.body["status"], "paid");
    }
    assert_eq!(events_of(&app, &ids[0]).await, before[0]);
    assert_eq!(events_of(&app, &ids[2]).await, before[1]);
}

#[tokio::test]
async fn twenty_concurrent_refunds_of_one_share_never_exceed_it() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let (_, ids, payment) = paid_group(&app).await;
    // 20 × 300 = 6000 asked of a 4000 share of a 12000 payment.
    let attempts = (0..20).map(|_| {
        refund(
            &app,
            &officer,
            &payment,
            json!({"application_id": ids[2], "amount": 300, "reason": "concurrent"}),
        )
    });
    let answers = futures_util::future::join_all(attempts).await;
    let accepted = answers.iter().filter(|a| a.status == 202).count();
    let refused = answers.iter().filter(|a| a.status == 422).count();
    assert_eq!(
        accepted + refused,
        20,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(accepted, 13, "13 × 300 = 3900 fit into the 4000 share");
    let view = settled(&app, &officer, &payment).await;
    assert_eq!(view["refunded_amount"], 3900);
    assert_eq!(refunded_shares(&view, &ids), [0, 0, 3900]);
    let (asked, stored): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(amount_minor) FROM refunds WHERE application_id = $1::uuid)::bigint,
                (SELECT refunded_minor FROM payment_allocations WHERE application_id = $1::uuid)",
    )
    .bind(&ids[2])
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((asked, stored), (3900, 3900));
    let at_gateway: i64 = app.sandbox.refunds().iter().map(|r| r.amount).sum();
    assert_eq!(at_gateway, 3900);
}

#[tokio::test]
async fn rejection_refunds_only_the_rejected_applications_share() {
    let app = spawn_app_with(&[("EVISA_REFUND_ON_REJECTION", "true")]).await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let (token, ids, payment) = paid_group(&app).await;
    let decide = async |body: Value| {
        app.post(
            &format!("/v1/admin/applications/{}/decision", ids[0]),
            Some(&officer),
            &body,
        )
        .await
    };
    decide(json!({"decision": "begin_processing"})).await;
    let r = decide(json!({"decision": "reject", "reason": "Incomplete documents."})).await;
    assert_eq!(r.body["status"], "rejected", "{}", r.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let view = loop {
        let view = settled(&app, &officer, &payment).await;
        if view["refunded_amount"] == 4000 {
            break view;
        }
        assert!(std::time::Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refunded_shares(&view, &ids), [4000, 0, 0]);
    let at_gateway: Vec<i64> = app.sandbox.refunds().iter().map(|r| r.amount).collect();
    assert_eq!(at_gateway, [4000]);
    for id in &ids[1..] {
        let a = app
            .get(&format!("/v1/applications/{id}"), Some(&token))
            .await;
        assert_eq!(a.body["status"], "paid");
    }
}

/// Four eyes per refund: with the default policy, a refund that empties one application's share
/// waits for a second staff member, though the payment keeps the other shares.
#[tokio::test]
async fn a_refund_that_empties_a_share_waits_for_a_second_staff_member() {
    let app = spawn_app_with(&[("EVISA_REFUND_APPROVAL_ABOVE", "")]).await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let second = app.staff(Role::Officer).await;
    let (_, ids, payment) = paid_group(&app).await;

    let part = refund(
        &app,
        &officer,
        &payment,
        json!({"application_id": ids[0], "amount": 1000, "reason": "partial"}),
    )
    .await;
    assert_eq!(part.body["status"], "pending", "{}", part.body);
    settled(&app, &officer, &payment).await;
    let rest = refund(
        &app,
        &officer,
        &payment,
        json!({"application_id": ids[0], "reason": "the rest of the share"}),
    )
    .await;
    assert_eq!(rest.body["status"], "pending_approval", "{}", rest.body);
    assert_eq!(rest.body["amount"], 3000);
    let id = rest.body["id"].as_str().unwrap();
    app.post(
        &format!("/v1/admin/refunds/{id}/approve"),
        Some(&officer),
        &json!({}),
    )
    .await
    .problem(403);
    let approved = app
        .post(
            &format!("/v1/admin/refunds/{id}/approve"),
            Some(&second),
            &json!({}),
        )
        .await;
    assert_eq!(approved.body["status"], "pending", "{}", approved.body);
    let view = settled(&app, &officer, &payment).await;
    assert_eq!(refunded_shares(&view, &ids), [4000, 0, 0]);
    assert_eq!(view["refunded_amount"], 4000);
}
