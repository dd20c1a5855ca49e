//! Officers' refunds: full, partial, several partials, on Stripe and Alipay payments; never more
//! than was paid, also under concurrent requests.

use std::time::Duration;

use evisa_core::users::Role;
use serde_json::{Value, json};

use crate::common::{TestApp, spawn_app, spawn_app_with};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A succeeded card payment of 4000 USD; returns (applicant token, payment id).
async fn paid_by_card(app: &TestApp) -> (String, String) {
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 10)
        .await;
    (token, payment)
}

async fn refund(app: &TestApp, officer: &str, payment: &str, body: Value) -> crate::common::Answer {
    app.send(
        app.http
            .post(app.url(&format!("/v1/admin/payments/{payment}/refunds")))
            .bearer_auth(officer)
            .header("idempotency-key", key())
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

#[tokio::test]
async fn card_refunds_in_full_and_in_parts_add_up() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;

    let (_, full) = paid_by_card(&app).await;
    let r = refund(
        &app,
        &officer,
        &full,
        json!({"reason": "Visa not needed after all"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        (r.body["amount"].clone(), r.body["status"].clone()),
        (json!(4000), json!("pending"))
    );
    assert_eq!(
        settled(&app, &officer, &full).await["refunded_amount"],
        4000
    );
    let again = refund(&app, &officer, &full, json!({"reason": "again"})).await;
    assert_eq!(again.problem(409)["type"], "/problems/fully-refunded");

    let (token, partial) = paid_by_card(&app).await;
    for amount in [1000, 1500] {
        let r = refund(
            &app,
            &officer,
            &partial,
            json!({"amount": amount, "reason": "partial"}),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    assert_eq!(
        settled(&app, &officer, &partial).await["refunded_amount"],
        2500
    );
    let too_much = refund(
        &app,
        &officer,
        &partial,
        json!({"amount": 2000, "reason": "too much"}),
    )
    .await;
    assert_eq!(
        too_much.problem(422)["type"],
        "/problems/refund-exceeds-remainder"
    );
    assert_eq!(too_much.fields(), ["amount"]);
    let rest = refund(&app, &officer, &partial, json!({"reason": "the rest"})).await;
    assert_eq!(rest.body["amount"], 1500);
    assert_eq!(
        settled(&app, &officer, &partial).await["refunded_amount"],
        4000
    );
    // The applicant sees it too.
    assert_eq!(
        app.get(&format!("/v1/payments/{partial}"), Some(&token))
            .await
            .body["refunded_amount"],
        4000
    );

    // The sandbox refunded exactly what we recorded, with our refund ids as idempotency keys.
    let refunded: i64 = app.sandbox.refunds().iter().map(|r| r.amount).sum();
    assert_eq!(refunded, 8000);
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM refunds ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(statuses, ["succeeded"; 4]);
}

#[tokio::test]
async fn twenty_concurrent_partial_refunds_never_exceed_the_payment() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let (_, payment) = paid_by_card(&app).await;
    // 20 × 300 = 6000 asked for a 4000 payment.
    let attempts = (0..20).map(|_| {
        refund(
            &app,
            &officer,
            &payment,
            json!({"amount": 300, "reason": "concurrent"}),
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
    assert_eq!(accepted, 13, "13 × 300 = 3900 fit into 4000");
    let view = settled(&app, &officer, &payment).await;
    assert_eq!(view["refunded_amount"], 3900);
    let total: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(amount_minor), 0)::bigint FROM refunds")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(total <= 4000, "{total}");
    let at_gateway: i64 = app.sandbox.refunds().iter().map(|r| r.amount).sum();
    assert_eq!(at_gateway, 3900);
}

#[tokio::test]
async fn alipay_refunds_go_through_trade_refund_and_refund_query() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let (_, _, payment) = app.paid_by_alipay().await;
    let trade = evisa_core::gateway::alipay::out_trade_no(payment.parse().unwrap());

    for body in [
        json!({"amount": 10000, "reason": "partial"}),
        json!({"reason": "the rest"}),
    ] {
        assert_eq!(refund(&app, &officer, &payment, body).await.status, 202);
    }
    let view = settled(&app, &officer, &payment).await;
    assert_eq!(
        (view["refunded_amount"].clone(), view["currency"].clone()),
        (json!(36000), json!("CNY"))
    );
    let sandbox_trade = app
        .alipay
        .trades()
        .into_iter()
        .find(|t| t.out_trade_no == trade)
        .unwrap();
    // Two jobs, each free to reach Alipay first.
    let mut amounts: Vec<&str> = sandbox_trade
        .refunded
        .iter()
        .map(|(_, a)| a.as_str())
        .collect();
    amounts.sort();
    assert_eq!(amounts, ["100.00", "260.00"]);
}

#[tokio::test]
async fn only_officers_refund_and_only_succeeded_payments() {
    let app = spawn_app().await;
    let officer = app.staff(Role::Officer).await;
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await; // no worker: stays created
    let payment = r.body["id"].as_str().unwrap().to_string();
    refund(&app, &token, &payment, json!({"reason": "me"}))
        .await
        .problem(403);
    let r = refund(&app, &officer, &payment, json!({"reason": "not yet"})).await;
    assert_eq!(r.problem(409)["type"], "/problems/not-refundable");
    refund(
        &app,
        &officer,
        &uuid::Uuid::now_v7().to_string(),
        json!({"reason": "x"}),
    )
    .await
    .problem(404);
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"reason": "x", "amount": 0}),
    )
    .await;
    assert_eq!(r.fields(), ["amount"]);
}

#[tokio::test]
async fn receipts_verify_and_altered_codes_do_not() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let (token, payment) = paid_by_card(&app).await;
    // The card details are fetched after success: wait for them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let receipt = loop {
        let r = app
            .get(&format!("/v1/payments/{payment}/receipt"), Some(&token))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body.get("card_last4").is_some() || std::time::Instant::now() > deadline {
            break r.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (receipt["amount"].clone(), receipt["currency"].clone()),
        (json!(4000), json!("USD"))
    );
    assert_eq!(
        (receipt["card_brand"].clone(), receipt["card_last4"].clone()),
        (json!("visa"), json!("4242"))
    );
    assert_eq!(receipt["payment_reference"], payment);
    let code = receipt["verification_code"].as_str().unwrap().to_string();

    let check = app.get(&format!("/v1/receipts/{code}"), None).await;
    assert_eq!(check.status, 200, "{}", check.body);
    assert_eq!(check.body["genuine"], true);
    assert_eq!(check.body["amount"], 4000);
    // Nothing personal in the public answer.
    let public = check.body.to_string();
    for pii in [
        "Ann Lee",
        "X1234567",
        "1990-05-17",
        "applicant-",
        "@example.org",
    ] {
        assert!(!public.contains(pii), "{pii} in {public}");
    }
    // One changed character and the code is not genuine.
    let mut altered: Vec<char> = code.chars().collect();
    let i = altered.len() - 3;
    altered[i] = if altered[i] == 'A' { 'B' } else { 'A' };
    let altered: String = altered.into_iter().collect();
    app.get(&format!("/v1/receipts/{altered}"), None)
        .await
        .problem(404);
    app.get("/v1/receipts/EVP-MADEUP", None).await.problem(404);

    // Refunds show on the receipt; the printable page carries the code.
    refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 500, "reason": "goodwill"}),
    )
    .await;
    settled(&app, &officer, &payment).await;
    let again = app
        .get(&format!("/v1/payments/{payment}/receipt"), Some(&token))
        .await;
    assert_eq!(again.body["refunded_amount"], 500);
    assert_eq!(again.body["refunds"][0]["amount"], 500);
    let page = app
        .http
        .get(app.url(&format!("/v1/payments/{payment}/receipt/printable")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("40.00 USD") && html.contains(&code) && html.contains("visa ending 4242"),
        "{html}"
    );
    // Someone else's receipt is 404; an unpaid payment has none.
    let stranger = app.applicant().await;
    app.get(&format!("/v1/payments/{payment}/receipt"), Some(&stranger))
        .await
        .problem(404);
}

/// Attack: one officer gives back a whole payment alone — in one go, in parts, or by approving
/// their own refund. A second staff member must approve; what waits counts as refunded.
#[tokio::test]
async fn a_refund_that_empties_a_payment_waits_for_a_second_staff_member() {
    // "" leaves EVISA_REFUND_APPROVAL_ABOVE unset: the default policy.
    let app = spawn_app_with(&[("EVISA_REFUND_APPROVAL_ABOVE", "")]).await;
    app.start_worker();
    let (_, payment) = paid_by_card(&app).await; // 4000 USD
    let officer = app.staff(Role::Officer).await;
    let second = app.staff(Role::Officer).await;

    // A part goes ahead alone.
    let part = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 1000, "reason": "partial"}),
    )
    .await;
    assert_eq!(
        (part.status, part.body["status"].as_str()),
        (202, Some("pending"))
    );
    settled(&app, &officer, &payment).await;

    // The rest would empty the payment: it waits, and nothing reaches the gateway.
    let rest = refund(&app, &officer, &payment, json!({"reason": "the rest"})).await;
    assert_eq!(rest.status, 202, "{}", rest.body);
    assert_eq!(rest.body["status"], "pending_approval");
    let rest_id = rest.body["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.sandbox.refunds().len(), 1, "only the part was refunded");

    // What waits counts: nothing more can be asked for meanwhile.
    let more = refund(
        &app,
        &second,
        &payment,
        json!({"amount": 1, "reason": "more"}),
    )
    .await;
    more.problem(409);

    // The officer who asked cannot approve it, nor decline it.
    for action in ["approve", "decline"] {
        let r = app
            .post(
                &format!("/v1/admin/refunds/{rest_id}/{action}"),
                Some(&officer),
                &json!({}),
            )
            .await;
        r.problem(403);
    }
    // An applicant cannot either.
    let (applicant, _) = app.submitted_application().await;
    app.post(
        &format!("/v1/admin/refunds/{rest_id}/approve"),
        Some(&applicant),
        &json!({}),
    )
    .await
    .problem(403);

    // A second staff member approves: the gateway refunds it.
    let approved = app
        .post(
            &format!("/v1/admin/refunds/{rest_id}/approve"),
            Some(&second),
            &json!({}),
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.body["status"], "pending");
    let p = settled(&app, &officer, &payment).await;
    assert_eq!(p["refunded_amount"], 4000);
    assert_eq!(app.sandbox.refunds().len(), 2);
    // Deciding twice is refused.
    app.post(
        &format!("/v1/admin/refunds/{rest_id}/decline"),
        Some(&second),
        &json!({}),
    )
    .await
    .problem(409);
    let history = app.payment_history(&payment).await;
    assert!(
        history.iter().any(|(event, _)| event == "refund_approved"),
        "{history:?}"
    );
}

#[tokio::test]
async fn a_declined_refund_frees_its_amount_and_the_report_is_for_admins() {
    let app = spawn_app_with(&[("EVISA_REFUND_APPROVAL_ABOVE", "500")]).await;
    app.start_worker();
    let (_, payment) = paid_by_card(&app).await;
    let officer = app.staff(Role::Officer).await;
    let admin = app.staff(Role::Admin).await;
    let big = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 501, "reason": "big"}),
    )
    .await;
    assert_eq!(big.body["status"], "pending_approval");
    let id = big.body["id"].as_str().unwrap();
    let declined = app
        .post(
            &format!("/v1/admin/refunds/{id}/decline"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(declined.body["status"], "declined", "{}", declined.body);
    // The whole amount is refundable again (above the threshold, so it waits again).
    let all = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 4000, "reason": "all"}),
    )
    .await;
    assert_eq!(all.body["status"], "pending_approval", "{}", all.body);
    let small = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 1, "reason": "one"}),
    )
    .await;
    small.problem(409);
    assert!(app.sandbox.refunds().is_empty());

    // The reconciliation report is admin-only, and runs as a job.
    app.post(
        "/v1/admin/reconciliation-reports",
        Some(&officer),
        &json!({"since": "2026-01-01"}),
    )
    .await
    .problem(403);
    let report = app.reconciliation_report(&admin, "2026-01-01").await;
    assert_eq!(report["status"], "done", "{report}");
    let id = report["id"].as_str().unwrap();
    app.get(
        &format!("/v1/admin/reconciliation-reports/{id}"),
        Some(&officer),
    )
    .await
    .problem(403);
}
