//! Alipay end to end: signed redirect → the sandbox cashier → verified notify or polling → one
//! transition; forged notifies and forged return visits change nothing; our signatures
//! interoperate with python-alipay-sdk.

use std::{collections::BTreeMap, time::Duration};

use evisa_core::gateway::alipay::{AppPrivateKey, out_trade_no, signing_string};
use evisa_sandbox::test_keys;
use serde_json::{Value, json};

use crate::common::{TestApp, complete_fields, spawn_app, spawn_app_with};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A submitted application of a Chinese national (tourist, standard: 360.00 CNY by Alipay).
async fn chinese_application(app: &TestApp) -> (String, String) {
    let token = app.applicant().await;
    let id = app
        .draft(&token, &complete_fields("CN", "tourist", "standard"))
        .await;
    assert_eq!(app.submit(&token, &id).await.body["status"], "submitted");
    (token, id)
}

async fn pay_alipay(app: &TestApp, token: &str, application: &str) -> Value {
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/applications/{application}/payments")))
                .bearer_auth(token)
                .header("idempotency-key", key())
                .json(&json!({"provider": "alipay", "channel": "page"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    r.body
}

fn trade_no_of(payment: &Value) -> String {
    out_trade_no(payment["id"].as_str().unwrap().parse().unwrap())
}

/// The buyer's browser opens the redirect URL: the sandbox's cashier page.
async fn open_cashier(app: &TestApp, payment: &Value) -> String {
    let url = payment["next_action"]["redirect_url"].as_str().unwrap();
    let page = app.http.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

async fn cashier(app: &TestApp, payment: &Value, action: &str) -> reqwest::Response {
    app.http
        .post(format!(
            "{}/sandbox/alipay/cashier/{}/{action}",
            app.sandbox_url,
            trade_no_of(payment)
        ))
        .send()
        .await
        .unwrap()
}

async fn faults(app: &TestApp, faults: Value) {
    let r = app
        .http
        .post(format!("{}/sandbox/alipay/faults", app.sandbox_url))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A notify for `payment` signed with Alipay's (the sandbox's) key, as Alipay would send it.
fn signed_notify(
    payment: &Value,
    overrides: &[(&str, &str)],
    notify_id: &str,
) -> Vec<(String, String)> {
    let mut fields: BTreeMap<String, String> = BTreeMap::from([
        ("notify_time".into(), "2026-11-26 12:00:00".into()),
        ("notify_type".into(), "trade_status_sync".into()),
        ("notify_id".into(), notify_id.into()),
        ("app_id".into(), test_keys::APP_ID.into()),
        ("seller_id".into(), test_keys::SELLER_ID.into()),
        ("charset".into(), "utf-8".into()),
        ("version".into(), "1.0".into()),
        ("trade_no".into(), "2026112622001400000000000001".into()),
        ("out_trade_no".into(), trade_no_of(payment)),
        ("trade_status".into(), "TRADE_SUCCESS".into()),
        ("total_amount".into(), "360.00".into()),
    ]);
    for (k, v) in overrides {
        fields.insert((*k).into(), (*v).into());
    }
    let key = AppPrivateKey::parse(test_keys::ALIPAY_SANDBOX_PRIVATE).unwrap();
    let sign = key.sign(&signing_string(
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &["sign_type"],
    ));
    let mut form: Vec<(String, String)> = fields.into_iter().collect();
    form.push(("sign".into(), sign));
    form.push(("sign_type".into(), "RSA2".into()));
    form
}

async fn post_notify(app: &TestApp, form: &[(String, String)]) -> (u16, String) {
    let r = app
        .http
        .post(app.url("/v1/webhooks/alipay"))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn inbox_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM gateway_inbox WHERE provider = 'alipay'")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn paying_in_the_cashier_notifies_and_the_application_is_paid() {
    let app = spawn_app().await;
    app.start_worker();
    let (token, application) = chinese_application(&app).await;
    let payment = pay_alipay(&app, &token, &application).await;
    assert_eq!(payment["status"], "requires_action");
    assert_eq!(
        (payment["amount"].clone(), payment["currency"].clone()),
        (json!(36000), json!("CNY"))
    );
    assert_eq!(payment["next_action"]["type"], "redirect");
    let url = url::Url::parse(payment["next_action"]["redirect_url"].as_str().unwrap()).unwrap();
    let params: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(params["method"], "alipay.trade.page.pay");
    assert_eq!(params["sign_type"], "RSA2");
    let biz: Value = serde_json::from_str(&params["biz_content"]).unwrap();
    assert_eq!(biz["out_trade_no"], trade_no_of(&payment));
    assert_eq!(biz["total_amount"], "360.00");
    assert_eq!(biz["product_code"], "FAST_INSTANT_TRADE_PAY");
    // time_expire is our payment's expiry, in Alipay's clock (GMT+8).
    let expires: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT expires_at FROM payments WHERE id = $1::uuid")
            .bind(payment["id"].as_str().unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        biz["time_expire"],
        evisa_core::gateway::alipay::beijing_time(expires)
    );

    assert!(open_cashier(&app, &payment).await.contains("¥360.00"));
    let back = cashier(&app, &payment, "pay").await;
    // The browser ends on our return page (the redirect was followed).
    assert!(back.url().path().ends_with("/return"), "{}", back.url());
    let id = payment["id"].as_str().unwrap();
    app.wait_for_payment(&token, id, "succeeded", 10).await;
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "paid"
    );
    let cause: String = sqlx::query_scalar(
        "SELECT cause FROM payment_events WHERE payment_id = $1::uuid AND to_status = 'succeeded'",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(
        cause.starts_with("alipay:ntf"),
        "paid by the notify: {cause}"
    );
    let trade = app
        .alipay
        .trades()
        .into_iter()
        .find(|t| t.out_trade_no == trade_no_of(&payment))
        .unwrap();
    let reference: String =
        sqlx::query_scalar("SELECT gateway_reference FROM payments WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(reference, trade.trade_no);
}

#[tokio::test]
async fn polling_alone_finds_the_payment_when_the_notify_is_dropped() {
    let app = spawn_app().await;
    app.start_worker();
    faults(&app, json!({"drop_notifies": true})).await;
    let (token, application) = chinese_application(&app).await;
    let payment = pay_alipay(&app, &token, &application).await;
    open_cashier(&app, &payment).await;
    cashier(&app, &payment, "pay").await;
    let id = payment["id"].as_str().unwrap();
    app.wait_for_payment(&token, id, "succeeded", 20).await;
    assert_eq!(inbox_count(&app).await, 0, "no notify arrived");
    let cause: String = sqlx::query_scalar(
        "SELECT cause FROM payment_events WHERE payment_id = $1::uuid AND to_status = 'succeeded'",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(cause.starts_with("job:"), "paid by the poll job: {cause}");
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "paid"
    );
}

#[tokio::test]
async fn duplicate_and_late_notifies_make_one_transition() {
    let app = spawn_app().await;
    app.start_worker();
    // Duplicated by the sandbox.
    faults(&app, json!({"duplicate_notifies": true})).await;
    let (token, application) = chinese_application(&app).await;
    let payment = pay_alipay(&app, &token, &application).await;
    open_cashier(&app, &payment).await;
    cashier(&app, &payment, "pay").await;
    let id = payment["id"].as_str().unwrap();
    app.wait_for_payment(&token, id, "succeeded", 10).await;

    // After polling already succeeded (notify dropped), a late notify arrives twice.
    faults(&app, json!({"drop_notifies": true})).await;
    let (token2, application2) = chinese_application(&app).await;
    let second = pay_alipay(&app, &token2, &application2).await;
    open_cashier(&app, &second).await;
    cashier(&app, &second, "pay").await;
    let id2 = second["id"].as_str().unwrap();
    app.wait_for_payment(&token2, id2, "succeeded", 20).await;
    let trade = app
        .alipay
        .trades()
        .into_iter()
        .find(|t| t.out_trade_no == trade_no_of(&second))
        .unwrap();
    let late = signed_notify(
        &second,
        &[("trade_no", trade.trade_no.as_str())],
        "late-notify-1",
    );
    for _ in 0..2 {
        assert_eq!(post_notify(&app, &late).await, (200, "success".to_string()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (pid, app_id) in [(id, &application), (id2, &application2)] {
        let history = app.payment_history(pid).await;
        assert_eq!(
            history.iter().filter(|(_, to)| to == "succeeded").count(),
            1,
            "{history:?}"
        );
        let paid: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM application_events WHERE application_id = $1::uuid AND to_status = 'paid'",
        )
        .bind(app_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(paid, 1);
    }
    let late_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM gateway_inbox WHERE event_id = 'late-notify-1'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(late_rows, 1);
}

#[tokio::test]
async fn forged_tampered_and_foreign_notifies_are_refused() {
    let app = spawn_app_with(&[("EVISA_ALIPAY_POLL_SECONDS", "600")]).await;
    app.start_worker();
    let (token, application) = chinese_application(&app).await;
    let payment = pay_alipay(&app, &token, &application).await;

    let mut forged = signed_notify(&payment, &[], "forged-1");
    forged.iter_mut().find(|(k, _)| k == "sign").unwrap().1 =
        AppPrivateKey::parse(test_keys::MERCHANT_DEV_PRIVATE)
            .unwrap()
            .sign("trade_status=TRADE_SUCCESS");
    let mut tampered = signed_notify(&payment, &[], "tampered-1");
    tampered
        .iter_mut()
        .find(|(k, _)| k == "total_amount")
        .unwrap()
        .1 = "0.01".into();
    // Correctly signed, but for another amount or another app.
    let wrong_amount = signed_notify(&payment, &[("total_amount", "1.00")], "amount-1");
    let foreign_app = signed_notify(&payment, &[("app_id", "2021999999999999")], "foreign-1");
    let foreign_seller = signed_notify(&payment, &[("seller_id", "2088999999999999")], "seller-1");
    // Smuggling: signed for another app, with our app_id added as a second copy of the field
    // (the signature covers one copy; a naive check reads the other), first or last.
    let mut smuggled_last = signed_notify(&payment, &[("app_id", "2021999999999999")], "smuggle-1");
    smuggled_last.push(("app_id".into(), test_keys::APP_ID.into()));
    let mut smuggled_first =
        signed_notify(&payment, &[("app_id", "2021999999999999")], "smuggle-2");
    smuggled_first.insert(0, ("app_id".into(), test_keys::APP_ID.into()));
    let mut smuggled_seller =
        signed_notify(&payment, &[("seller_id", "2088999999999999")], "smuggle-3");
    smuggled_seller.push(("seller_id".into(), test_keys::SELLER_ID.into()));
    for (what, form) in [
        ("forged", forged),
        ("tampered", tampered),
        ("amount", wrong_amount),
        ("app", foreign_app),
        ("seller", foreign_seller),
        ("smuggled app_id, last", smuggled_last),
        ("smuggled app_id, first", smuggled_first),
        ("smuggled seller_id", smuggled_seller),
    ] {
        let (status, body) = post_notify(&app, &form).await;
        assert_ne!(body, "success", "{what} notify was accepted");
        assert_eq!(status, 400, "{what}");
    }
    assert_eq!(inbox_count(&app).await, 0);
    let now = app
        .get(
            &format!("/v1/payments/{}", payment["id"].as_str().unwrap()),
            Some(&token),
        )
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
async fn an_unpaid_trade_is_closed_at_the_deadline_and_a_new_attempt_is_allowed() {
    let app = spawn_app_with(&[("EVISA_PAYMENT_EXPIRY_SECONDS", "3")]).await;
    app.start_worker();
    let (token, application) = chinese_application(&app).await;
    let payment = pay_alipay(&app, &token, &application).await;
    // The buyer opens the cashier and walks away.
    open_cashier(&app, &payment).await;
    let id = payment["id"].as_str().unwrap();
    app.wait_for_payment(&token, id, "expired", 20).await;
    let trade = app
        .alipay
        .trades()
        .into_iter()
        .find(|t| t.out_trade_no == trade_no_of(&payment))
        .unwrap();
    assert_eq!(trade.status, "TRADE_CLOSED");
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "submitted"
    );
    let again = pay_alipay(&app, &token, &application).await;
    assert_eq!(again["status"], "requires_action");

    // A buyer who never even opened the cashier: expired too (the trade never existed).
    let (token2, application2) = chinese_application(&app).await;
    let never = pay_alipay(&app, &token2, &application2).await;
    app.wait_for_payment(&token2, never["id"].as_str().unwrap(), "expired", 20)
        .await;
}

#[tokio::test]
async fn a_trade_paid_just_before_the_deadline_succeeds_when_closing_finds_it_paid() {
    // One poll only, at the deadline; no notify.
    let app = spawn_app_with(&[
        ("EVISA_PAYMENT_EXPIRY_SECONDS", "4"),
        ("EVISA_ALIPAY_POLL_SECONDS", "600"),
    ])
    .await;
    app.start_worker();
    faults(&app, json!({"drop_notifies": true})).await;
    let (token, application) = chinese_application(&app).await;
    let payment = pay_alipay(&app, &token, &application).await;
    open_cashier(&app, &payment).await;
    cashier(&app, &payment, "pay").await;
    let id = payment["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/payments/{id}"), Some(&token))
            .await
            .body["status"],
        "requires_action"
    );
    app.wait_for_payment(&token, id, "succeeded", 20).await;
    let trade = app
        .alipay
        .trades()
        .into_iter()
        .find(|t| t.out_trade_no == trade_no_of(&payment))
        .unwrap();
    assert_eq!(trade.status, "TRADE_SUCCESS", "a paid trade is not closed");
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "paid"
    );
}

#[tokio::test]
async fn the_return_url_with_forged_parameters_changes_nothing() {
    let app = spawn_app_with(&[("EVISA_ALIPAY_POLL_SECONDS", "600")]).await;
    app.start_worker();
    let (token, application) = chinese_application(&app).await;
    let payment = pay_alipay(&app, &token, &application).await;
    let id = payment["id"].as_str().unwrap();
    let forged = format!(
        "/v1/payments/{id}/return?out_trade_no={}&trade_status=TRADE_SUCCESS&total_amount=360.00&trade_no=x&sign=forged&sign_type=RSA2",
        trade_no_of(&payment)
    );
    let page = app.http.get(app.url(&forged)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(">requires_action<"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.get(&format!("/v1/payments/{id}"), Some(&token))
            .await
            .body["status"],
        "requires_action"
    );
    assert_eq!(
        app.get(&format!("/v1/applications/{application}"), Some(&token))
            .await
            .body["status"],
        "submitted"
    );
    assert_eq!(
        app.payment_history(id).await.len(),
        2,
        "created and requires_action only"
    );

    // With a portal return_url, the browser is sent there, with the status as we know it.
    let (token2, application2) = chinese_application(&app).await;
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/applications/{application2}/payments")))
                .bearer_auth(&token2)
                .header("idempotency-key", key())
                .json(&json!({"provider": "alipay", "channel": "wap", "return_url": "https://portal.example/paid"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let wap = url::Url::parse(r.body["next_action"]["redirect_url"].as_str().unwrap()).unwrap();
    assert!(
        wap.query_pairs()
            .any(|(k, v)| k == "method" && v == "alipay.trade.wap.pay")
    );
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let id2 = r.body["id"].as_str().unwrap();
    let back = no_redirects
        .get(app.url(&format!(
            "/v1/payments/{id2}/return?trade_status=TRADE_SUCCESS"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 303);
    assert_eq!(
        back.headers()["location"],
        format!("https://portal.example/paid?payment_id={id2}&status=requires_action").as_str()
    );
    assert_eq!(
        app.get(&format!("/v1/payments/{id2}"), Some(&token2))
            .await
            .body["status"],
        "requires_action"
    );
    let bad = app
        .send(
            app.http
                .post(app.url(&format!("/v1/applications/{application}/payments")))
                .bearer_auth(&token)
                .header("idempotency-key", key())
                .json(&json!({"provider": "alipay", "return_url": "javascript:alert(1)"})),
        )
        .await;
    assert_eq!(bad.fields(), ["return_url"]);
}

/// Attack: use our domain as an open redirect, by asking for a `return_url` on another site (or
/// one disguised as ours), or by a row that holds one from before the origins were narrowed.
#[tokio::test]
async fn a_return_url_off_the_portal_origins_is_refused_and_never_followed() {
    let app = spawn_app().await;
    let (token, application) = chinese_application(&app).await;
    for evil in [
        "https://evil.example/phish",
        "https://portal.example.evil.example/",
        "https://portal.example@evil.example/",
        "http://portal.example/",
        "https://portal.example:8443/",
        "//evil.example/",
    ] {
        let r = app
            .send(
                app.http
                    .post(app.url(&format!("/v1/applications/{application}/payments")))
                    .bearer_auth(&token)
                    .header("idempotency-key", key())
                    .json(&json!({"provider": "alipay", "return_url": evil})),
            )
            .await;
        r.problem(422);
        assert_eq!(r.fields(), ["return_url"], "{evil}: {}", r.body);
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "a refused request leaves nothing behind");

    let payment = pay_alipay(&app, &token, &application).await;
    let id = payment["id"].as_str().unwrap();
    sqlx::query("UPDATE payments SET return_url = 'https://evil.example/' WHERE id = $1::uuid")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let back = no_redirects
        .get(app.url(&format!("/v1/payments/{id}/return")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        back.status(),
        200,
        "a stored off-origin URL is not followed"
    );
    assert!(back.headers().get("location").is_none());
}

#[tokio::test]
async fn alipay_is_refused_where_the_schedule_has_no_cny_price() {
    let app = spawn_app().await;
    let (token, application) = app.submitted_application().await; // FR: USD and EUR only
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/applications/{application}/payments")))
                .bearer_auth(&token)
                .header("idempotency-key", key())
                .json(&json!({"provider": "alipay"})),
        )
        .await;
    let p = r.problem(422);
    assert_eq!(p["type"], "/problems/provider-not-offered");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("Alipay is not offered")
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

fn python() -> String {
    std::env::var("EVISA_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn key_path(name: &str) -> String {
    format!("{}/sandbox/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn peer(args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .arg(format!(
            "{}/tests/peers/alipay_peer.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(args)
        .output()
        .expect("the Python peer runs (scripts/test.sh installs python-alipay-sdk)");
    assert!(
        out.status.success(),
        "alipay peer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn our_signatures_interoperate_with_python_alipay_sdk() {
    let app = spawn_app_with(&[("EVISA_ALIPAY_POLL_SECONDS", "600")]).await;
    app.start_worker();
    let (token, application) = chinese_application(&app).await;
    let payment = pay_alipay(&app, &token, &application).await;

    // 1. The redirect URL our client signed.
    let url = url::Url::parse(payment["next_action"]["redirect_url"].as_str().unwrap()).unwrap();
    let params: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let (private, public) = (
        key_path("merchant_dev_private.pem"),
        key_path("merchant_dev_public.pem"),
    );
    assert_eq!(
        peer(&[
            "check-request",
            &private,
            &public,
            &serde_json::to_string(&params).unwrap()
        ]),
        "ok"
    );
    // 2. A server-to-server request (alipay.trade.query), exactly as our client sends it.
    let client = evisa_core::gateway::alipay::client_for(
        &evisa_core::config::Config::load(
            evisa_core::config::Profile::Production,
            &evisa_core::config::Source::from_pairs(
                app.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    let request = client.signed_params(
        "alipay.trade.query",
        &json!({"out_trade_no": trade_no_of(&payment)}),
        None,
    );
    assert_eq!(
        peer(&[
            "check-request",
            &private,
            &public,
            &serde_json::to_string(&request).unwrap()
        ]),
        "ok"
    );

    // 3. A notify signed by the SDK with Alipay's key verifies in our code; a tampered one does not.
    open_cashier(&app, &payment).await;
    let fields = json!({
        "notify_time": "2026-11-26 12:00:00", "notify_type": "trade_status_sync", "notify_id": "sdk-notify-1",
        "app_id": test_keys::APP_ID, "seller_id": test_keys::SELLER_ID, "charset": "utf-8", "version": "1.0", "trade_no": "2026112622001400000000000099",
        "out_trade_no": trade_no_of(&payment), "trade_status": "TRADE_SUCCESS", "total_amount": "360.00",
        "subject": "Visa application fee", "gmt_payment": "2026-11-26 11:59:58",
    });
    let signed: BTreeMap<String, String> = serde_json::from_str(&peer(&[
        "sign-notify",
        &key_path("alipay_sandbox_private.pem"),
        &fields.to_string(),
    ]))
    .unwrap();
    let mut tampered: Vec<(String, String)> = signed.clone().into_iter().collect();
    tampered
        .iter_mut()
        .find(|(k, _)| k == "trade_no")
        .unwrap()
        .1 = "2026112622001400000000000100".into();
    let (status, body) = post_notify(&app, &tampered).await;
    assert_eq!((status, body.as_str()), (400, "fail"));
    let form: Vec<(String, String)> = signed.into_iter().collect();
    assert_eq!(post_notify(&app, &form).await, (200, "success".to_string()));
    app.wait_for_payment(&token, payment["id"].as_str().unwrap(), "succeeded", 10)
        .await;
}
