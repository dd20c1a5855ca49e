//! Disputes (chargebacks) of card payments, from Stripe's `charge.dispute.*` events. While a
//! dispute is open its payment cannot be refunded and its application takes no officer's
//! decision (the hold is checked under the application's row lock, which the dispute's event
//! takes too). When it closes the outcome is recorded: `won` (the money stays), `lost` (the card
//! holder's bank took it back: it counts against what can still be refunded, and the
//! reconciliation report shows it) or `warning_closed` (an inquiry that ended there).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::{
    application::Actor,
    gateway::stripe_event::DisputeSnapshot,
    ids::{ApplicationId, PaymentId, UserId},
    inbox::Disposition,
    money::{Currency, Money},
    payment::{Provider, apply, store as payments},
};

/// A dispute as we record it.
#[derive(Debug, Clone)]
pub struct Dispute {
    pub id: uuid::Uuid,
    /// Stripe's dispute id (`dp_...`).
    pub gateway_reference: String,
    pub payment_id: PaymentId,
    pub application_id: ApplicationId,
    pub amount: Money,
    /// Stripe's reason (`fraudulent`, `product_not_received`, `general`, ...).
    pub reason: String,
    /// Stripe's status as last reported.
    pub status: String,
    /// `won`, `lost` or `warning_closed`, once closed.
    pub outcome: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// When an officer resolved the case (the hold ends then), who, and what they wrote.
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<UserId>,
    pub resolution: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct DisputeRow {
    id: uuid::Uuid,
    gateway_reference: String,
    payment_id: PaymentId,
    application_id: ApplicationId,
    amount_minor: i64,
    currency: String,
    reason: String,
    status: String,
    outcome: Option<String>,
    opened_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    resolved_at: Option<DateTime<Utc>>,
    resolved_by: Option<UserId>,
    resolution: Option<String>,
    updated_at: DateTime<Utc>,
}

impl DisputeRow {
    fn into_dispute(self) -> Result<Dispute, sqlx::Error> {
        let corrupt = |what: &str| {
            sqlx::Error::Decode(format!("dispute {}: stored {what} is invalid", self.id).into())
        };
        let currency = Currency::parse(&self.currency).map_err(|_| corrupt("currency"))?;
        Ok(Dispute {
            id: self.id,
            gateway_reference: self.gateway_reference,
            payment_id: self.payment_id,
            application_id: self.application_id,
            amount: Money::new(self.amount_minor, currency).map_err(|_| corrupt("amount"))?,
            reason: self.reason,
            status: self.status,
            outcome: self.outcome,
            opened_at: self.opened_at,
            closed_at: self.closed_at,
            resolved_at: self.resolved_at,
            resolved_by: self.resolved_by,
            resolution: self.resolution,
            updated_at: self.updated_at,
        })
    }
}

const SELECT: &str = "SELECT d.id, d.gateway_reference, d.payment_id, p.application_id,
        d.amount_minor, d.currency, d.reason, d.status, d.outcome, d.opened_at, d.closed_at,
        d.resolved_at, d.resolved_by, d.resolution, d.updated_at
   FROM disputes d JOIN payments p ON p.id = d.payment_id";

/// The open dispute of a payment (Stripe's id), if any.
pub async fn open_on_payment(
    conn: &mut PgConnection,
    payment: PaymentId,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT gateway_reference FROM disputes WHERE payment_id = $1 AND closed_at IS NULL
          ORDER BY id LIMIT 1",
    )
    .bind(payment)
    .fetch_optional(conn)
    .await
}

/// The dispute holding an application (ours, Stripe's id, and the payment), if any: one no officer
/// has resolved yet, whether or not the gateway has closed it. The caller holds the
/// application's row lock, which a dispute's event and its resolution take too.
pub async fn holding_application(
    conn: &mut PgConnection,
    application: ApplicationId,
) -> Result<Option<(uuid::Uuid, String, PaymentId)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, d.gateway_reference, d.payment_id
           FROM disputes d JOIN payment_allocations al ON al.payment_id = d.payment_id
          WHERE al.application_id = $1 AND d.resolved_at IS NULL
          ORDER BY d.id LIMIT 1",
    )
    .bind(application)
    .fetch_optional(conn)
    .await
}

/// Why a dispute could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no such dispute")]
    NotFound,
    #[error("the dispute was already resolved")]
    AlreadyResolved,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An officer resolves a dispute's case, with a note: the hold on its application ends (its
/// payment still takes no refund while the gateway has the dispute open). Recorded in the
/// payment's history. Under the application's and the payment's locks, like a decision.
pub async fn resolve(
    pool: &PgPool,
    id: uuid::Uuid,
    officer: UserId,
    actor: Actor,
    note: &str,
) -> Result<Dispute, ResolveError> {
    let mut tx = pool.begin().await?;
    let payment: Option<PaymentId> =
        sqlx::query_scalar("SELECT payment_id FROM disputes WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let payment = payment.ok_or(ResolveError::NotFound)?;
    let locked = match apply::lock(&mut tx, payment).await {
        Ok(l) => l.payment,
        Err(apply::ApplyError::Database(e)) => return Err(e.into()),
        Err(_) => return Err(ResolveError::NotFound),
    };
    let resolved = sqlx::query(
        "UPDATE disputes SET resolved_at = now(), resolved_by = $2, resolution = $3,
                updated_at = now()
          WHERE id = $1 AND resolved_at IS NULL",
    )
    .bind(id)
    .bind(officer)
    .bind(note)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if resolved == 0 {
        return Err(ResolveError::AlreadyResolved);
    }
    payments::record_event(
        &mut tx,
        locked.id,
        "dispute_resolved",
        Some(locked.status),
        locked.status,
        actor,
        Some(&format!("dispute:{id}")),
    )
    .await?;
    let row: DisputeRow = sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE d.id = $1")))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(payment_id = %locked.id, dispute_id = %id, "dispute resolved by an officer; hold released");
    Ok(row.into_dispute()?)
}

/// Disputes, newest first, `limit` at a time after `cursor`; only open (or only closed) ones
/// when `open` says so.
pub async fn list(
    pool: &PgPool,
    open: Option<bool>,
    cursor: Option<uuid::Uuid>,
    limit: u32,
) -> Result<Vec<Dispute>, sqlx::Error> {
    let rows: Vec<DisputeRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE ($1::boolean IS NULL OR (d.closed_at IS NULL) = $1)
            AND ($2::uuid IS NULL OR d.id < $2)
          ORDER BY d.id DESC LIMIT $3"
    )))
    .bind(open)
    .bind(cursor)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(DisputeRow::into_dispute).collect()
}

/// A payment's disputes, oldest first.
pub async fn for_payment(pool: &PgPool, payment: PaymentId) -> Result<Vec<Dispute>, sqlx::Error> {
    let rows: Vec<DisputeRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE d.payment_id = $1 ORDER BY d.id"
    )))
    .bind(payment)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(DisputeRow::into_dispute).collect()
}

/// Disputes of payments created since `since`, for the reconciliation report.
pub async fn of_payments_since(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<Dispute>, sqlx::Error> {
    let rows: Vec<DisputeRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE p.created_at >= $1 ORDER BY d.id"
    )))
    .bind(since)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(DisputeRow::into_dispute).collect()
}

/// Applies a `charge.dispute.*` event inside the caller's transaction: opens the dispute (the
/// payment is disputed, its application on hold), updates its status, or closes it with its
/// outcome. Idempotent and order-independent: a closed dispute never reopens, so a late
/// `created` after `closed` changes nothing.
pub async fn apply_stripe_dispute(
    conn: &mut PgConnection,
    d: &DisputeSnapshot,
    cause: &str,
) -> Result<Disposition, sqlx::Error> {
    let Some(intent) = d.payment_intent.as_deref() else {
        return Ok(Disposition::Ignored(format!(
            "dispute {} names no PaymentIntent (charge {})",
            d.id,
            d.charge.as_deref().unwrap_or("unknown")
        )));
    };
    let Some(payment) =
        payments::find_by_gateway_reference(&mut *conn, Provider::Stripe, intent).await?
    else {
        return Ok(Disposition::Unmatched(intent.to_string()));
    };
    // The application first, then the payment: the lock order everywhere, and the lock an
    // officer's decision takes before it looks for an open dispute.
    let locked = match apply::lock(conn, payment.id).await {
        Ok(l) => l.payment,
        Err(apply::ApplyError::Database(e)) => return Err(e),
        Err(_) => return Ok(Disposition::Ignored("no payment of ours".into())),
    };
    let amount = match d.amount() {
        Some(a)
            if a.currency() == locked.amount.currency()
                && a.amount_minor() > 0
                && a.amount_minor() <= locked.amount.amount_minor() =>
        {
            a
        }
        _ => {
            return Ok(Disposition::Quarantined(format!(
                "dispute {} is for {} {} but the payment is for {:?}",
                d.id, d.amount, d.currency, locked.amount
            )));
        }
    };
    let outcome = d.outcome();
    let existing: Option<(uuid::Uuid, Option<String>)> =
        sqlx::query_as("SELECT id, outcome FROM disputes WHERE gateway_reference = $1 FOR UPDATE")
            .bind(&d.id)
            .fetch_optional(&mut *conn)
            .await?;
    let mut events = Vec::new();
    match existing {
        Some((_, Some(closed))) => {
            return Ok(Disposition::Ignored(format!(
                "dispute {} is already closed ({closed})",
                d.id
            )));
        }
        Some((id, None)) => {
            sqlx::query(
                "UPDATE disputes SET status = $2, outcome = $3,
                        closed_at = CASE WHEN $3::text IS NULL THEN NULL ELSE now() END,
                        updated_at = now()
                  WHERE id = $1",
            )
            .bind(id)
            .bind(&d.status)
            .bind(outcome.map(|o| o.as_str()))
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO disputes (id, gateway_reference, payment_id, amount_minor, currency,
                                       reason, status, outcome, closed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                         CASE WHEN $8::text IS NULL THEN NULL ELSE now() END)",
            )
            .bind(uuid::Uuid::now_v7())
            .bind(&d.id)
            .bind(locked.id)
            .bind(amount.amount_minor())
            .bind(amount.currency().code())
            .bind(&d.reason)
            .bind(&d.status)
            .bind(outcome.map(|o| o.as_str()))
            .execute(&mut *conn)
            .await?;
            events.push("dispute_opened");
            tracing::warn!(payment_id = %locked.id, dispute = %d.id, reason = %d.reason, "payment disputed; its application is on hold");
        }
    }
    if let Some(outcome) = outcome {
        events.push(match outcome.as_str() {
            "won" => "dispute_won",
            "lost" => "dispute_lost",
            _ => "dispute_warning_closed",
        });
        tracing::info!(payment_id = %locked.id, dispute = %d.id, outcome = outcome.as_str(), "dispute closed; the hold lasts until an officer resolves it");
    }
    let cause = format!("{cause} dispute:{}", d.id);
    for event in events {
        payments::record_event(
            &mut *conn,
            locked.id,
            event,
            Some(locked.status),
            locked.status,
            Actor::Gateway,
            Some(&cause),
        )
        .await?;
    }
    Ok(Disposition::Processed)
}
