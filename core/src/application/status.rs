//! The life of a visa application, as a pure function from (status, event) to the next status.
//!
//! ```text
//! draft ─Submit→ submitted ─FeeWaived | PaymentSucceeded→ paid ─BeginProcessing→ processing
//!                    │                                                  ├─Approve→ approved
//!                    └─Expire→ expired ─PaymentSucceeded→ paid          └─Reject→  rejected
//! ```

use std::fmt;

use crate::visa::string_enum;

/// Where an application is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationStatus {
    Draft,
    Submitted,
    Paid,
    Processing,
    Approved,
    Rejected,
    Expired,
}

string_enum!(ApplicationStatus, "application status",
    Draft => "draft", Submitted => "submitted", Paid => "paid", Processing => "processing",
    Approved => "approved", Rejected => "rejected", Expired => "expired");

/// Something that happened to an application and may move it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApplicationEvent {
    /// The applicant submitted a complete draft; the fee quote is fixed.
    Submit,
    /// The fee schedule exempts this application from paying.
    FeeWaived,
    /// A payment for this application succeeded at the gateway.
    PaymentSucceeded,
    /// Submitted and unpaid for longer than allowed.
    Expire,
    /// An officer took up the paid application.
    BeginProcessing,
    /// An officer granted the visa.
    Approve,
    /// An officer refused the visa.
    Reject,
}

impl ApplicationEvent {
    pub const ALL: &'static [ApplicationEvent] = &[
        Self::Submit,
        Self::FeeWaived,
        Self::PaymentSucceeded,
        Self::Expire,
        Self::BeginProcessing,
        Self::Approve,
        Self::Reject,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::FeeWaived => "fee_waived",
            Self::PaymentSucceeded => "payment_succeeded",
            Self::Expire => "expire",
            Self::BeginProcessing => "begin_processing",
            Self::Approve => "approve",
            Self::Reject => "reject",
        }
    }
}

impl fmt::Display for ApplicationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event does not apply in the application's current status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an application that is {from} cannot take `{event}`")]
pub struct ApplicationRefusal {
    pub from: ApplicationStatus,
    pub event: ApplicationEvent,
}

impl ApplicationStatus {
    /// The one function that decides every application transition.
    pub fn next(self, event: ApplicationEvent) -> Result<ApplicationStatus, ApplicationRefusal> {
        use ApplicationEvent as E;
        use ApplicationStatus as S;
        match (self, event) {
            (S::Draft, E::Submit) => Ok(S::Submitted),
            (S::Submitted, E::FeeWaived | E::PaymentSucceeded) => Ok(S::Paid),
            (S::Submitted, E::Expire) => Ok(S::Expired),
            // Money the gateway really took is honoured even after the application expired:
            // refusing it would leave an applicant charged for nothing.
            (S::Expired, E::PaymentSucceeded) => Ok(S::Paid),
            (S::Paid, E::BeginProcessing) => Ok(S::Processing),
            (S::Processing, E::Approve) => Ok(S::Approved),
            (S::Processing, E::Reject) => Ok(S::Rejected),
            (from, event) => Err(ApplicationRefusal { from, event }),
        }
    }

    /// Only drafts may be edited; everything after submission is fixed.
    pub fn is_editable(self) -> bool {
        self == ApplicationStatus::Draft
    }
}

#[cfg(test)]
mod tests {
    use super::{ApplicationEvent as E, ApplicationStatus as S};

    /// Every allowed edge, written out independently of `next`.
    const EDGES: &[(S, E, S)] = &[
        (S::Draft, E::Submit, S::Submitted),
        (S::Submitted, E::FeeWaived, S::Paid),
        (S::Submitted, E::PaymentSucceeded, S::Paid),
        (S::Submitted, E::Expire, S::Expired),
        (S::Expired, E::PaymentSucceeded, S::Paid),
        (S::Paid, E::BeginProcessing, S::Processing),
        (S::Processing, E::Approve, S::Approved),
        (S::Processing, E::Reject, S::Rejected),
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
        assert_eq!(checked, S::ALL.len() * E::ALL.len());
        assert_eq!(checked, 49);
    }

    #[test]
    fn final_statuses_take_no_event() {
        for from in [S::Approved, S::Rejected] {
            assert!(E::ALL.iter().all(|e| from.next(*e).is_err()));
        }
    }

    #[test]
    fn only_drafts_are_editable() {
        assert!(S::Draft.is_editable());
        assert!(S::ALL.iter().filter(|s| s.is_editable()).count() == 1);
    }
}
