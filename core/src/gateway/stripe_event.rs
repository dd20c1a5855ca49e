//! What a verified Stripe event is about, parsed once from its type and `data.object`: a
//! PaymentIntent, a Refund, a refunded Charge, a Dispute, or something we only record. Applying
//! it is [`crate::inbox::ingest_stripe`]'s business; this module only reads.

use std::collections::HashMap;

use super::stripe::IntentSnapshot;
use crate::money::{Currency, Money};

/// A verified Stripe event, by what it tells us.
#[derive(Debug, Clone)]
pub enum StripeEventObject {
    /// `payment_intent.{processing,requires_action,succeeded,payment_failed,canceled}`: drives
    /// the payment.
    Intent(IntentSnapshot),
    /// `refund.created`, `refund.updated`, `refund.failed` (and the older
    /// `charge.refund.updated`): one refund's state.
    Refund(RefundSnapshot),
    /// `charge.refunded`: the charge's running refund total (and, on older API versions, its
    /// refunds).
    ChargeRefunded(ChargeSnapshot),
    /// `charge.dispute.{created,updated,closed}`.
    Dispute(DisputeSnapshot),
    /// A type we act on whose object did not parse: kept for a person to look at.
    Malformed(String),
    /// Anything else: stored as ignored, with why.
    Other(&'static str),
}

/// The parts of a Stripe Refund we act on.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RefundSnapshot {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    /// `pending`, `requires_action`, `succeeded`, `failed` or `canceled`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub charge: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}

/// Where a refund stands at Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundVerdict {
    Pending,
    Succeeded,
    /// `failed` or `canceled`: nothing was given back.
    Failed,
}

impl RefundSnapshot {
    /// The amount as money, when the currency is one we know.
    pub fn amount(&self) -> Option<Money> {
        money(self.amount, &self.currency)
    }

    /// Our refund's id, as put into the metadata by [`super::stripe::StripeGateway::refund`].
    pub fn refund_id(&self) -> Option<uuid::Uuid> {
        self.metadata.get("refund_id")?.parse().ok()
    }

    /// Whether this is the refund of a duplicate charge
    /// ([`super::stripe::StripeGateway::refund_duplicate`]).
    pub fn is_duplicate_charge_refund(&self) -> bool {
        self.metadata.get("reason").map(String::as_str) == Some("duplicate_charge")
    }

    pub fn verdict(&self) -> RefundVerdict {
        match self.status.as_deref() {
            Some("succeeded") => RefundVerdict::Succeeded,
            Some("failed") | Some("canceled") => RefundVerdict::Failed,
            _ => RefundVerdict::Pending,
        }
    }
}

/// The parts of a refunded Charge we act on.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ChargeSnapshot {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    /// Everything refunded so far, in minor units.
    pub amount_refunded: i64,
    #[serde(default)]
    pub payment_intent: Option<String>,
    /// Not included by default in current API versions; listed by older ones.
    #[serde(default)]
    pub refunds: Option<RefundList>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct RefundList {
    #[serde(default)]
    pub data: Vec<RefundSnapshot>,
}

/// The parts of a Stripe Dispute we act on.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DisputeSnapshot {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub charge: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
    pub reason: String,
    pub status: String,
}

/// How a closed dispute ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeOutcome {
    /// The money stays with us.
    Won,
    /// The card holder's bank took the money back.
    Lost,
    /// An inquiry that closed without becoming a chargeback.
    WarningClosed,
}

impl DisputeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DisputeOutcome::Won => "won",
            DisputeOutcome::Lost => "lost",
            DisputeOutcome::WarningClosed => "warning_closed",
        }
    }
}

impl DisputeSnapshot {
    pub fn amount(&self) -> Option<Money> {
        money(self.amount, &self.currency)
    }

    /// How it ended, once it has.
    pub fn outcome(&self) -> Option<DisputeOutcome> {
        match self.status.as_str() {
            "won" => Some(DisputeOutcome::Won),
            "lost" => Some(DisputeOutcome::Lost),
            "warning_closed" => Some(DisputeOutcome::WarningClosed),
            _ => None,
        }
    }
}

fn money(amount: i64, currency: &str) -> Option<Money> {
    let currency = Currency::parse(&currency.to_ascii_uppercase()).ok()?;
    Money::new(amount, currency).ok()
}

/// The event types evisa-pay acts on: what a Stripe webhook endpoint for it should subscribe to
/// (`enabled_events`). Every other type is stored as ignored, if delivered.
pub const ACTED_ON: &[&str] = &[
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
];

/// Reads an event of type `kind` with `object` as its `data.object`.
pub fn interpret(kind: &str, object: &serde_json::Value) -> StripeEventObject {
    use StripeEventObject as E;
    fn parse<T: serde::de::DeserializeOwned>(
        object: &serde_json::Value,
        what: &str,
        wrap: fn(T) -> StripeEventObject,
    ) -> StripeEventObject {
        match T::deserialize(object) {
            Ok(v) => wrap(v),
            Err(e) => StripeEventObject::Malformed(format!("data.object is not a {what}: {e}")),
        }
    }
    match kind {
        "payment_intent.processing"
        | "payment_intent.requires_action"
        | "payment_intent.succeeded"
        | "payment_intent.payment_failed"
        | "payment_intent.canceled" => parse(object, "PaymentIntent", E::Intent),
        "refund.created" | "refund.updated" | "refund.failed" | "charge.refund.updated" => {
            parse(object, "Refund", E::Refund)
        }
        "charge.refunded" => parse(object, "Charge", E::ChargeRefunded),
        "charge.dispute.created" | "charge.dispute.updated" | "charge.dispute.closed" => {
            parse(object, "Dispute", E::Dispute)
        }
        "payment_intent.created" => {
            E::Other("a new intent says nothing yet; its later events drive the payment")
        }
        "charge.succeeded" | "charge.failed" | "charge.captured" | "charge.updated" => {
            E::Other("charge events repeat what the intent's events say")
        }
        "charge.dispute.funds_withdrawn" | "charge.dispute.funds_reinstated" => {
            E::Other("the dispute's own created and closed events record it")
        }
        _ => E::Other("not a type evisa-pay acts on"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `ACTED_ON` is what an endpoint must subscribe to: exactly the types `interpret` acts on.
    #[test]
    fn the_subscribed_types_are_the_ones_acted_on() {
        for kind in ACTED_ON {
            assert!(
                !matches!(interpret(kind, &json!({})), StripeEventObject::Other(_)),
                "{kind} is subscribed to but ignored"
            );
        }
        for kind in [
            "payment_intent.created",
            "charge.succeeded",
            "charge.failed",
            "charge.dispute.funds_withdrawn",
            "customer.created",
        ] {
            assert!(matches!(
                interpret(kind, &json!({})),
                StripeEventObject::Other(_)
            ));
            assert!(
                !ACTED_ON.contains(&kind),
                "{kind} is ignored but subscribed to"
            );
        }
    }

    #[test]
    fn stripes_own_example_objects_parse() {
        use StripeEventObject as E;
        // From Stripe's fixtures (stripe-mock), as sent.
        let refund = json!({"amount": 100, "balance_transaction": null,
            "charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8", "created": 1234567890, "currency": "usd",
            "destination_details": {"card": {"type": "reversal"}, "type": "card"},
            "id": "re_1Pgc72B7WZ01zgkWqPvrRrPE", "metadata": {}, "object": "refund",
            "payment_intent": null, "reason": null, "receipt_number": null,
            "source_transfer_reversal": null, "status": "succeeded", "transfer_reversal": null});
        let E::Refund(r) = interpret("refund.updated", &refund) else {
            panic!("a refund")
        };
        assert_eq!(r.verdict(), RefundVerdict::Succeeded);
        assert_eq!(r.amount().unwrap().amount_minor(), 100);
        assert!(r.refund_id().is_none() && !r.is_duplicate_charge_refund());

        let dispute = json!({"amount": 1000, "balance_transactions": [],
            "charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8", "created": 1234567890, "currency": "usd",
            "evidence": {}, "evidence_details": {"due_by": 1723679999, "has_evidence": false},
            "id": "dp_1Pgc71B7WZ01zgkWMevJiAUx", "is_charge_refundable": true,
            "livemode": false, "metadata": {}, "object": "dispute", "payment_intent": null,
            "reason": "general", "status": "warning_needs_response"});
        let E::Dispute(d) = interpret("charge.dispute.created", &dispute) else {
            panic!("a dispute")
        };
        assert_eq!(d.outcome(), None);
        let closed = DisputeSnapshot {
            status: "lost".into(),
            ..d
        };
        assert_eq!(closed.outcome(), Some(DisputeOutcome::Lost));

        let charge = json!({"id": "ch_1", "object": "charge", "amount": 4000,
            "amount_refunded": 1500, "currency": "usd", "payment_intent": "pi_1",
            "refunds": {"object": "list", "data": [], "has_more": false}});
        let E::ChargeRefunded(c) = interpret("charge.refunded", &charge) else {
            panic!("a charge")
        };
        assert_eq!(c.amount_refunded, 1500);
    }

    #[test]
    fn every_type_has_a_reading_and_bad_objects_are_kept_aside() {
        use StripeEventObject as E;
        assert!(matches!(
            interpret("refund.failed", &json!({"id": "re_1"})),
            E::Malformed(_)
        ));
        for kind in [
            "payment_intent.created",
            "charge.succeeded",
            "charge.failed",
            "customer.created",
        ] {
            assert!(matches!(interpret(kind, &json!({})), E::Other(_)), "{kind}");
        }
        let pending = json!({"id": "re_2", "amount": 5, "currency": "usd", "status": "pending",
            "metadata": {"refund_id": "0192f0c1a2b37c4d8e9f0a1b2c3d4e5f"}});
        let E::Refund(r) = interpret("refund.created", &pending) else {
            panic!("a refund")
        };
        assert_eq!(r.verdict(), RefundVerdict::Pending);
        assert!(r.refund_id().is_some(), "the simple form of our id parses");
    }
}
