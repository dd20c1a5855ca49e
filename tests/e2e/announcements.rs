//! Event streams learn of payment changes committed by other processes (through Redis), and of
//! changes whose announcement was lost (by reading again).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::spawn_app;

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
    let (token, payment) = app.card_payment().await;

    let stream = app.follow(&token, &payment);
    let worker = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.worker_process()
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
    let (token, payment) = app.card_payment().await;
    let stream = app.follow(&token, &payment);
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
