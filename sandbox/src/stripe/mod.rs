//! A Stripe test-mode gateway: PaymentIntents (create, confirm, retrieve, cancel), Charges,
//! Refunds, PaymentMethods from Stripe's test cards (tokenised with the publishable key, as
//! Stripe.js does), a 3-D Secure page, disputes, Stripe's parameter validation, errors and
//! idempotency rules, signed webhooks for every event Stripe would send, and fault injection.
//!
//! Control endpoints (not Stripe's) are under `/sandbox`: the ledgers (`charges`, `refunds`,
//! `events`, `disputes`), `faults`, the 3-D Secure page, and what happens outside the API at
//! Stripe (a dashboard refund, a dispute opened or closed, a pending refund settling).

mod api;
mod calls;
mod cards;
mod control;
mod events;
mod objects;
mod payments;
mod store;
mod wire;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use poem::{EndpointExt, Route, get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use calls::Call;
use store::State;

/// How the sandbox is set up.
#[derive(Clone, Debug)]
pub struct StripeSandboxConfig {
    /// The secret key servers present as `Authorization: Bearer ...`.
    pub secret_key: String,
    /// Where webhooks go (the service's `/v1/webhooks/stripe`), if anywhere.
    pub webhook_url: Option<String>,
    /// The `whsec_...` secret webhooks are signed with.
    pub webhook_secret: String,
    /// The sandbox's own base URL, for links to the 3-D Secure page.
    pub public_url: String,
    /// First webhook retry delay; doubles on each attempt (Stripe waits hours; tests want ms).
    pub webhook_retry_base: Duration,
    pub webhook_max_attempts: u32,
    /// How long after an event its first delivery leaves. Stripe sends webhooks asynchronously,
    /// so the answer to the request that caused an event usually arrives before the event does;
    /// with no latency the sandbox would deliver most webhooks before its own answers.
    pub webhook_latency: Duration,
    /// The event types the webhook endpoint subscribes to, as a Stripe webhook endpoint's
    /// `enabled_events`: `["*"]` for every type. Events of other types are still created (and
    /// listed by `GET /v1/events`), only not delivered.
    pub enabled_events: Vec<String>,
}

impl StripeSandboxConfig {
    /// Whether the webhook endpoint subscribes to events of type `kind`.
    pub fn delivers(&self, kind: &str) -> bool {
        self.enabled_events.iter().any(|e| e == "*" || e == kind)
    }
}

/// The publishable key that goes with a secret key (`sk_test_X` → `pk_test_X`): what a browser
/// uses to tokenise cards.
pub fn publishable_key_for(secret_key: &str) -> String {
    match secret_key.split_once('_') {
        Some(("sk", rest)) => format!("pk_{rest}"),
        _ => format!("pk_{secret_key}"),
    }
}

/// Faults to inject, set with `POST /sandbox/faults` (which replaces them all). Counters count
/// down per request.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API response (while the request's idempotency key is in flight).
    pub latency_ms: u64,
    /// The next N API requests fail with 500 before anything runs (nothing is stored under
    /// their idempotency keys, so a retry runs them).
    pub fail_next: u32,
    /// The next N API requests fail with 429 before anything runs.
    pub rate_limit_next: u32,
    /// The next N requests fail with 500 once they have started: the 500 is stored under the
    /// idempotency key and replayed, as Stripe does.
    pub error_next: u32,
    /// The next N charging requests charge, then fail with a 500 that is stored under the
    /// idempotency key: only a search by metadata (or a webhook) tells that they charged.
    pub charge_then_error_next: u32,
    /// The next N charging requests charge, then answer 500 as if the response were lost.
    pub lose_next_responses: u32,
    /// The next N successful confirmations answer `processing`; the charge succeeds shortly
    /// after, told by webhook.
    pub processing_next: u32,
    /// Refunds answer `pending` and wait for `POST /sandbox/refunds/{id}/settle`.
    pub refunds_pending: bool,
    /// Webhooks are generated but never delivered.
    pub drop_webhooks: bool,
    /// Every webhook is delivered twice.
    pub duplicate_webhooks: bool,
    /// Every webhook waits this long before its first delivery.
    pub webhook_delay_ms: u64,
    /// Webhooks of one payment are held briefly and delivered newest first.
    pub reorder_webhooks: bool,
}

/// One successful charge: the ledger tests check for exactly-once.
#[derive(Clone, Debug, Serialize)]
pub struct ChargeRecord {
    pub id: String,
    pub payment_intent: String,
    pub amount: i64,
    pub currency: String,
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
    pub amount_refunded: i64,
    pub disputed: bool,
}

/// One refund that was not refused.
#[derive(Clone, Debug, Serialize)]
pub struct RefundRecord {
    pub id: String,
    pub payment_intent: String,
    pub charge: String,
    pub amount: i64,
    pub currency: String,
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
    /// `pending` or `succeeded`.
    pub status: String,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct EventRecord {
    id: String,
    r#type: String,
    payment_intent: String,
    /// Whether the webhook endpoint subscribes to its type (`enabled_events`): only those are
    /// delivered.
    subscribed: bool,
    delivered: bool,
    attempts: u32,
}

/// The Stripe sandbox: cheap to clone, shared state inside.
#[derive(Clone)]
pub struct StripeSandbox {
    config: Arc<StripeSandboxConfig>,
    state: Arc<Mutex<State>>,
    deliveries: tokio::sync::mpsc::UnboundedSender<(String, Value, u32)>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

impl StripeSandbox {
    /// A sandbox whose webhook deliveries run on the current tokio runtime.
    pub fn new(config: StripeSandboxConfig) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sandbox = StripeSandbox {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State::default())),
            deliveries: tx,
        };
        tokio::spawn(sandbox.clone().deliver(rx));
        sandbox
    }

    /// The publishable key browsers tokenise cards with.
    pub fn publishable_key(&self) -> String {
        publishable_key_for(&self.config.secret_key)
    }

    /// What the sandbox has charged successfully so far, oldest first.
    pub fn charges(&self) -> Vec<ChargeRecord> {
        let s = self.state.lock().expect("sandbox state");
        s.charges
            .values()
            .filter(|c| c.declined.is_none())
            .map(|c| ChargeRecord {
                id: c.id.clone(),
                payment_intent: c.payment_intent.clone(),
                amount: c.amount,
                currency: c.currency.clone(),
                metadata: c.metadata.clone(),
                created: c.created,
                amount_refunded: c.amount_refunded,
                disputed: c.disputed,
            })
            .collect()
    }

    /// What the sandbox has refunded (or is refunding) so far, oldest first.
    pub fn refunds(&self) -> Vec<RefundRecord> {
        let s = self.state.lock().expect("sandbox state");
        s.refunds
            .values()
            .filter(|r| r.status != "failed")
            .map(|r| RefundRecord {
                id: r.id.clone(),
                payment_intent: r.payment_intent.clone(),
                charge: r.charge.clone(),
                amount: r.amount,
                currency: r.currency.clone(),
                metadata: r.metadata.clone(),
                created: r.created,
                status: r.status.to_string(),
            })
            .collect()
    }

    /// Replaces the fault knobs.
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().expect("sandbox state").faults = faults;
    }

    /// The HTTP routes: Stripe's API under `/v1`, control endpoints under `/sandbox`.
    pub fn routes(&self) -> impl poem::Endpoint + 'static {
        self.add_routes(Route::new()).data(self.clone())
    }

    /// Adds this sandbox's paths to `route`; the caller adds the sandbox itself as data.
    pub fn add_routes(&self, route: Route) -> Route {
        use api::*;
        use control::*;
        route
            .at("/v1/payment_intents", post(create_intent))
            .at("/v1/payment_intents/search", get(search_intents))
            .at("/v1/payment_intents/:id", get(retrieve_intent))
            .at("/v1/payment_intents/:id/confirm", post(confirm_intent))
            .at("/v1/payment_intents/:id/cancel", post(cancel_intent))
            .at(
                "/v1/payment_methods",
                post(create_payment_method).options(preflight),
            )
            .at("/v1/payment_methods/:id", get(retrieve_payment_method))
            .at("/v1/charges/:id", get(retrieve_charge))
            .at("/v1/refunds", post(create_refund))
            .at("/v1/refunds/:id", get(retrieve_refund))
            .at("/v1/events", get(list_events))
            .at("/v1/events/:id", get(retrieve_event))
            .at("/sandbox/refunds", get(list_refunds))
            .at("/sandbox/refunds/:id/settle", post(settle_refund))
            .at("/sandbox/charges", get(list_charges))
            .at("/sandbox/charges/:id/refund", post(dashboard_refund))
            .at("/sandbox/charges/:id/dispute", post(open_dispute))
            .at("/sandbox/disputes", get(list_disputes))
            .at("/sandbox/disputes/:id/close", post(close_dispute))
            .at("/sandbox/events", get(event_ledger))
            .at("/sandbox/faults", post(set_faults).get(get_faults))
            .at("/sandbox/3ds/:id", get(three_ds_page))
            .at("/sandbox/3ds/:id/:outcome", post(three_ds_outcome))
    }
}

/// A `Stripe-Signature` header: `t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">`, keyed with the
/// whole `whsec_...` secret, as Stripe computes it.
pub fn signature_header(secret: &str, timestamp: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

#[cfg(test)]
mod tests;
