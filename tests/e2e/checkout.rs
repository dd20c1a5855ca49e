//! The hosted checkout page, API side: the link (`POST /v1/applications/{id}/checkout`), its
//! binding to the first browser, CSRF, headers, and what the page shows. The browser side
//! (cards, 3-D Secure, Alipay, accessibility) is `tests/browser/checkout.py` in Chromium.

use serde_json::json;

use crate::common::{Answer, TestApp, complete_fields, spawn_app, spawn_app_with};

/// A browser: no redirects followed, cookies handled by hand (so the test sees them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn open_checkout(
    app: &TestApp,
    token: &str,
    application: &str,
    body: serde_json::Value,
    key: &str,
) -> Answer {
    app.send(
        app.http
            .post(app.url(&format!("/v1/applications/{application}/checkout")))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body),
    )
    .await
}

/// The first visit of `link`: (the page's path, the binding cookie `name=value`).
async fn first_visit(link: &str) -> (String, String) {
    let r = browser().get(link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let page = r.headers()["location"].to_str().unwrap().to_string();
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        // The whole checkout path: sent again when the same browser reopens the link.
        "Path=/checkout;",
    ] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    (page, cookie)
}

async fn page(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = browser().get(app.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn csrf_of(html: &str) -> String {
    let start = html
        .find("name=\"csrf_token\" value=\"")
        .expect("the page has a CSRF field")
        + 25;
    html[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn a_checkout_link_is_made_once_per_key_and_checks_its_input() {
    let app = spawn_app().await;
    let (token, application) = app.submitted_application().await;
    let body = json!({"return_url": "https://portal.example/done", "locale": "zh-CN"});
    let r = open_checkout(&app, &token, &application, body.clone(), "k1").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let url = r.body["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/checkout/", app.base)), "{url}");
    assert_eq!(url.rsplit('/').next().unwrap().len(), 43, "256-bit token");
    assert!(r.body["expires_at"].is_string());
    // The same key and body: the same link (the token is derived, never stored).
    let again = open_checkout(&app, &token, &application, body.clone(), "k1").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, r.body);
    let (stored,): (i64,) = sqlx::query_as("SELECT count(*) FROM checkout_sessions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let token_column: (Vec<u8>,) = sqlx::query_as("SELECT token_hash FROM checkout_sessions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_ne!(
        token_column.0,
        url.rsplit('/').next().unwrap().as_bytes(),
        "only a hash"
    );
    // Another key: another link.
    let other = open_checkout(&app, &token, &application, body, "k2").await;
    assert_ne!(other.body["url"], r.body["url"]);

    // A return URL off the allowed origins is 422 naming the field; nothing is written.
    let bad = open_checkout(
        &app,
        &token,
        &application,
        json!({"return_url": "https://evil.example/x"}),
        "k3",
    )
    .await;
    bad.problem(422);
    assert_eq!(bad.fields(), vec!["return_url"]);
    let bad_locale = open_checkout(&app, &token, &application, json!({"locale": "fr"}), "k4").await;
    bad_locale.problem(422);
    assert_eq!(bad_locale.fields(), vec!["locale"]);
    let (after,): (i64,) = sqlx::query_as("SELECT count(*) FROM checkout_sessions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(after, 2);

    // Another applicant's application is not found; a draft cannot be paid.
    let stranger = app.applicant().await;
    open_checkout(&app, &stranger, &application, json!({}), "k5")
        .await
        .problem(404);
    let draft = app
        .draft(&stranger, &complete_fields("FR", "tourist", "standard"))
        .await;
    let r = open_checkout(&app, &stranger, &draft, json!({}), "k6").await;
    r.problem(409);
    // Without a key: 400 naming the header.
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/applications/{application}/checkout")))
                .bearer_auth(&token)
                .json(&json!({})),
        )
        .await;
    assert!(r.status == 400 || r.status == 422, "{}", r.body);
}

#[tokio::test]
async fn the_link_binds_to_the_first_browser_and_refuses_any_other() {
    let app = spawn_app_with(&[("STRIPE_PUBLISHABLE_KEY", "pk_test_checkout")]).await;
    let (token, application) = app.submitted_application().await;
    let r = open_checkout(
        &app,
        &token,
        &application,
        json!({"return_url": "https://portal.example/done"}),
        "k",
    )
    .await;
    let link = r.body["url"].as_str().unwrap().to_string();
    let (path, cookie) = first_visit(&link).await;

    // The first browser sees the page: the application, its fee, in English.
    let (status, headers, html) = page(&app, &path, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(html.contains("<html lang=\"en\">"), "{html}");
    assert!(html.contains(&application));
    assert!(html.contains("US$40.00"), "the fee, formatted");
    assert!(html.contains("autocomplete=\"cc-number\"") && html.contains("inputmode=\"numeric\""));
    assert_eq!(headers["cache-control"], "no-store");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'nonce-"),
        "{csp}"
    );
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(
        html.contains(&format!("nonce=\"{nonce}\"")),
        "the script carries this response's nonce"
    );
    // A nonce per response.
    let (_, again, _) = page(&app, &path, Some(&cookie)).await;
    assert_ne!(
        again["content-security-policy"],
        headers["content-security-policy"]
    );

    // The same browser reloading the link goes on to its page.
    let reload = browser()
        .get(&link)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 303);
    // Any other browser: the link was used, and the page itself is refused.
    let (status, _, html) = page(&app, link.trim_start_matches(&app.base), None).await;
    assert_eq!(status, 403);
    assert!(html.contains("already used"), "{html}");
    let (status, _, _) = page(&app, &path, None).await;
    assert_eq!(status, 403);
    // The session's cookie with a made-up value.
    let name = cookie.split('=').next().unwrap();
    assert!(name.starts_with("evisa_checkout_"), "{cookie}");
    let forged = format!("{name}=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let (status, _, _) = page(&app, &path, Some(&forged)).await;
    assert_eq!(status, 403);
    // A made-up link.
    let (status, _, _) = page(&app, &format!("/checkout/{}", "x".repeat(43)), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn every_post_needs_the_pages_csrf_token() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let application = app
        .draft(&token, &complete_fields("CN", "tourist", "standard"))
        .await;
    app.submit(&token, &application).await;
    let r = open_checkout(&app, &token, &application, json!({}), "k").await;
    let (path, cookie) = first_visit(r.body["url"].as_str().unwrap()).await;
    let (_, _, html) = page(&app, &path, Some(&cookie)).await;
    assert!(
        html.contains("¥360.00") || html.contains("CN¥360.00"),
        "the CNY price for Alipay"
    );
    let csrf = csrf_of(&html);

    // The card endpoint without, or with a wrong, CSRF token: 403, no payment.
    for header in [None, Some("wrong")] {
        let mut req = browser()
            .post(app.url(&format!("{path}/card")))
            .header("cookie", &cookie)
            .header("idempotency-key", "a1")
            .json(&json!({"payment_method": "pm_card_visa"}));
        if let Some(h) = header {
            req = req.header("x-csrf-token", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // The Alipay form without its token: refused, no payment.
    let r = browser()
        .post(app.url(&format!("{path}/alipay")))
        .header("cookie", &cookie)
        .form(&[("csrf_token", "wrong"), ("attempt", "a2")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Another browser with the right token but not the cookie: refused.
    let r = browser()
        .post(app.url(&format!("{path}/alipay")))
        .form(&[("csrf_token", csrf.as_str()), ("attempt", "a3")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (payments,): (i64,) = sqlx::query_as("SELECT count(*) FROM payments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(payments, 0);

    // With it, twice (a double press): one payment, and both go to Alipay's cashier.
    let mut cashiers = Vec::new();
    for _ in 0..2 {
        let r = browser()
            .post(app.url(&format!("{path}/alipay")))
            .header("cookie", &cookie)
            .form(&[("csrf_token", csrf.as_str()), ("attempt", "a4")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        cashiers.push(r.headers()["location"].to_str().unwrap().to_string());
    }
    assert_eq!(cashiers[0], cashiers[1]);
    assert!(
        cashiers[0].starts_with(&app.sandbox_url) || cashiers[0].contains("gateway.do"),
        "{}",
        cashiers[0]
    );
    let (payments,): (i64,) = sqlx::query_as("SELECT count(*) FROM payments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(payments, 1);
    // Meanwhile the page says it waits, and offers the way back to the cashier.
    let (_, _, html) = page(&app, &path, Some(&cookie)).await;
    assert!(html.contains("waiting"), "{html}");
}

#[tokio::test]
async fn a_paid_application_shows_paid_with_its_receipt_in_the_chosen_language() {
    let app = spawn_app().await;
    app.start_worker();
    let (token, application, payment) = app.paid_by_alipay().await;
    let back = "https://portal.example/done?x=1";
    let r = open_checkout(
        &app,
        &token,
        &application,
        json!({"locale": "zh-CN", "return_url": back}),
        "k",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (path, cookie) = first_visit(r.body["url"].as_str().unwrap()).await;
    let (status, _, html) = page(&app, &path, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(html.contains("<html lang=\"zh-CN\">"), "{html}");
    assert!(html.contains("费用已支付"), "paid, in Chinese");
    let receipt = app
        .get(&format!("/v1/payments/{payment}/receipt"), Some(&token))
        .await;
    let code = receipt.body["verification_code"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(html.contains(&code), "the receipt's verification code");
    assert!(!html.contains("id=\"card-form\""), "never offered again");
    // The return goes to the portal untouched: nothing about the outcome added.
    assert!(html.contains(&format!("href=\"{back}\"")), "{html}");
    // The switch and the receipt page.
    let (_, _, english) = page(&app, &format!("{path}?lang=en"), Some(&cookie)).await;
    assert!(english.contains("<html lang=\"en\">") && english.contains("Your fee is paid"));
    let (status, _, receipt) = page(&app, &format!("{path}/receipt"), Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(
        receipt.contains(&code) && receipt.contains("360.00"),
        "{receipt}"
    );
}

#[tokio::test]
async fn assets_are_content_hashed_and_cached_for_a_year() {
    let app = spawn_app().await;
    let (token, application) = app.submitted_application().await;
    let r = open_checkout(&app, &token, &application, json!({}), "k").await;
    let (path, cookie) = first_visit(r.body["url"].as_str().unwrap()).await;
    let (_, _, html) = page(&app, &path, Some(&cookie)).await;
    for ext in ["css", "js"] {
        let start = html.find("/checkout/assets/checkout.").unwrap();
        let name = html[start..]
            .split('"')
            .find(|s| s.ends_with(ext))
            .map(str::to_string)
            .unwrap_or_else(|| {
                let i = html.rfind(&format!(".{ext}\"")).unwrap();
                let s = html[..i].rfind('"').unwrap();
                format!("{}.{ext}", &html[s + 1..i])
            });
        let (status, headers, _) = page(&app, &name, None).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(
            headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
    }
    let (status, _, _) = page(&app, "/checkout/assets/checkout.0000000000000000.css", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn with_stripe_itself_the_page_loads_stripe_js_and_has_no_card_fields_of_its_own() {
    // No sandbox behind the Stripe client: production mode. Stripe.js cannot be fetched here
    // (no internet), so this checks what the page asks the browser to do.
    let app = spawn_app_with(&[
        ("STRIPE_API_BASE", ""),
        ("STRIPE_PUBLISHABLE_KEY", "pk_live_evisaCheckoutTest"),
    ])
    .await;
    let (token, application) = app.submitted_application().await;
    let r = open_checkout(&app, &token, &application, json!({}), "k").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (path, cookie) = first_visit(r.body["url"].as_str().unwrap()).await;
    let (status, headers, html) = page(&app, &path, Some(&cookie)).await;
    assert_eq!(status, 200);
    let csp = headers["content-security-policy"].to_str().unwrap();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("a nonce in the policy");
    assert!(
        csp.contains(&format!(
            "script-src 'nonce-{nonce}' https://js.stripe.com;"
        )),
        "{csp}"
    );
    assert!(
        csp.contains("frame-src https://js.stripe.com https://hooks.stripe.com"),
        "{csp}"
    );
    assert!(
        csp.contains("connect-src 'self' https://api.stripe.com"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        html.contains(&format!(
            "<script nonce=\"{nonce}\" src=\"https://js.stripe.com/v3\"></script>"
        )),
        "{html}"
    );
    assert!(
        html.contains("<div id=\"payment-element\"></div>"),
        "{html}"
    );
    for field in ["id=\"card-number\"", "cc-number", "cc-exp", "cc-csc"] {
        assert!(!html.contains(field), "no {field} of our own in production");
    }
    // The script is told the live publishable key and no sandbox tokeniser.
    let config = html.replace("&#34;", "\"").replace("&quot;", "\"");
    assert!(
        config.contains("\"publishable_key\":\"pk_live_evisaCheckoutTest\""),
        "{html}"
    );
    assert!(config.contains("\"tokenizer\":null"), "{html}");
}
