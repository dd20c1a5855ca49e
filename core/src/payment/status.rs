//! The life of one payment attempt, as a pure function from (status, event) to the next status.
//!
//! ```text
//! created ─ChargeStarted→ processing ─GatewayRequiresAction→ requires_action
//!    │                        │                                   │
//!    └──────────┬─────────────┴───────────────┬───────────────────┘
//!               ├─GatewaySaysSucceeded→ succeeded
//!               ├─Declined→ failed   ├─Cancelled→ cancelled   └─Expired→ expired
//! ```
//! A late `GatewaySaysSucceeded` also moves failed, cancelled or expired payments to succeeded:
//! the gateway is the truth about money taken. Once succeeded, nothing moves a payment again
//! (refunds are recorded beside it, not as a status).

use std::fmt;

use crate::visa::string_enum;

/// Where a payment attempt is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Created,
    Processing,
    RequiresAction,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
}

string_enum!(PaymentStatus, "payment status",
    Created => "created", Processing => "processing", RequiresAction => "requires_action",
    Succeeded => "succeeded", Failed => "failed", Cancelled => "cancelled", Expired => "expired");

/// What the worker, a gateway callback or reconciliation learned about a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentEvent {
    /// The worker is about to ask the gateway to charge.
    ChargeStarted,
    /// The gateway is working on it (e.g. after 3-D Secure).
    GatewaySaysProcessing,
    /// The payer must act: 3-D Secure, or a redirect to a cashier.
    GatewayRequiresAction,
    /// The gateway took the money.
    GatewaySaysSucceeded,
    /// The gateway refused the charge (decline, failed authentication).
    Declined,
    /// The attempt was cancelled by the payer or at the gateway.
    Cancelled,
    /// Abandoned past its deadline; the gateway confirmed nothing was taken.
    Expired,
}

impl PaymentEvent {
    pub const ALL: &'static [PaymentEvent] = &[
        Self::ChargeStarted,
        Self::GatewaySaysProcessing,
        Self::GatewayRequiresAction,
        Self::GatewaySaysSucceeded,
        Self::Declined,
        Self::Cancelled,
        Self::Expired,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ChargeStarted => "charge_started",
            Self::GatewaySaysProcessing => "gateway_says_processing",
            Self::GatewayRequiresAction => "gateway_requires_action",
            Self::GatewaySaysSucceeded => "gateway_says_succeeded",
            Self::Declined => "declined",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }
}

impl fmt::Display for PaymentEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event does not apply: a duplicate, stale or out-of-order report. Callers log it and move
/// on; it is never an error that makes a gateway retry forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a payment that is {from} cannot take `{event}`")]
pub struct PaymentRefusal {
    pub from: PaymentStatus,
    pub event: PaymentEvent,
}

impl PaymentStatus {
    /// No gateway work is pending: the attempt has an outcome.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Expired
        )
    }

    /// The one function that decides every payment transition.
    pub fn next(self, event: PaymentEvent) -> Result<PaymentStatus, PaymentRefusal> {
        use PaymentEvent as E;
        use PaymentStatus as S;
        let open = matches!(self, S::Created | S::Processing | S::RequiresAction);
        match (self, event) {
            (S::Created, E::ChargeStarted) => Ok(S::Processing),
            (S::Created | S::RequiresAction, E::GatewaySaysProcessing) => Ok(S::Processing),
            (S::Created | S::Processing, E::GatewayRequiresAction) => Ok(S::RequiresAction),
            (S::Failed | S::Cancelled | S::Expired, E::GatewaySaysSucceeded) => Ok(S::Succeeded),
            (_, E::GatewaySaysSucceeded) if open => Ok(S::Succeeded),
            (_, E::Declined) if open => Ok(S::Failed),
            (_, E::Cancelled) if open => Ok(S::Cancelled),
            (_, E::Expired) if open => Ok(S::Expired),
            (from, event) => Err(PaymentRefusal { from, event }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{PaymentEvent as E, PaymentStatus as S};

    /// Every allowed edge, written out independently of `next`.
    const EDGES: &[(S, E, S)] = &[
        (S::Created, E::ChargeStarted, S::Processing),
        (S::Created, E::GatewaySaysProcessing, S::Processing),
        (S::RequiresAction, E::GatewaySaysProcessing, S::Processing),
        (S::Created, E::GatewayRequiresAction, S::RequiresAction),
        (S::Processing, E::GatewayRequiresAction, S::RequiresAction),
        (S::Created, E::GatewaySaysSucceeded, S::Succeeded),
        (S::Processing, E::GatewaySaysSucceeded, S::Succeeded),
        (S::RequiresAction, E::GatewaySaysSucceeded, S::Succeeded),
        (S::Failed, E::GatewaySaysSucceeded, S::Succeeded),
        (S::Cancelled, E::GatewaySaysSucceeded, S::Succeeded),
        (S::Expired, E::GatewaySaysSucceeded, S::Succeeded),
        (S::Created, E::Declined, S::Failed),
        (S::Processing, E::Declined, S::Failed),
        (S::RequiresAction, E::Declined, S::Failed),
        (S::Created, E::Cancelled, S::Cancelled),
        (S::Processing, E::Cancelled, S::Cancelled),
        (S::RequiresAction, E::Cancelled, S::Cancelled),
        (S::Created, E::Expired, S::Expired),
        (S::Processing, E::Expired, S::Expired),
        (S::RequiresAction, E::Expired, S::Expired),
    ];

    #[test]
    fn every_status_event_pair_follows_the_table() {
        let mut checked = 0;
        for &from in S::ALL {
            for &event in E::ALL {
                let expected = EDGES
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (from.next(event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from} + {event}"),
                    (Err(refusal), None) => {
                        assert_eq!((refusal.from, refusal.event), (from, event))
                    }
                    (got, want) => panic!("{from} + {event}: got {got:?}, want {want:?}"),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 49);
    }

    #[test]
    fn succeeded_is_final_and_duplicates_are_refused() {
        assert!(E::ALL.iter().all(|e| S::Succeeded.next(*e).is_err()));
        assert!(S::RequiresAction.next(E::GatewayRequiresAction).is_err());
        assert!(S::Processing.next(E::ChargeStarted).is_err());
    }

    #[test]
    fn terminal_statuses() {
        let terminal: Vec<_> = S::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [&S::Succeeded, &S::Failed, &S::Cancelled, &S::Expired]
        );
    }
}
