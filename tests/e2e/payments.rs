//! Card payments end to end: API → job → Stripe sandbox (through the official async-stripe client)
//! → webhooks and reconciliation → one transition function. Every test checks the sandbox's
//! ledger: exactly one charge per successful payment.

use std::time::Duration;

use evisa_sandbox::stripe::signature_header;
use serde_json::{Value, json};

use crate::common::{TestApp, spawn_app, spawn_app_with};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Reads a payment's event stream until it ends; returns the statuses seen.
async fn statuses_seen(app: &TestApp, token: &str, payment: &str) -> Vec<String> {
    app.follow(token, payment)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect()
}

#[tokio::test]
async fn a_visa_card_pays_the_application_and_the_stream_shows_each_status() {
    let app = spawn_app().await;
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "created");
    assert_eq!(r.body["amount"], 4000);
    assert_eq!(r.body["currency"], "USD");
    let payment = r.body["id"].as_str().unwrap().to_string();

    // Subscribe before any worker runs, so every change is seen as it happens.
    let stream = {
        let (app, token, payment) = (&app, token.clone(), payment.clone());
        async move { statuses_seen(app, &token, &payment).await }
    };
    let worker = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.start_worker();
    };
    let (seen, ()) = tokio::join!(stream, worker);
    assert_eq!(seen, ["created", "processing", "succeeded"]);

    let application_now = app
        .get(&format!("/v1/applications/{application}"), Some(&token))
        .await;
    assert_eq!(application_now.body["status"], "paid");
    assert_eq!(app.charges_for(&payment), 1);
    let charge = app
        .sandbox
        .charges()
        .into_iter()
        .find(|c| c.metadata["payment_id"] == payment)
        .unwrap();
    assert_eq!((charge.amount, charge.currency.as_str()), (4000, "usd"));
    assert_eq!(charge.metadata["application_id"], application);

    // Paid is final: no further attempt.
    let again = app.pay(&token, &application, "pm_card_visa", &key()).await;
    assert_eq!(again.problem(409)["type"], "/problems/already-paid");
    // The webhook for the success arrives too, and changes nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let history = app.payment_history(&payment).await;
    assert_eq!(
        history.iter().filter(|(_, to)| to == "succeeded").count(),
        1,
        "{history:?}"
    );
}

#[tokio::test]
async fn a_declined_card_fails_and_a_new_attempt_succeeds() {
    let app = spawn_app().await;
    app.start_worker();
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(&token, &application, "pm_card_chargeDeclined", &key())
        .await;
    let declined = r.body["id"].as_str().unwrap().to_string();
    let failed = app.wait_for_payment(&token, &declined, "failed", 10).await;
    assert_eq!(failed["failure_code"], "generic_decline");
    assert!(
        failed["failure_message"]
            .as_str()
            .unwrap()
            .contains("declined")
    );
    let status = app
        .get(&format!("/v1/applications/{application}"), Some(&token))
        .await;
    assert_eq!(status.body["status"], "submitted");
    assert_eq!(app.charges_for(&declined), 0);

    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let second = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &second, "succeeded", 10).await;
    let status = app
        .get(&format!("/v1/applications/{application}"), Some(&token))
        .await;
    assert_eq!(status.body["status"], "paid");
    assert_eq!(app.charges_for(&second), 1);
    let list = app
        .get(
            &format!("/v1/applications/{application}/payments"),
            Some(&token),
        )
        .await;
    let statuses: Vec<_> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].clone())
        .collect();
    assert_eq!(statuses, [json!("succeeded"), json!("failed")]);
}

#[tokio::test]
async fn three_d_secure_completed_succeeds_and_failed_fails() {
    let app = spawn_app().await;
    app.start_worker();
    for (outcome, expected) in [("complete", "succeeded"), ("fail", "failed")] {
        let (token, application) = app.submitted_application().await;
        let r = app
            .pay(
                &token,
                &application,
                "pm_card_authenticationRequired",
                &key(),
            )
            .await;
        let payment = r.body["id"].as_str().unwrap().to_string();
        let waiting = app
            .wait_for_payment(&token, &payment, "requires_action", 10)
            .await;
        assert_eq!(waiting["next_action"]["type"], "use_stripe_sdk");
        let secret = waiting["next_action"]["client_secret"].as_str().unwrap();
        let intent = app.intent_of(&payment).await;
        assert!(secret.starts_with(&format!("{intent}_secret_")));

        // The applicant completes (or fails) the challenge on the sandbox's 3-D Secure page.
        let page = app
            .http
            .get(format!("{}/sandbox/3ds/{intent}", app.sandbox_url))
            .send()
            .await
            .unwrap();
        assert!(page.text().await.unwrap().contains("3-D Secure"));
        let r = app
            .http
            .post(format!(
                "{}/sandbox/3ds/{intent}/{outcome}",
                app.sandbox_url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let done = app.wait_for_payment(&token, &payment, expected, 10).await;
        let application_status = app
            .get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"]
            .clone();
        if expected == "succeeded" {
            assert_eq!(application_status, "paid");
            assert_eq!(app.charges_for(&payment), 1);
        } else {
            assert_eq!(
                done["failure_code"],
                "payment_intent_authentication_failure"
            );
            assert_eq!(application_status, "submitted");
            assert_eq!(app.charges_for(&payment), 0);
        }
    }
}

/// A webhook for `intent` as Stripe would send it, signed with one of our secrets.
async fn webhook(app: &TestApp, event_id: &str, kind: &str, intent: &Value) -> u16 {
    let body = json!({
        "id": event_id, "object": "event", "api_version": "2026-09-30.endive", "created": 1,
        "data": {"object": intent}, "livemode": false, "pending_webhooks": 1, "type": kind,
    })
    .to_string();
    let header = signature_header(
        &app.webhook_secrets[0],
        chrono::Utc::now().timestamp(),
        &body,
    );
    app.http
        .post(app.url("/v1/webhooks/stripe"))
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn retrieve_intent(app: &TestApp, intent: &str) -> Value {
    app.http
        .get(format!("{}/v1/payment_intents/{intent}", app.sandbox_url))
        .bearer_auth(&app.stripe_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn duplicate_and_out_of_order_webhooks_make_one_transition() {
    // Reconciliation must not beat the webhooks to it here.
    let app = spawn_app_with(&[("EVISA_RECONCILE_AFTER_SECONDS", "3600")]).await;
    app.start_worker();
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_authenticationRequired",
            &key(),
        )
        .await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "requires_action", 10)
        .await;
    let intent = app.intent_of(&payment).await;
    let waiting = retrieve_intent(&app, &intent).await;

    // The sandbox's own webhooks are dropped; we deliver by hand.
    app.sandbox_post("/sandbox/faults", &json!({"drop_webhooks": true}))
        .await;
    app.http
        .post(format!("{}/sandbox/3ds/{intent}/complete", app.sandbox_url))
        .send()
        .await
        .unwrap();
    let succeeded = retrieve_intent(&app, &intent).await;
    assert_eq!(succeeded["status"], "succeeded");

    // `succeeded` three times, then the older `requires_action`.
    for _ in 0..3 {
        assert_eq!(
            webhook(
                &app,
                "evt_success_1",
                "payment_intent.succeeded",
                &succeeded
            )
            .await,
            200
        );
    }
    assert_eq!(
        webhook(
            &app,
            "evt_action_1",
            "payment_intent.requires_action",
            &waiting
        )
        .await,
        200
    );
    app.wait_for_payment(&token, &payment, "succeeded", 10)
        .await;
    // Let the late event be processed too.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM gateway_inbox WHERE state = 'received'")
                .fetch_one(&app.db)
                .await
                .unwrap();
        if pending == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "inbox not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM gateway_inbox WHERE event_id IN ('evt_success_1', 'evt_action_1')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(stored, 2, "duplicates are acknowledged, not stored again");
    let history = app.payment_history(&payment).await;
    assert_eq!(
        history.iter().filter(|(_, to)| to == "succeeded").count(),
        1,
        "{history:?}"
    );
    assert_eq!(history.last().unwrap().1, "succeeded");
    let app_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM application_events WHERE application_id = $1::uuid AND event = 'payment_succeeded'",
    )
    .bind(&application)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(app_events, 1);
    assert_eq!(app.charges_for(&payment), 1);
}

#[tokio::test]
async fn without_any_webhook_reconciliation_finds_the_truth() {
    let app = spawn_app().await;
    app.start_worker();
    app.sandbox_post("/sandbox/faults", &json!({"drop_webhooks": true}))
        .await;
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_authenticationRequired",
            &key(),
        )
        .await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "requires_action", 10)
        .await;
    let intent = app.intent_of(&payment).await;
    app.http
        .post(format!("{}/sandbox/3ds/{intent}/complete", app.sandbox_url))
        .send()
        .await
        .unwrap();
    // No webhook will come; the sweeper retrieves the intent (reconcile after 2 s in tests).
    app.wait_for_payment(&token, &payment, "succeeded", 15)
        .await;
    let history = app.payment_history(&payment).await;
    assert_eq!(
        history.last().unwrap(),
        &(
            "gateway_says_succeeded".to_string(),
            "succeeded".to_string()
        )
    );
    let cause: String = sqlx::query_scalar(
        "SELECT cause FROM payment_events WHERE payment_id = $1::uuid AND to_status = 'succeeded'",
    )
    .bind(&payment)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(cause, "reconcile");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway_inbox")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "no webhook was delivered");
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "paid"
    );
}

#[tokio::test]
async fn gateway_errors_then_recovery_charge_exactly_once() {
    let app = spawn_app().await;
    app.start_worker();
    app.sandbox_post("/sandbox/faults", &json!({"fail_next": 2}))
        .await;
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 20)
        .await;
    assert_eq!(app.charges_for(&payment), 1);
}

#[tokio::test]
async fn a_charge_whose_response_was_lost_is_not_repeated() {
    let app = spawn_app().await;
    app.start_worker();
    app.sandbox_post("/sandbox/faults", &json!({"lose_next_responses": 1}))
        .await;
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 20)
        .await;
    // The first call charged; its answer was lost; the retry with the same key got the replay.
    assert_eq!(app.charges_for(&payment), 1);
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "paid"
    );
}

#[tokio::test]
async fn a_charge_answered_with_a_stored_500_and_no_webhook_is_found_by_search() {
    // Stripe charged, but the answer kept under our idempotency key is a 500 (replayed to
    // every retry), and no webhook comes: only a search by our metadata tells what happened.
    let app = spawn_app_with(&[("EVISA_RECONCILE_AFTER_SECONDS", "1")]).await;
    app.sandbox_post(
        "/sandbox/faults",
        &json!({"charge_then_error_next": 1, "drop_webhooks": true}),
    )
    .await;
    app.start_worker();
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 30)
        .await;
    assert_eq!(app.charges_for(&payment), 1);
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "paid"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_charge_is_recovered_and_charges_once() {
    let app = spawn_app().await;
    // Every gateway call takes 2 s, so the worker is surely inside one when it is killed.
    app.sandbox_post("/sandbox/faults", &json!({"latency_ms": 2000}))
        .await;
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_evisa"))
        .arg("work")
        .envs(app.worker_env())
        .env("EVISA_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "processing", 15)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SIGKILL: no chance to finish or hand anything back.
    worker.kill().unwrap();
    worker.wait().unwrap();
    app.sandbox_post("/sandbox/faults", &json!({})).await;

    // Another worker takes the orphaned job over (orphan timeout 3 s in tests).
    app.start_worker();
    app.wait_for_payment(&token, &payment, "succeeded", 30)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.charges_for(&payment), 1);
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "paid"
    );
}

#[tokio::test]
async fn webhooks_are_verified_before_anything_is_stored() {
    let app = spawn_app().await;
    let body = json!({"id": "evt_forged", "object": "event", "type": "payment_intent.succeeded",
        "created": 1, "livemode": false, "pending_webhooks": 1, "data": {"object": {}}})
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let post = |header: String| {
        app.http
            .post(app.url("/v1/webhooks/stripe"))
            .header("stripe-signature", header)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    let forged = format!("t={now},v1={}", "ab".repeat(32));
    let stale = signature_header(&app.webhook_secrets[1], now - 301, &body);
    let unknown = signature_header("whsec_someone_else", now, &body);
    for header in [forged, stale, unknown, String::new()] {
        let r = post(header).await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway_inbox")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // Both secrets of a rotation are accepted.
    for secret in &app.webhook_secrets {
        let r = post(signature_header(secret, now, &body)).await.unwrap();
        assert_eq!(r.status(), 200);
    }

    // A header made by Stripe's official Python library is accepted.
    let python = std::env::var("EVISA_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .args(["tests/peers/stripe_sign.py", &app.webhook_secrets[1], &body])
        .output()
        .expect("the Python peer runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "python stripe peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(header.starts_with("t="), "{header}");
    let r = post(header).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn concurrent_and_repeated_payment_requests_make_one_payment() {
    let app = spawn_app().await;
    let (token, application) = app.submitted_application().await;

    // Two different keys at once: one payment, one 409 naming it.
    let (k1, k2) = (key(), key());
    let (a, b) = tokio::join!(
        app.pay(&token, &application, "pm_card_visa", &k1),
        app.pay(&token, &application, "pm_card_visa", &k2),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [202, 409], "{} / {}", a.body, b.body);
    let (created, refused) = if a.status == 202 { (&a, &b) } else { (&b, &a) };
    let id = created.body["id"].as_str().unwrap();
    assert!(
        refused.problem(409)["detail"]
            .as_str()
            .unwrap()
            .contains(id)
            || refused.body["type"] == "/problems/payment-in-progress"
    );

    // The same key twice: the first answer, replayed; still one payment.
    let (token2, application2) = app.submitted_application().await;
    let k = key();
    let first = app.pay(&token2, &application2, "pm_card_visa", &k).await;
    let second = app.pay(&token2, &application2, "pm_card_visa", &k).await;
    assert_eq!((first.status, second.status), (202, 202));
    assert_eq!(first.body, second.body);
    // The same key with another body is refused.
    let other = app
        .pay(&token2, &application2, "pm_card_mastercard", &k)
        .await;
    assert_eq!(
        other.problem(409)["type"],
        "/problems/idempotency-key-reused"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 2);

    // No key at all is a 400 naming the header; an amount is refused.
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/applications/{application}/payments")))
                .bearer_auth(&token)
                .json(&json!({"provider": "stripe", "payment_method": "pm_card_visa"})),
        )
        .await;
    r.problem(400);
    assert_eq!(r.fields(), ["Idempotency-Key"]);
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/applications/{application}/payments")))
                .bearer_auth(&token)
                .header("idempotency-key", key())
                .json(
                    &json!({"provider": "stripe", "payment_method": "pm_card_visa", "amount": 1}),
                ),
        )
        .await;
    assert_eq!(r.fields(), ["amount"]);

    // Someone else's application is 404.
    let stranger = app.applicant().await;
    app.pay(&stranger, &application, "pm_card_visa", &key())
        .await
        .problem(404);
}

#[tokio::test]
async fn a_webhook_that_does_not_match_our_record_is_quarantined() {
    let app = spawn_app_with(&[("EVISA_RECONCILE_AFTER_SECONDS", "3600")]).await;
    app.start_worker();
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_authenticationRequired",
            &key(),
        )
        .await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "requires_action", 10)
        .await;
    let intent = app.intent_of(&payment).await;
    let mut forged = retrieve_intent(&app, &intent).await;
    forged["status"] = json!("succeeded");
    forged["amount"] = json!(1);
    assert_eq!(
        webhook(
            &app,
            "evt_tampered_amount",
            "payment_intent.succeeded",
            &forged
        )
        .await,
        200
    );
    let mut other_currency = retrieve_intent(&app, &intent).await;
    other_currency["status"] = json!("succeeded");
    other_currency["currency"] = json!("eur");
    assert_eq!(
        webhook(
            &app,
            "evt_tampered_currency",
            "payment_intent.succeeded",
            &other_currency
        )
        .await,
        200
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let states: Vec<String> = sqlx::query_scalar(
            "SELECT state FROM gateway_inbox WHERE event_id LIKE 'evt_tampered_%' ORDER BY event_id",
        )
        .fetch_all(&app.db)
        .await
        .unwrap();
        if states == ["quarantined", "quarantined"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not quarantined: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = app
        .get(&format!("/v1/payments/{payment}"), Some(&token))
        .await;
    assert_eq!(now.body["status"], "requires_action");
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "submitted"
    );
}

#[tokio::test]
async fn an_abandoned_payment_expires_after_asking_the_gateway() {
    let app = spawn_app_with(&[
        ("EVISA_PAYMENT_EXPIRY_SECONDS", "10"),
        ("EVISA_RECONCILE_AFTER_SECONDS", "1"),
    ])
    .await;
    app.start_worker();
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_authenticationRequired",
            &key(),
        )
        .await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "requires_action", 10)
        .await;
    // Nobody completes 3-D Secure.
    app.wait_for_payment(&token, &payment, "expired", 30).await;
    let intent = app.intent_of(&payment).await;
    assert_eq!(retrieve_intent(&app, &intent).await["status"], "canceled");
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "submitted"
    );
    assert_eq!(app.charges_for(&payment), 0);
    // A new attempt is allowed.
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    app.wait_for_payment(&token, r.body["id"].as_str().unwrap(), "succeeded", 10)
        .await;
}

#[tokio::test]
async fn dead_jobs_are_listed_and_retried_by_the_operator() {
    let app = spawn_app_with(&[
        ("EVISA_JOB_MAX_ATTEMPTS", "2"),
        ("EVISA_RECONCILE_AFTER_SECONDS", "3600"),
    ])
    .await;
    app.sandbox_post("/sandbox/faults", &json!({"fail_next": 100}))
        .await;
    app.start_worker();
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    let payment = r.body["id"].as_str().unwrap().to_string();

    let evisa = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_evisa"))
            .args(args)
            .env("DATABASE_URL", app.database_url())
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let out = evisa(&["jobs", "dead"]);
        assert!(out.status.success());
        let listed = String::from_utf8(out.stdout).unwrap();
        if let Some(line) = listed.lines().find(|l| l.contains(&payment)) {
            break serde_json::from_str::<Value>(line).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead job after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(dead["queue"], "evisa.charge_card");
    assert_eq!(dead["attempts"], 2);
    assert_eq!(
        app.get(&format!("/v1/payments/{payment}"), Some(&token))
            .await
            .body["status"],
        "processing"
    );

    app.sandbox_post("/sandbox/faults", &json!({})).await;
    let out = evisa(&["jobs", "retry", dead["id"].as_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.wait_for_payment(&token, &payment, "succeeded", 15)
        .await;
    assert_eq!(app.charges_for(&payment), 1);
    assert!(!evisa(&["jobs", "retry", "01NOSUCHJOB"]).status.success());
}

#[tokio::test]
async fn sigterm_lets_the_charge_in_flight_finish() {
    let app = spawn_app().await;
    app.sandbox_post("/sandbox/faults", &json!({"latency_ms": 1500}))
        .await;
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_evisa"))
        .arg("work")
        .envs(app.worker_env())
        .env("EVISA_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "processing", 15)
        .await;
    let pid = worker.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || worker.wait().unwrap())
        .await
        .unwrap();
    assert!(
        status.success(),
        "the worker exits cleanly on SIGTERM: {status:?}"
    );
    // It finished the charge before exiting; no other worker was running.
    let now = app
        .get(&format!("/v1/payments/{payment}"), Some(&token))
        .await;
    assert_eq!(now.body["status"], "succeeded", "{}", now.body);
    assert_eq!(app.charges_for(&payment), 1);
    // …and stored that its job is done (written in the background while it ran) before
    // exiting: nothing is left claimed to run again.
    let (waiting, done): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE queue = 'evisa.charge_card'),
                (SELECT count(*) FROM jobs_done WHERE queue = 'evisa.charge_card')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((waiting, done), (0, 1));
}

#[tokio::test]
async fn a_second_charge_at_the_gateway_is_flagged_and_refunded() {
    let app = spawn_app_with(&[("EVISA_RECONCILE_AFTER_SECONDS", "3600")]).await;
    app.start_worker();
    let (token, application) = app.submitted_application().await;
    // First attempt: 3-D Secure fails, so it is `failed` here and waiting for a method at Stripe.
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_authenticationRequired",
            &key(),
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
    // Second attempt succeeds: the application is paid.
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    let second = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &second, "succeeded", 10).await;

    // Then the first intent is confirmed again at Stripe (e.g. from a stale browser tab).
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
    assert_eq!(
        app.charges_for(&first),
        1,
        "the gateway charged the first attempt too"
    );

    // Its webhook cannot make a second succeeded payment: it is flagged and refunded.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        // Done when our record says so (the sandbox refunds a moment before we record it).
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
    assert_eq!(refund.amount, 4000);
    let (flagged, refund_ref): (bool, Option<String>) = sqlx::query_as(
        "SELECT duplicate_charge, duplicate_refund_reference FROM payments WHERE id = $1::uuid",
    )
    .bind(&first)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(flagged);
    assert_eq!(refund_ref.as_deref(), Some(refund.id.as_str()));
    let succeeded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payments WHERE application_id = $1::uuid AND status = 'succeeded'",
    )
    .bind(&application)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(succeeded, 1);
    assert_eq!(app.sandbox.refunds().len(), 1, "refunded once");
}

#[tokio::test]
async fn stripe_test_card_numbers_behave_as_at_stripe() {
    let app = spawn_app().await;
    app.start_worker();
    for (number, expected) in [
        ("4242424242424242", "succeeded"),
        ("4000000000000002", "failed"),
        ("4000002760003184", "requires_action"),
    ] {
        // What Stripe.js does in the browser: tokenise the card into a PaymentMethod, with the
        // publishable key (the secret key may not send card numbers).
        let pm: Value = app
            .http
            .post(format!("{}/v1/payment_methods", app.sandbox_url))
            .bearer_auth(app.sandbox.publishable_key())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("type=card&card[number]={number}&card[exp_month]=12&card[exp_year]=2034&card[cvc]=123"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(pm["card"]["last4"], &number[12..]);
        let (token, application) = app.submitted_application().await;
        let r = app
            .pay(&token, &application, pm["id"].as_str().unwrap(), &key())
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        app.wait_for_payment(&token, r.body["id"].as_str().unwrap(), expected, 10)
            .await;
    }
}

#[tokio::test]
async fn duplicated_delayed_and_reordered_sandbox_webhooks_converge() {
    // Webhooks alone must carry the outcome here: no reconciliation.
    let app = spawn_app_with(&[("EVISA_RECONCILE_AFTER_SECONDS", "3600")]).await;
    app.start_worker();
    app.sandbox_post(
        "/sandbox/faults",
        &json!({"duplicate_webhooks": true, "webhook_delay_ms": 200}),
    )
    .await;
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_authenticationRequired",
            &key(),
        )
        .await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "requires_action", 10)
        .await;
    let intent = app.intent_of(&payment).await;
    // From here on the sandbox holds each intent's webhooks and sends them newest first.
    app.sandbox_post("/sandbox/faults", &json!({"reorder_webhooks": true}))
        .await;
    app.http
        .post(format!("{}/sandbox/3ds/{intent}/complete", app.sandbox_url))
        .send()
        .await
        .unwrap();
    app.wait_for_payment(&token, &payment, "succeeded", 15)
        .await;
    assert_eq!(app.charges_for(&payment), 1);
    let history = app.payment_history(&payment).await;
    assert_eq!(
        history.iter().filter(|(_, to)| to == "succeeded").count(),
        1,
        "{history:?}"
    );
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "paid"
    );
}

/// The applicant who owns `application`.
async fn applicant_of(app: &TestApp, application: &str) -> evisa_core::ids::UserId {
    let user: uuid::Uuid =
        sqlx::query_scalar("SELECT applicant_id FROM applications WHERE id = $1::uuid")
            .bind(application)
            .fetch_one(&app.db)
            .await
            .unwrap();
    evisa_core::ids::UserId::from_uuid(user)
}

#[tokio::test]
async fn a_key_whose_first_request_is_still_running_is_409() {
    let app = spawn_app().await;
    let (token, application) = app.submitted_application().await;
    let user = applicant_of(&app, &application).await;
    let k = key();
    // Hold the key's lock as a first request in progress would.
    let lock = evisa_core::idempotency::lock_id(
        user,
        &evisa_core::idempotency::IdempotencyKey::parse(&k).unwrap(),
    );
    let mut first = app.db.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock)
        .execute(&mut *first)
        .await
        .unwrap();
    let r = app.pay(&token, &application, "pm_card_visa", &k).await;
    assert_eq!(r.problem(409)["type"], "/problems/idempotency-in-flight");
    first.rollback().await.unwrap();
    // Once it is done, the key works.
    assert_eq!(
        app.pay(&token, &application, "pm_card_visa", &k)
            .await
            .status,
        202
    );
}

#[tokio::test]
async fn an_answer_saved_while_a_second_request_looked_is_never_overwritten() {
    use evisa_core::idempotency::{Begin, IdempotencyKey, Saved, begin, save};
    let app = spawn_app().await;
    let (_token, application) = app.submitted_application().await;
    let user = applicant_of(&app, &application).await;
    let k = IdempotencyKey::parse(&key()).unwrap();
    // The second request's claim found nothing saved and the lock free...
    let mut second = app.db.begin().await.unwrap();
    assert_eq!(
        begin(&mut second, user, &k, b"h").await.unwrap(),
        Begin::New
    );
    // ...because the first request committed its answer just after that look's snapshot (the
    // window between one statement's snapshot and its lock).
    let mut first = app.db.begin().await.unwrap();
    let first_answer = json!({"first": true});
    assert_eq!(
        save(&mut first, user, &k, b"h", 202, &first_answer)
            .await
            .unwrap(),
        Saved::Saved
    );
    first.commit().await.unwrap();
    // The second one's save finds it and leaves it be: its work is rolled back.
    assert_eq!(
        save(&mut second, user, &k, b"h", 202, &json!({"second": true}))
            .await
            .unwrap(),
        Saved::Raced
    );
    second.rollback().await.unwrap();
    let mut again = app.db.begin().await.unwrap();
    assert_eq!(
        begin(&mut again, user, &k, b"h").await.unwrap(),
        Begin::Replay {
            status: 202,
            body: first_answer
        }
    );
    again.rollback().await.unwrap();

    // An answer past its 24 hours is replaced.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&app.db)
        .await
        .unwrap();
    let mut later = app.db.begin().await.unwrap();
    assert_eq!(begin(&mut later, user, &k, b"h").await.unwrap(), Begin::New);
    assert_eq!(
        save(&mut later, user, &k, b"h", 202, &json!({"later": true}))
            .await
            .unwrap(),
        Saved::Saved
    );
    later.commit().await.unwrap();
}
