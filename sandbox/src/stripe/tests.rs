use std::sync::atomic::{AtomicU32, Ordering};

use poem::{http::StatusCode, test::TestClient};
use serde_json::{Value, json};

use super::*;

fn sandbox(webhook_url: Option<String>) -> StripeSandbox {
    StripeSandbox::new(StripeSandboxConfig {
        secret_key: "sk_test_x".into(),
        webhook_url,
        webhook_secret: "whsec_x".into(),
        public_url: "http://sandbox.invalid".into(),
        webhook_retry_base: Duration::from_millis(20),
        webhook_max_attempts: 5,
        webhook_latency: Duration::ZERO,
        enabled_events: vec!["*".into()],
    })
}

async fn post(
    cli: &TestClient<impl poem::Endpoint>,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (StatusCode, poem::http::HeaderMap, Value) {
    let mut r = cli
        .post(path)
        .header("authorization", "Bearer sk_test_x")
        .content_type("application/x-www-form-urlencoded")
        .body(body.to_string());
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    let resp = r.send().await;
    let status = resp.0.status();
    let headers = resp.0.headers().clone();
    let body: Value =
        serde_json::from_slice(&resp.0.into_body().into_vec().await.unwrap()).unwrap();
    (status, headers, body)
}

#[test]
fn signature_matches_stripes_scheme() {
    let h = signature_header("whsec_test", 1_700_000_000, "{}");
    assert!(h.starts_with("t=1700000000,v1="));
    assert_eq!(h.len(), "t=1700000000,v1=".len() + 64);
    assert_eq!(publishable_key_for("sk_test_abc"), "pk_test_abc");
}

/// A receiver that refuses the first two deliveries: the sandbox must keep trying.
#[tokio::test]
async fn webhooks_are_retried_until_acknowledged() {
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let receiver = poem::Route::new().at(
        "/hook",
        poem::post(poem::endpoint::make(move |_req| {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        })),
    );
    let acceptor =
        poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind("127.0.0.1:0"))
            .await
            .unwrap();
    let addr = *poem::listener::Acceptor::local_addr(&acceptor)[0]
        .as_socket_addr()
        .unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(receiver));

    let sandbox = sandbox(Some(format!("http://{addr}/hook")));
    {
        let mut s = sandbox.state.lock().unwrap();
        sandbox.emit(
            &mut s,
            None,
            "payment_intent.succeeded",
            &json!({"id": "pi_1"}),
        );
    }
    let first = || {
        sandbox
            .state
            .lock()
            .unwrap()
            .events
            .values()
            .next()
            .cloned()
            .unwrap()
    };
    for _ in 0..100 {
        if first().delivered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let event = first();
    assert!(event.delivered);
    assert_eq!(event.attempts, 3);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

/// An endpoint subscribed to some types (`enabled_events`) is sent only those; the others are
/// still events (listed, `pending_webhooks: 0`).
#[tokio::test]
async fn only_the_subscribed_types_are_delivered() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let receiver = poem::Route::new().at(
        "/hook",
        poem::post(poem::endpoint::make(move |req: poem::Request| {
            let log = log.clone();
            async move {
                let body: Value = req.into_body().into_json().await.unwrap();
                log.lock()
                    .unwrap()
                    .push(body["type"].as_str().unwrap().to_string());
                StatusCode::OK
            }
        })),
    );
    let acceptor =
        poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind("127.0.0.1:0"))
            .await
            .unwrap();
    let addr = *poem::listener::Acceptor::local_addr(&acceptor)[0]
        .as_socket_addr()
        .unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(receiver));
    let sandbox = StripeSandbox::new(StripeSandboxConfig {
        enabled_events: vec!["payment_intent.succeeded".into()],
        ..sandbox(Some(format!("http://{addr}/hook")))
            .config
            .as_ref()
            .clone()
    });
    {
        let mut s = sandbox.state.lock().unwrap();
        for kind in [
            "payment_intent.created",
            "charge.succeeded",
            "payment_intent.succeeded",
        ] {
            sandbox.emit(&mut s, None, kind, &json!({"id": "pi_1"}));
        }
    }
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*seen.lock().unwrap(), vec!["payment_intent.succeeded"]);
    let s = sandbox.state.lock().unwrap();
    assert_eq!(s.events.values().count(), 3);
    for e in s.events.values() {
        let subscribed = e.r#type == "payment_intent.succeeded";
        assert_eq!(
            (e.subscribed, e.delivered),
            (subscribed, subscribed),
            "{}",
            e.r#type
        );
        assert_eq!(
            s.event_bodies.get(&e.id).unwrap()["pending_webhooks"],
            u32::from(subscribed)
        );
    }
}

#[tokio::test]
async fn idempotency_keys_replay_refuse_other_requests_and_block_while_in_flight() {
    let sandbox = sandbox(None);
    let cli = TestClient::new(sandbox.routes());
    let (status, headers, first) = post(
        &cli,
        "/v1/payment_intents",
        Some("k1"),
        "amount=100&currency=usd",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers
            .get("request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    assert!(headers.get("idempotent-replayed").is_none());
    let (_, headers, replay) = post(
        &cli,
        "/v1/payment_intents",
        Some("k1"),
        "amount=100&currency=usd",
    )
    .await;
    assert_eq!(first, replay);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");

    let (status, _, other) = post(
        &cli,
        "/v1/payment_intents",
        Some("k1"),
        "amount=200&currency=usd",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(other["error"]["type"], "idempotency_error");
    assert!(
        other["error"]["message"]
            .as_str()
            .unwrap()
            .contains("same parameters")
    );
    let (status, _, elsewhere) =
        post(&cli, "/v1/refunds", Some("k1"), "amount=200&charge=ch_1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        elsewhere["error"]["message"]
            .as_str()
            .unwrap()
            .contains("same endpoint")
    );

    // While the first request with a key runs, a second one with that key is a 409.
    sandbox.set_faults(Faults {
        latency_ms: 300,
        ..Default::default()
    });
    let cli2 = TestClient::new(sandbox.routes());
    let slow = post(
        &cli2,
        "/v1/payment_intents",
        Some("k2"),
        "amount=100&currency=usd",
    );
    let quick = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        post(
            &cli,
            "/v1/payment_intents",
            Some("k2"),
            "amount=100&currency=usd",
        )
        .await
    };
    let ((s1, ..), (s2, h2, b2)) = tokio::join!(slow, quick);
    assert_eq!(s1, StatusCode::OK);
    assert_eq!(s2, StatusCode::CONFLICT);
    assert_eq!(b2["error"]["code"], "idempotency_key_in_use");
    assert_eq!(h2.get("stripe-should-retry").unwrap(), "true");
    assert!(
        b2["error"]["request_log_url"]
            .as_str()
            .unwrap()
            .contains("req_")
    );

    // No key at all, wrong bearer: 401.
    cli.post("/v1/payment_intents")
        .body("amount=1")
        .send()
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_500_that_began_is_stored_under_its_key_and_replayed() {
    let sandbox = sandbox(None);
    let cli = TestClient::new(sandbox.routes());
    sandbox.set_faults(Faults {
        error_next: 1,
        ..Default::default()
    });
    let (s1, h1, b1) = post(
        &cli,
        "/v1/payment_intents",
        Some("k"),
        "amount=100&currency=usd",
    )
    .await;
    assert_eq!(s1, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(h1.get("stripe-should-retry").unwrap(), "false");
    let (s2, h2, b2) = post(
        &cli,
        "/v1/payment_intents",
        Some("k"),
        "amount=100&currency=usd",
    )
    .await;
    assert_eq!(s2, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(b1["error"]["message"], b2["error"]["message"]);
    // A failure before anything ran is not stored: the retry runs.
    sandbox.set_faults(Faults {
        fail_next: 1,
        ..Default::default()
    });
    let (s3, h3, _) = post(
        &cli,
        "/v1/payment_intents",
        Some("k3"),
        "amount=100&currency=usd",
    )
    .await;
    assert_eq!(s3, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(h3.get("stripe-should-retry").unwrap(), "true");
    let (s4, ..) = post(
        &cli,
        "/v1/payment_intents",
        Some("k3"),
        "amount=100&currency=usd",
    )
    .await;
    assert_eq!(s4, StatusCode::OK);
}

#[tokio::test]
async fn cards_are_tokenised_with_the_publishable_key_only() {
    let sandbox = sandbox(None);
    let cli = TestClient::new(sandbox.routes());
    let card = "type=card&card[number]=4242424242424242&card[exp_month]=12&card[exp_year]=2034&card[cvc]=123";
    let (status, _, refused) = post(&cli, "/v1/payment_methods", None, card).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unsafe")
    );
    let resp = cli
        .post("/v1/payment_methods")
        .content_type("application/x-www-form-urlencoded")
        .body(format!("{card}&key=pk_test_x"))
        .send()
        .await;
    resp.assert_status_is_ok();
    assert_eq!(
        resp.0.headers().get("access-control-allow-origin").unwrap(),
        "*"
    );
    let pm: Value = resp.json().await.value().deserialize();
    assert_eq!(pm["card"]["last4"], "4242");
    // The publishable key opens nothing else.
    cli.post("/v1/payment_intents")
        .header("authorization", "Bearer pk_test_x")
        .body("amount=100&currency=usd")
        .send()
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    let bad = cli
        .post("/v1/payment_methods")
        .header("authorization", "Bearer pk_test_x")
        .body("type=card&card[number]=4242424242424241&card[exp_month]=12&card[exp_year]=2034")
        .send()
        .await;
    bad.assert_status(StatusCode::PAYMENT_REQUIRED);
    let bad: Value = bad.json().await.value().deserialize();
    assert_eq!(bad["error"]["code"], "incorrect_number");
}

#[tokio::test]
async fn a_payment_sends_stripes_events_in_order_and_refunds_add_up() {
    let sandbox = sandbox(None);
    let cli = TestClient::new(sandbox.routes());
    let (status, _, pi) = post(
        &cli,
        "/v1/payment_intents",
        Some("p"),
        "amount=1000&currency=usd&confirm=true&payment_method=pm_card_visa&expand[]=latest_charge",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pi}");
    assert_eq!(pi["status"], "succeeded");
    let charge = pi["latest_charge"]["id"].as_str().unwrap().to_string();
    let (_, _, r1) = post(
        &cli,
        "/v1/refunds",
        Some("r1"),
        &format!("charge={charge}&amount=400"),
    )
    .await;
    assert_eq!(r1["status"], "succeeded");
    let (status, _, over) = post(
        &cli,
        "/v1/refunds",
        Some("r2"),
        &format!("charge={charge}&amount=700"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(over["error"]["code"], "amount_too_large");
    let types: Vec<String> = sandbox
        .state
        .lock()
        .unwrap()
        .events
        .values()
        .map(|e| e.r#type.clone())
        .collect();
    assert_eq!(
        types,
        [
            "payment_intent.created",
            "charge.succeeded",
            "payment_intent.succeeded",
            "refund.created",
            "charge.refunded"
        ]
    );
    assert_eq!(sandbox.charges()[0].amount_refunded, 400);
}
