//! What happens when a gateway — through the worker's call, a webhook, a poll or reconciliation —
//! reports on a payment. Every report goes through [`apply`], so every path converges on the
//! same state, whatever order or how often reports arrive.
//!
//! The walk of one report, in one transaction:
//! 1. lock the payment's applications and the payment (in that order, everywhere) and read them;
//! 2. refuse a report whose amount or gateway object is not the payment's;
//! 3. ask [`PaymentStatus::next`] where the payment goes; a stale or duplicate report changes
//!    nothing (it may still teach us the gateway's reference or the card);
//! 4. a success for a payment one of whose applications something else already paid is a
//!    duplicate charge: flagged for refund (whole), the applications untouched;
//! 5. otherwise the payment moves, its history gets the event, event streams are told, and a
//!    success moves every application it pays to `paid` (through [`ApplicationStatus::next`]).

use sqlx::{PgConnection, PgPool};

use super::{
    NextAction, Payment, PaymentEvent, PaymentRefusal, PaymentStatus,
    store::{self, MoveFacts},
};
use crate::{
    application::{Actor, ApplicationEvent, ApplicationStatus, store::record_paid},
    ids::{ApplicationId, PaymentId},
    money::Money,
    notify,
};

/// The card a payment was made with, for the receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardDetails {
    pub brand: String,
    pub last4: String,
}

/// Facts a report carries beside its event.
#[derive(Debug, Clone, Default)]
pub struct GatewayFacts {
    /// The gateway's object for the attempt (PaymentIntent id, Alipay trade number).
    pub reference: Option<String>,
    /// What the payer must do, for `GatewayRequiresAction`.
    pub next_action: Option<NextAction>,
    /// Why it failed, for `Declined`: the gateway's code and a message the payer can act on.
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    /// The amount the gateway says it handled, when the report states one.
    pub amount: Option<Money>,
    /// The card, when the gateway's answer names it.
    pub card: Option<CardDetails>,
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The payment moved; `application_paid` when this made its applications `paid`.
    Moved {
        from: PaymentStatus,
        to: PaymentStatus,
        application_paid: bool,
        provider: super::Provider,
        created_at: chrono::DateTime<chrono::Utc>,
        /// The payment as it now is, for event streams once the move has committed.
        announcement: String,
    },
    /// A duplicate, stale or out-of-order report: nothing changed.
    Unchanged(PaymentRefusal),
    /// The gateway took money for this attempt although the application had already been paid:
    /// the attempt is flagged for refund, the application is untouched.
    DuplicateCharge,
}

/// A report that must not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("no such payment")]
    NotFound,
    /// The report's amount or currency is not ours: never applied, flagged for a person.
    #[error("the gateway reports {reported:?} but the payment is for {expected:?}")]
    AmountMismatch { expected: Money, reported: Money },
    /// The report is about another gateway object than the one this payment is bound to.
    #[error("the gateway reference {reported} does not match the payment's {expected}")]
    ReferenceMismatch { expected: String, reported: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A payment and its applications, locked for the rest of the transaction.
pub(crate) struct Locked {
    pub payment: Payment,
    /// Every application the payment pays, with its status, in id order.
    pub applications: Vec<LockedApplication>,
    /// A payment (or a fee waiver) has already paid one of its applications.
    pub application_paid: bool,
}

/// One of a locked payment's applications.
#[derive(serde::Deserialize)]
pub(crate) struct LockedApplication {
    pub id: ApplicationId,
    status: String,
    paid: bool,
}

impl LockedApplication {
    pub fn status(&self) -> Result<ApplicationStatus, sqlx::Error> {
        self.status
            .parse()
            .map_err(|_| sqlx::Error::Decode("stored application status is invalid".into()))
    }
}

/// A payment row with its applications, as [`lock`] reads them.
#[derive(sqlx::FromRow)]
struct LockedRow {
    #[sqlx(flatten)]
    payment: store::PaymentRow,
    applications: sqlx::types::Json<Vec<LockedApplication>>,
}

/// Locks the payment's applications in id order, then the payment (the lock order everywhere),
/// and reads them as they are after any transaction this waited for.
///
/// One statement: `apps` locks the applications; the payment's condition counts them (an
/// InitPlan, run to the end before the payment is scanned), so every application is locked
/// before the payment's row is.
pub(crate) async fn lock(tx: &mut PgConnection, id: PaymentId) -> Result<Locked, ApplyError> {
    const SQL: &str = concat!(
        "WITH apps AS MATERIALIZED (
           SELECT a.id, a.status, a.paid_at IS NOT NULL AS paid FROM applications a
            WHERE a.id IN (SELECT application_id FROM payment_allocations WHERE payment_id = $1)
            ORDER BY a.id FOR UPDATE)
         SELECT ",
        store::payment_columns!(),
        ", (SELECT json_agg(apps ORDER BY apps.id) FROM apps) AS applications
           FROM payments p WHERE p.id = $1 AND (SELECT count(*) FROM apps) > 0
            FOR UPDATE OF p"
    );
    let row: LockedRow = sqlx::query_as(SQL)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApplyError::NotFound)?;
    let applications = row.applications.0;
    Ok(Locked {
        application_paid: applications.iter().any(|a| a.paid),
        payment: row.payment.into_payment()?,
        applications,
    })
}

/// Applies one report to one payment, in one transaction (see the module's walk).
pub async fn apply(
    pool: &PgPool,
    id: PaymentId,
    event: PaymentEvent,
    facts: &GatewayFacts,
    actor: Actor,
    cause: &str,
) -> Result<Applied, ApplyError> {
    let mut tx = pool.begin().await?;
    let applied = apply_in(&mut tx, id, event, facts, actor, cause).await?;
    tx.commit().await?;
    announce(&applied);
    Ok(applied)
}

/// Tells event streams of a committed move, and counts it in the metrics. Call it only after
/// the transaction that made the move has committed.
pub(crate) fn announce(applied: &Applied) {
    if let Applied::Moved {
        to,
        provider,
        created_at,
        announcement,
        ..
    } = applied
    {
        super::announcements::publish(announcement);
        crate::metrics::payment_moved(*provider, *to, chrono::Utc::now() - *created_at);
    }
}

/// [`apply`] inside the caller's transaction (which commits it, or rolls it back on error).
pub async fn apply_in(
    tx: &mut PgConnection,
    id: PaymentId,
    event: PaymentEvent,
    facts: &GatewayFacts,
    actor: Actor,
    cause: &str,
) -> Result<Applied, ApplyError> {
    let locked = lock(tx, id).await?;
    apply_locked(tx, &locked, event, facts, actor, cause).await
}

pub(crate) async fn apply_locked(
    tx: &mut PgConnection,
    locked: &Locked,
    event: PaymentEvent,
    facts: &GatewayFacts,
    actor: Actor,
    cause: &str,
) -> Result<Applied, ApplyError> {
    let payment = &locked.payment;
    let id = payment.id;
    if let Some(reported) = facts.amount
        && reported != payment.amount
    {
        return Err(ApplyError::AmountMismatch {
            expected: payment.amount,
            reported,
        });
    }
    if let (Some(expected), Some(reported)) = (&payment.gateway_reference, &facts.reference)
        && expected != reported
    {
        return Err(ApplyError::ReferenceMismatch {
            expected: expected.clone(),
            reported: reported.clone(),
        });
    }
    let (brand, last4) = match &facts.card {
        Some(c) => (Some(c.brand.as_str()), Some(c.last4.as_str())),
        None => (None, None),
    };

    let from = payment.status;
    let to = match from.next(event) {
        Ok(to) => to,
        Err(refusal) => {
            // Still learn the gateway's reference or the card if this is the first to say.
            let learns_reference = payment.gateway_reference.is_none() && facts.reference.is_some();
            if learns_reference || facts.card.is_some() {
                sqlx::query(
                    "UPDATE payments SET gateway_reference = coalesce(gateway_reference, $2),
                         card_brand = coalesce(card_brand, $3), card_last4 = coalesce(card_last4, $4)
                     WHERE id = $1",
                )
                .bind(id)
                .bind(&facts.reference)
                .bind(brand)
                .bind(last4)
                .execute(&mut *tx)
                .await?;
            }
            tracing::info!(payment_id = %id, %refusal, cause, "report ignored: stale or duplicate");
            return Ok(Applied::Unchanged(refusal));
        }
    };

    if to == PaymentStatus::Succeeded && locked.application_paid {
        sqlx::query(
            "UPDATE payments SET duplicate_charge = true,
                 gateway_reference = coalesce(gateway_reference, $2), updated_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(&facts.reference)
        .execute(&mut *tx)
        .await?;
        store::record_event(
            tx,
            id,
            "duplicate_charge",
            Some(from),
            from,
            actor,
            Some(cause),
        )
        .await?;
        tracing::warn!(payment_id = %id, cause, "gateway charged a payment of an application already paid; flagged for refund");
        return Ok(Applied::DuplicateCharge);
    }

    let next_action = (to == PaymentStatus::RequiresAction)
        .then_some(facts.next_action.as_ref())
        .flatten();
    let failed = to == PaymentStatus::Failed;
    let moved = store::move_status(
        &mut *tx,
        id,
        event.as_str(),
        from,
        to,
        &MoveFacts {
            reference: facts.reference.as_deref(),
            next_action,
            failure_code: facts.failure_code.as_deref().filter(|_| failed),
            failure_message: facts.failure_message.as_deref().filter(|_| failed),
            card_brand: brand,
            card_last4: last4,
        },
        actor,
        cause,
    )
    .await?;
    // Under the payment's lock it is still `from`; the new row is what event streams will be
    // told of once this commits.
    let (_, announcement) = moved.ok_or(sqlx::Error::RowNotFound)?;
    if failed {
        notify::record(tx, notify::EventType::PaymentFailed, id.as_uuid()).await?;
    }

    // Every application the payment pays becomes paid with it, in this transaction.
    let mut application_paid = false;
    if to == PaymentStatus::Succeeded {
        let cause = format!("payment:{id}");
        for application in &locked.applications {
            let app_from = application.status()?;
            match app_from.next(ApplicationEvent::PaymentSucceeded) {
                Ok(app_to) => {
                    // With its `application.paid` notification.
                    record_paid(tx, application.id, app_from, app_to, actor, &cause).await?;
                    application_paid = true;
                }
                Err(refusal) => {
                    tracing::warn!(payment_id = %id, application_id = %application.id, %refusal, "payment succeeded but the application cannot become paid");
                }
            }
        }
    }
    tracing::info!(payment_id = %id, %from, %to, cause, "payment moved");
    Ok(Applied::Moved {
        from,
        to,
        application_paid,
        provider: payment.provider,
        created_at: payment.created_at,
        announcement,
    })
}
