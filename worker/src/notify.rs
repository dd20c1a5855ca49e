//! The relay of signed notifications (see `evisa_core::notify`): claims due deliveries, renders
//! each event's object as the API shows it now, signs and POSTs it, and records the attempt.
//! A worker killed mid-delivery loses nothing: its claim lapses and another worker sends it.

use std::{sync::Arc, time::Instant};

use evisa_core::{
    config::Config,
    notify::{
        RenderObject,
        delivery::{self, Attempt, Claimed, Outcome},
    },
};
use sqlx::PgPool;

/// How many deliveries one worker sends at once.
const BATCH: i64 = 16;

/// Sends due notifications until `stop` says so; the batch in flight finishes first.
pub async fn run(
    config: Arc<Config>,
    db: PgPool,
    render: RenderObject,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        // An endpoint is one URL: a redirect elsewhere is not followed.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "evisa-pay-notifications/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .expect("the HTTP client builds");
    while !*stop.borrow() {
        let claimed = match delivery::claim(&db, &config.data_keys, BATCH).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "notification deliveries not claimed; retrying");
                Vec::new()
            }
        };
        let idle = claimed.is_empty();
        futures_util::future::join_all(
            claimed
                .iter()
                .map(|c| send(&http, &db, &config, &render, c)),
        )
        .await;
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(config.notify.poll) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

async fn send(
    http: &reqwest::Client,
    db: &PgPool,
    config: &Config,
    render: &RenderObject,
    claimed: &Claimed,
) {
    let object = match render(claimed.object_kind, claimed.object_id).await {
        Ok(Some(o)) => o,
        Ok(None) => serde_json::json!({"id": claimed.object_id, "deleted": true}),
        Err(e) => {
            // Not an attempt: the claim lapses and the delivery is tried again.
            tracing::warn!(delivery = %claimed.id, error = %e, "notification not rendered");
            return;
        }
    };
    let body = delivery::body(claimed, object);
    let timestamp = chrono::Utc::now().timestamp();
    let started = Instant::now();
    let answer = http
        .post(&claimed.url)
        .header("content-type", "application/json")
        .header(
            "evisa-signature",
            delivery::signature(&claimed.secrets, timestamp, &body),
        )
        .body(body)
        .send()
        .await;
    let attempt = match answer {
        Ok(resp) => Attempt {
            http_status: Some(resp.status().as_u16()),
            latency: started.elapsed(),
            error: None,
        },
        Err(e) => Attempt {
            http_status: None,
            latency: started.elapsed(),
            error: Some(if e.is_timeout() {
                "timed out after 10 s".to_string()
            } else if e.is_connect() {
                "could not connect".to_string()
            } else {
                "the request failed".to_string()
            }),
        },
    };
    match delivery::finish(db, claimed, &attempt, &config.notify.schedule).await {
        Ok(outcome) => {
            let label = match outcome {
                Outcome::Delivered => "delivered",
                Outcome::RetryIn(_) => "failed_attempt",
                Outcome::GaveUp => "gave_up",
            };
            evisa_core::metrics::notification(label);
            tracing::info!(delivery = %claimed.id, event = %claimed.event_id,
                kind = claimed.event_type.as_str(), status = ?attempt.http_status, outcome = label,
                "notification attempt");
        }
        Err(e) => {
            tracing::warn!(delivery = %claimed.id, error = %e, "notification attempt not recorded")
        }
    }
}
