//! A Stripe test-mode gateway: payment intents (create, confirm, retrieve, cancel), test payment
//! methods and card numbers, a 3-D Secure page, `Idempotency-Key` replay, signed webhooks with
//! retries, fault injection, and a ledger of what was charged.
//!
//! Control endpoints (not Stripe's): `GET /sandbox/charges`, `GET /sandbox/events`,
//! `POST /sandbox/faults`, and the 3-D Secure page at `/sandbox/3ds/{intent}`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use poem::{
    Body, EndpointExt, IntoResponse, Request, Response, Route, get, handler,
    http::StatusCode,
    post,
    web::{Data, Form, Html, Json, Path},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How the sandbox is set up.
#[derive(Clone, Debug)]
pub struct StripeSandboxConfig {
    /// The secret key clients must present as `Authorization: Bearer ...`.
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

/// Faults to inject, set with `POST /sandbox/faults`. Counters count down per request.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API response.
    pub latency_ms: u64,
    /// The next N API requests fail with 500 before doing anything.
    pub fail_next: u32,
    /// The next N API requests fail with 429 before doing anything.
    pub rate_limit_next: u32,
    /// The next N charging requests charge, then answer 500 as if the response were lost.
    pub lose_next_responses: u32,
    /// Webhooks are generated but never delivered.
    pub drop_webhooks: bool,
    /// Every webhook is delivered twice.
    pub duplicate_webhooks: bool,
    /// Every webhook waits this long before its first delivery.
    pub webhook_delay_ms: u64,
    /// Webhooks of one intent are held briefly and delivered newest first.
    pub reorder_webhooks: bool,
}

/// One charge the sandbox made: the ledger tests check for exactly-once.
#[derive(Clone, Debug, Serialize)]
pub struct ChargeRecord {
    pub id: String,
    pub payment_intent: String,
    pub amount: i64,
    pub currency: String,
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
}

/// One refund the sandbox made.
#[derive(Clone, Debug, Serialize)]
pub struct RefundRecord {
    pub id: String,
    pub payment_intent: String,
    pub charge: String,
    pub amount: i64,
    pub currency: String,
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
}

/// What a test payment method does when confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Succeed,
    Decline(&'static str),
    Authenticate,
}

#[derive(Clone, Debug)]
struct Intent {
    id: String,
    amount: i64,
    currency: String,
    status: &'static str,
    payment_method: Option<String>,
    metadata: BTreeMap<String, String>,
    client_secret: String,
    created: i64,
    last_error: Option<Value>,
    latest_charge: Option<String>,
    canceled_at: Option<i64>,
    cancellation_reason: Option<String>,
}

impl Intent {
    fn to_json(&self, public_url: &str) -> Value {
        let next_action = (self.status == "requires_action").then(|| {
            json!({
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": format!("{public_url}/sandbox/3ds/{}", self.id)},
                "redirect_to_url": {"url": format!("{public_url}/sandbox/3ds/{}", self.id), "return_url": null}
            })
        });
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": 0,
            "amount_received": if self.status == "succeeded" { self.amount } else { 0 },
            "capture_method": "automatic",
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "livemode": false,
            "metadata": self.metadata,
            "payment_method_types": ["card"],
            "payment_method": self.payment_method,
            "status": self.status,
            "client_secret": self.client_secret,
            "last_payment_error": self.last_error,
            "latest_charge": self.latest_charge,
            "next_action": next_action,
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
        })
    }
}

#[derive(Clone, Debug, Serialize)]
struct EventRecord {
    id: String,
    r#type: String,
    payment_intent: String,
    delivered: bool,
    attempts: u32,
}

#[derive(Default)]
struct State {
    intents: HashMap<String, Intent>,
    payment_methods: HashMap<String, Behaviour>,
    /// Card brand and last four of methods created from card numbers.
    cards: HashMap<String, (String, String)>,
    /// Idempotency-Key → (request fingerprint, status, body).
    idempotency: HashMap<String, (String, u16, Value)>,
    charges: Vec<ChargeRecord>,
    refunds: Vec<RefundRecord>,
    events: Vec<EventRecord>,
    faults: Faults,
    /// Held webhooks per intent, when reordering.
    held: HashMap<String, Vec<(String, Value)>>,
    counter: u64,
}

impl State {
    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!(
            "{prefix}_{}{:08}",
            &uuid::Uuid::new_v4().simple().to_string()[..12],
            self.counter
        )
    }
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

fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> (u16, Value) {
    let mut e = json!({"type": kind, "message": message});
    if let Some(code) = code {
        e["code"] = json!(code);
    }
    (status.as_u16(), json!({"error": e}))
}

fn respond((status, body): (u16, Value)) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(body.to_string())
}

/// Stripe's published test payment methods, and the card numbers behind them.
fn builtin_behaviour(pm: &str) -> Option<Behaviour> {
    Some(match pm {
        "pm_card_visa" | "pm_card_mastercard" | "pm_card_amex" | "pm_card_visa_debit" => {
            Behaviour::Succeed
        }
        "pm_card_chargeDeclined" | "pm_card_visa_chargeDeclined" => {
            Behaviour::Decline("generic_decline")
        }
        "pm_card_chargeDeclinedInsufficientFunds" => Behaviour::Decline("insufficient_funds"),
        "pm_card_chargeDeclinedExpiredCard" => Behaviour::Decline("expired_card"),
        "pm_card_authenticationRequired" | "pm_card_threeDSecure2Required" => {
            Behaviour::Authenticate
        }
        _ => return None,
    })
}

fn card_number_behaviour(number: &str) -> Option<(Behaviour, &'static str)> {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    Some(match digits.as_str() {
        "4242424242424242" => (Behaviour::Succeed, "visa"),
        "5555555555554444" => (Behaviour::Succeed, "mastercard"),
        "4000000000000002" => (Behaviour::Decline("generic_decline"), "visa"),
        "4000000000009995" => (Behaviour::Decline("insufficient_funds"), "visa"),
        "4000002760003184" | "4000002500003155" => (Behaviour::Authenticate, "visa"),
        _ => return None,
    })
}

fn decline_message(code: &str) -> &'static str {
    match code {
        "insufficient_funds" => "Your card has insufficient funds.",
        "expired_card" => "Your card has expired.",
        _ => "Your card was declined.",
    }
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

    /// What the sandbox has charged so far.
    pub fn charges(&self) -> Vec<ChargeRecord> {
        self.state.lock().expect("sandbox state").charges.clone()
    }

    /// What the sandbox has refunded so far.
    pub fn refunds(&self) -> Vec<RefundRecord> {
        self.state.lock().expect("sandbox state").refunds.clone()
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
        route
            .at("/v1/payment_intents", post(create_intent))
            .at("/v1/payment_intents/:id", get(retrieve_intent))
            .at("/v1/payment_intents/:id/confirm", post(confirm_intent))
            .at("/v1/payment_intents/:id/cancel", post(cancel_intent))
            .at("/v1/payment_methods", post(create_payment_method))
            .at("/v1/payment_methods/:id", get(retrieve_payment_method))
            .at("/v1/refunds", post(create_refund))
            .at("/v1/refunds/:id", get(retrieve_refund))
            .at("/sandbox/refunds", get(list_refunds))
            .at("/sandbox/charges", get(list_charges))
            .at("/sandbox/events", get(list_events))
            .at("/sandbox/faults", post(set_faults).get(get_faults))
            .at("/sandbox/3ds/:id", get(three_ds_page))
            .at("/sandbox/3ds/:id/:outcome", post(three_ds_outcome))
    }

    /// Checks auth and injected faults before an API call. `Err` is the answer to give.
    async fn gate(&self, req: &Request) -> Result<(), Response> {
        let expected = format!("Bearer {}", self.config.secret_key);
        let authorized = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected);
        let (latency, fail, limit) = {
            let mut s = self.state.lock().expect("sandbox state");
            let f = &mut s.faults;
            let fail = f.fail_next > 0;
            f.fail_next = f.fail_next.saturating_sub(1);
            let limit = !fail && f.rate_limit_next > 0;
            if limit {
                f.rate_limit_next -= 1;
            }
            (f.latency_ms, fail, limit)
        };
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if !authorized {
            return Err(respond(error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                "Invalid API Key provided.",
            )));
        }
        if fail {
            return Err(respond(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                None,
                "An unexpected error occurred (injected).",
            )));
        }
        if limit {
            return Err(respond(error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests (injected).",
            )));
        }
        Ok(())
    }

    /// Runs `work` under Stripe's idempotency rules: a key seen with the same request replays the
    /// first answer (errors included); with a different request it is an `idempotency_error`.
    fn idempotent(
        &self,
        req: &Request,
        params: &[(String, String)],
        work: impl FnOnce(&mut State) -> (u16, Value),
    ) -> (u16, Value) {
        let key = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut sorted: Vec<_> = params.to_vec();
        sorted.sort();
        let fingerprint = format!("{} {:?}", req.uri().path(), sorted);
        let mut state = self.state.lock().expect("sandbox state");
        if let Some(key) = &key
            && let Some((seen, status, body)) = state.idempotency.get(key)
        {
            return if *seen == fingerprint {
                (*status, body.clone())
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    Some("idempotency_key_in_use"),
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                )
            };
        }
        let answer = work(&mut state);
        if let Some(key) = key {
            state
                .idempotency
                .insert(key, (fingerprint, answer.0, answer.1.clone()));
        }
        answer
    }

    /// Confirms an intent with its payment method; records a charge and queues webhooks.
    fn confirm(&self, state: &mut State, id: &str) -> (u16, Value) {
        let public = self.config.public_url.clone();
        let Some(intent) = state.intents.get(id).cloned() else {
            return error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("resource_missing"),
                "No such payment_intent",
            );
        };
        if !matches!(
            intent.status,
            "requires_payment_method" | "requires_confirmation"
        ) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("payment_intent_unexpected_state"),
                &format!(
                    "This PaymentIntent's status is {}; it cannot be confirmed.",
                    intent.status
                ),
            );
        }
        let Some(pm) = intent.payment_method.clone() else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("payment_intent_unexpected_state"),
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
            );
        };
        let behaviour = builtin_behaviour(&pm).or_else(|| state.payment_methods.get(&pm).copied());
        let Some(behaviour) = behaviour else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("resource_missing"),
                &format!("No such PaymentMethod: '{pm}'"),
            );
        };
        match behaviour {
            Behaviour::Succeed => {
                let charge = self.charge(state, id);
                let i = state.intents.get_mut(id).expect("intent exists");
                i.status = "succeeded";
                i.latest_charge = Some(charge);
                i.last_error = None;
                let body = i.to_json(&public);
                self.emit(state, "payment_intent.succeeded", &body);
                (200, body)
            }
            Behaviour::Authenticate => {
                let i = state.intents.get_mut(id).expect("intent exists");
                i.status = "requires_action";
                let body = i.to_json(&public);
                self.emit(state, "payment_intent.requires_action", &body);
                (200, body)
            }
            Behaviour::Decline(code) => {
                let charge_id = state.next_id("ch");
                let err = json!({
                    "type": "card_error", "code": "card_declined", "decline_code": code,
                    "message": decline_message(code), "charge": charge_id,
                });
                let i = state.intents.get_mut(id).expect("intent exists");
                i.status = "requires_payment_method";
                i.last_error = Some(err.clone());
                let body = i.to_json(&public);
                self.emit(state, "payment_intent.payment_failed", &body);
                let mut e = err;
                e["payment_intent"] = body;
                (402, json!({"error": e}))
            }
        }
    }

    fn charge(&self, state: &mut State, intent_id: &str) -> String {
        let id = state.next_id("ch");
        let i = &state.intents[intent_id];
        let record = ChargeRecord {
            id: id.clone(),
            payment_intent: intent_id.to_string(),
            amount: i.amount,
            currency: i.currency.clone(),
            metadata: i.metadata.clone(),
            created: now(),
        };
        state.charges.push(record);
        id
    }

    /// Queues a webhook for `object` (delivered by [`StripeSandbox::deliver`]).
    fn emit(&self, state: &mut State, kind: &str, object: &Value) {
        let id = state.next_id("evt");
        let intent = object["id"].as_str().unwrap_or_default().to_string();
        let event = json!({
            "id": id, "object": "event", "api_version": "2026-09-30.endive", "created": now(),
            "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null}, "type": kind,
        });
        state.events.push(EventRecord {
            id: id.clone(),
            r#type: kind.to_string(),
            payment_intent: intent.clone(),
            delivered: false,
            attempts: 0,
        });
        let faults = state.faults.clone();
        if faults.drop_webhooks || self.config.webhook_url.is_none() {
            return;
        }
        if faults.reorder_webhooks {
            let held = state.held.entry(intent.clone()).or_default();
            held.push((id, event));
            if held.len() == 1 {
                // Release the held events of this intent shortly, newest first.
                let sandbox = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let events = sandbox
                        .state
                        .lock()
                        .expect("sandbox state")
                        .held
                        .remove(&intent)
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
    async fn deliver(self, mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, Value, u32)>) {
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
                if attempt == 0 && delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
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
                    if let Some(rec) = s.events.iter_mut().find(|e| e.id == id) {
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

/// A `Stripe-Signature` header: `t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">`, keyed with the
/// whole `whsec_...` secret, as Stripe computes it.
pub fn signature_header(secret: &str, timestamp: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Decodes a Stripe form body (`a=1&metadata[k]=v`), percent-decoding keys and values.
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// A PaymentMethod object, for a built-in test method or one created from a card number.
fn payment_method_json(state: &State, id: &str) -> Option<Value> {
    let (brand, last4) = builtin_card(id)
        .map(|(b, l)| (b.to_string(), l.to_string()))
        .or_else(|| state.cards.get(id).cloned())?;
    Some(json!({
        "id": id, "object": "payment_method", "type": "card", "created": now(), "livemode": false,
        "billing_details": {},
        "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034, "funding": "credit"},
    }))
}

/// `expand[]=payment_method`, as Stripe does it: the intent's `payment_method` id becomes the
/// object itself.
fn expanded(state: &State, pairs: &[(String, String)], answer: (u16, Value)) -> (u16, Value) {
    let (status, mut body) = answer;
    let wants = pairs
        .iter()
        .any(|(k, v)| k.starts_with("expand[") && v == "payment_method");
    if wants
        && let Some(id) = body["payment_method"].as_str().map(str::to_string)
        && let Some(pm) = payment_method_json(state, &id)
    {
        body["payment_method"] = pm;
    }
    (status, body)
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn metadata(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix("metadata[")?.strip_suffix(']')?.to_string(),
                v.clone(),
            ))
        })
        .collect()
}

async fn read_form(body: Body) -> Vec<(String, String)> {
    form_pairs(&body.into_vec().await.unwrap_or_default())
}

/// Charges the intent (when asked to) and then, if the fault says so, loses the answer.
fn maybe_lose(sandbox: &StripeSandbox, answer: (u16, Value), charging: bool) -> (u16, Value) {
    if !charging {
        return answer;
    }
    let mut s = sandbox.state.lock().expect("sandbox state");
    if s.faults.lose_next_responses > 0 {
        s.faults.lose_next_responses -= 1;
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            None,
            "The response was lost (injected).",
        );
    }
    answer
}

#[handler]
async fn create_intent(req: &Request, body: Body, sandbox: Data<&StripeSandbox>) -> Response {
    if let Err(r) = sandbox.gate(req).await {
        return r;
    }
    let pairs = read_form(body).await;
    let confirm = param(&pairs, "confirm") == Some("true");
    let answer = sandbox.idempotent(req, &pairs, |state| {
        let Some(amount) = param(&pairs, "amount")
            .and_then(|a| a.parse::<i64>().ok())
            .filter(|a| *a > 0)
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_missing"),
                "Missing required param: amount.",
            );
        };
        let Some(currency) = param(&pairs, "currency").map(str::to_ascii_lowercase) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_missing"),
                "Missing required param: currency.",
            );
        };
        let id = state.next_id("pi");
        let secret = format!(
            "{id}_secret_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let payment_method = param(&pairs, "payment_method").map(str::to_string);
        let intent = Intent {
            id: id.clone(),
            amount,
            currency,
            status: if payment_method.is_some() {
                "requires_confirmation"
            } else {
                "requires_payment_method"
            },
            payment_method,
            metadata: metadata(&pairs),
            client_secret: secret,
            created: now(),
            last_error: None,
            latest_charge: None,
            canceled_at: None,
            cancellation_reason: None,
        };
        state.intents.insert(id.clone(), intent);
        let answer = if confirm {
            sandbox.confirm(state, &id)
        } else {
            let body = state.intents[&id].to_json(&sandbox.config.public_url);
            (200, body)
        };
        expanded(state, &pairs, answer)
    });
    respond(maybe_lose(&sandbox, answer, confirm))
}

#[handler]
async fn confirm_intent(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    if let Err(r) = sandbox.gate(req).await {
        return r;
    }
    let pairs = read_form(body).await;
    let answer = sandbox.idempotent(req, &pairs, |state| {
        if let (Some(pm), Some(i)) = (param(&pairs, "payment_method"), state.intents.get_mut(&id)) {
            i.payment_method = Some(pm.to_string());
            if i.status == "requires_payment_method" {
                i.status = "requires_confirmation";
            }
        }
        let answer = sandbox.confirm(state, &id);
        expanded(state, &pairs, answer)
    });
    respond(maybe_lose(&sandbox, answer, true))
}

#[handler]
async fn retrieve_intent(
    req: &Request,
    Path(id): Path<String>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    if let Err(r) = sandbox.gate(req).await {
        return r;
    }
    let s = sandbox.state.lock().expect("sandbox state");
    respond(match s.intents.get(&id) {
        Some(i) => (200, i.to_json(&sandbox.config.public_url)),
        None => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such payment_intent: '{id}'"),
        ),
    })
}

#[handler]
async fn cancel_intent(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    if let Err(r) = sandbox.gate(req).await {
        return r;
    }
    let pairs = read_form(body).await;
    let answer = sandbox.idempotent(req, &pairs, |state| {
        let public = sandbox.config.public_url.clone();
        let Some(i) = state.intents.get_mut(&id) else {
            return error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("resource_missing"),
                &format!("No such payment_intent: '{id}'"),
            );
        };
        if matches!(i.status, "succeeded" | "canceled" | "processing") {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("payment_intent_unexpected_state"),
                &format!(
                    "You cannot cancel this PaymentIntent because it has a status of {}.",
                    i.status
                ),
            );
        }
        i.status = "canceled";
        i.canceled_at = Some(now());
        i.cancellation_reason = param(&pairs, "cancellation_reason").map(str::to_string);
        let body = i.to_json(&public);
        sandbox.emit(state, "payment_intent.canceled", &body);
        (200, body)
    });
    respond(answer)
}

#[handler]
async fn create_payment_method(
    req: &Request,
    body: Body,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    if let Err(r) = sandbox.gate(req).await {
        return r;
    }
    let pairs = read_form(body).await;
    let number = param(&pairs, "card[number]").unwrap_or_default();
    let Some((behaviour, brand)) = card_number_behaviour(number) else {
        return respond(error(
            StatusCode::PAYMENT_REQUIRED,
            "card_error",
            Some("incorrect_number"),
            "Your card number is incorrect.",
        ));
    };
    let mut s = sandbox.state.lock().expect("sandbox state");
    let id = s.next_id("pm");
    s.payment_methods.insert(id.clone(), behaviour);
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    s.cards.insert(
        id.clone(),
        (brand.to_string(), digits[digits.len() - 4..].to_string()),
    );
    respond((
        200,
        json!({
            "id": id, "object": "payment_method", "type": "card", "created": now(), "livemode": false,
            "billing_details": {},
            "card": {"brand": brand, "last4": &digits[digits.len() - 4..], "exp_month": 12, "exp_year": 2034, "funding": "credit"},
        }),
    ))
}

#[handler]
async fn create_refund(req: &Request, body: Body, sandbox: Data<&StripeSandbox>) -> Response {
    if let Err(r) = sandbox.gate(req).await {
        return r;
    }
    let pairs = read_form(body).await;
    let answer = sandbox.idempotent(req, &pairs, |state| {
        let Some(intent_id) = param(&pairs, "payment_intent").map(str::to_string) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_missing"),
                "Missing required param: payment_intent.",
            );
        };
        let Some(intent) = state.intents.get(&intent_id).cloned() else {
            return error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("resource_missing"),
                &format!("No such payment_intent: '{intent_id}'"),
            );
        };
        let Some(charge) = intent
            .latest_charge
            .clone()
            .filter(|_| intent.status == "succeeded")
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("charge_not_refundable"),
                "This PaymentIntent has no successful charge to refund.",
            );
        };
        let refunded: i64 = state
            .refunds
            .iter()
            .filter(|r| r.payment_intent == intent_id)
            .map(|r| r.amount)
            .sum();
        let amount = param(&pairs, "amount")
            .and_then(|a| a.parse::<i64>().ok())
            .unwrap_or(intent.amount - refunded);
        if amount <= 0 || refunded + amount > intent.amount {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("charge_already_refunded"),
                "The refund exceeds what remains of the charge.",
            );
        }
        let id = state.next_id("re");
        let record = RefundRecord {
            id: id.clone(),
            payment_intent: intent_id.clone(),
            charge: charge.clone(),
            amount,
            currency: intent.currency.clone(),
            metadata: metadata(&pairs),
            created: now(),
        };
        state.refunds.push(record.clone());
        (
            200,
            json!({
                "id": id, "object": "refund", "amount": amount, "created": record.created,
                "currency": record.currency, "status": "succeeded", "payment_intent": intent_id,
                "charge": charge, "metadata": record.metadata, "reason": param(&pairs, "reason"),
            }),
        )
    });
    respond(answer)
}

#[handler]
async fn retrieve_refund(
    req: &Request,
    Path(id): Path<String>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    if let Err(r) = sandbox.gate(req).await {
        return r;
    }
    let s = sandbox.state.lock().expect("sandbox state");
    respond(match s.refunds.iter().find(|r| r.id == id) {
        Some(r) => (
            200,
            json!({
                "id": r.id, "object": "refund", "amount": r.amount, "created": r.created, "currency": r.currency,
                "status": "succeeded", "payment_intent": r.payment_intent, "charge": r.charge, "metadata": r.metadata,
            }),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such refund: '{id}'"),
        ),
    })
}

#[handler]
fn list_refunds(sandbox: Data<&StripeSandbox>) -> Json<Vec<RefundRecord>> {
    Json(sandbox.refunds())
}

/// The card behind Stripe's test payment methods.
fn builtin_card(pm: &str) -> Option<(&'static str, &'static str)> {
    Some(match pm {
        "pm_card_visa" => ("visa", "4242"),
        "pm_card_visa_debit" => ("visa", "5556"),
        "pm_card_mastercard" => ("mastercard", "4444"),
        "pm_card_amex" => ("amex", "8431"),
        "pm_card_chargeDeclined" | "pm_card_visa_chargeDeclined" => ("visa", "0002"),
        "pm_card_chargeDeclinedInsufficientFunds" => ("visa", "9995"),
        "pm_card_chargeDeclinedExpiredCard" => ("visa", "0069"),
        "pm_card_authenticationRequired" | "pm_card_threeDSecure2Required" => ("visa", "3184"),
        _ => return None,
    })
}

#[handler]
async fn retrieve_payment_method(
    req: &Request,
    Path(id): Path<String>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    if let Err(r) = sandbox.gate(req).await {
        return r;
    }
    let s = sandbox.state.lock().expect("sandbox state");
    let card = builtin_card(&id)
        .map(|(b, l)| (b.to_string(), l.to_string()))
        .or_else(|| s.cards.get(&id).cloned());
    respond(match card {
        Some((brand, last4)) => (
            200,
            json!({
                "id": id, "object": "payment_method", "type": "card", "created": now(), "livemode": false,
                "billing_details": {},
                "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034, "funding": "credit"},
            }),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such PaymentMethod: '{id}'"),
        ),
    })
}

#[handler]
fn list_charges(sandbox: Data<&StripeSandbox>) -> Json<Vec<ChargeRecord>> {
    Json(sandbox.charges())
}

#[handler]
fn list_events(sandbox: Data<&StripeSandbox>) -> Json<Value> {
    Json(json!(sandbox.state.lock().expect("sandbox state").events))
}

#[handler]
fn set_faults(sandbox: Data<&StripeSandbox>, Json(faults): Json<Faults>) -> Json<Faults> {
    sandbox.set_faults(faults.clone());
    Json(faults)
}

#[handler]
fn get_faults(sandbox: Data<&StripeSandbox>) -> Json<Faults> {
    Json(sandbox.state.lock().expect("sandbox state").faults.clone())
}

#[handler]
fn three_ds_page(Path(id): Path<String>, sandbox: Data<&StripeSandbox>) -> Response {
    let s = sandbox.state.lock().expect("sandbox state");
    let Some(i) = s.intents.get(&id) else {
        return (StatusCode::NOT_FOUND, "no such payment").into_response();
    };
    let amount = i.amount;
    let currency = i.currency.to_uppercase();
    let page = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>3-D Secure test page</title></head>
<body><h1>3-D Secure authentication (test mode)</h1>
<p>Payment {id}: {amount} {currency} (minor units). Status: <span id="status">{}</span>.</p>
<form method="post" action="/sandbox/3ds/{id}/complete"><button id="complete" type="submit">Complete authentication</button></form>
<form method="post" action="/sandbox/3ds/{id}/fail"><button id="fail" type="submit">Fail authentication</button></form>
</body></html>"#,
        i.status
    );
    Html(page).into_response()
}

#[handler]
fn three_ds_outcome(
    Path((id, outcome)): Path<(String, String)>,
    sandbox: Data<&StripeSandbox>,
    _form: Option<Form<HashMap<String, String>>>,
) -> Response {
    let public = sandbox.config.public_url.clone();
    let mut state = sandbox.state.lock().expect("sandbox state");
    let status = state.intents.get(&id).map(|i| i.status);
    if status != Some("requires_action") {
        return (
            StatusCode::CONFLICT,
            "this payment is not waiting for authentication",
        )
            .into_response();
    }
    match outcome.as_str() {
        "complete" => {
            let charge = sandbox.charge(&mut state, &id);
            let i = state.intents.get_mut(&id).expect("intent exists");
            i.status = "succeeded";
            i.latest_charge = Some(charge);
            let body = i.to_json(&public);
            sandbox.emit(&mut state, "payment_intent.succeeded", &body);
        }
        "fail" => {
            let i = state.intents.get_mut(&id).expect("intent exists");
            i.status = "requires_payment_method";
            i.last_error = Some(json!({
                "type": "card_error", "code": "payment_intent_authentication_failure",
                "message": "We are unable to authenticate your payment method. Please choose a different payment method and try again.",
            }));
            let body = i.to_json(&public);
            sandbox.emit(&mut state, "payment_intent.payment_failed", &body);
        }
        _ => return (StatusCode::NOT_FOUND, "unknown outcome").into_response(),
    }
    Html(format!(
        "<!doctype html><p>Authentication {outcome}d. You can close this page.</p>"
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_stripes_scheme() {
        // HMAC-SHA256("whsec_test", "1700000000.{}") computed independently.
        let h = signature_header("whsec_test", 1_700_000_000, "{}");
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(h.len(), "t=1700000000,v1=".len() + 64);
    }

    #[test]
    fn forms_decode_nested_keys() {
        let pairs =
            form_pairs(b"amount=1099&metadata[payment_id]=p%201&metadata%5Bapp%5D=a&confirm=true");
        assert_eq!(param(&pairs, "amount"), Some("1099"));
        let m = metadata(&pairs);
        assert_eq!(m["payment_id"], "p 1");
        assert_eq!(m["app"], "a");
    }
}

#[cfg(test)]
mod delivery_tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A receiver that refuses the first two deliveries: the sandbox must keep trying.
    #[tokio::test]
    async fn webhooks_are_retried_until_acknowledged() {
        let hits = Arc::new(AtomicU32::new(0));
        let counter = hits.clone();
        let receiver = poem::Route::new().at(
            "/hook",
            poem::post(poem::endpoint::make(move |_req| {
                let counter = counter.clone();
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }
            })),
        );
        let acceptor = poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind(
            "127.0.0.1:0",
        ))
        .await
        .unwrap();
        let addr = *poem::listener::Acceptor::local_addr(&acceptor)[0]
            .as_socket_addr()
            .unwrap();
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(receiver));

        let sandbox = StripeSandbox::new(StripeSandboxConfig {
            secret_key: "sk_test_x".into(),
            webhook_url: Some(format!("http://{addr}/hook")),
            webhook_secret: "whsec_x".into(),
            public_url: "http://sandbox.invalid".into(),
            webhook_retry_base: Duration::from_millis(20),
            webhook_max_attempts: 5,
        });
        {
            let mut s = sandbox.state.lock().unwrap();
            sandbox.emit(&mut s, "payment_intent.succeeded", &json!({"id": "pi_1"}));
        }
        for _ in 0..100 {
            let delivered = sandbox.state.lock().unwrap().events[0].delivered;
            if delivered {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let event = sandbox.state.lock().unwrap().events[0].clone();
        assert!(event.delivered);
        assert_eq!(event.attempts, 3);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_same_idempotency_key_with_other_parameters_is_refused() {
        let sandbox = StripeSandbox::new(StripeSandboxConfig {
            secret_key: "sk_test_x".into(),
            webhook_url: None,
            webhook_secret: "whsec_x".into(),
            public_url: "http://sandbox.invalid".into(),
            webhook_retry_base: Duration::from_millis(20),
            webhook_max_attempts: 1,
        });
        let app = sandbox.routes();
        let cli = poem::test::TestClient::new(app);
        let send = |body: &'static str| {
            cli.post("/v1/payment_intents")
                .header("authorization", "Bearer sk_test_x")
                .header("idempotency-key", "k1")
                .content_type("application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        let first = send("amount=100&currency=usd").await;
        first.assert_status_is_ok();
        let first: Value = first.json().await.value().deserialize();
        let replay: Value = send("amount=100&currency=usd")
            .await
            .json()
            .await
            .value()
            .deserialize();
        assert_eq!(first, replay);
        let other = send("amount=200&currency=usd").await;
        other.assert_status(StatusCode::BAD_REQUEST);
        let other: Value = other.json().await.value().deserialize();
        assert_eq!(other["error"]["type"], "idempotency_error");
        // And no key at all, wrong bearer: 401.
        cli.post("/v1/payment_intents")
            .body("amount=1")
            .send()
            .await
            .assert_status(StatusCode::UNAUTHORIZED);
    }
}
