//! Storage of visa applications. Personal fields are sealed with the data keys on the way in and
//! opened on the way out; every status change appends to `application_events` in the same
//! transaction.

use crate::audit::chained_event;
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
    /// A payment of the application is disputed (a chargeback): no decision until the dispute
    /// is closed.
    #[error("the application is on hold: its payment {payment} is disputed (dispute {dispute})")]
    OnHold { dispute: String, payment: PaymentId },
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

#[derive(sqlx::FromRow)]
struct ApplicationRow {
    id: ApplicationId,
    applicant_id: UserId,
    status: String,
    full_name: Option<Vec<u8>>,
    passport_number: Option<Vec<u8>>,
    date_of_birth: Option<Vec<u8>>,
    nationality: Option<String>,
    visa_type: Option<String>,
    processing_speed: Option<String>,
    intended_arrival_date: Option<NaiveDate>,
    fee_rule_id: Option<FeeRuleId>,
    fee_amount_minor: Option<i64>,
    fee_currency: Option<String>,
    fee_exempt: Option<bool>,
    fee_prices: Option<sqlx::types::Json<Vec<StoredPrice>>>,
    decision_reason: Option<String>,
    submitted_at: Option<DateTime<Utc>>,
    paid_at: Option<DateTime<Utc>>,
    decided_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredPrice {
    currency: String,
    amount: i64,
}

/// The encryption context of one personal field of one application.
pub(super) fn context(field: &str, id: ApplicationId) -> String {
    format!("applications.{field}:{id}")
}

fn seal_text(
    keys: &DataKeys,
    field: &str,
    id: ApplicationId,
    value: Option<&str>,
) -> Option<Vec<u8>> {
    value.map(|v| keys.seal(&context(field, id), v.as_bytes()))
}

fn open_text(
    keys: &DataKeys,
    field: &str,
    id: ApplicationId,
    sealed: Option<Vec<u8>>,
) -> Result<Option<String>, OpenError> {
    sealed
        .map(|s| {
            let plain = keys.open(&context(field, id), &s)?;
            String::from_utf8(plain).map_err(|_| OpenError::Malformed)
        })
        .transpose()
}

impl ApplicationRow {
    fn open(self, keys: &DataKeys) -> Result<Application, ApplicationError> {
        let id = self.id;
        // Stored values passed the domain checks on the way in and the CHECK constraints; a value
        // that no longer parses means the data was changed behind our back.
        let corrupt = |what: &str| {
            ApplicationError::Database(sqlx::Error::Decode(
                format!("application {id}: stored {what} is invalid").into(),
            ))
        };
        let date_of_birth = open_text(keys, "date_of_birth", id, self.date_of_birth)?
            .map(|d| d.parse::<NaiveDate>().map_err(|_| corrupt("date_of_birth")))
            .transpose()?;
        let fee = match (self.fee_rule_id, self.fee_amount_minor, self.fee_currency) {
            (Some(rule_id), Some(amount), Some(currency)) => {
                let currency = Currency::parse(&currency).map_err(|_| corrupt("fee_currency"))?;
                let options = self
                    .fee_prices
                    .map(|p| p.0)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        let c = Currency::parse(&p.currency).map_err(|_| corrupt("fee_prices"))?;
                        Money::new(p.amount, c).map_err(|_| corrupt("fee_prices"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Some(FixedFee {
                    rule_id,
                    amount: Money::new(amount, currency).map_err(|_| corrupt("fee_amount"))?,
                    exempt: self.fee_exempt.unwrap_or(false),
                    options,
                })
            }
            _ => None,
        };
        Ok(Application {
            id,
            applicant_id: self.applicant_id,
            status: self.status.parse().map_err(|_| corrupt("status"))?,
            full_name: open_text(keys, "full_name", id, self.full_name)?,
            passport_number: open_text(keys, "passport_number", id, self.passport_number)?,
            date_of_birth,
            nationality: self
                .nationality
                .map(|c| CountryCode::parse(&c).map_err(|_| corrupt("nationality")))
                .transpose()?,
            visa_type: self
                .visa_type
                .map(|v| v.parse().map_err(|_| corrupt("visa_type")))
                .transpose()?,
            processing_speed: self
                .processing_speed
                .map(|v| v.parse().map_err(|_| corrupt("processing_speed")))
                .transpose()?,
            intended_arrival_date: self.intended_arrival_date,
            fee,
            decision_reason: self.decision_reason,
            submitted_at: self.submitted_at,
            paid_at: self.paid_at,
            decided_at: self.decided_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Sealed and stringified values of a change set, ready to bind.
struct Bindings {
    full_name: Option<Vec<u8>>,
    passport_number: Option<Vec<u8>>,
    date_of_birth: Option<Vec<u8>>,
    nationality: Option<&'static str>,
    visa_type: Option<&'static str>,
    processing_speed: Option<&'static str>,
    intended_arrival_date: Option<NaiveDate>,
}

impl Bindings {
    fn new(keys: &DataKeys, id: ApplicationId, c: &ApplicationChanges) -> Self {
        Self {
            full_name: seal_text(
                keys,
                "full_name",
                id,
                c.full_name.as_ref().map(|v| v.as_str()),
            ),
            passport_number: seal_text(
                keys,
                "passport_number",
                id,
                c.passport_number.as_ref().map(|v| v.as_str()),
            ),
            date_of_birth: seal_text(
                keys,
                "date_of_birth",
                id,
                c.date_of_birth.map(|d| d.date().to_string()).as_deref(),
            ),
            nationality: c.nationality.map(|n| n.alpha2()),
            visa_type: c.visa_type.map(|v| v.as_str()),
            processing_speed: c.processing_speed.map(|v| v.as_str()),
            intended_arrival_date: c.intended_arrival_date.map(|d| d.date()),
        }
    }
}

/// Starts a draft with whatever fields the applicant gave.
pub async fn create_draft(
    conn: &mut PgConnection,
    keys: &DataKeys,
    applicant: UserId,
    changes: &ApplicationChanges,
) -> Result<Application, ApplicationError> {
    let id = ApplicationId::new();
    let b = Bindings::new(keys, id, changes);
    let row: ApplicationRow = sqlx::query_as(concat!(
        "INSERT INTO applications (id, applicant_id, status, full_name, passport_number,
             date_of_birth, nationality, visa_type, processing_speed, intended_arrival_date)
         VALUES ($1, $2, 'draft', $3, $4, $5, $6, $7, $8, $9)
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(applicant)
    .bind(b.full_name)
    .bind(b.passport_number)
    .bind(b.date_of_birth)
    .bind(b.nationality)
    .bind(b.visa_type)
    .bind(b.processing_speed)
    .bind(b.intended_arrival_date)
    .fetch_one(conn)
    .await?;
    row.open(keys)
}

/// Changes the given fields of the applicant's own draft. Anything past draft is refused.
pub async fn update_draft(
    pool: &PgPool,
    keys: &DataKeys,
    applicant: UserId,
    id: ApplicationId,
    changes: &ApplicationChanges,
) -> Result<Application, ApplicationError> {
    let b = Bindings::new(keys, id, changes);
    let row: Option<ApplicationRow> = sqlx::query_as(concat!(
        "UPDATE applications SET
             full_name = coalesce($3, full_name),
             passport_number = coalesce($4, passport_number),
             date_of_birth = coalesce($5, date_of_birth),
             nationality = coalesce($6, nationality),
             visa_type = coalesce($7, visa_type),
             processing_speed = coalesce($8, processing_speed),
             intended_arrival_date = coalesce($9, intended_arrival_date),
             updated_at = now()
         WHERE id = $1 AND applicant_id = $2 AND status = 'draft'
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(applicant)
    .bind(b.full_name)
    .bind(b.passport_number)
    .bind(b.date_of_birth)
    .bind(b.nationality)
    .bind(b.visa_type)
    .bind(b.processing_speed)
    .bind(b.intended_arrival_date)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => row.open(keys),
        // Tell "not yours / not there" from "not a draft any more".
        None => {
            let status: Option<String> = sqlx::query_scalar(
                "SELECT status FROM applications WHERE id = $1 AND applicant_id = $2",
            )
            .bind(id)
            .bind(applicant)
            .fetch_optional(pool)
            .await?;
            match status.and_then(|s| s.parse::<ApplicationStatus>().ok()) {
                None => Err(ApplicationError::NotFound),
                Some(status) => Err(ApplicationError::NotEditable { status }),
            }
        }
    }
}

/// Submits the applicant's complete draft: fixes the fee quote of the day and, for a fee-exempt
/// application, marks it paid at once. One transaction; nothing is written if anything fails.
pub async fn submit(
    pool: &PgPool,
    keys: &DataKeys,
    applicant: UserId,
    id: ApplicationId,
    today: NaiveDate,
) -> Result<Application, ApplicationError> {
    let actor = Actor::User {
        id: applicant,
        role: Role::Applicant,
    };
    let mut tx = pool.begin().await?;
    let row: ApplicationRow = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE id = $1 AND applicant_id = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(applicant)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApplicationError::NotFound)?;
    let current = row.open(keys)?;
    let submitted = current.status.next(ApplicationEvent::Submit)?;

    let missing: Vec<&'static str> = [
        ("full_name", current.full_name.is_none()),
        ("passport_number", current.passport_number.is_none()),
        ("date_of_birth", current.date_of_birth.is_none()),
        ("nationality", current.nationality.is_none()),
        ("visa_type", current.visa_type.is_none()),
        ("processing_speed", current.processing_speed.is_none()),
        (
            "intended_arrival_date",
            current.intended_arrival_date.is_none(),
        ),
    ]
    .into_iter()
    .filter_map(|(field, absent)| absent.then_some(field))
    .collect();
    let (Some(nationality), Some(visa_type), Some(speed), Some(arrival), true) = (
        current.nationality,
        current.visa_type,
        current.processing_speed,
        current.intended_arrival_date,
        missing.is_empty(),
    ) else {
        return Err(ApplicationError::Incomplete { missing });
    };
    let mut out_of_range = Vec::new();
    if let Some(Err(e)) = current.date_of_birth.map(|d| DateOfBirth::parse(d, today)) {
        out_of_range.push(("date_of_birth", e));
    }
    if let Err(e) = ArrivalDate::parse(arrival, today) {
        out_of_range.push(("intended_arrival_date", e));
    }
    if !out_of_range.is_empty() {
        return Err(ApplicationError::OutOfRange {
            fields: out_of_range,
        });
    }

    let quote: FeeQuote = fees::quote(&mut *tx, visa_type, nationality, speed, today)
        .await?
        .ok_or(ApplicationError::NoFeeRule)?;
    let prices: Vec<StoredPrice> = quote
        .prices
        .iter()
        .map(|m| StoredPrice {
            currency: m.currency().code().to_string(),
            amount: m.amount_minor(),
        })
        .collect();
    sqlx::query(
        "UPDATE applications SET status = $2, fee_rule_id = $3, fee_amount_minor = $4,
             fee_currency = $5, fee_exempt = $6, fee_prices = $7, submitted_at = now(),
             updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(submitted.as_str())
    .bind(quote.rule_id)
    .bind(quote.base.amount_minor())
    .bind(quote.base.currency().code())
    .bind(quote.exempt)
    .bind(sqlx::types::Json(&prices))
    .execute(&mut *tx)
    .await?;
    record_event(
        &mut tx,
        id,
        ApplicationEvent::Submit,
        current.status,
        submitted,
        actor,
        None,
    )
    .await?;

    if quote.exempt {
        let paid = submitted.next(ApplicationEvent::FeeWaived)?;
        sqlx::query("UPDATE applications SET status = $2, paid_at = now() WHERE id = $1")
            .bind(id)
            .bind(paid.as_str())
            .execute(&mut *tx)
            .await?;
        let cause = format!("fee_rule:{}", quote.rule_id);
        record_event(
            &mut tx,
            id,
            ApplicationEvent::FeeWaived,
            submitted,
            paid,
            Actor::System,
            Some(&cause),
        )
        .await?;
    }
    let row: ApplicationRow = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    row.open(keys)
}

/// Appends one status change to the event log, chained to the application's previous event.
/// The caller holds the application's row lock, so it is the chain's only writer; a second
/// writer would violate `application_events_one_successor` rather than fork the chain.
pub(crate) async fn record_event(
    conn: &mut PgConnection,
    id: ApplicationId,
    event: ApplicationEvent,
    from: ApplicationStatus,
    to: ApplicationStatus,
    actor: Actor,
    cause: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(chained_event!("application_events", "application_id"))
        .bind(id)
        .bind(event.as_str())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(actor.kind())
        .bind(actor.id())
        .bind(cause)
        .execute(conn)
        .await?;
    Ok(())
}

/// A payment paid the application: it moves `from` → `to` (decided by the caller through
/// [`ApplicationStatus::next`]) with `paid_at`, and the change is logged, in one statement. The
/// caller holds the application's row lock.
pub(crate) async fn record_paid(
    conn: &mut PgConnection,
    id: ApplicationId,
    from: ApplicationStatus,
    to: ApplicationStatus,
    actor: Actor,
    cause: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "WITH paid AS (UPDATE applications SET status = $4, paid_at = now(), updated_at = now()
                        WHERE id = $1) ",
        chained_event!("application_events", "application_id")
    ))
    .bind(id)
    .bind(ApplicationEvent::PaymentSucceeded.as_str())
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(actor.kind())
    .bind(actor.id())
    .bind(cause)
    .execute(conn)
    .await?;
    Ok(())
}

/// The applicant's own application.
pub async fn get_for_owner(
    pool: &PgPool,
    keys: &DataKeys,
    applicant: UserId,
    id: ApplicationId,
) -> Result<Application, ApplicationError> {
    let row: Option<ApplicationRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE id = $1 AND applicant_id = $2"
    ))
    .bind(id)
    .bind(applicant)
    .fetch_optional(pool)
    .await?;
    row.ok_or(ApplicationError::NotFound)?.open(keys)
}

/// Any application (officers).
pub async fn get(
    pool: &PgPool,
    keys: &DataKeys,
    id: ApplicationId,
) -> Result<Application, ApplicationError> {
    let row: Option<ApplicationRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.ok_or(ApplicationError::NotFound)?.open(keys)
}

fn page(
    keys: &DataKeys,
    mut rows: Vec<ApplicationRow>,
    limit: u32,
) -> Result<Page, ApplicationError> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let items = rows
        .into_iter()
        .map(|r| r.open(keys))
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if more {
        items.last().map(|a| a.id)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The applicant's applications, newest first, `limit` at a time after `cursor`.
pub async fn list_for_owner(
    pool: &PgPool,
    keys: &DataKeys,
    applicant: UserId,
    cursor: Option<ApplicationId>,
    limit: u32,
) -> Result<Page, ApplicationError> {
    let rows: Vec<ApplicationRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE applicant_id = $1 AND ($2::uuid IS NULL OR id < $2)
          ORDER BY id DESC LIMIT $3"
    ))
    .bind(applicant)
    .bind(cursor)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    page(keys, rows, limit)
}

/// All applications matching `filter`, newest first (officers).
pub async fn list_all(
    pool: &PgPool,
    keys: &DataKeys,
    filter: &AdminFilter,
    cursor: Option<ApplicationId>,
    limit: u32,
) -> Result<Page, ApplicationError> {
    let rows: Vec<ApplicationRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications
          WHERE ($1::text IS NULL OR status = $1)
            AND ($2::text IS NULL OR visa_type = $2)
            AND ($3::text IS NULL OR nationality = $3)
            AND ($4::uuid IS NULL OR id < $4)
          ORDER BY id DESC LIMIT $5"
    ))
    .bind(filter.status.map(|s| s.as_str()))
    .bind(filter.visa_type.map(|v| v.as_str()))
    .bind(filter.nationality.map(|n| n.alpha2()))
    .bind(cursor)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    page(keys, rows, limit)
}

/// An officer's decision: paid → processing → approved | rejected, inside the caller's
/// transaction (a rejection may start a refund in the same transaction).
pub async fn decide(
    conn: &mut PgConnection,
    keys: &DataKeys,
    officer: Actor,
    id: ApplicationId,
    decision: &Decision,
) -> Result<Application, ApplicationError> {
    let event = match decision {
        Decision::BeginProcessing => ApplicationEvent::BeginProcessing,
        Decision::Approve => ApplicationEvent::Approve,
        Decision::Reject { .. } => ApplicationEvent::Reject,
    };
    let reason = match decision {
        Decision::Reject { reason } => Some(reason.as_str()),
        _ => None,
    };
    let status: String =
        sqlx::query_scalar("SELECT status FROM applications WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(ApplicationError::NotFound)?;
    let from: ApplicationStatus = status.parse().map_err(|_| {
        ApplicationError::Database(sqlx::Error::Decode("stored status is invalid".into()))
    })?;
    // Under the application's row lock, which a dispute's event takes before it opens one.
    if let Some((dispute, payment)) = crate::dispute::open_on_application(conn, id).await? {
        return Err(ApplicationError::OnHold { dispute, payment });
    }
    let to = from.next(event)?;
    let decided = matches!(
        to,
        ApplicationStatus::Approved | ApplicationStatus::Rejected
    );
    sqlx::query(
        "UPDATE applications SET status = $2, decision_reason = coalesce($3, decision_reason),
             decided_at = CASE WHEN $4 THEN now() ELSE decided_at END, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(reason)
    .bind(decided)
    .execute(&mut *conn)
    .await?;
    record_event(conn, id, event, from, to, officer, None).await?;
    if decided {
        crate::notify::record(
            conn,
            crate::notify::EventType::ApplicationDecided,
            id.as_uuid(),
        )
        .await?;
    }
    let row: ApplicationRow = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    row.open(keys)
}

/// One entry of an application's history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryEntry {
    pub event: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor_kind: String,
    pub actor_id: Option<UserId>,
    pub cause: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// The status history of an application, oldest first.
pub async fn history(pool: &PgPool, id: ApplicationId) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event, from_status, to_status, actor_kind, actor_id, cause, occurred_at
           FROM application_events WHERE application_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// Expires submitted applications unpaid for longer than `after` with no payment in flight (an
/// attempt in flight decides first). Returns the ids expired. Safe to run from several processes
/// at once: each application is locked and re-checked before it moves.
pub async fn expire_unpaid(
    pool: &PgPool,
    after: chrono::Duration,
    limit: i64,
) -> Result<Vec<ApplicationId>, ApplicationError> {
    let candidates: Vec<ApplicationId> = sqlx::query_scalar(
        "SELECT a.id FROM applications a
          WHERE a.status = 'submitted' AND a.submitted_at < now() - $1
            AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.application_id = a.id
                             AND p.status IN ('created', 'processing', 'requires_action'))
          ORDER BY a.submitted_at LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut expired = Vec::new();
    for id in candidates {
        let mut tx = pool.begin().await?;
        // Payment creation locks this row too, so no attempt can start while we decide.
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM applications a WHERE id = $1 AND submitted_at < now() - $2
               AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.application_id = a.id
                                AND p.status IN ('created', 'processing', 'requires_action'))
             FOR UPDATE",
        )
        .bind(id)
        .bind(after)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(from) = status.and_then(|s| s.parse::<ApplicationStatus>().ok()) else {
            continue;
        };
        let Ok(to) = from.next(ApplicationEvent::Expire) else {
            continue;
        };
        sqlx::query("UPDATE applications SET status = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(to.as_str())
            .execute(&mut *tx)
            .await?;
        record_event(
            &mut tx,
            id,
            ApplicationEvent::Expire,
            from,
            to,
            Actor::System,
            Some("expiry"),
        )
        .await?;
        crate::notify::record(
            &mut tx,
            crate::notify::EventType::ApplicationExpired,
            id.as_uuid(),
        )
        .await?;
        tx.commit().await?;
        expired.push(id);
    }
    Ok(expired)
}
