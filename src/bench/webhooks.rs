//! `evisa bench webhooks`: signed Stripe webhooks against a running service, printing how many
//! are verified and ingested per second. Each is a `payment_intent.succeeded` event, with a fresh
//! event id, about a payment that already succeeded (taken from the service's database): what
//! Stripe sends after every card payment, and what the service must store durably and answer
//! quickly.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use serde_json::json;

use super::probe::Probe;

pub struct WebhookBench {
    pub base: String,
    pub secret: String,
    pub seconds: u64,
    pub concurrency: usize,
    pub probe: Probe,
}

/// A succeeded payment's PaymentIntent, as the webhook describes it.
struct Intent {
    id: String,
    payment_id: String,
    amount: i64,
    currency: String,
}

pub async fn run(b: WebhookBench) -> anyhow::Result<()> {
    let rows: Vec<(uuid::Uuid, String, i64, String)> = sqlx::query_as(
        "SELECT id, gateway_reference, amount_minor, currency FROM payments
          WHERE provider = 'stripe' AND status = 'succeeded' AND gateway_reference IS NOT NULL
          LIMIT 5000",
    )
    .fetch_all(b.probe.pool())
    .await?;
    if rows.is_empty() {
        bail!("no succeeded card payment in the database: run `evisa bench payments` first");
    }
    let intents: Vec<Intent> = rows
        .into_iter()
        .map(|(id, pi, amount, currency)| Intent {
            id: pi,
            payment_id: id.to_string(),
            amount,
            currency: currency.to_lowercase(),
        })
        .collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(b.concurrency * 2)
        .build()?;
    let url = format!("{}/v1/webhooks/stripe", b.base.trim_end_matches('/'));
    let before = b.probe.read().await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(b.seconds);
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let senders = (0..b.concurrency).map(|_| {
        let (http, url, intents, counter, secret) = (&http, &url, &intents, &counter, &b.secret);
        async move {
            let (mut ok, mut refused) = (0usize, 0usize);
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let intent = &intents[n % intents.len()];
                let event = json!({
                    "id": format!("evt_bench_{}", uuid::Uuid::now_v7().simple()),
                    "object": "event",
                    "api_version": "2025-03-31.basil",
                    "created": chrono::Utc::now().timestamp(),
                    "type": "payment_intent.succeeded",
                    "livemode": false,
                    "pending_webhooks": 1,
                    "request": {"id": null, "idempotency_key": null},
                    "data": {"object": {
                        "id": intent.id,
                        "object": "payment_intent",
                        "amount": intent.amount,
                        "amount_received": intent.amount,
                        "currency": intent.currency,
                        "status": "succeeded",
                        "metadata": {"payment_id": intent.payment_id},
                    }},
                })
                .to_string();
                let header = evisa_sandbox::stripe::signature_header(
                    secret,
                    chrono::Utc::now().timestamp(),
                    &event,
                );
                let resp = http
                    .post(url.as_str())
                    .header("stripe-signature", header)
                    .header("content-type", "application/json")
                    .body(event)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => ok += 1,
                    _ => refused += 1,
                }
            }
            (ok, refused)
        }
    });
    let results = futures_util::stream::iter(senders)
        .buffer_unordered(b.concurrency)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let ok: usize = results.iter().map(|r| r.0).sum();
    let refused: usize = results.iter().map(|r| r.1).sum();
    // Anything stored for a worker to apply is part of the cost.
    for _ in 0..100 {
        if b.probe.unprocessed_callbacks().await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = b.probe.read().await?;
    println!(
        "webhooks: {ok} verified and stored, {refused} not, in {elapsed:.1} s = {:.0} webhooks/s ({} senders)",
        ok as f64 / elapsed,
        b.concurrency
    );
    before.cost_until(&after, ok).print("per webhook");
    if refused > 0 {
        bail!("{refused} webhooks were not acknowledged");
    }
    Ok(())
}
