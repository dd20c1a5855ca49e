//! The sandbox's objects and their JSON, with the field set of Stripe's current objects
//! (`../shared/reference/stripe-fixtures3.json` holds Stripe's own examples; a test validates
//! every answer against Stripe's published schemas).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::cards::TestCard;

pub type Metadata = BTreeMap<String, String>;

#[derive(Clone, Debug)]
pub struct Intent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: &'static str,
    pub payment_method: Option<String>,
    pub metadata: Metadata,
    pub client_secret: String,
    pub created: i64,
    pub description: Option<String>,
    pub receipt_email: Option<String>,
    /// `automatic_payment_methods`: (enabled, allow_redirects).
    pub automatic: Option<(bool, Option<String>)>,
    pub return_url: Option<String>,
    pub last_error: Option<Value>,
    pub latest_charge: Option<String>,
    pub canceled_at: Option<i64>,
    pub cancellation_reason: Option<String>,
}

impl Intent {
    pub fn to_json(&self, public_url: &str) -> Value {
        let three_ds = format!("{public_url}/sandbox/3ds/{}", self.id);
        let next_action = (self.status == "requires_action").then(|| {
            json!({
                "type": "redirect_to_url",
                "redirect_to_url": {"url": three_ds, "return_url": self.return_url},
                "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": three_ds},
            })
        });
        let automatic = self.automatic.as_ref().map(|(enabled, redirects)| {
            let mut a = json!({"enabled": enabled});
            if let Some(r) = redirects {
                a["allow_redirects"] = json!(r);
            }
            a
        });
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": if self.status == "succeeded" { self.amount } else { 0 },
            "application": null,
            "application_fee_amount": null,
            "automatic_payment_methods": automatic,
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
            "capture_method": "automatic_async",
            "client_secret": self.client_secret,
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "customer": null,
            "customer_account": null,
            "description": self.description,
            "excluded_payment_method_types": null,
            "last_payment_error": self.last_error,
            "latest_charge": self.latest_charge,
            "livemode": false,
            "managed_payments": {"enabled": false},
            "metadata": self.metadata,
            "next_action": next_action,
            "on_behalf_of": null,
            "payment_method": self.payment_method,
            "payment_method_configuration_details": null,
            "payment_method_options": {"card": {
                "installments": null, "mandate_options": null, "network": null,
                "request_three_d_secure": "automatic",
            }},
            "payment_method_types": ["card"],
            "processing": null,
            "receipt_email": self.receipt_email,
            "review": null,
            "setup_future_usage": null,
            "shipping": null,
            "source": null,
            "statement_descriptor": null,
            "statement_descriptor_suffix": null,
            "status": self.status,
            "transfer_data": null,
            "transfer_group": null,
        })
    }
}

/// A card PaymentMethod (built-in test methods and tokenised numbers alike).
pub fn payment_method_json(id: &str, card: &TestCard, created: i64) -> Value {
    json!({
        "id": id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": billing_details(),
        "card": {
            "brand": card.brand,
            "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "unchecked"},
            "country": "US",
            "display_brand": card.brand,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "fingerprint": fingerprint(card),
            "funding": card.funding,
            "generated_from": null,
            "last4": card.last4,
            "networks": {"available": [card.brand], "preferred": null},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": true},
            "wallet": null,
        },
        "created": created,
        "customer": null,
        "customer_account": null,
        "livemode": false,
        "metadata": {},
        "type": "card",
    })
}

fn billing_details() -> Value {
    json!({
        "address": {"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null},
        "email": null, "name": null, "phone": null, "tax_id": null,
    })
}

/// The same card always has the same fingerprint, as at Stripe.
fn fingerprint(card: &TestCard) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{}{}", card.brand, card.last4).as_bytes(),
    );
    d.as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

#[derive(Clone, Debug)]
pub struct Charge {
    pub id: String,
    pub payment_intent: String,
    pub payment_method: String,
    pub card: TestCard,
    pub amount: i64,
    pub currency: String,
    pub metadata: Metadata,
    pub created: i64,
    /// `None` when it succeeded; the decline code otherwise.
    pub declined: Option<&'static str>,
    pub amount_refunded: i64,
    /// Its refunds' ids, oldest first.
    pub refunds: Vec<String>,
    pub disputed: bool,
}

impl Charge {
    pub fn to_json(&self, public_url: &str, refunds: &[Value]) -> Value {
        let succeeded = self.declined.is_none();
        let outcome = match self.declined {
            None => json!({
                "advice_code": null, "network_advice_code": null, "network_decline_code": null,
                "network_status": "approved_by_network", "reason": null, "risk_level": "normal",
                "risk_score": 32, "seller_message": "Payment complete.", "type": "authorized",
            }),
            Some(code) => json!({
                "advice_code": "try_again_later", "network_advice_code": null, "network_decline_code": null,
                "network_status": "declined_by_network", "reason": code, "risk_level": "normal",
                "risk_score": 32, "seller_message": "The bank did not return any further details with this decline.",
                "type": "issuer_declined",
            }),
        };
        json!({
            "id": self.id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": if succeeded { self.amount } else { 0 },
            "amount_refunded": self.amount_refunded,
            "application": null,
            "application_fee": null,
            "application_fee_amount": null,
            "balance_transaction": succeeded.then(|| format!("txn_{}", &self.id[3..])),
            "billing_details": billing_details(),
            "calculated_statement_descriptor": "EVISA",
            "captured": succeeded,
            "created": self.created,
            "currency": self.currency,
            "customer": null,
            "description": null,
            "disputed": self.disputed,
            "failure_balance_transaction": null,
            "failure_code": self.declined.map(super::cards::decline_error_code),
            "failure_message": self.declined.map(super::cards::decline_message),
            "fraud_details": {},
            "livemode": false,
            "metadata": self.metadata,
            "on_behalf_of": null,
            "outcome": outcome,
            "paid": succeeded,
            "payment_intent": self.payment_intent,
            "payment_method": self.payment_method,
            "payment_method_details": {"type": "card", "card": {
                "amount_authorized": if succeeded { Some(self.amount) } else { None },
                "authorization_code": null,
                "brand": self.card.brand,
                "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass"},
                "country": "US",
                "exp_month": self.card.exp_month,
                "exp_year": self.card.exp_year,
                "extended_authorization": {"status": "disabled"},
                "fingerprint": fingerprint(&self.card),
                "funding": self.card.funding,
                "incremental_authorization": {"status": "unavailable"},
                "installments": null,
                "last4": self.card.last4,
                "mandate": null,
                "multicapture": {"status": "unavailable"},
                "network": self.card.brand,
                "network_token": {"used": false},
                "network_transaction_id": null,
                "overcapture": {"maximum_amount_capturable": self.amount, "status": "unavailable"},
                "regulated_status": "unregulated",
                "three_d_secure": null,
                "transaction_link_id": null,
                "wallet": null,
            }},
            "receipt_email": null,
            "receipt_number": null,
            "receipt_url": format!("{public_url}/sandbox/receipts/{}", self.id),
            "refunded": self.amount_refunded == self.amount && succeeded,
            "refunds": {
                "object": "list", "data": refunds, "has_more": false,
                "url": format!("/v1/charges/{}/refunds", self.id),
            },
            "review": null,
            "shipping": null,
            "source": null,
            "source_transfer": null,
            "statement_descriptor": null,
            "statement_descriptor_suffix": null,
            "status": if succeeded { "succeeded" } else { "failed" },
            "transfer_data": null,
            "transfer_group": null,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Refund {
    pub id: String,
    pub payment_intent: String,
    pub charge: String,
    pub payment_method: String,
    pub amount: i64,
    pub currency: String,
    pub metadata: Metadata,
    pub reason: Option<String>,
    pub created: i64,
    /// `pending`, `succeeded` or `failed`.
    pub status: &'static str,
}

impl Refund {
    pub fn to_json(&self) -> Value {
        let mut r = json!({
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "balance_transaction": (self.status != "failed").then(|| format!("txn_{}", &self.id[3..])),
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "customer": null,
            "customer_account": null,
            "destination_details": {"type": "card", "card": {
                "reference": format!("{:0>23}", self.created), "reference_status": "available",
                "reference_type": "acquirer_reference_number", "type": "refund",
            }},
            "metadata": self.metadata,
            "payment_intent": self.payment_intent,
            "payment_method": self.payment_method,
            "reason": self.reason,
            "receipt_number": null,
            "source_transfer_reversal": null,
            "status": self.status,
            "transfer_reversal": null,
        });
        if self.status == "failed" {
            r["failure_reason"] = json!("declined");
            r["failure_balance_transaction"] = json!(format!("txn_{}f", &self.id[3..]));
        }
        r
    }
}

/// The evidence fields of a dispute (all empty: nobody answers in the sandbox).
const EVIDENCE: &[&str] = &[
    "access_activity_log",
    "billing_address",
    "cancellation_policy",
    "cancellation_policy_disclosure",
    "cancellation_rebuttal",
    "customer_communication",
    "customer_email_address",
    "customer_name",
    "customer_purchase_ip",
    "customer_signature",
    "duplicate_charge_documentation",
    "duplicate_charge_explanation",
    "duplicate_charge_id",
    "product_description",
    "receipt",
    "refund_policy",
    "refund_policy_disclosure",
    "refund_refusal_explanation",
    "service_date",
    "service_documentation",
    "shipping_address",
    "shipping_carrier",
    "shipping_date",
    "shipping_documentation",
    "shipping_tracking_number",
    "uncategorized_file",
    "uncategorized_text",
];

#[derive(Clone, Debug)]
pub struct Dispute {
    pub id: String,
    pub charge: String,
    pub payment_intent: String,
    pub brand: &'static str,
    pub amount: i64,
    pub currency: String,
    pub reason: String,
    /// `needs_response`, then `won` or `lost`.
    pub status: String,
    pub created: i64,
}

impl Dispute {
    pub fn to_json(&self) -> Value {
        let mut evidence: serde_json::Map<String, Value> = EVIDENCE
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        evidence.insert("enhanced_evidence".into(), json!({}));
        json!({
            "id": self.id,
            "object": "dispute",
            "amount": self.amount,
            "balance_transactions": [],
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "enhanced_eligibility_types": [],
            "evidence": evidence,
            "evidence_details": {
                "due_by": self.created + 7 * 86_400, "enhanced_eligibility": {}, "has_evidence": false,
                "past_due": false, "submission_count": 0,
            },
            "is_charge_refundable": false,
            "livemode": false,
            "metadata": {},
            "payment_intent": self.payment_intent,
            "payment_method_details": {"type": "card", "card": {
                "brand": self.brand, "case_type": "chargeback", "network_reason_code": "10.4",
                "network": self.brand,
            }},
            "reason": self.reason,
            "status": self.status,
        })
    }
}
