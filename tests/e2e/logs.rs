//! The logs as an operator reads them: in JSON mode every line of a request carries its request
//! id, and no line carries personal data or a secret, even for a whole payment.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::common::{TestDatabase, free_port, server_url};

const BIN: &str = env!("CARGO_BIN_EXE_evisa");

#[tokio::test]
async fn json_logs_carry_request_ids_and_no_personal_data_or_secret() {
    let name = format!("evisa_cli_{}", uuid::Uuid::now_v7().simple());
    let url = format!("{}/{name}", server_url());
    let _db = TestDatabase::adopt(name.clone(), url.clone());
    let (port, sandbox) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("{name}.log"));
    let mut child = Command::new(BIN)
        .arg("dev")
        .env("DATABASE_URL", &url)
        .env("EVISA_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("EVISA_SANDBOX_ADDR", format!("127.0.0.1:{sandbox}"))
        .env("EVISA_REDIS_PREFIX", format!("logs-{name}"))
        .env("EVISA_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "dev did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Seeded personal data and secrets, then a whole card payment.
    let (email, password) = ("zelda.logcheck@example.org", "my very secret passphrase 42");
    let (full_name, passport, birth) = ("Zelda Logcheck", "K7654321", "1984-02-29");
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut req = http.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req
    };
    assert_eq!(
        post(
            "/v1/auth/register",
            None,
            json!({"email": email, "password": password})
        )
        .send()
        .await
        .unwrap()
        .status(),
        201
    );
    let login: Value = post(
        "/v1/auth/login",
        None,
        json!({"email": email, "password": password}),
    )
    .header("x-request-id", "req-logcheck-login")
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
    let created: Value = post(
        "/v1/applications",
        Some(&token),
        json!({"full_name": full_name, "passport_number": passport, "date_of_birth": birth,
               "nationality": "FR", "visa_type": "tourist", "processing_speed": "standard",
               "intended_arrival_date": arrival}),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let application = created["id"].as_str().unwrap().to_string();
    post(
        &format!("/v1/applications/{application}/submit"),
        Some(&token),
        json!({}),
    )
    .send()
    .await
    .unwrap();
    let payment: Value = post(
        &format!("/v1/applications/{application}/payments"),
        Some(&token),
        json!({"provider": "stripe", "payment_method": "pm_card_visa"}),
    )
    .header("idempotency-key", uuid::Uuid::now_v7().to_string())
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let payment = payment["id"].as_str().unwrap().to_string();
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
        if p["status"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "payment did not succeed: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A wrong password too: failures are logged as well.
    post(
        "/v1/auth/login",
        None,
        json!({"email": email, "password": "wrong passphrase here"}),
    )
    .send()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = child.kill();
    let _ = child.wait();

    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 10, "too few log lines: {text}");
    let mut request_lines = 0;
    let mut seen_given_id = false;
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["span"]["name"] == "request" {
            request_lines += 1;
            let id = v["span"]["request_id"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "a request's line without its id: {line}");
            seen_given_id |= id == "req-logcheck-login";
        }
    }
    assert!(request_lines >= 8, "{request_lines} request lines");
    assert!(seen_given_id, "the client's X-Request-Id is the one logged");
    let secrets = [
        email,
        password,
        full_name,
        "Logcheck",
        passport,
        birth,
        &token,
        "whsec_evisa_dev_sandbox",
        "sk_test_evisa_sandbox",
        "ZGV2LW9ubHkta2V5",
    ];
    for line in &lines {
        for secret in secrets {
            assert!(
                !line.contains(secret),
                "a log line carries {secret:?}: {line}"
            );
        }
    }
}
