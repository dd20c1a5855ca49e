//! Event streams learn of payment changes committed by other processes (through Redis), and of
//! changes whose announcement was lost (by reading again).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::{TestApp, spawn_app};

/// Reads a payment's event stream until it ends: each status with when it arrived.
async fn follow(app: &TestApp, token: &str, payment: &str) -> Vec<(String, Instant)> {
    let resp = app
        .http
        .get(app.url(&format!("/v1/payments/{payment}/events")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let (mut seen, mut pending) = (Vec::new(), String::new());
    let read = async {
        while let Some(chunk) = body.next().await {
            pending.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                if let Some(data) = line.trim_end().strip_prefix("data: ") {
                    let status = serde_json::from_str::<Value>(data).unwrap()["status"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    seen.push((status, Instant::now()));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the stream ends after the final status");
    seen
}

fn statuses(seen: &[(String, Instant)]) -> Vec<&str> {
    seen.iter().map(|(s, _)| s.as_str()).collect()
}

/// A worker in another process (`evisa work`) charges the card, with the sandbox's webhooks
/// off so that only that process changes the payment: the stream in this process shows each of
/// its changes as it happens (Redis pub/sub), not at the next re-read.
#[tokio::test]
async fn a_stream_hears_at_once_what_another_process_committed() {
    let app = spawn_app().await;
    // Each charge takes 1.5 s at the gateway, so `processing` lasts that long.
    app.sandbox_post(
        "/sandbox/faults",
        &json!({"drop_webhooks": true, "latency_ms": 1500}),
    )
    .await;
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

    let stream = follow(&app, &token, &payment);
    let worker = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::process::Command::new(env!("CARGO_BIN_EXE_evisa"))
            .arg("work")
            .envs(app.worker_env())
            .env("EVISA_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (seen, mut worker) = tokio::join!(stream, worker);
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(statuses(&seen), ["created", "processing", "succeeded"]);
    // Told of both changes as they were committed: `processing`, then `succeeded` once the
    // gateway answered 1.5 s later — well within one re-read interval (5 s).
    let took = seen[2].1 - seen[1].1;
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(4500),
        "processing -> succeeded took {took:?} on the stream"
    );
    assert_eq!(app.charges_for(&payment), 1);
}

/// A change committed without its announcement reaching anyone (its process stopped between
/// the commit and the publish): the stream reads the payment again and shows it anyway.
#[tokio::test]
async fn a_stream_shows_a_change_whose_announcement_was_lost() {
    let app = spawn_app().await;
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
    let stream = follow(&app, &token, &payment);
    let unannounced = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // No worker runs: this is the only change, and nothing announces it.
        sqlx::query(
            "UPDATE payments SET status = 'failed', failure_code = 'card_declined',
                    failure_message = 'Your card was declined.' WHERE id = $1::uuid",
        )
        .bind(&payment)
        .execute(&app.db)
        .await
        .unwrap();
        Instant::now()
    };
    let (seen, changed) = tokio::join!(stream, unannounced);
    assert_eq!(statuses(&seen), ["created", "failed"]);
    let after = seen[1].1 - changed;
    assert!(
        after < Duration::from_secs(6),
        "the stream showed the change {after:?} after it was committed"
    );
}
