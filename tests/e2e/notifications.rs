//! Signed notifications to a portal's back office, received by a real HTTP endpoint: retried
//! until a 2xx, every attempt signed (checked here with plain HMAC-SHA256, not our code), never
//! lost to a killed worker, and verifiable with either secret while a rotation overlaps.

use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use evisa_core::users::Role;
use poem::{EndpointExt, Request, Response, handler, http::StatusCode, web::Data};
use serde_json::{Value, json};

use crate::common::{TestApp, spawn_app};

/// What the portal's endpoint saw, and how it answers.
#[derive(Default)]
struct Receiver {
    /// (Evisa-Signature header, raw body) of every request, in order.
    seen: Vec<(String, Vec<u8>)>,
    /// Answers for the next requests, in order; 200 once spent.
    script: Vec<u16>,
    /// Hold each request this long before answering.
    hold: Duration,
}

type Shared = Arc<Mutex<Receiver>>;

#[handler]
async fn receive(req: &Request, body: poem::Body, state: Data<&Shared>) -> Response {
    let header = req
        .headers()
        .get("evisa-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = body.into_vec().await.unwrap_or_default();
    let (status, hold) = {
        let mut r = state.lock().unwrap();
        r.seen.push((header, bytes));
        let status = if r.script.is_empty() {
            200
        } else {
            r.script.remove(0)
        };
        (status, r.hold)
    };
    tokio::time::sleep(hold).await;
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .body("")
}

/// Starts the endpoint on loopback; returns its URL.
async fn endpoint(shared: Shared) -> String {
    let addr = format!("127.0.0.1:{}", crate::common::free_port());
    let app = poem::Route::new()
        .at("/hooks", poem::post(receive))
        .data(shared);
    tokio::spawn(poem::Server::new(poem::listener::TcpListener::bind(addr.clone())).run(app));
    tokio::time::sleep(Duration::from_millis(100)).await;
    format!("http://{addr}/hooks")
}

/// Whether `header` carries a `v1` that is HMAC-SHA256(secret, "<t>.<body>").
fn signed_with(header: &str, body: &[u8], secret: &str) -> bool {
    let t = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .expect("a timestamp");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    header
        .split(',')
        .filter_map(|p| p.strip_prefix("v1="))
        .any(|hex| {
            let tag: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect();
            ring::hmac::verify(&key, &message, &tag).is_ok()
        })
}

async fn register(app: &TestApp, admin: &str, url: &str, events: Value) -> Value {
    let mut body = json!({"url": url});
    if !events.is_null() {
        body["events"] = events;
    }
    let r = app
        .post("/v1/admin/notification-endpoints", Some(admin), &body)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

/// Pays a new application by card; returns (application id, applicant token).
async fn paid_application(app: &TestApp) -> (String, String) {
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_visa",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 20)
        .await;
    (application, token)
}

async fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_endpoint_failing_three_times_gets_the_event_on_the_fourth_each_attempt_signed() {
    let app = spawn_app().await;
    app.start_worker();
    let admin = app.staff(Role::Admin).await;
    let shared: Shared = Arc::new(Mutex::new(Receiver {
        script: vec![500, 500, 500],
        ..Receiver::default()
    }));
    let url = endpoint(shared.clone()).await;
    let made = register(&app, &admin, &url, json!(["application.paid"])).await;
    let secret = made["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("evsec_"), "{made}");
    let endpoint_id = made["id"].as_str().unwrap().to_string();

    let (application, _) = paid_application(&app).await;
    wait_until("four attempts", 30, || {
        shared.lock().unwrap().seen.len() >= 4
    })
    .await;
    // Once the fourth answer is recorded, the delivery is done: no fifth attempt may follow.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app
        .get(
            "/v1/admin/notification-deliveries?status=delivered",
            Some(&admin),
        )
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the fourth attempt was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let seen = std::mem::take(&mut shared.lock().unwrap().seen);
    assert_eq!(seen.len(), 4, "one attempt too many after the 200");
    let shown = app
        .get(
            &format!("/v1/admin/applications/{application}"),
            Some(&admin),
        )
        .await;
    for (header, body) in &seen {
        assert!(
            signed_with(header, body, &secret),
            "bad signature: {header}"
        );
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["type"], "application.paid");
        assert_eq!(event["data"]["object"]["id"], application.as_str());
        assert_eq!(event["data"]["object"]["status"], "paid");
        assert!(event["created"].is_i64());
        // The object is the resource as the API shows it.
        assert_eq!(event["data"]["object"], shown.body);
    }
    let ids: Vec<Value> = seen
        .iter()
        .map(|(_, b)| serde_json::from_slice::<Value>(b).unwrap()["id"].clone())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one event, four attempts"
    );

    // Every attempt is on record, and the list never shows secrets.
    let d = app
        .get(
            &format!("/v1/admin/notification-deliveries?endpoint={endpoint_id}"),
            Some(&admin),
        )
        .await;
    assert_eq!(d.status, 200, "{}", d.body);
    let items = d.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", d.body);
    assert_eq!(items[0]["status"], "delivered");
    let statuses: Vec<i64> = items[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["http_status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
    assert!(items[0]["attempts"][0]["latency_ms"].is_i64());
    let list = app
        .get("/v1/admin/notification-endpoints", Some(&admin))
        .await;
    assert_eq!(list.body["items"][0]["url"], url.as_str());
    assert!(!list.body.to_string().contains(&secret));

    // Only the subscribed type: a declined payment's `payment.failed` does not go here.
    let (token, other) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &other,
            "pm_card_chargeDeclined",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    app.wait_for_payment(&token, r.body["id"].as_str().unwrap(), "failed", 20)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(shared.lock().unwrap().seen.is_empty());

    // `evisa notify redeliver` sends it again.
    let event_id = ids[0].as_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_evisa"))
        .args(["notify", "redeliver", event_id])
        .env("DATABASE_URL", app.database_url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the redelivery", 10, || {
        shared.lock().unwrap().seen.len() == 1
    })
    .await;
}

#[tokio::test]
async fn endpoints_are_https_unless_allowed_and_deleted_ones_are_gone() {
    let app = spawn_app().await;
    let admin = app.staff(Role::Admin).await;
    for url in [
        "http://portal.example.gov/hooks",
        "ftp://portal.example.gov/",
        "nonsense",
    ] {
        let r = app
            .post(
                "/v1/admin/notification-endpoints",
                Some(&admin),
                &json!({"url": url}),
            )
            .await;
        assert_eq!(r.status, 422, "{url}: {}", r.body);
        assert_eq!(r.body["errors"][0]["field"], "url");
    }
    let officer = app.staff(Role::Officer).await;
    let r = app
        .post(
            "/v1/admin/notification-endpoints",
            Some(&officer),
            &json!({"url": "https://portal.example.gov/hooks"}),
        )
        .await;
    assert_eq!(r.status, 403);
    let made = register(
        &app,
        &admin,
        "https://portal.example.gov/hooks",
        json!(null),
    )
    .await;
    assert_eq!(made["events"], json!([]));
    let id = made["id"].as_str().unwrap();
    let url = format!("/v1/admin/notification-endpoints/{id}");
    let r = app
        .send(app.http.delete(app.url(&url)).bearer_auth(&admin))
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .send(app.http.delete(app.url(&url)).bearer_auth(&admin))
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .post(&format!("{url}/rotate-secret"), Some(&admin), &json!({}))
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_killed_worker_loses_no_notification() {
    let app = spawn_app().await;
    let admin = app.staff(Role::Admin).await;
    // The endpoint holds the first request until long after the worker is killed.
    let shared: Shared = Arc::new(Mutex::new(Receiver {
        hold: Duration::from_secs(8),
        ..Receiver::default()
    }));
    let url = endpoint(shared.clone()).await;
    let secret = register(&app, &admin, &url, json!(["application.paid"])).await["secret"]
        .as_str()
        .unwrap()
        .to_string();

    let mut worker = Command::new(env!("CARGO_BIN_EXE_evisa"))
        .arg("work")
        .env_clear()
        .envs(app.worker_env())
        .env("EVISA_METRICS_ADDR", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (application, _) = paid_application(&app).await;
    wait_until("the first attempt", 20, || {
        !shared.lock().unwrap().seen.is_empty()
    })
    .await;
    // Mid-delivery: the request is open, its outcome not recorded.
    worker.kill().unwrap();
    worker.wait().unwrap();
    shared.lock().unwrap().hold = Duration::ZERO;

    app.start_worker();
    wait_until("delivery by another worker", 40, || {
        shared.lock().unwrap().seen.len() >= 2
    })
    .await;
    let (header, body) = shared.lock().unwrap().seen[1].clone();
    assert!(signed_with(&header, &body, &secret));
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["data"]["object"]["id"], application.as_str());
    // The attempt is recorded once the endpoint's answer is back at the worker.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = app
            .get(
                "/v1/admin/notification-deliveries?status=delivered",
                Some(&admin),
            )
            .await;
        if d.body["items"].as_array().unwrap().len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recorded as delivered: {}",
            d.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn during_a_rotation_both_secrets_verify() {
    let app = spawn_app().await;
    app.start_worker();
    let admin = app.staff(Role::Admin).await;
    let shared: Shared = Arc::new(Mutex::new(Receiver::default()));
    let url = endpoint(shared.clone()).await;
    let made = register(&app, &admin, &url, json!(["application.paid"])).await;
    let old = made["secret"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap();
    let rotated = app
        .post(
            &format!("/v1/admin/notification-endpoints/{id}/rotate-secret"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new = rotated.body["secret"].as_str().unwrap().to_string();
    assert_ne!(old, new);

    paid_application(&app).await;
    wait_until("the notification", 20, || {
        !shared.lock().unwrap().seen.is_empty()
    })
    .await;
    let (header, body) = shared.lock().unwrap().seen[0].clone();
    assert_eq!(header.matches("v1=").count(), 2, "{header}");
    assert!(signed_with(&header, &body, &old), "old secret: {header}");
    assert!(signed_with(&header, &body, &new), "new secret: {header}");
    assert!(!signed_with(&header, &body, "evsec_not_ours"));
}
