//! Attacks by volume: card testing (many declined cards on one application or one applicant),
//! and floods of payments, refunds, registrations, sign-ins and callbacks from one address. Each
//! is refused with 429 problem+json and `Retry-After`, and nothing beyond the limit reaches the
//! gateway or the database.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;

use crate::common::{Answer, TestApp, spawn_app_with};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn assert_limited(r: &Answer) {
    r.problem(429);
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!(retry >= 1, "Retry-After {retry}");
}

async fn payments_of(app: &TestApp, application: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payments WHERE application_id = $1::uuid")
        .bind(application)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Declines until the limit, waiting for each to fail (the worker counts failures).
async fn decline(app: &TestApp, token: &str, application: &str) {
    let r = app
        .pay(token, application, "pm_card_chargeDeclined", &key())
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap();
    app.wait_for_payment(token, id, "failed", 10).await;
}

#[tokio::test]
async fn card_testing_on_one_application_stops_at_the_limit() {
    let app = spawn_app_with(&[("EVISA_FAILED_PAYMENTS_PER_APPLICATION", "3")]).await;
    app.start_worker();
    let (token, application) = app.submitted_application().await;
    for _ in 0..3 {
        decline(&app, &token, &application).await;
    }
    // The fourth card is never tried: not even a good one.
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    assert_limited(&r);
    assert_eq!(payments_of(&app, &application).await, 3);
    assert!(app.sandbox.charges().is_empty());
}

#[tokio::test]
async fn card_testing_across_applications_stops_at_the_applicant_limit() {
    let app = spawn_app_with(&[
        ("EVISA_FAILED_PAYMENTS_PER_APPLICATION", "10"),
        ("EVISA_FAILED_PAYMENTS_PER_APPLICANT", "2"),
    ])
    .await;
    app.start_worker();
    let (token, first) = app.submitted_application().await;
    decline(&app, &token, &first).await;
    decline(&app, &token, &first).await;
    let fields = crate::common::complete_fields("FR", "tourist", "standard");
    let second = app.draft(&token, &fields).await;
    assert_eq!(app.submit(&token, &second).await.status, 200);
    let r = app
        .pay(&token, &second, "pm_card_chargeDeclined", &key())
        .await;
    assert_limited(&r);
    assert_eq!(payments_of(&app, &second).await, 0);
    // Another applicant is not affected.
    let (other, theirs) = app.submitted_application().await;
    let r = app.pay(&other, &theirs, "pm_card_visa", &key()).await;
    assert_eq!(r.status, 202, "{}", r.body);
}

#[tokio::test]
async fn a_flood_of_payments_from_one_address_is_refused() {
    let app = spawn_app_with(&[("EVISA_PAYMENTS_PER_MINUTE", "2")]).await;
    let (token, application) = app.submitted_application().await;
    let (token2, application2) = app.submitted_application().await;
    assert_eq!(
        app.pay(&token, &application, "pm_card_visa", &key())
            .await
            .status,
        202
    );
    // A second attempt on the same application is a 409 (one in flight), but it still counts.
    app.pay(&token, &application, "pm_card_visa", &key()).await;
    let r = app
        .pay(&token2, &application2, "pm_card_visa", &key())
        .await;
    assert_limited(&r);
    assert_eq!(payments_of(&app, &application2).await, 0);
}

#[tokio::test]
async fn a_flood_of_registrations_from_one_address_is_refused() {
    let app = spawn_app_with(&[("EVISA_REGISTRATIONS_PER_HOUR", "2")]).await;
    for n in 0..3 {
        let r = app
            .post(
                "/v1/auth/register",
                None,
                &json!({"email": format!("flood-{n}@example.org"), "password": "correct horse battery staple"}),
            )
            .await;
        if n < 2 {
            assert_eq!(r.status, 201, "{}", r.body);
        } else {
            assert_limited(&r);
        }
    }
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email LIKE 'flood-%'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(users, 2);
}

#[tokio::test]
async fn a_flood_of_webhooks_from_one_address_waits_for_a_retry() {
    let app = spawn_app_with(&[("EVISA_CALLBACKS_PER_MINUTE", "2")]).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = app
            .http
            .post(app.url("/v1/webhooks/stripe"))
            .header("stripe-signature", "t=1,v1=00")
            .body("{}")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    // Unverifiable (400) while within the limit; then refused before any work.
    assert_eq!(statuses, [400, 400, 429]);
    let r = app
        .http
        .post(app.url("/v1/webhooks/alipay"))
        .form(&[("notify_id", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "notifies share the per-address limit");
}

/// Someone who fails to sign in as a user from another address does not lock the user out.
#[tokio::test]
async fn failed_sign_ins_from_elsewhere_never_lock_a_real_user_out() {
    let app = spawn_app_with(&[("EVISA_LOGIN_ATTEMPTS_PER_MINUTE", "3")]).await;
    let email = format!("victim-{}@example.org", uuid::Uuid::now_v7().simple());
    let creds = json!({"email": email, "password": "correct horse battery staple"});
    assert_eq!(
        app.post("/v1/auth/register", None, &creds).await.status,
        201
    );

    // The attacker connects from 127.0.0.2 (the loopback network is all local on Linux).
    let attacker = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    let wrong = json!({"email": email, "password": "not the password at all"});
    let mut refused = 0;
    for _ in 0..6 {
        let r = attacker
            .post(app.url("/v1/auth/login"))
            .json(&wrong)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            refused += 1;
        } else {
            assert_eq!(r.status(), 401);
        }
    }
    assert_eq!(refused, 3, "the attacker's own address is limited");
    // The real user, from their own address, signs in at once.
    let r = app.post("/v1/auth/login", None, &creds).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn a_flood_of_refunds_from_one_address_is_refused() {
    let app = spawn_app_with(&[("EVISA_REFUNDS_PER_MINUTE", "2")]).await;
    app.start_worker();
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 10)
        .await;
    let officer = app.staff(evisa_core::users::Role::Officer).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(
            app.send(
                app.http
                    .post(app.url(&format!("/v1/admin/payments/{payment}/refunds")))
                    .bearer_auth(&officer)
                    .header("idempotency-key", key())
                    .json(&json!({"amount": 100, "reason": "flood"})),
            )
            .await,
        );
    }
    assert_eq!(answers[0].status, 202);
    assert_eq!(answers[1].status, 202);
    assert_limited(&answers[2]);
    let refunds: i64 = sqlx::query_scalar("SELECT count(*) FROM refunds")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(refunds, 2);
}
