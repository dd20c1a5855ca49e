//! What happens at "Stripe" when a payment is confirmed, refunded or disputed: the objects
//! change, the ledger records it, and the events Stripe would send are queued in its order.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Call, StripeSandbox,
    cards::{self, Behaviour, TestCard},
    now,
    objects::{Charge, Dispute, Refund},
    store::State,
    wire::{self, Answer},
};

impl StripeSandbox {
    pub(super) fn intent_json(&self, state: &State, id: &str, expand: &[&str]) -> Option<Value> {
        let intent = state.intents.get(id)?;
        let mut body = intent.to_json(&self.config.public_url);
        if expand.contains(&"payment_method")
            && let Some(pm) = &intent.payment_method
            && let Some(card) = card_of(state, pm)
        {
            body["payment_method"] = super::objects::payment_method_json(pm, &card, intent.created);
        }
        if expand.contains(&"latest_charge")
            && let Some(charge) = &intent.latest_charge
            && let Some(c) = self.charge_json(state, charge)
        {
            body["latest_charge"] = c;
        }
        Some(body)
    }

    pub(super) fn charge_json(&self, state: &State, id: &str) -> Option<Value> {
        let charge = state.charges.get(id)?;
        let refunds: Vec<Value> = charge
            .refunds
            .iter()
            .filter_map(|r| state.refunds.get(r).map(Refund::to_json))
            .collect();
        Some(charge.to_json(&self.config.public_url, &refunds))
    }

    /// Confirms an intent with its payment method: a charge, a decline or a 3-D Secure step.
    pub(super) fn confirm(&self, state: &mut State, call: &Call, id: &str) -> Answer {
        let Some(intent) = state.intents.get(id).cloned() else {
            return wire::no_such("payment_intent", id);
        };
        if !matches!(
            intent.status,
            "requires_payment_method" | "requires_confirmation"
        ) {
            return wire::invalid(
                Some("payment_intent_unexpected_state"),
                None,
                &format!(
                    "This PaymentIntent's status is {}, but must be one of requires_payment_method or requires_confirmation to be confirmed.",
                    intent.status
                ),
            );
        }
        let Some(pm) = intent.payment_method.clone() else {
            return wire::invalid(
                Some("payment_intent_unexpected_state"),
                Some("payment_method"),
                "You cannot confirm this PaymentIntent because it's missing a payment method. To confirm a payment, provide a payment_method.",
            );
        };
        let Some(card) = card_of(state, &pm) else {
            return wire::invalid(
                Some("resource_missing"),
                Some("payment_method"),
                &format!("No such PaymentMethod: '{pm}'"),
            );
        };
        let expand = wire::expansions(&call.pairs);
        match card.behaviour {
            Behaviour::Succeed | Behaviour::SucceedThenDispute => {
                if state.faults.processing_next > 0 {
                    state.faults.processing_next -= 1;
                    self.set_status(state, id, "processing");
                    let body = self.intent_json(state, id, &[]).expect("intent exists");
                    self.emit(state, Some(call), "payment_intent.processing", &body);
                    // The charge settles a moment later, as bank-side processing does.
                    let sandbox = self.clone();
                    let (id, pm) = (id.to_string(), pm.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let mut s = sandbox.state.lock().expect("sandbox state");
                        sandbox.succeed(&mut s, None, &id, &pm, card);
                    });
                    return (
                        200,
                        self.intent_json(state, &intent.id, &expand)
                            .expect("intent"),
                    );
                }
                self.succeed(state, Some(call), id, &pm, card);
                (
                    200,
                    self.intent_json(state, id, &expand).expect("intent exists"),
                )
            }
            Behaviour::Authenticate => {
                self.set_status(state, id, "requires_action");
                let body = self.intent_json(state, id, &[]).expect("intent exists");
                self.emit(state, Some(call), "payment_intent.requires_action", &body);
                (
                    200,
                    self.intent_json(state, id, &expand).expect("intent exists"),
                )
            }
            Behaviour::Decline(code) => self.decline(state, call, id, &pm, card, code),
        }
    }

    fn set_status(&self, state: &mut State, id: &str, status: &'static str) {
        if let Some(i) = state.intents.get_mut(id) {
            i.status = status;
        }
    }

    /// A successful charge: `charge.succeeded`, then `payment_intent.succeeded` (and, for the
    /// dispute test card, `charge.dispute.created` after them).
    pub(super) fn succeed(
        &self,
        state: &mut State,
        cause: Option<&Call>,
        intent_id: &str,
        pm: &str,
        card: TestCard,
    ) {
        let Some(intent) = state.intents.get(intent_id).cloned() else {
            return;
        };
        let dispute = card.behaviour == Behaviour::SucceedThenDispute;
        let charge_id = new_charge(state, &intent, pm, card, None);
        if let Some(i) = state.intents.get_mut(intent_id) {
            i.status = "succeeded";
            i.latest_charge = Some(charge_id.clone());
            i.last_error = None;
        }
        let charge = self.charge_json(state, &charge_id).expect("charge exists");
        self.emit(state, cause, "charge.succeeded", &charge);
        let body = self
            .intent_json(state, intent_id, &[])
            .expect("intent exists");
        self.emit(state, cause, "payment_intent.succeeded", &body);
        if dispute {
            self.dispute(state, &charge_id, "fraudulent");
        }
    }

    /// A declined charge: a failed Charge, `charge.failed`, `payment_intent.payment_failed`,
    /// and a 402 `card_error` naming all of them.
    fn decline(
        &self,
        state: &mut State,
        call: &Call,
        intent_id: &str,
        pm: &str,
        card: TestCard,
        code: &'static str,
    ) -> Answer {
        let intent = state
            .intents
            .get(intent_id)
            .cloned()
            .expect("intent exists");
        let pm_json = super::objects::payment_method_json(pm, &card, intent.created);
        let charge_id = new_charge(state, &intent, pm, card, Some(code));
        let error_code = cards::decline_error_code(code);
        let mut err = json!({
            "type": "card_error", "code": error_code, "decline_code": code,
            "message": cards::decline_message(code), "charge": charge_id,
            "doc_url": format!("https://stripe.com/docs/error-codes/{}", error_code.replace('_', "-")),
            "advice_code": "try_again_later",
            "payment_method": pm_json,
        });
        if error_code != "card_declined" {
            err.as_object_mut().expect("object").remove("decline_code");
        }
        if let Some(i) = state.intents.get_mut(intent_id) {
            i.status = "requires_payment_method";
            i.last_error = Some(err.clone());
            i.latest_charge = Some(charge_id.clone());
        }
        let charge = self.charge_json(state, &charge_id).expect("charge exists");
        self.emit(state, Some(call), "charge.failed", &charge);
        let body = self
            .intent_json(state, intent_id, &[])
            .expect("intent exists");
        self.emit(state, Some(call), "payment_intent.payment_failed", &body);
        err["payment_intent"] = body;
        (402, json!({"error": err}))
    }

    /// A refund of `amount` (the rest of the charge when `None`) of the charge `charge_id`.
    pub(super) fn refund(
        &self,
        state: &mut State,
        cause: Option<&Call>,
        charge_id: &str,
        amount: Option<i64>,
        reason: Option<String>,
        metadata: super::objects::Metadata,
    ) -> Answer {
        let Some(charge) = state.charges.get(charge_id).cloned() else {
            return wire::no_such("charge", charge_id);
        };
        if charge.declined.is_some() {
            return wire::invalid(
                Some("charge_not_refundable"),
                None,
                &format!("Charge {charge_id} has not succeeded, so it cannot be refunded."),
            );
        }
        if charge.disputed {
            return wire::invalid(
                Some("charge_disputed"),
                None,
                &format!("Charge {charge_id} has been charged back; cannot issue a refund."),
            );
        }
        let remaining = charge.amount - charge.amount_refunded;
        if remaining == 0 {
            return wire::invalid(
                Some("charge_already_refunded"),
                None,
                &format!("Charge {charge_id} has already been refunded."),
            );
        }
        let amount = amount.unwrap_or(remaining);
        if amount > remaining {
            return wire::invalid(
                Some("amount_too_large"),
                Some("amount"),
                &format!(
                    "Refund amount ({amount} {cur} minor units) is greater than unrefunded amount on charge ({remaining} {cur} minor units)",
                    cur = charge.currency
                ),
            );
        }
        let id = state.next_id("re");
        let status = if state.faults.refunds_pending {
            "pending"
        } else {
            "succeeded"
        };
        let refund = Refund {
            id: id.clone(),
            payment_intent: charge.payment_intent.clone(),
            charge: charge_id.to_string(),
            payment_method: charge.payment_method.clone(),
            amount,
            currency: charge.currency.clone(),
            metadata,
            reason,
            created: now(),
            status,
        };
        let body = refund.to_json();
        state.refunds.insert(id.clone(), refund);
        if let Some(c) = state.charges.get_mut(charge_id) {
            c.amount_refunded += amount;
            c.refunds.push(id);
        }
        self.emit(state, cause, "refund.created", &body);
        if status == "succeeded" {
            let charge = self.charge_json(state, charge_id).expect("charge exists");
            self.emit(state, cause, "charge.refunded", &charge);
        }
        (200, body)
    }

    /// A pending refund's outcome arrives: `refund.updated` and `charge.refunded`, or
    /// `refund.failed` and `refund.updated` (the amount is refundable again).
    pub(super) fn settle(&self, state: &mut State, id: &str, succeeded: bool) -> Answer {
        let Some(refund) = state.refunds.get(id).cloned() else {
            return wire::no_such("refund", id);
        };
        if refund.status != "pending" {
            return wire::invalid(
                None,
                None,
                &format!("Refund {id} is {}, not pending.", refund.status),
            );
        }
        let status = if succeeded { "succeeded" } else { "failed" };
        if let Some(r) = state.refunds.get_mut(id) {
            r.status = status;
        }
        let body = state.refunds.get(id).expect("refund exists").to_json();
        if succeeded {
            self.emit(state, None, "refund.updated", &body);
            let charge = self.charge_json(state, &refund.charge).expect("charge");
            self.emit(state, None, "charge.refunded", &charge);
        } else {
            if let Some(c) = state.charges.get_mut(&refund.charge) {
                c.amount_refunded -= refund.amount;
            }
            self.emit(state, None, "refund.failed", &body);
            self.emit(state, None, "refund.updated", &body);
        }
        (200, body)
    }

    /// The cardholder disputes a charge: `charge.dispute.created`.
    pub(super) fn dispute(&self, state: &mut State, charge_id: &str, reason: &str) -> Answer {
        let Some(charge) = state.charges.get(charge_id).cloned() else {
            return wire::no_such("charge", charge_id);
        };
        if charge.declined.is_some() || charge.disputed {
            return wire::invalid(
                None,
                None,
                &format!("Charge {charge_id} cannot be disputed (failed or already disputed)."),
            );
        }
        let id = state.next_id("dp");
        let dispute = Dispute {
            id: id.clone(),
            charge: charge_id.to_string(),
            payment_intent: charge.payment_intent.clone(),
            brand: charge.card.brand,
            amount: charge.amount - charge.amount_refunded,
            currency: charge.currency.clone(),
            reason: reason.to_string(),
            status: "needs_response".into(),
            created: now(),
        };
        let body = dispute.to_json();
        state.disputes.insert(id, dispute);
        if let Some(c) = state.charges.get_mut(charge_id) {
            c.disputed = true;
        }
        self.emit(state, None, "charge.dispute.created", &body);
        (200, body)
    }

    /// The card network decides: `charge.dispute.closed` with `won` or `lost`.
    pub(super) fn close_dispute(&self, state: &mut State, id: &str, won: bool) -> Answer {
        let Some(dispute) = state.disputes.get_mut(id) else {
            return wire::no_such("dispute", id);
        };
        if dispute.status == "won" || dispute.status == "lost" {
            return wire::invalid(None, None, &format!("Dispute {id} is already closed."));
        }
        dispute.status = if won { "won" } else { "lost" }.to_string();
        let body = dispute.to_json();
        self.emit(state, None, "charge.dispute.closed", &body);
        (200, body)
    }
}

/// Records a charge of `intent` (declined with a code, or not) and returns its id. Like
/// Stripe's, it carries the intent's metadata.
fn new_charge(
    state: &mut State,
    intent: &super::objects::Intent,
    pm: &str,
    card: TestCard,
    declined: Option<&'static str>,
) -> String {
    let id = state.next_id("ch");
    state.charges.insert(
        id.clone(),
        Charge {
            id: id.clone(),
            payment_intent: intent.id.clone(),
            payment_method: pm.to_string(),
            card,
            amount: intent.amount,
            currency: intent.currency.clone(),
            metadata: intent.metadata.clone(),
            created: now(),
            declined,
            amount_refunded: 0,
            refunds: Vec::new(),
            disputed: false,
        },
    );
    id
}

/// The card behind a payment method: one of Stripe's test ids, or one tokenised here.
pub(super) fn card_of(state: &State, pm: &str) -> Option<TestCard> {
    cards::builtin(pm).or_else(|| state.payment_methods.get(pm).cloned())
}
