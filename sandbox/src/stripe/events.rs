//! Webhook events: built as Stripe builds them, queued, and delivered signed, with retries and
//! the delivery faults tests ask for (dropped, duplicated, delayed, reordered).

use std::time::Duration;

use serde_json::{Value, json};

use super::{Call, EventRecord, StripeSandbox, now, signature_header, store::State};

/// The API version the sandbox's events say they were rendered with.
pub const API_VERSION: &str = "2026-09-30.endive";

impl StripeSandbox {
    /// Queues the event `kind` about `object`; `cause` is the API request behind it, if any.
    pub(super) fn emit(&self, state: &mut State, cause: Option<&Call>, kind: &str, object: &Value) {
        let id = state.next_id("evt");
        let subscribed = self.config.webhook_url.is_some() && self.config.delivers(kind);
        // Events of one payment travel together when reordered: its intent, or the object.
        let group = object["payment_intent"]
            .as_str()
            .or(object["id"].as_str())
            .unwrap_or_default()
            .to_string();
        let event = json!({
            "id": id, "object": "event", "api_version": API_VERSION, "created": now(),
            "data": {"object": object}, "livemode": false,
            "pending_webhooks": u32::from(subscribed),
            "request": {
                "id": cause.map(|c| c.request_id.clone()),
                "idempotency_key": cause.and_then(|c| c.key.clone()),
            },
            "type": kind,
        });
        state.events.insert(
            id.clone(),
            EventRecord {
                id: id.clone(),
                r#type: kind.to_string(),
                payment_intent: group.clone(),
                subscribed,
                delivered: false,
                attempts: 0,
            },
        );
        state.event_bodies.insert(id.clone(), event.clone());
        let faults = state.faults.clone();
        if faults.drop_webhooks || !subscribed {
            return;
        }
        if faults.reorder_webhooks {
            let held = state.held.entry(group.clone()).or_default();
            held.push((id, event));
            if held.len() == 1 {
                // Release this payment's held events shortly, newest first.
                let sandbox = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let events = sandbox
                        .state
                        .lock()
                        .expect("sandbox state")
                        .held
                        .remove(&group)
                        .unwrap_or_default();
                    for (id, event) in events.into_iter().rev() {
                        let _ = sandbox.deliveries.send((id, event, 0));
                    }
                });
            }
            return;
        }
        let copies = if faults.duplicate_webhooks { 2 } else { 1 };
        for _ in 0..copies {
            let _ = self.deliveries.send((id.clone(), event.clone(), 0));
        }
    }

    /// Delivers webhooks, signed like Stripe's, retrying with doubling delays until a 2xx.
    pub(super) async fn deliver(
        self,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, Value, u32)>,
    ) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client can be built");
        while let Some((id, event, attempt)) = rx.recv().await {
            let sandbox = self.clone();
            let http = http.clone();
            tokio::spawn(async move {
                let delay = sandbox
                    .state
                    .lock()
                    .expect("sandbox state")
                    .faults
                    .webhook_delay_ms;
                let delay = Duration::from_millis(delay) + sandbox.config.webhook_latency;
                if attempt == 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let Some(url) = sandbox.config.webhook_url.clone() else {
                    return;
                };
                let body = event.to_string();
                let header = signature_header(&sandbox.config.webhook_secret, now(), &body);
                let ok = http
                    .post(&url)
                    .header("content-type", "application/json; charset=utf-8")
                    .header("stripe-signature", header)
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                {
                    let mut s = sandbox.state.lock().expect("sandbox state");
                    if let Some(rec) = s.events.get_mut(&id) {
                        rec.attempts += 1;
                        rec.delivered |= ok;
                    }
                }
                if !ok && attempt + 1 < sandbox.config.webhook_max_attempts {
                    let wait = sandbox.config.webhook_retry_base * 2u32.saturating_pow(attempt);
                    tokio::time::sleep(wait).await;
                    let _ = sandbox.deliveries.send((id, event, attempt + 1));
                }
            });
        }
    }
}
