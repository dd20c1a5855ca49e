//! Wire types: what the API sends and accepts, with their schemas. Conversions to and from the
//! domain live here so handlers stay short.

use chrono::{DateTime, NaiveDate, Utc};
use evisa_core::{
    application::{Application, ApplicationStatus, FixedFee},
    fees::{FeeQuote, NationalityMatch},
    money::Money,
    visa::{ProcessingSpeed, VisaType},
};
use poem_openapi::{Enum, Object};

macro_rules! wire_enum {
    ($(#[$doc:meta])* $wire:ident <=> $domain:ident as $name:literal { $($(#[$vdoc:meta])* $v:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Enum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
        #[oai(rename = $name, rename_all = "snake_case")]
        #[serde(rename_all = "snake_case")]
        pub enum $wire { $($(#[$vdoc])* $v),+ }

        impl From<$wire> for $domain {
            fn from(w: $wire) -> Self {
                match w { $($wire::$v => $domain::$v),+ }
            }
        }

        impl From<$domain> for $wire {
            fn from(d: $domain) -> Self {
                match d { $($domain::$v => $wire::$v),+ }
            }
        }
    };
}

wire_enum!(
    /// The kind of visa.
    VisaTypeWire <=> VisaType as "VisaType" { Tourist, Business, Transit }
);
wire_enum!(
    /// How fast the application is processed.
    SpeedWire <=> ProcessingSpeed as "ProcessingSpeed" { Standard, Express }
);
wire_enum!(
    /// Where an application is: `draft → submitted → paid → processing → approved | rejected`,
    /// or `submitted → expired`.
    StatusWire <=> ApplicationStatus as "ApplicationStatus" { Draft, Submitted, Paid, Processing, Approved, Rejected, Expired }
);

/// An amount of money.
#[derive(Object, Debug, Clone, PartialEq, Eq)]
#[oai(rename = "Money")]
pub struct MoneyView {
    /// Integer minor units of `currency` (cents for USD; yen for JPY; fils for KWD).
    pub amount: i64,
    /// ISO 4217 currency code.
    pub currency: String,
}

impl From<Money> for MoneyView {
    fn from(m: Money) -> Self {
        MoneyView {
            amount: m.amount_minor(),
            currency: m.currency().code().to_string(),
        }
    }
}

/// The fee fixed on an application at submission; absent on drafts.
#[derive(Object, Debug, Clone)]
#[oai(rename = "Fee")]
pub struct FeeView {
    /// Integer minor units of `currency`.
    pub amount: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// True when the fee schedule exempts this application (the amount is then 0).
    pub exempt: bool,
    /// The same fee in every currency it can be paid in (e.g. CNY for Alipay).
    pub options: Vec<MoneyView>,
}

impl From<&FixedFee> for FeeView {
    fn from(f: &FixedFee) -> Self {
        FeeView {
            amount: f.amount.amount_minor(),
            currency: f.amount.currency().code().to_string(),
            exempt: f.exempt,
            options: f.options.iter().copied().map(Into::into).collect(),
        }
    }
}

/// A visa application. (No `Debug`: it holds personal data, and nothing should print it.)
#[derive(Object, Clone)]
#[oai(rename = "Application")]
pub struct ApplicationView {
    pub id: uuid::Uuid,
    pub status: StatusWire,
    /// Full name as printed in the passport.
    #[oai(skip_serializing_if_is_none)]
    pub full_name: Option<String>,
    /// Passport number (upper-case letters and digits).
    #[oai(skip_serializing_if_is_none)]
    pub passport_number: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub date_of_birth: Option<NaiveDate>,
    /// ISO 3166-1 alpha-2 code of the passport's country.
    #[oai(skip_serializing_if_is_none)]
    pub nationality: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub visa_type: Option<VisaTypeWire>,
    #[oai(skip_serializing_if_is_none)]
    pub processing_speed: Option<SpeedWire>,
    #[oai(skip_serializing_if_is_none)]
    pub intended_arrival_date: Option<NaiveDate>,
    // (No doc comment: on a `$ref` field it makes generators copy the `Fee` model.)
    #[oai(skip_serializing_if_is_none)]
    pub fee: Option<FeeView>,
    /// The officer's reason, on rejected applications.
    #[oai(skip_serializing_if_is_none)]
    pub decision_reason: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub submitted_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub paid_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub decided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Application> for ApplicationView {
    fn from(a: Application) -> Self {
        ApplicationView {
            id: a.id.as_uuid(),
            status: a.status.into(),
            full_name: a.full_name,
            passport_number: a.passport_number,
            date_of_birth: a.date_of_birth,
            nationality: a.nationality.map(|c| c.alpha2().to_string()),
            visa_type: a.visa_type.map(Into::into),
            processing_speed: a.processing_speed.map(Into::into),
            intended_arrival_date: a.intended_arrival_date,
            fee: a.fee.as_ref().map(Into::into),
            decision_reason: a.decision_reason,
            submitted_at: a.submitted_at,
            paid_at: a.paid_at,
            decided_at: a.decided_at,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// One page of applications, newest first. (No `Debug`: its items hold personal data.)
#[derive(Object)]
#[oai(rename = "ApplicationPage")]
pub struct ApplicationPage {
    pub items: Vec<ApplicationView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

impl From<evisa_core::application::Page> for ApplicationPage {
    fn from(p: evisa_core::application::Page) -> Self {
        ApplicationPage {
            items: p.items.into_iter().map(Into::into).collect(),
            next_cursor: p.next_cursor.map(|c| c.to_string()),
        }
    }
}

/// The fee for a visa type, nationality and speed today.
#[derive(Object, Debug)]
#[oai(rename = "FeeQuote")]
pub struct FeeQuoteView {
    pub visa_type: VisaTypeWire,
    pub nationality: String,
    pub speed: SpeedWire,
    /// The day the quote is for (UTC).
    pub valid_on: NaiveDate,
    pub fee: MoneyView,
    /// The same fee in every currency it can be paid in.
    pub options: Vec<MoneyView>,
    /// True when no fee is due.
    pub exempt: bool,
    /// Which rule applied: `country`, `group:<code>` or `everyone`.
    pub matched: String,
    /// The fee rule, for reference.
    pub rule_id: uuid::Uuid,
    pub description: String,
}

impl FeeQuoteView {
    pub fn new(
        q: FeeQuote,
        visa_type: VisaType,
        nationality: &str,
        speed: ProcessingSpeed,
        on: NaiveDate,
    ) -> Self {
        FeeQuoteView {
            visa_type: visa_type.into(),
            nationality: nationality.to_string(),
            speed: speed.into(),
            valid_on: on,
            fee: q.base.into(),
            options: q.prices.iter().copied().map(Into::into).collect(),
            exempt: q.exempt,
            matched: match q.matched {
                NationalityMatch::Country(_) => "country".into(),
                NationalityMatch::Group(g) => format!("group:{g}"),
                NationalityMatch::Everyone => "everyone".into(),
            },
            rule_id: q.rule_id.as_uuid(),
            description: q.description,
        }
    }
}
