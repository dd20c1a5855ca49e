//! Storage of payment attempts.

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool};

use crate::audit::chained_event;

use super::PaymentStatus;
use crate::{
    application::{Actor, ApplicationStatus},
    ids::{ApplicationId, PaymentId, UserId},
    money::{Currency, Money},
    visa::string_enum,
};

/// Which gateway a payment goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    Stripe,
    Alipay,
}

string_enum!(Provider, "payment provider", Stripe => "stripe", Alipay => "alipay");

/// What the payer must do next.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NextAction {
    /// Finish 3-D Secure with Stripe.js using the client secret.
    UseStripeSdk { client_secret: String },
    /// Go to the gateway's page.
    Redirect { redirect_url: String },
}

/// One payment attempt.
#[derive(Clone, Debug)]
pub struct Payment {
    pub id: PaymentId,
    pub application_id: ApplicationId,
    pub applicant_id: UserId,
    pub provider: Provider,
    pub status: PaymentStatus,
    pub amount: Money,
    pub payment_method: Option<String>,
    pub gateway_reference: Option<String>,
    pub next_action: Option<NextAction>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub duplicate_charge: bool,
    pub expires_at: DateTime<Utc>,
    /// Where the payer's browser goes after a redirect payment, when the portal gave one.
    pub return_url: Option<String>,
    /// What succeeded refunds gave back, in minor units of the payment's currency.
    pub refunded_amount: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! payment_columns {
    () => {
        "id, application_id, applicant_id, provider, status, amount_minor, currency, \
         payment_method, gateway_reference, next_action, failure_code, failure_message, \
         duplicate_charge, expires_at, return_url, refunded_amount_minor, created_at, updated_at"
    };
}

/// What is announced on [`super::STATUS_CHANNEL`] for the payment row `p` (SQL): the whole row
/// as JSON, so that event streams need not read it again, or only its id and status when that
/// would not fit in a notification.
macro_rules! announcement {
    () => {
        "pg_notify('payment_status', CASE WHEN octet_length(row_to_json(p)::text) < 7000
                        THEN row_to_json(p)::text
                        ELSE json_build_object('id', p.id, 'status', p.status)::text END)"
    };
}
pub(crate) use announcement;

#[derive(sqlx::FromRow, serde::Deserialize)]
pub(crate) struct PaymentRow {
    id: PaymentId,
    application_id: ApplicationId,
    applicant_id: UserId,
    provider: String,
    status: String,
    amount_minor: i64,
    currency: String,
    payment_method: Option<String>,
    gateway_reference: Option<String>,
    next_action: Option<sqlx::types::Json<NextAction>>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    duplicate_charge: bool,
    expires_at: DateTime<Utc>,
    return_url: Option<String>,
    refunded_amount_minor: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl PaymentRow {
    pub(crate) fn into_payment(self) -> Result<Payment, sqlx::Error> {
        let corrupt = |what: &str| {
            sqlx::Error::Decode(format!("payment {}: stored {what} is invalid", self.id).into())
        };
        let currency = Currency::parse(&self.currency).map_err(|_| corrupt("currency"))?;
        Ok(Payment {
            id: self.id,
            application_id: self.application_id,
            applicant_id: self.applicant_id,
            provider: self.provider.parse().map_err(|_| corrupt("provider"))?,
            status: self.status.parse().map_err(|_| corrupt("status"))?,
            amount: Money::new(self.amount_minor, currency).map_err(|_| corrupt("amount"))?,
            payment_method: self.payment_method,
            gateway_reference: self.gateway_reference,
            next_action: self.next_action.map(|j| j.0),
            failure_code: self.failure_code,
            failure_message: self.failure_message,
            duplicate_charge: self.duplicate_charge,
            expires_at: self.expires_at,
            return_url: self.return_url,
            refunded_amount: self.refunded_amount_minor,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Why a payment could not be started.
#[derive(Debug, thiserror::Error)]
pub enum CreatePaymentError {
    #[error("application not found")]
    ApplicationNotFound,
    /// Only submitted applications are paid for.
    #[error("the application is {0}; only submitted applications can be paid")]
    NotPayable(ApplicationStatus),
    #[error("this application is exempt from the fee")]
    FeeExempt,
    /// Another attempt is still in flight.
    #[error("payment {0} for this application is still in progress")]
    AlreadyInProgress(PaymentId),
    #[error("the fee for this application has already been paid")]
    AlreadyPaid,
    /// The provider needs a currency the fee schedule does not price this application in.
    #[error("the fee schedule has no price in {0} for this application")]
    NoPriceInCurrency(Currency),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What a new payment needs.
pub struct NewPayment<'a> {
    pub applicant: UserId,
    pub application: ApplicationId,
    pub provider: Provider,
    /// The currency the provider charges in; `None` takes the fee's base currency.
    pub currency: Option<Currency>,
    pub payment_method: Option<&'a str>,
    pub return_url: Option<&'a str>,
    pub expires_in: Duration,
}

/// Starts a payment for the applicant's submitted application, inside the caller's transaction
/// (which also enqueues the gateway work). Locks the application row, so two concurrent attempts
/// for one application are serialised and the second sees the first.
pub async fn create(
    conn: &mut PgConnection,
    new: &NewPayment<'_>,
) -> Result<Payment, CreatePaymentError> {
    // The attempt in flight is read in the same statement as the lock; one that committed while
    // this waited for the lock may be missed here, and then `payments_one_open_per_application`
    // refuses the INSERT (the caller answers it like `AlreadyInProgress`).
    let app: Option<FeeRow> = sqlx::query_as(
        "SELECT status, fee_exempt, fee_amount_minor, fee_currency, fee_prices,
                paid_at IS NOT NULL AS paid,
                (SELECT id FROM payments WHERE application_id = a.id
                    AND status IN ('created', 'processing', 'requires_action') LIMIT 1) AS open
           FROM applications a WHERE id = $1 AND applicant_id = $2 FOR UPDATE",
    )
    .bind(new.application)
    .bind(new.applicant)
    .fetch_optional(&mut *conn)
    .await?;
    let app = app.ok_or(CreatePaymentError::ApplicationNotFound)?;
    let status: ApplicationStatus = app
        .status
        .parse()
        .map_err(|_| sqlx::Error::Decode("stored application status is invalid".into()))?;
    let exempt = app.fee_exempt == Some(true);
    if app.paid && !exempt {
        return Err(CreatePaymentError::AlreadyPaid);
    }
    if let Some(open) = app.open {
        return Err(CreatePaymentError::AlreadyInProgress(open));
    }
    if status != ApplicationStatus::Submitted {
        return Err(CreatePaymentError::NotPayable(status));
    }
    if exempt {
        return Err(CreatePaymentError::FeeExempt);
    }
    let base = app
        .fee_currency
        .as_deref()
        .and_then(|c| Currency::parse(c).ok())
        .ok_or_else(|| sqlx::Error::Decode("submitted application without a fee".into()))?;
    let currency = new.currency.unwrap_or(base);
    let amount = if currency == base {
        app.fee_amount_minor.unwrap_or(0)
    } else {
        app.fee_prices
            .map(|p| p.0)
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.currency == currency.code())
            .map(|p| p.amount)
            .ok_or(CreatePaymentError::NoPriceInCurrency(currency))?
    };

    // The payment, the first event of its chain and its announcement, in one statement.
    let (actor_kind, actor_id) = Actor::User {
        id: new.applicant,
        role: crate::users::Role::Applicant,
    }
    .parts();
    let row: PaymentRow = sqlx::query_as(concat!(
        "WITH p AS (
             INSERT INTO payments (id, application_id, applicant_id, provider, status,
                 amount_minor, currency, payment_method, expires_at, return_url)
             VALUES ($1, $2, $3, $4, 'created', $5, $6, $7, now() + $8, $9)
             RETURNING *),
         e AS (
             INSERT INTO payment_events (id, payment_id, event, from_status, to_status,
                 actor_kind, actor_id, cause, occurred_at, prev_hash, hash)
             OVERRIDING SYSTEM VALUE
             SELECT n.id, p.id, 'created', NULL, 'created', $10, $11, NULL, n.at, NULL,
                    audit_hash(NULL::bytea, n.id, p.id, 'created', NULL::text, 'created', $10,
                               $11, NULL::text, n.at)
               FROM p, (SELECT nextval(pg_get_serial_sequence('payment_events', 'id')) AS id,
                               now() AS at) n)
         SELECT ",
        payment_columns!(),
        ", ",
        announcement!(),
        " FROM p"
    ))
    .bind(PaymentId::new())
    .bind(new.application)
    .bind(new.applicant)
    .bind(new.provider.as_str())
    .bind(amount)
    .bind(currency.code())
    .bind(new.payment_method)
    .bind(new.expires_in)
    .bind(new.return_url)
    .bind(actor_kind)
    .bind(actor_id)
    .fetch_one(&mut *conn)
    .await?;
    row.into_payment().map_err(Into::into)
}

/// What a payment needs to know of its application.
#[derive(sqlx::FromRow)]
struct FeeRow {
    status: String,
    fee_exempt: Option<bool>,
    fee_amount_minor: Option<i64>,
    fee_currency: Option<String>,
    fee_prices: Option<sqlx::types::Json<Vec<PriceRow>>>,
    /// A payment (or a waiver) already paid the fee.
    paid: bool,
    /// The attempt in flight, if any.
    open: Option<PaymentId>,
}

#[derive(serde::Deserialize)]
struct PriceRow {
    currency: String,
    amount: i64,
}

/// Appends one change to a payment's history, chained to its previous event (`audit_hash` over
/// the predecessor's hash and this event's fields, computed in the INSERT). The caller holds the
/// payment's row lock (or has just created it), so it is the chain's only writer; a second writer
/// would violate `payment_events_one_successor` rather than fork the chain.
pub async fn record_event(
    conn: &mut PgConnection,
    id: PaymentId,
    event: &str,
    from: Option<PaymentStatus>,
    to: PaymentStatus,
    actor: Actor,
    cause: Option<&str>,
) -> Result<(), sqlx::Error> {
    let (kind, actor_id) = actor.parts();
    sqlx::query(chained_event!("payment_events", "payment_id"))
        .bind(id)
        .bind(event)
        .bind(from.map(|s| s.as_str()))
        .bind(to.as_str())
        .bind(kind)
        .bind(actor_id)
        .bind(cause)
        .execute(conn)
        .await?;
    Ok(())
}

/// A payment as announced on [`super::STATUS_CHANNEL`]: the whole row, or only its id and
/// status (then listeners read the rest).
pub enum Announced {
    Payment(Box<Payment>),
    Changed(PaymentId),
}

impl Announced {
    pub fn parse(payload: &str) -> Option<Announced> {
        if let Ok(row) = serde_json::from_str::<PaymentRow>(payload)
            && let Ok(payment) = row.into_payment()
        {
            return Some(Announced::Payment(Box::new(payment)));
        }
        #[derive(serde::Deserialize)]
        struct Short {
            id: PaymentId,
        }
        serde_json::from_str::<Short>(payload)
            .ok()
            .map(|s| Announced::Changed(s.id))
    }

    pub fn id(&self) -> PaymentId {
        match self {
            Announced::Payment(p) => p.id,
            Announced::Changed(id) => *id,
        }
    }
}

/// A payment by id, through the pool or inside a transaction (`&mut *tx`).
pub async fn get<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: PaymentId,
) -> Result<Option<Payment>, sqlx::Error> {
    let row: Option<PaymentRow> = sqlx::query_as(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.map(PaymentRow::into_payment).transpose()
}

/// A payment by id, locked for the rest of the caller's transaction.
pub async fn get_for_update(
    conn: &mut PgConnection,
    id: PaymentId,
) -> Result<Option<Payment>, sqlx::Error> {
    let row: Option<PaymentRow> = sqlx::query_as(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(PaymentRow::into_payment).transpose()
}

/// The applicant's own payment.
pub async fn get_for_owner(
    pool: &PgPool,
    owner: UserId,
    id: PaymentId,
) -> Result<Option<Payment>, sqlx::Error> {
    Ok(get(pool, id).await?.filter(|p| p.applicant_id == owner))
}

/// Every attempt to pay the applicant's application, newest first.
pub async fn list_for_application(
    pool: &PgPool,
    owner: UserId,
    application: ApplicationId,
) -> Result<Vec<Payment>, sqlx::Error> {
    let rows: Vec<PaymentRow> = sqlx::query_as(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments WHERE application_id = $1 AND applicant_id = $2 ORDER BY id DESC"
    ))
    .bind(application)
    .bind(owner)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(PaymentRow::into_payment).collect()
}

/// Open payments of `provider` not updated for `idle`, oldest first: candidates for
/// reconciliation with the gateway.
pub async fn stale_open(
    pool: &PgPool,
    provider: Provider,
    idle: Duration,
    limit: i64,
) -> Result<Vec<Payment>, sqlx::Error> {
    let rows: Vec<PaymentRow> = sqlx::query_as(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments
          WHERE status IN ('created', 'processing', 'requires_action')
            AND provider = $1 AND updated_at < now() - $2
          ORDER BY updated_at LIMIT $3"
    ))
    .bind(provider.as_str())
    .bind(idle)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(PaymentRow::into_payment).collect()
}

/// The payment a gateway object belongs to.
pub async fn find_by_gateway_reference<'e>(
    db: impl sqlx::PgExecutor<'e>,
    provider: Provider,
    reference: &str,
) -> Result<Option<Payment>, sqlx::Error> {
    let row: Option<PaymentRow> = sqlx::query_as(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments WHERE provider = $1 AND gateway_reference = $2"
    ))
    .bind(provider.as_str())
    .bind(reference)
    .fetch_optional(db)
    .await?;
    row.map(PaymentRow::into_payment).transpose()
}

/// Records in a payment's history that its duplicate charge was refunded.
pub async fn record_refund_of_duplicate(
    conn: &mut PgConnection,
    payment: &Payment,
    refund: &str,
) -> Result<(), sqlx::Error> {
    let cause = format!("refund:{refund}");
    record_event(
        conn,
        payment.id,
        "duplicate_charge_refunded",
        Some(payment.status),
        payment.status,
        Actor::System,
        Some(&cause),
    )
    .await
}

/// A payment's history (its events), oldest first.
pub async fn history(
    pool: &PgPool,
    id: PaymentId,
) -> Result<Vec<crate::application::store::HistoryEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event, from_status, to_status, actor_kind, actor_id, cause, occurred_at
           FROM payment_events WHERE payment_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}
