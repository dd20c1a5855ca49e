//! Stripe: the official `async-stripe` client for calls, our own checks for webhooks.
//!
//! Every call that can charge carries an idempotency key derived from our payment id, so a retried
//! job replays Stripe's first answer instead of charging again.

use std::{collections::HashMap, time::Duration};

use stripe::{ApiErrorsType, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_core::payment_intent::{
    CancelPaymentIntent, CancelPaymentIntentCancellationReason, CreatePaymentIntent,
    CreatePaymentIntentAutomaticPaymentMethods,
    CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects, RetrievePaymentIntent,
    SearchPaymentIntent,
};
use stripe_core::refund::{CreateRefund, CreateRefundReason, RetrieveRefund};
use stripe_payment::payment_method::RetrievePaymentMethod;

pub use super::stripe_webhook::{
    SignatureError, StripeEvent, StripeEventData, WEBHOOK_TOLERANCE_SECS, verify_signature,
};
use super::{GatewayError, Report};
use crate::{
    money::{Currency, Money},
    payment::{GatewayFacts, NextAction, Payment, PaymentEvent},
    secret::Secret,
};

/// The parts of a PaymentIntent we act on, whether it came from a call or a webhook.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct IntentSnapshot {
    pub id: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    #[serde(default)]
    pub last_payment_error: Option<IntentError>,
    /// Why it was cancelled: `abandoned` is what we say when a payment passed its deadline.
    #[serde(default)]
    pub cancellation_reason: Option<String>,
}

/// Why the last attempt on an intent failed.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct IntentError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl From<&stripe_shared::PaymentIntent> for IntentSnapshot {
    fn from(pi: &stripe_shared::PaymentIntent) -> Self {
        IntentSnapshot {
            id: pi.id.as_str().to_string(),
            status: pi.status.as_str().to_string(),
            amount: pi.amount,
            currency: pi.currency.to_string(),
            client_secret: pi.client_secret.clone(),
            metadata: pi.metadata.clone(),
            last_payment_error: pi.last_payment_error.as_ref().map(|e| IntentError {
                code: e.code.as_ref().map(|c| c.as_str().to_string()),
                decline_code: e.decline_code.clone(),
                message: e.message.clone(),
            }),
            cancellation_reason: pi
                .cancellation_reason
                .as_ref()
                .map(|r| r.as_str().to_string()),
        }
    }
}

/// A message an applicant can act on, by decline code.
fn applicant_message(code: &str) -> &'static str {
    match code {
        "insufficient_funds" => "Your card has insufficient funds. Try another card.",
        "expired_card" => "Your card has expired. Try another card.",
        "incorrect_cvc" => "The security code is incorrect. Check it and try again.",
        "payment_intent_authentication_failure" | "authentication_required" => {
            "Your bank could not confirm it was you. Try again or use another card."
        }
        "lost_card" | "stolen_card" | "fraudulent" | "generic_decline" | "card_declined" => {
            "Your card was declined. Contact your bank or use another card."
        }
        _ => "The payment was not accepted. Try another card.",
    }
}

impl IntentSnapshot {
    /// The amount as money, when the currency is one we know.
    pub fn amount(&self) -> Option<Money> {
        let currency = Currency::parse(&self.currency.to_ascii_uppercase()).ok()?;
        Money::new(self.amount, currency).ok()
    }

    /// Our payment id, as put into the intent's metadata when it was created.
    pub fn payment_id(&self) -> Option<crate::ids::PaymentId> {
        self.metadata.get("payment_id")?.parse().ok()
    }

    /// What this intent says about the payment; `None` when it says nothing yet (e.g. waiting
    /// for a payment method).
    pub fn report(&self) -> Option<Report> {
        let mut facts = GatewayFacts {
            reference: Some(self.id.clone()),
            amount: self.amount(),
            ..GatewayFacts::default()
        };
        let event = match self.status.as_str() {
            "succeeded" => PaymentEvent::GatewaySaysSucceeded,
            "processing" => PaymentEvent::GatewaySaysProcessing,
            // We cancel an abandoned intent when its payment passes its deadline: that
            // payment expired, whichever of the cancel's answer and its webhook comes first.
            "canceled" if self.cancellation_reason.as_deref() == Some("abandoned") => {
                PaymentEvent::Expired
            }
            "canceled" => PaymentEvent::Cancelled,
            "requires_action" => {
                facts.next_action = self
                    .client_secret
                    .clone()
                    .map(|client_secret| NextAction::UseStripeSdk { client_secret });
                PaymentEvent::GatewayRequiresAction
            }
            "requires_payment_method" => {
                let error = self.last_payment_error.as_ref()?;
                let code = error
                    .decline_code
                    .clone()
                    .or_else(|| error.code.clone())
                    .unwrap_or_else(|| "card_declined".into());
                facts.failure_message = Some(applicant_message(&code).to_string());
                facts.failure_code = Some(code);
                PaymentEvent::Declined
            }
            _ => return None,
        };
        Some(Report { event, facts })
    }
}

/// Stripe's minor units differ from ISO 4217 for a few currencies; we refuse those rather than
/// risk charging a hundred times too much or too little.
fn stripe_currency(currency: Currency) -> Result<stripe_types::Currency, GatewayError> {
    const DIFFERENT_AT_STRIPE: &[&str] = &["ISK", "HUF", "TWD", "UGX"];
    if DIFFERENT_AT_STRIPE.contains(&currency.code()) {
        return Err(GatewayError::Rejected(format!(
            "{currency} has different minor units at Stripe; not supported"
        )));
    }
    Ok(currency
        .code()
        .to_ascii_lowercase()
        .parse()
        .expect("parsing a Stripe currency is infallible"))
}

/// A Stripe client bound to one account.
#[derive(Clone)]
pub struct StripeGateway {
    client: stripe::Client,
    slots: super::CallSlots,
}

impl std::fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StripeGateway")
    }
}

fn classify(e: StripeError) -> Result<Report, GatewayError> {
    match e {
        // A decline carries the intent; its state is the answer.
        StripeError::Stripe(err, _) if err.type_ == ApiErrorsType::CardError => {
            if let Some(pi) = &err.payment_intent
                && let Some(report) = IntentSnapshot::from(pi).report()
            {
                return Ok(report);
            }
            let code = err
                .decline_code
                .clone()
                .or_else(|| err.code.as_ref().map(|c| c.as_str().to_string()))
                .unwrap_or_else(|| "card_declined".into());
            Ok(Report {
                event: PaymentEvent::Declined,
                facts: GatewayFacts {
                    failure_message: Some(applicant_message(&code).into()),
                    failure_code: Some(code),
                    ..GatewayFacts::default()
                },
            })
        }
        StripeError::Stripe(err, status) if status == 429 || status == 409 || status >= 500 => Err(
            GatewayError::Transient(format!("HTTP {status}: {}", err.type_.as_str())),
        ),
        StripeError::Stripe(err, status) => Err(GatewayError::Rejected(format!(
            "HTTP {status}: {} {}",
            err.type_.as_str(),
            err.code.as_ref().map(|c| c.as_str()).unwrap_or("")
        ))),
        StripeError::Timeout => Err(GatewayError::Transient("timed out".into())),
        StripeError::ClientError(m) => Err(GatewayError::Transient(m)),
        // A body we could not read: the call may have worked; retrying with the same key finds out.
        StripeError::JSONDeserialize(m) => Err(GatewayError::Transient(m)),
        StripeError::ConfigError(m) => Err(GatewayError::Rejected(m)),
    }
}

/// For calls that cannot decline a card: any error is about the call itself.
fn not_a_charge(e: StripeError) -> GatewayError {
    match classify(e) {
        Ok(_) => GatewayError::Rejected("unexpected card error".into()),
        Err(e) => e,
    }
}

fn key(k: String) -> RequestStrategy {
    RequestStrategy::Idempotent(IdempotencyKey::new(k).expect("our keys are short ASCII"))
}

impl StripeGateway {
    /// A client for `secret_key`, at `api_base` (the sandbox) or Stripe itself.
    pub fn new(
        secret_key: &Secret<String>,
        api_base: Option<&url::Url>,
        timeout: Duration,
    ) -> Result<Self, GatewayError> {
        let mut builder = stripe::ClientBuilder::new(secret_key.expose().clone()).timeout(timeout);
        if let Some(base) = api_base {
            builder = builder.url(base.as_str());
        }
        Ok(StripeGateway {
            client: builder
                .build()
                .map_err(|e| GatewayError::Rejected(e.to_string()))?,
            slots: super::CallSlots::default(),
        })
    }

    /// At most `calls` calls to Stripe in flight at once through this client (and its clones).
    pub fn with_calls_in_flight(self, calls: usize) -> Self {
        Self {
            slots: super::CallSlots::new(calls),
            ..self
        }
    }

    /// Creates and confirms the PaymentIntent of `payment` with its payment method. The key
    /// `payment:{id}:charge` makes a retry replay the first answer, never a second charge.
    pub async fn charge(&self, payment: &Payment) -> Result<Report, GatewayError> {
        self.slots
            .call("stripe", "charge", async {
                let Some(method) = payment.payment_method.as_deref() else {
                    return Err(GatewayError::Rejected(
                        "payment has no payment method".into(),
                    ));
                };
                let metadata = HashMap::from([
                    ("payment_id".to_string(), payment.id.to_string()),
                    (
                        "application_id".to_string(),
                        payment.application_id.to_string(),
                    ),
                ]);
                let request = CreatePaymentIntent::new(
                    payment.amount.amount_minor(),
                    stripe_currency(payment.amount.currency())?,
                )
                .payment_method(method)
                .confirm(true)
                .automatic_payment_methods(CreatePaymentIntentAutomaticPaymentMethods {
                    enabled: true,
                    allow_redirects: Some(
                        CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects::Never,
                    ),
                })
                .metadata(metadata)
                // The card's brand and last four come back with the answer, for the receipt: no
                // second call to Stripe.
                .expand(vec!["payment_method".to_string()]);
                match request
                    .customize()
                    .request_strategy(key(format!("payment:{}:charge", payment.id)))
                    .send(&self.client)
                    .await
                {
                    Ok(pi) => {
                        let mut report = IntentSnapshot::from(&pi).report().ok_or_else(|| {
                            GatewayError::Transient(format!(
                                "intent left in status {}",
                                pi.status.as_str()
                            ))
                        })?;
                        report.facts.card = pi
                            .payment_method
                            .as_ref()
                            .and_then(|pm| pm.as_object())
                            .and_then(|pm| pm.card.as_ref())
                            .map(|card| crate::payment::CardDetails {
                                brand: card.brand.clone(),
                                last4: card.last4.clone(),
                            });
                        Ok(report)
                    }
                    Err(e) => classify(e),
                }
            })
            .await
    }

    /// The current state of an intent.
    pub async fn retrieve(&self, intent: &str) -> Result<IntentSnapshot, GatewayError> {
        self.slots
            .call("stripe", "retrieve_intent", async {
                RetrievePaymentIntent::new(intent)
                    .send(&self.client)
                    .await
                    .map(|pi| IntentSnapshot::from(&pi))
                    .map_err(not_a_charge)
            })
            .await
    }

    /// The intent made for `payment`, found by the metadata we gave it: what Stripe did when
    /// no answer of its reached us (a 500 kept under our idempotency key replays forever, and
    /// the charge may have happened). A succeeded intent is preferred; else the newest.
    pub async fn find(
        &self,
        payment: crate::ids::PaymentId,
    ) -> Result<Option<IntentSnapshot>, GatewayError> {
        self.slots
            .call("stripe", "search_intents", async {
                let found = SearchPaymentIntent::new(format!("metadata['payment_id']:'{payment}'"))
                    .limit(10)
                    .send(&self.client)
                    .await
                    .map_err(not_a_charge)?;
                let mut intents: Vec<IntentSnapshot> =
                    found.data.iter().map(IntentSnapshot::from).collect();
                Ok(match intents.iter().position(|i| i.status == "succeeded") {
                    Some(i) => Some(intents.swap_remove(i)),
                    None => intents.into_iter().next(),
                })
            })
            .await
    }

    /// Refunds everything `payment` took on `intent` (a duplicate charge). Idempotent per payment.
    pub async fn refund_duplicate(
        &self,
        payment: &Payment,
        intent: &str,
    ) -> Result<String, GatewayError> {
        self.slots
            .call("stripe", "refund_duplicate", async {
                let metadata = HashMap::from([
                    ("payment_id".to_string(), payment.id.to_string()),
                    ("reason".to_string(), "duplicate_charge".to_string()),
                ]);
                CreateRefund::new()
                    .payment_intent(intent)
                    .reason(CreateRefundReason::Duplicate)
                    .metadata(metadata)
                    .customize()
                    .request_strategy(key(format!("payment:{}:refund-duplicate", payment.id)))
                    .send(&self.client)
                    .await
                    .map(|r| r.id.as_str().to_string())
                    .map_err(not_a_charge)
            })
            .await
    }

    /// Refunds `amount` of `intent` for our refund `refund_id` (its idempotency key). Returns the
    /// gateway's refund id and whether it already succeeded (`None` while pending).
    pub async fn refund(
        &self,
        intent: &str,
        amount: Money,
        refund_id: &str,
    ) -> Result<(String, Option<bool>), GatewayError> {
        self.slots
            .call("stripe", "refund", async {
                let refund = CreateRefund::new()
                    .payment_intent(intent)
                    .amount(amount.amount_minor())
                    .metadata(HashMap::from([(
                        "refund_id".to_string(),
                        refund_id.to_string(),
                    )]))
                    .customize()
                    .request_strategy(key(format!("refund:{refund_id}")))
                    .send(&self.client)
                    .await
                    .map_err(not_a_charge)?;
                let outcome = match refund.status.as_deref() {
                    Some("succeeded") => Some(true),
                    Some("failed") | Some("canceled") => Some(false),
                    _ => None,
                };
                Ok((refund.id.as_str().to_string(), outcome))
            })
            .await
    }

    /// Whether a refund succeeded at Stripe (`None` while pending).
    pub async fn refund_status(&self, refund: &str) -> Result<Option<bool>, GatewayError> {
        self.slots
            .call("stripe", "retrieve_refund", async {
                let r = RetrieveRefund::new(refund)
                    .send(&self.client)
                    .await
                    .map_err(not_a_charge)?;
                Ok(match r.status.as_deref() {
                    Some("succeeded") => Some(true),
                    Some("failed") | Some("canceled") => Some(false),
                    _ => None,
                })
            })
            .await
    }

    /// The brand and last four digits of a card PaymentMethod, for receipts.
    pub async fn card_of(&self, payment_method: &str) -> Result<(String, String), GatewayError> {
        self.slots
            .call("stripe", "retrieve_payment_method", async {
                let pm = RetrievePaymentMethod::new(payment_method)
                    .send(&self.client)
                    .await
                    .map_err(not_a_charge)?;
                let card = pm
                    .card
                    .ok_or_else(|| GatewayError::Rejected("not a card".into()))?;
                Ok((card.brand, card.last4))
            })
            .await
    }

    /// Cancels an abandoned intent (idempotently).
    pub async fn cancel(
        &self,
        payment: &Payment,
        intent: &str,
    ) -> Result<IntentSnapshot, GatewayError> {
        self.slots
            .call("stripe", "cancel_intent", async {
                CancelPaymentIntent::new(intent)
                    .cancellation_reason(CancelPaymentIntentCancellationReason::Abandoned)
                    .customize()
                    .request_strategy(key(format!("payment:{}:cancel", payment.id)))
                    .send(&self.client)
                    .await
                    .map(|pi| IntentSnapshot::from(&pi))
                    .map_err(not_a_charge)
            })
            .await
    }
}

#[cfg(test)]
mod tests;
