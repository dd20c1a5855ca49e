//! Storage of payment attempts.

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool};

use crate::audit::chained_event;

use super::PaymentStatus;
use crate::{
    application::Actor,
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

/// The share of a payment that pays one application's fee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub application_id: ApplicationId,
    /// The application's fee, in the payment's currency.
    pub amount: Money,
    /// What succeeded refunds of this share gave back, in minor units.
    pub refunded: i64,
}

/// One payment attempt: one gateway charge, for one application or for a group of them.
#[derive(Clone, Debug)]
pub struct Payment {
    pub id: PaymentId,
    /// The first application the payment pays (the only one unless it is a group payment).
    pub application_id: ApplicationId,
    /// The applications it pays and how much of it is each one's; their sum is `amount`.
    pub allocations: Vec<Allocation>,
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

/// The columns of a [`PaymentRow`] read from `payments p`, with its allocations (from the
/// payment's rows in `payment_allocations`, or from the FROM clause given).
macro_rules! payment_columns {
    () => {
        $crate::payment::store::payment_columns!(
            "payment_allocations al WHERE al.payment_id = p.id"
        )
    };
    ($allocations:literal) => {
        concat!(
            "p.id, p.application_id, p.applicant_id, p.provider, p.status, p.amount_minor, \
             p.currency, p.payment_method, p.gateway_reference, p.next_action, p.failure_code, \
             p.failure_message, p.duplicate_charge, p.expires_at, p.return_url, \
             p.refunded_amount_minor, p.created_at, p.updated_at, ",
            $crate::payment::store::allocations_of!($allocations),
            " AS allocations"
        )
    };
}

/// The allocations in `$from` (SQL: a FROM clause over allocations `al`) as a JSON array.
macro_rules! allocations_of {
    ($from:literal) => {
        concat!(
            "(SELECT json_agg(json_build_object('application_id', al.application_id,
                     'amount_minor', al.amount_minor, 'refunded_minor', al.refunded_minor)
                     ORDER BY al.application_id) FROM ",
            $from,
            ")"
        )
    };
}
pub(crate) use {allocations_of, payment_columns};

#[derive(sqlx::FromRow, serde::Serialize, serde::Deserialize)]
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
    /// Absent where a query reads `p.*` only; [`PaymentRow::into_payment`] refuses that.
    #[sqlx(default)]
    allocations: Option<sqlx::types::Json<Vec<AllocationRow>>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct AllocationRow {
    application_id: ApplicationId,
    amount_minor: i64,
    refunded_minor: i64,
}

impl PaymentRow {
    pub(crate) fn into_payment(self) -> Result<Payment, sqlx::Error> {
        let corrupt = |what: &str| {
            sqlx::Error::Decode(format!("payment {}: stored {what} is invalid", self.id).into())
        };
        let currency = Currency::parse(&self.currency).map_err(|_| corrupt("currency"))?;
        let allocations = self
            .allocations
            .ok_or_else(|| corrupt("allocations"))?
            .0
            .into_iter()
            .map(|a| {
                Ok(Allocation {
                    application_id: a.application_id,
                    amount: Money::new(a.amount_minor, currency)
                        .map_err(|_| corrupt("allocation"))?,
                    refunded: a.refunded_minor,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        if allocations.is_empty() {
            return Err(corrupt("allocations"));
        }
        Ok(Payment {
            id: self.id,
            application_id: self.application_id,
            allocations,
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

pub use super::create::{CreatePaymentError, NewPayment, create};

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

/// A payment as announced ([`super::announcements`]): the whole row, or only its id and status
/// (then followers read the rest).
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
    by_id(db, id, false).await
}

/// A payment by id, locked for the rest of the caller's transaction.
pub async fn get_for_update(
    conn: &mut PgConnection,
    id: PaymentId,
) -> Result<Option<Payment>, sqlx::Error> {
    by_id(conn, id, true).await
}

async fn by_id<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: PaymentId,
    lock: bool,
) -> Result<Option<Payment>, sqlx::Error> {
    const READ: &str = concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments p WHERE p.id = $1"
    );
    const LOCK: &str = concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments p WHERE p.id = $1 FOR UPDATE OF p"
    );
    let row: Option<PaymentRow> = sqlx::query_as(if lock { LOCK } else { READ })
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.map(PaymentRow::into_payment).transpose()
}

/// What a move writes besides the status: the gateway's facts, each kept where it is `None`
/// (`next_action` and the failure are replaced: a move clears what no longer holds).
#[derive(Default)]
pub(crate) struct MoveFacts<'a> {
    pub reference: Option<&'a str>,
    pub next_action: Option<&'a NextAction>,
    pub failure_code: Option<&'a str>,
    pub failure_message: Option<&'a str>,
    pub card_brand: Option<&'a str>,
    pub card_last4: Option<&'a str>,
}

/// Announcements at least this long carry only the payment's id and status (followers read the
/// rest): each travels to every other process through Redis (`crate::signals`).
const WHOLE_ANNOUNCEMENT_BELOW: usize = 7000;

/// The announcement of a payment row for event streams ([`Announced::parse`] reads it back): the
/// row as JSON, or only its id and status when that is large. Built here rather than in the
/// move's SQL, where `row_to_json` and the allocations' `json_agg` cost Postgres's CPU.
pub(crate) fn announcement_of(row: &PaymentRow) -> String {
    match serde_json::to_string(row) {
        Ok(whole) if whole.len() < WHOLE_ANNOUNCEMENT_BELOW => whole,
        _ => serde_json::json!({"id": row.id, "status": row.status}).to_string(),
    }
}

/// Moves a payment from `from` to `to` and appends `event` to its history, in one statement:
/// nothing when the payment is no longer `from` (`None`). Under the caller's lock of the payment
/// it always moves; through the pool (its own transaction) it is a compare-and-set that waits for
/// any transaction holding the row. Returns the payment as it now is and its announcement.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn move_status<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: PaymentId,
    event: &str,
    from: PaymentStatus,
    to: PaymentStatus,
    facts: &MoveFacts<'_>,
    actor: Actor,
    cause: &str,
) -> Result<Option<(Payment, String)>, sqlx::Error> {
    // $1 to $7 are the history event's (see `chained_event!`); the move reuses $1, $3 and $4.
    const SQL: &str = concat!(
        "WITH moved AS (
           UPDATE payments p SET status = $4, gateway_reference = coalesce($8, gateway_reference),
                  next_action = $9, failure_code = $10, failure_message = $11,
                  card_brand = coalesce($12, card_brand), card_last4 = coalesce($13, card_last4),
                  updated_at = now()
            WHERE p.id = $1 AND p.status = $3
           RETURNING ",
        payment_columns!(),
        "),
         logged AS (",
        chained_event!("payment_events", "payment_id"),
        " WHERE EXISTS (SELECT FROM moved))
         SELECT * FROM moved"
    );
    let (kind, actor_id) = actor.parts();
    let row: Option<PaymentRow> = sqlx::query_as(SQL)
        .bind(id)
        .bind(event)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(kind)
        .bind(actor_id)
        .bind(cause)
        .bind(facts.reference)
        .bind(facts.next_action.map(sqlx::types::Json))
        .bind(facts.failure_code)
        .bind(facts.failure_message)
        .bind(facts.card_brand)
        .bind(facts.card_last4)
        .fetch_optional(db)
        .await?;
    row.map(|row| {
        let announcement = announcement_of(&row);
        Ok((row.into_payment()?, announcement))
    })
    .transpose()
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
        " FROM payments p
          WHERE p.id IN (SELECT payment_id FROM payment_allocations WHERE application_id = $1)
            AND p.applicant_id = $2
          ORDER BY p.id DESC"
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
        " FROM payments p
          WHERE p.status IN ('created', 'processing', 'requires_action')
            AND p.provider = $1 AND p.updated_at < now() - $2
          ORDER BY p.updated_at LIMIT $3"
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
        " FROM payments p WHERE p.provider = $1 AND p.gateway_reference = $2"
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
