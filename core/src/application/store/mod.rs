//! Storage of visa applications. Personal fields are sealed with the data keys on the way in and
//! opened on the way out; every status change appends to `application_events` in the same
//! transaction.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};

use super::{ApplicationEvent, ApplicationRefusal, ApplicationStatus};
use crate::{
    country::CountryCode,
    crypto::{DataKeys, OpenError},
    fees::{self, FeeQuote, QuoteError},
    ids::{ApplicationId, FeeRuleId, PaymentId, UserId},
    money::{Currency, Money},
    person::{ArrivalDate, DateOfBirth, FullName, PassportNumber, PersonError},
    users::Role,
    visa::{ProcessingSpeed, VisaType},
};

/// Fields an applicant sets on a draft; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct ApplicationChanges {
    pub full_name: Option<FullName>,
    pub passport_number: Option<PassportNumber>,
    pub date_of_birth: Option<DateOfBirth>,
    pub nationality: Option<CountryCode>,
    pub visa_type: Option<VisaType>,
    pub processing_speed: Option<ProcessingSpeed>,
    pub intended_arrival_date: Option<ArrivalDate>,
}

/// The fee fixed at submission. The only source of any amount ever charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedFee {
    pub rule_id: FeeRuleId,
    pub amount: Money,
    pub exempt: bool,
    /// The same fee in every currency it may be paid in.
    pub options: Vec<Money>,
}

/// A visa application as its owner or an officer sees it (personal fields opened). Its `Debug`
/// prints `***` for the personal fields.
#[derive(Clone)]
pub struct Application {
    pub id: ApplicationId,
    pub applicant_id: UserId,
    pub status: ApplicationStatus,
    pub full_name: Option<String>,
    pub passport_number: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub nationality: Option<CountryCode>,
    pub visa_type: Option<VisaType>,
    pub processing_speed: Option<ProcessingSpeed>,
    pub intended_arrival_date: Option<NaiveDate>,
    pub fee: Option<FixedFee>,
    pub decision_reason: Option<String>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: bool| if v { "***" } else { "None" };
        f.debug_struct("Application")
            .field("id", &self.id)
            .field("applicant_id", &self.applicant_id)
            .field("status", &self.status)
            .field("full_name", &hidden(self.full_name.is_some()))
            .field("passport_number", &hidden(self.passport_number.is_some()))
            .field("date_of_birth", &hidden(self.date_of_birth.is_some()))
            .field("nationality", &self.nationality)
            .field("visa_type", &self.visa_type)
            .field("processing_speed", &self.processing_speed)
            .field("intended_arrival_date", &self.intended_arrival_date)
            .field("fee", &self.fee)
            .field("submitted_at", &self.submitted_at)
            .field("paid_at", &self.paid_at)
            .field("decided_at", &self.decided_at)
            .finish_non_exhaustive()
    }
}

/// Who or what caused a change, for the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    User { id: UserId, role: Role },
    System,
    Gateway,
}

impl Actor {
    /// The actor as stored: its kind and, for people, their id.
    pub(crate) fn parts(&self) -> (&'static str, Option<UserId>) {
        (self.kind(), self.id())
    }

    fn kind(&self) -> &'static str {
        match self {
            Actor::User { role, .. } => role.as_str(),
            Actor::System => "system",
            Actor::Gateway => "gateway",
        }
    }

    fn id(&self) -> Option<UserId> {
        match self {
            Actor::User { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// An officer's decision on a paid application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    BeginProcessing,
    Approve,
    Reject { reason: String },
}

/// Officers' filters over all applications.
#[derive(Debug, Default, Clone)]
pub struct AdminFilter {
    pub status: Option<ApplicationStatus>,
    pub visa_type: Option<VisaType>,
    pub nationality: Option<CountryCode>,
}

/// One page of a listing, newest first, and the cursor for the next.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Application>,
    pub next_cursor: Option<ApplicationId>,
}

/// The outcomes of application use cases that a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ApplicationError {
    /// Not there, or not the caller's: the two are indistinguishable on purpose.
    #[error("application not found")]
    NotFound,
    /// The application's status does not allow this.
    #[error(transparent)]
    Refused(#[from] ApplicationRefusal),
    /// Only drafts may be edited.
    #[error("the application is {status}; only drafts may be edited")]
    NotEditable { status: ApplicationStatus },
    /// Submission needs these fields set first.
    #[error("the application is incomplete")]
    Incomplete { missing: Vec<&'static str> },
    /// On the day of submission, these dates break their rules (a draft may hold any arrival
    /// date and any date of birth from 1900 on).
    #[error("dates out of range on the day of submission")]
    OutOfRange {
        fields: Vec<(&'static str, PersonError)>,
    },
    /// A payment of the application is disputed (a chargeback): no decision until an officer
    /// resolves the dispute (ours `dispute_id`, the gateway's `dispute`).
    #[error("the application is on hold: its payment {payment} is disputed (dispute {dispute})")]
    OnHold {
        dispute_id: uuid::Uuid,
        dispute: String,
        payment: PaymentId,
    },
    /// No rule of the fee schedule covers this visa type, nationality and speed today.
    #[error("no fee is defined for this visa type, nationality and processing speed")]
    NoFeeRule,
    #[error("stored personal data could not be opened: {0}")]
    Crypto(#[from] OpenError),
    #[error(transparent)]
    Quote(#[from] QuoteError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The columns every query returns, in `ApplicationRow` order.
macro_rules! columns {
    () => {
        "id, applicant_id, status, full_name, passport_number, date_of_birth, nationality, \
         visa_type, processing_speed, intended_arrival_date, fee_rule_id, fee_amount_minor, \
         fee_currency, fee_exempt, fee_prices, decision_reason, submitted_at, paid_at, decided_at, \
         created_at, updated_at"
    };
}

mod decisions;
mod drafts;
mod events;
mod reads;
mod rows;

pub use decisions::{HistoryEntry, decide, expire_unpaid, history};
pub use drafts::{create_draft, submit, update_draft};
pub(crate) use events::{record_event, record_paid};
pub use reads::{get, get_for_owner, list_all, list_for_owner};
pub(in crate::application) use rows::context;
use rows::{ApplicationRow, Bindings, StoredPrice};
