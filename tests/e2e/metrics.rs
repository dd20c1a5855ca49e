//! `/metrics` as Prometheus reads it: `evisa dev` serves it on EVISA_METRICS_ADDR (not on the
//! API port), a real Prometheus parser (Python's `prometheus_client`) reads it, and the counters
//! move with a card payment, a decline, a forged webhook and a rate-limited registration.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::common::{TestDatabase, free_port, server_url};

const BIN: &str = env!("CARGO_BIN_EXE_evisa");

/// One parsed sample.
struct Sample {
    name: String,
    labels: serde_json::Map<String, Value>,
    value: f64,
}

/// Parses exposition text with prometheus_client's parser (it fails on malformed text).
fn parse(text: &str) -> Vec<Sample> {
    let python = std::env::var("EVISA_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/prom_parse.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Sample {
                name: v["name"].as_str().unwrap().to_string(),
                labels: v["labels"].as_object().unwrap().clone(),
                value: v["value"].as_f64().unwrap(),
            }
        })
        .collect()
}

/// The samples named `name` whose labels include `labels`.
fn matching<'a>(
    samples: &'a [Sample],
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a Sample> {
    samples.iter().filter(move |s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).and_then(Value::as_str) == Some(*v))
    })
}

/// The sum of the matching samples' values (0 when there are none).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(samples, name, labels).map(|s| s.value).sum()
}

fn present(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> bool {
    matching(samples, name, labels).next().is_some()
}

#[tokio::test]
async fn metrics_are_served_apart_from_the_api_and_move_with_a_payment() {
    let name = format!("evisa_cli_{}", uuid::Uuid::now_v7().simple());
    let url = format!("{}/{name}", server_url());
    let _db = TestDatabase::adopt(name.clone(), url.clone());
    let (port, sandbox, metrics) = (free_port(), free_port(), free_port());
    let mut child = Command::new(BIN)
        .arg("dev")
        .env("DATABASE_URL", &url)
        .env("EVISA_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("EVISA_SANDBOX_ADDR", format!("127.0.0.1:{sandbox}"))
        .env("EVISA_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("EVISA_REDIS_PREFIX", format!("metrics-{name}"))
        // One registration per address per hour: the second is refused and counted.
        .env("EVISA_REGISTRATIONS_PER_HOUR", "1")
        .env("EVISA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let scrape_url = format!("http://127.0.0.1:{metrics}/metrics");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "dev did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let scrape = || async {
        let resp = http.get(&scrape_url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        parse(&resp.text().await.unwrap())
    };
    let before = scrape().await;

    // Not on the public port, and not in the OpenAPI document.
    assert_eq!(
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let spec: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"].get("/metrics").is_none());

    let post = |path: String, token: Option<String>, body: Value| {
        let mut req = http.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req
    };
    let creds = json!({"email": "metrics.payer@example.org", "password": "a long payer password"});
    let r = post("/v1/auth/register".into(), None, creds.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let again = json!({"email": "metrics.other@example.org", "password": "a long payer password"});
    let r = post("/v1/auth/register".into(), None, again)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let login: Value = post("/v1/auth/login".into(), None, creds)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_string();
    let arrival = (chrono::Utc::now() + chrono::Duration::days(30))
        .date_naive()
        .to_string();

    // One card payment that succeeds and one that is declined.
    let mut payments = Vec::new();
    for card in ["pm_card_visa", "pm_card_chargeDeclined"] {
        let created: Value = post(
            "/v1/applications".into(),
            Some(token.clone()),
            json!({"full_name": "Mia Metric", "passport_number": "M1234567",
                   "date_of_birth": "1991-03-04", "nationality": "DE", "visa_type": "tourist",
                   "processing_speed": "standard", "intended_arrival_date": arrival}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let application = created["id"].as_str().unwrap().to_string();
        let r = post(
            format!("/v1/applications/{application}/submit"),
            Some(token.clone()),
            json!({}),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let payment: Value = post(
            format!("/v1/applications/{application}/payments"),
            Some(token.clone()),
            json!({"provider": "stripe", "payment_method": card}),
        )
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        payments.push(payment["id"].as_str().unwrap().to_string());
    }
    for (payment, want) in payments.iter().zip(["succeeded", "failed"]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let p: Value = http
                .get(format!("{base}/v1/payments/{payment}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if p["status"] == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "payment did not become {want}: {p}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A webhook with a forged signature.
    let r = http
        .post(format!("{base}/v1/webhooks/stripe"))
        .header("stripe-signature", "t=1,v1=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The sandbox's webhooks for both payments arrive asynchronously (and are applied as they
    // are stored): wait until counted, and both charges have run.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let s = scrape().await;
        if value(
            &s,
            "evisa_callbacks_received_total",
            &[("source", "stripe")],
        ) >= 3.0
            && value(
                &s,
                "evisa_job_run_duration_seconds_count",
                &[("queue", "evisa.charge_card")],
            ) >= 2.0
        {
            break s;
        }
        assert!(Instant::now() < deadline, "webhooks were not counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };

    let pay_route = [
        ("route", "/v1/applications/{id}/payments"),
        ("method", "POST"),
    ];
    assert_eq!(
        moved(
            "evisa_http_requests_total",
            &[pay_route[0], pay_route[1], ("status", "202")]
        ),
        2.0
    );
    assert_eq!(
        moved("evisa_http_request_duration_seconds_count", &pay_route),
        2.0
    );
    assert!(present(
        &after,
        "evisa_http_request_duration_seconds_bucket",
        &[pay_route[0], ("le", "+Inf")]
    ));
    // Ids never become labels.
    assert!(after.iter().all(|s| {
        s.labels
            .get("route")
            .and_then(Value::as_str)
            .is_none_or(|r| !payments.iter().any(|p| r.contains(p.as_str())))
    }));

    assert_eq!(
        moved("evisa_payments_created_total", &[("provider", "stripe")]),
        2.0
    );
    for status in ["succeeded", "failed"] {
        let labels = [("provider", "stripe"), ("status", status)];
        assert_eq!(
            moved("evisa_payments_finished_total", &labels),
            1.0,
            "{status}"
        );
        assert_eq!(moved("evisa_payment_duration_seconds_count", &labels), 1.0);
    }
    assert_eq!(
        moved(
            "evisa_gateway_calls_total",
            &[
                ("gateway", "stripe"),
                ("operation", "charge"),
                ("outcome", "ok")
            ]
        ),
        2.0
    );
    assert!(
        moved(
            "evisa_gateway_call_duration_seconds_count",
            &[("gateway", "stripe"), ("operation", "charge")]
        ) == 2.0
    );
    assert_eq!(
        moved(
            "evisa_job_run_duration_seconds_count",
            &[("queue", "evisa.charge_card"), ("outcome", "ok")]
        ),
        2.0
    );
    assert!(present(
        &after,
        "evisa_job_queue_depth",
        &[("queue", "evisa.charge_card")]
    ));
    assert_eq!(
        value(&after, "evisa_jobs_dead", &[("queue", "evisa.charge_card")]),
        0.0
    );
    assert!(moved("evisa_callbacks_received_total", &[("source", "stripe")]) >= 3.0);
    assert_eq!(
        moved(
            "evisa_callbacks_refused_total",
            &[("source", "stripe"), ("reason", "signature")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "evisa_rate_limited_total",
            &[("limit", "registrations_per_ip")]
        ),
        1.0
    );
    assert!(present(
        &after,
        "evisa_db_pool_connections",
        &[("state", "in_use")]
    ));

    let _ = child.kill();
    let _ = child.wait();
}

/// `serve` and `work` serve `/metrics` too, each on its own EVISA_METRICS_ADDR.
#[tokio::test]
async fn serve_and_work_each_serve_metrics() {
    let app = crate::common::spawn_app().await;
    let (api_port, api_metrics, work_metrics) = (free_port(), free_port(), free_port());
    let start = |command: &str, metrics: u16| {
        Command::new(BIN)
            .arg(command)
            .env_clear()
            .envs(app.worker_env())
            .env("EVISA_HTTP_ADDR", format!("127.0.0.1:{api_port}"))
            .env("EVISA_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
            .env("EVISA_SHUTDOWN_DRAIN_SECONDS", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut serve = start("serve", api_metrics);
    let mut work = start("work", work_metrics);
    let http = reqwest::Client::new();
    let scrape = |port: u16| {
        let http = http.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(r) = http
                    .get(format!("http://127.0.0.1:{port}/metrics"))
                    .send()
                    .await
                    && r.status() == 200
                {
                    let text = r.text().await.unwrap();
                    if !text.is_empty() {
                        return parse(&text);
                    }
                }
                assert!(Instant::now() < deadline, "no metrics on port {port}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http.get(format!("http://127.0.0.1:{api_port}/readyz")).send().await, Ok(r) if r.status() == 200)
    {
        assert!(Instant::now() < deadline, "serve did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api = scrape(api_metrics).await;
    assert!(
        value(
            &api,
            "evisa_http_requests_total",
            &[("route", "/readyz"), ("status", "200")]
        ) >= 1.0
    );
    assert!(present(
        &api,
        "evisa_db_pool_connections",
        &[("state", "in_use")]
    ));
    let worker = scrape(work_metrics).await;
    assert!(present(
        &worker,
        "evisa_job_queue_depth",
        &[("queue", "evisa.charge_card")]
    ));
    assert!(present(
        &worker,
        "evisa_jobs_dead",
        &[("queue", "evisa.refund")]
    ));
    for child in [&mut serve, &mut work] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
