//! Group and family payments: several applications paid by one payment, one gateway charge, with
//! every exactly-once guarantee of a single payment.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Answer, TestApp, complete_fields, spawn_app, spawn_app_with};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// `n` submitted applications of one applicant, all of `nationality`, tourist standard.
pub async fn family(app: &TestApp, token: &str, n: usize, nationality: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = app
            .draft(token, &complete_fields(nationality, "tourist", "standard"))
            .await;
        let r = app.submit(token, &id).await;
        assert_eq!(r.body["status"], "submitted", "{}", r.body);
        ids.push(id);
    }
    ids
}

/// `POST /v1/payments` for `ids`, with the provider's part of the body.
pub async fn pay_group(app: &TestApp, token: &str, ids: &[String], method: Value) -> Answer {
    let mut body = method;
    body["application_ids"] = json!(ids);
    app.send(
        app.http
            .post(app.url("/v1/payments"))
            .bearer_auth(token)
            .header("idempotency-key", key())
            .json(&body),
    )
    .await
}

pub fn card() -> Value {
    json!({"provider": "stripe", "payment_method": "pm_card_visa"})
}

/// The payer's receipt and the three application receipts of a group payment, each verified at
/// the public check; none shows personal data, and the applications' show nothing of the payer.
async fn receipts_verify(app: &TestApp, token: &str, payment: &str, ids: &[String], share: i64) {
    let payer = app
        .get(&format!("/v1/payments/{payment}/receipt"), Some(token))
        .await;
    assert_eq!(payer.status, 200, "{}", payer.body);
    assert_eq!(payer.body["kind"], "payment");
    assert_eq!(payer.body["amount"], share * ids.len() as i64);
    let listed: Vec<&str> = payer.body["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["application_reference"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), ids.len());
    assert!(ids.iter().all(|id| listed.contains(&id.as_str())));
    let text = payer.body.to_string();
    for personal in ["Ann Lee", "X1234567", "1990-05-17"] {
        assert!(!text.contains(personal), "{text}");
    }
    let code = payer.body["verification_code"]
        .as_str()
        .unwrap()
        .to_string();
    let check = app.get(&format!("/v1/receipts/{code}"), None).await;
    assert_eq!(check.status, 200, "{}", check.body);
    assert_eq!(
        (check.body["kind"].clone(), check.body["amount"].clone()),
        (json!("payment"), json!(share * ids.len() as i64))
    );

    let mut codes = vec![code];
    for id in ids {
        let r = app
            .get(&format!("/v1/applications/{id}/receipt"), Some(token))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["kind"], "application");
        assert_eq!(r.body["amount"], share);
        assert_eq!(r.body["application_reference"], id.as_str());
        assert_eq!(r.body["payment_reference"], payment);
        assert_eq!(r.body["applications"].as_array().unwrap().len(), 1);
        for payer_detail in ["card_last4", "card_brand", "alipay_trade_no"] {
            assert!(r.body.get(payer_detail).is_none(), "{}", r.body);
        }
        let code = r.body["verification_code"].as_str().unwrap().to_string();
        assert!(!codes.contains(&code), "each receipt has its own code");
        let check = app.get(&format!("/v1/receipts/{code}"), None).await;
        assert_eq!(check.status, 200, "{}", check.body);
        assert_eq!(check.body["kind"], "application");
        assert_eq!(check.body["amount"], share);
        assert_eq!(check.body["application_reference"], id.as_str());
        codes.push(code);
    }
    // An altered code is not genuine (a character inside the MAC: the last one also carries
    // padding bits).
    let mut forged: Vec<char> = codes[1].chars().collect();
    let at = forged.len() - 3;
    forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    assert_eq!(
        app.get(&format!("/v1/receipts/{forged}"), None)
            .await
            .status,
        404
    );
}

async fn status_of(app: &TestApp, token: &str, application: &str) -> String {
    let r = app
        .get(&format!("/v1/applications/{application}"), Some(token))
        .await;
    r.body["status"].as_str().unwrap().to_string()
}

/// The application history entries caused by `payment`.
async fn paid_entries(app: &TestApp, application: &str, payment: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM application_events
          WHERE application_id = $1::uuid AND to_status = 'paid' AND cause = $2",
    )
    .bind(application)
    .bind(format!("payment:{payment}"))
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// Three applications paid by one card payment: one charge of the sum, three paid
/// applications, each with its history entry naming the payment.
#[tokio::test]
async fn three_applications_are_paid_by_one_card_charge() {
    let app = spawn_app().await;
    app.start_worker();
    let token = app.applicant().await;
    let ids = family(&app, &token, 3, "FR").await;

    let r = pay_group(&app, &token, &ids, card()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["amount"], 12000);
    assert_eq!(r.body["currency"], "USD");
    let allocations = r.body["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 3);
    for a in allocations {
        assert_eq!(a["amount"], 4000);
        assert!(ids.contains(&a["application_id"].as_str().unwrap().to_string()));
    }
    let payment = r.body["id"].as_str().unwrap().to_string();
    let done = app
        .wait_for_payment(&token, &payment, "succeeded", 15)
        .await;
    assert_eq!(done["allocations"].as_array().unwrap().len(), 3);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.charges_for(&payment), 1, "one charge for the group");
    let charge = app
        .sandbox
        .charges()
        .into_iter()
        .find(|c| c.metadata.get("payment_id").map(String::as_str) == Some(payment.as_str()))
        .unwrap();
    assert_eq!(charge.amount, 12000);
    for id in &ids {
        assert_eq!(status_of(&app, &token, id).await, "paid");
        assert_eq!(paid_entries(&app, id, &payment).await, 1);
        // Each application lists the group payment among its payments.
        let list = app
            .get(&format!("/v1/applications/{id}/payments"), Some(&token))
            .await;
        assert_eq!(list.body[0]["id"], payment.as_str(), "{}", list.body);
    }
    receipts_verify(&app, &token, &payment, &ids, 4000).await;
}

/// The same with Alipay: one trade of the sum in CNY, three paid applications.
#[tokio::test]
async fn three_applications_are_paid_by_one_alipay_trade() {
    let app = spawn_app().await;
    app.start_worker();
    let token = app.applicant().await;
    let ids = family(&app, &token, 3, "CN").await;

    let r = pay_group(&app, &token, &ids, json!({"provider": "alipay"})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "requires_action");
    assert_eq!(r.body["amount"], 108000);
    assert_eq!(r.body["currency"], "CNY");
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.http
        .get(r.body["next_action"]["redirect_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let trade = evisa_core::gateway::alipay::out_trade_no(payment.parse().unwrap());
    app.http
        .post(format!(
            "{}/sandbox/alipay/cashier/{trade}/pay",
            app.sandbox_url
        ))
        .send()
        .await
        .unwrap();
    app.wait_for_payment(&token, &payment, "succeeded", 15)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let trades: Vec<_> = app
        .alipay
        .trades()
        .into_iter()
        .filter(|t| t.out_trade_no == trade)
        .collect();
    assert_eq!(trades.len(), 1, "one trade for the group");
    for id in &ids {
        assert_eq!(status_of(&app, &token, id).await, "paid");
        assert_eq!(paid_entries(&app, id, &payment).await, 1);
    }
    receipts_verify(&app, &token, &payment, &ids, 36000).await;
}

/// A worker killed with SIGKILL in the middle of a group's charge: another worker takes the job
/// over, and there is still exactly one charge.
#[tokio::test]
async fn a_worker_killed_mid_group_charge_still_charges_once() {
    let app = spawn_app().await;
    app.sandbox_post("/sandbox/faults", &json!({"latency_ms": 2000}))
        .await;
    let mut worker = app.worker_process();
    let token = app.applicant().await;
    let ids = family(&app, &token, 3, "FR").await;
    let r = pay_group(&app, &token, &ids, card()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "processing", 15)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    app.sandbox_post("/sandbox/faults", &json!({})).await;

    app.start_worker();
    app.wait_for_payment(&token, &payment, "succeeded", 30)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.charges_for(&payment), 1);
    for id in &ids {
        assert_eq!(status_of(&app, &token, id).await, "paid");
    }
}

/// Every refusal names the member at fault, and nothing is written.
#[tokio::test]
async fn members_that_cannot_be_paid_are_refused_by_name() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let ids = family(&app, &token, 2, "FR").await;
    let payments_of = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM payments")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };

    // Mixed currencies: a GCC business application is priced in KWD.
    let kwd = app
        .draft(&token, &complete_fields("KW", "business", "standard"))
        .await;
    app.submit(&token, &kwd).await;
    let r = pay_group(&app, &token, &[ids[0].clone(), kwd.clone()], card()).await;
    let p = r.problem(422);
    assert_eq!(p["type"], "/problems/mixed-currencies", "{p}");
    assert_eq!(p["errors"][0]["field"], "application_ids");
    assert_eq!(p["errors"][0]["pointer"], "/application_ids/1");

    // Another applicant's application is not found.
    let other = app.applicant().await;
    let theirs = family(&app, &other, 1, "FR").await;
    let r = pay_group(&app, &token, &[ids[0].clone(), theirs[0].clone()], card()).await;
    assert_eq!(r.problem(404)["errors"][0]["pointer"], "/application_ids/1");

    // A draft is not submitted; a fee-exempt application is exempt.
    let draft = app
        .draft(&token, &complete_fields("FR", "tourist", "standard"))
        .await;
    let r = pay_group(&app, &token, &[draft.clone(), ids[1].clone()], card()).await;
    let p = r.problem(422);
    assert_eq!(p["type"], "/problems/not-payable");
    assert_eq!(p["errors"][0]["pointer"], "/application_ids/0");
    let exempt = app
        .draft(&token, &complete_fields("TH", "transit", "standard"))
        .await;
    app.submit(&token, &exempt).await;
    let r = pay_group(&app, &token, &[ids[0].clone(), exempt.clone()], card()).await;
    assert_eq!(r.problem(422)["type"], "/problems/fee-exempt");

    // The same application twice, one application, and Alipay for applications without a CNY
    // price.
    let r = pay_group(&app, &token, &[ids[0].clone(), ids[0].clone()], card()).await;
    assert_eq!(r.problem(422)["errors"][0]["pointer"], "/application_ids/1");
    let r = pay_group(&app, &token, &[ids[0].clone()], card()).await;
    assert_eq!(r.fields(), ["application_ids"], "{}", r.body);
    r.problem(422);
    let r = pay_group(&app, &token, &ids, json!({"provider": "alipay"})).await;
    assert_eq!(r.problem(422)["type"], "/problems/provider-not-offered");
    assert_eq!(payments_of().await, 0, "nothing written");

    // A member with a payment in flight (no worker runs, so it stays `created`): 409.
    let single = app.pay(&token, &ids[1], "pm_card_visa", &key()).await;
    assert_eq!(single.status, 202, "{}", single.body);
    let r = pay_group(&app, &token, &ids, card()).await;
    let p = r.problem(409);
    assert_eq!(p["type"], "/problems/payment-in-progress");
    assert_eq!(p["errors"][0]["pointer"], "/application_ids/1");

    // An already-paid member: 422.
    app.start_worker();
    let single_id = single.body["id"].as_str().unwrap();
    app.wait_for_payment(&token, single_id, "succeeded", 15)
        .await;
    let r = pay_group(&app, &token, &ids, card()).await;
    let p = r.problem(422);
    assert_eq!(p["type"], "/problems/already-paid");
    assert_eq!(p["errors"][0]["pointer"], "/application_ids/1");
    assert_eq!(payments_of().await, 1, "only the single payment");
    assert_eq!(status_of(&app, &token, &ids[0]).await, "submitted");
}

/// A group payment and a single payment started at the same moment for the same application:
/// exactly one of them is accepted, round after round.
#[tokio::test]
async fn a_group_and_a_single_payment_racing_for_an_application_one_wins() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    for round in 0..8 {
        let ids = family(&app, &token, 3, "FR").await;
        // Alternate which application the single payment goes for.
        let contested = ids[round % 3].clone();
        let single_key = key();
        let (group, single) = tokio::join!(
            pay_group(&app, &token, &ids, card()),
            app.pay(&token, &contested, "pm_card_visa", &single_key),
        );
        let accepted = [group.status, single.status]
            .iter()
            .filter(|s| **s == 202)
            .count();
        assert_eq!(
            accepted, 1,
            "round {round}: {} {} / {} {}",
            group.status, group.body, single.status, single.body
        );
        let loser = if group.status == 202 { &single } else { &group };
        assert_eq!(loser.problem(409)["type"], "/problems/payment-in-progress");
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM payment_allocations WHERE application_id = $1::uuid
               AND payment_state = 'in_flight'",
        )
        .bind(&contested)
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(open, 1, "round {round}");
    }
}

/// While a group payment is in flight the database itself keeps its applications from expiring,
/// changing their fee or being paid by another payment.
#[tokio::test]
async fn the_database_holds_the_applications_of_a_payment_in_flight() {
    let app = spawn_app_with(&[("EVISA_APPLICATION_EXPIRY_SECONDS", "2")]).await;
    let token = app.applicant().await;
    let ids = family(&app, &token, 2, "FR").await;
    let r = pay_group(&app, &token, &ids, card()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let payment = r.body["id"].as_str().unwrap().to_string();

    for change in [
        "UPDATE applications SET status = 'expired' WHERE id = $1::uuid",
        "UPDATE applications SET fee_amount_minor = 1 WHERE id = $1::uuid",
    ] {
        let e = sqlx::query(change)
            .bind(&ids[1])
            .execute(&app.db)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("held by payment"), "{change}: {e}");
    }
    // Another payment (of another application) cannot be given one of these applications.
    let other = family(&app, &token, 1, "FR").await;
    let single = app.pay(&token, &other[0], "pm_card_visa", &key()).await;
    let e = sqlx::query(
        "INSERT INTO payment_allocations (payment_id, application_id, amount_minor, currency,
                                          payment_state)
         VALUES ($1::uuid, $2::uuid, 4000, 'USD', 'in_flight')",
    )
    .bind(single.body["id"].as_str().unwrap())
    .bind(&ids[0])
    .execute(&app.db)
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("payment_allocations_one_open_per_application"),
        "{e}"
    );

    // Past the application expiry, the sweeper leaves them alone while the payment is open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let expired =
        evisa_core::application::store::expire_unpaid(&app.db, chrono::Duration::seconds(2), 100)
            .await
            .unwrap();
    assert!(
        !expired.iter().any(|e| ids.contains(&e.to_string())),
        "{expired:?}"
    );
    for id in &ids {
        assert_eq!(status_of(&app, &token, id).await, "submitted");
    }
    let still = app
        .get(&format!("/v1/payments/{payment}"), Some(&token))
        .await;
    assert_eq!(still.body["status"], "created", "{}", still.body);
}

/// A second charge of a group at the gateway (a stale attempt confirmed after another paid the
/// group) is flagged and refunded whole; the applications stay paid once.
#[tokio::test]
async fn a_duplicate_charge_of_a_group_is_refunded_whole() {
    let app = spawn_app_with(&[("EVISA_RECONCILE_AFTER_SECONDS", "3600")]).await;
    app.start_worker();
    let token = app.applicant().await;
    let ids = family(&app, &token, 3, "FR").await;
    let r = pay_group(
        &app,
        &token,
        &ids,
        json!({"provider": "stripe", "payment_method": "pm_card_authenticationRequired"}),
    )
    .await;
    let first = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &first, "requires_action", 10)
        .await;
    let first_intent = app.intent_of(&first).await;
    app.http
        .post(format!(
            "{}/sandbox/3ds/{first_intent}/fail",
            app.sandbox_url
        ))
        .send()
        .await
        .unwrap();
    app.wait_for_payment(&token, &first, "failed", 10).await;
    let r = pay_group(&app, &token, &ids, card()).await;
    let second = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &second, "succeeded", 10).await;

    let confirmed = app
        .http
        .post(format!(
            "{}/v1/payment_intents/{first_intent}/confirm",
            app.sandbox_url
        ))
        .bearer_auth(&app.stripe_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("payment_method=pm_card_visa")
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);

    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let recorded: Option<String> = sqlx::query_scalar(
            "SELECT duplicate_refund_reference FROM payments WHERE id = $1::uuid",
        )
        .bind(&first)
        .fetch_one(&app.db)
        .await
        .unwrap();
        if recorded.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the duplicate charge was not refunded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refund = app
        .sandbox
        .refunds()
        .into_iter()
        .find(|r| r.payment_intent == first_intent)
        .unwrap();
    assert_eq!(refund.amount, 12000, "the whole group's charge");
    assert_eq!(app.sandbox.refunds().len(), 1);
    for id in &ids {
        assert_eq!(status_of(&app, &token, id).await, "paid");
        assert_eq!(paid_entries(&app, id, &second).await, 1);
        assert_eq!(paid_entries(&app, id, &first).await, 0);
    }
}
