//! A Stripe test-mode gateway: PaymentIntents (create, confirm, retrieve, cancel), Charges,
//! Refunds, PaymentMethods from Stripe's test cards (tokenised with the publishable key, as
//! Stripe.js does), a 3-D Secure page, disputes, Stripe's parameter validation, errors and
//! idempotency rules, signed webhooks for every event Stripe would send, and fault injection.
//!
//! Control endpoints (not Stripe's) are under `/sandbox`: the ledgers (`charges`, `refunds`,
//! `events`, `disputes`), `faults`, the 3-D Secure page, and what happens outside the API at
//! Stripe (a dashboard refund, a dispute opened or closed, a pending refund settling).

mod api;
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

use poem::{EndpointExt, Request, Response, Route, get, http::StatusCode, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use store::{KeyRecord, State};
use wire::Answer;

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

/// One API request, authenticated and parsed.
pub(crate) struct Call {
    pub request_id: String,
    /// Its `Idempotency-Key`.
    pub key: Option<String>,
    /// `POST /v1/refunds`, say.
    pub endpoint: String,
    pub pairs: Vec<(String, String)>,
    /// Made with the publishable key (a browser), not the secret key.
    pub publishable: bool,
}

/// Whether an answer is kept under the request's idempotency key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stored {
    No,
    Yes,
    /// Kept earlier, and sent again now.
    Replayed,
}

/// Who may call an endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    SecretOnly,
    /// Stripe.js calls it from the browser with the publishable key.
    PublishableToo,
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

    /// Authenticates a request and parses its form; injected 500s and 429s answer here, before
    /// anything runs.
    async fn begin(
        &self,
        req: &Request,
        body: poem::Body,
        spec: &wire::Spec,
        keys: Keys,
    ) -> Result<Call, Response> {
        let request_id = {
            let mut s = self.state.lock().expect("sandbox state");
            s.next_id("req")
        };
        let mut pairs = if req.method() == poem::http::Method::GET {
            wire::form_pairs(req.uri().query().unwrap_or_default().as_bytes())
        } else {
            wire::form_pairs(&body.into_vec().await.unwrap_or_default())
        };
        // Stripe.js sends the publishable key as a form field rather than a header.
        let form_key = pairs
            .iter()
            .position(|(k, _)| k == "key")
            .map(|i| pairs.remove(i).1);
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let presented = bearer.or(form_key);
        let publishable = presented.as_deref() == Some(self.publishable_key().as_str());
        let fail = |answer: Answer| Err(self.respond(&request_id, answer, Stored::No, publishable));
        if presented.as_deref() != Some(self.config.secret_key.as_str()) && !publishable {
            return fail(wire::error(
                401,
                "invalid_request_error",
                None,
                None,
                "Invalid API Key provided.",
            ));
        }
        if publishable && keys == Keys::SecretOnly {
            return fail(wire::error(
                401,
                "invalid_request_error",
                Some("secret_key_required"),
                None,
                "This API call cannot be made with a publishable API key. Please use a secret API key.",
            ));
        }
        let (fail_now, limit) = {
            let mut s = self.state.lock().expect("sandbox state");
            let f = &mut s.faults;
            let fail_now = f.fail_next > 0;
            f.fail_next = f.fail_next.saturating_sub(1);
            let limit = !fail_now && f.rate_limit_next > 0;
            if limit {
                f.rate_limit_next -= 1;
            }
            (fail_now, limit)
        };
        if fail_now {
            return fail(wire::error(
                500,
                "api_error",
                None,
                None,
                "An unexpected error occurred (injected).",
            ));
        }
        if limit {
            return fail(wire::error(
                429,
                "invalid_request_error",
                Some("rate_limit"),
                None,
                "Too many requests hit the API too quickly (injected).",
            ));
        }
        if let Err(answer) = wire::check(spec, &pairs) {
            return fail(answer);
        }
        // Stripe ignores idempotency keys on reads.
        let key = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|_| req.method() != poem::http::Method::GET)
            .map(str::to_string);
        Ok(Call {
            request_id,
            key,
            endpoint: format!("{} {}", req.method(), req.uri().path()),
            pairs,
            publishable,
        })
    }

    /// Runs `work` under Stripe's idempotency rules: a key seen with the same request replays
    /// the first answer (errors and 500s included), a key still in flight is a 409, and a key
    /// reused on another endpoint or with other parameters is an `idempotency_error`.
    async fn run(
        &self,
        call: Call,
        charging: bool,
        work: impl FnOnce(&StripeSandbox, &mut State, &Call) -> Answer,
    ) -> Response {
        let mut params = call.pairs.clone();
        params.sort();
        let latency = {
            let mut s = self.state.lock().expect("sandbox state");
            if let Some(key) = &call.key {
                if let Some(seen) = s.idempotency.get(key) {
                    let refused = if seen.endpoint != call.endpoint {
                        Some(format!(
                            "Keys for idempotent requests can only be used for the same endpoint they were first used for ('{}' vs '{}'). Try using a key other than '{key}' if you meant to execute a different request.",
                            seen.endpoint, call.endpoint
                        ))
                    } else if seen.params != params {
                        Some(format!(
                            "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                        ))
                    } else {
                        None
                    };
                    let answer = match (refused, &seen.answer) {
                        (Some(message), _) => {
                            wire::error(400, "idempotency_error", None, None, &message)
                        }
                        (None, None) => wire::error(
                            409,
                            "invalid_request_error",
                            Some("idempotency_key_in_use"),
                            None,
                            "There is currently another in-progress request using this Stripe API key and idempotency key. Please try again later.",
                        ),
                        (None, Some(answer)) => {
                            let answer = answer.clone();
                            drop(s);
                            return self.respond(
                                &call.request_id,
                                answer,
                                Stored::Replayed,
                                call.publishable,
                            );
                        }
                    };
                    drop(s);
                    return self.respond(&call.request_id, answer, Stored::No, call.publishable);
                }
                s.idempotency.insert(
                    key.clone(),
                    KeyRecord {
                        endpoint: call.endpoint.clone(),
                        params,
                        answer: None,
                    },
                );
            }
            s.faults.latency_ms
        };
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let answer = {
            let mut s = self.state.lock().expect("sandbox state");
            let answer = if s.faults.error_next > 0 {
                s.faults.error_next -= 1;
                wire::error(
                    500,
                    "api_error",
                    None,
                    None,
                    "An unexpected error occurred while processing the request (injected).",
                )
            } else {
                work(self, &mut s, &call)
            };
            let mut stored = Stored::No;
            if let Some(key) = &call.key
                && let Some(record) = s.idempotency.get_mut(key)
            {
                record.answer = Some(answer.clone());
                stored = Stored::Yes;
            }
            if charging && s.faults.lose_next_responses > 0 {
                s.faults.lose_next_responses -= 1;
                let lost = wire::error(
                    500,
                    "api_error",
                    None,
                    None,
                    "The response was lost (injected).",
                );
                (lost, Stored::No)
            } else {
                (answer, stored)
            }
        };
        self.respond(&call.request_id, answer.0, answer.1, call.publishable)
    }

    /// Sends an answer with Stripe's headers; an error gets its `request_log_url`, and says
    /// whether a retry could help (not for an answer stored under its idempotency key).
    fn respond(
        &self,
        request_id: &str,
        (status, mut body): Answer,
        stored: Stored,
        browser: bool,
    ) -> Response {
        let replayed = stored == Stored::Replayed;
        if body.get("error").is_some() && body["error"].get("request_log_url").is_none() {
            body["error"]["request_log_url"] = json!(format!(
                "https://dashboard.stripe.com/test/logs/{request_id}?t={}",
                now()
            ));
        }
        let code = body["error"]["code"].as_str().unwrap_or_default();
        let retry = status == 429
            || status >= 500 && stored == Stored::No
            || code == "idempotency_key_in_use"
            || code == "lock_timeout";
        let mut r = Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .content_type("application/json")
            .header("request-id", request_id)
            .header("stripe-version", events::API_VERSION);
        if status >= 400 {
            r = r.header("stripe-should-retry", if retry { "true" } else { "false" });
        }
        if replayed {
            r = r.header("idempotent-replayed", "true");
        }
        if browser {
            r = r.header("access-control-allow-origin", "*");
        }
        r.body(body.to_string())
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
