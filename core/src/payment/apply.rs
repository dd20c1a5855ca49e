//! What happens when a gateway — through the worker's call, a webhook, a poll or reconciliation —
//! reports on a payment. Every report goes through [`apply`], so every path converges on the
//! same state, whatever order or how often reports arrive.

use sqlx::{PgConnection, PgPool};

use super::{
    NextAction, PaymentEvent, PaymentRefusal, PaymentStatus,
    store::{self, PaymentRow, payment_columns},
};
use crate::{
    application::{
        Actor, ApplicationEvent, ApplicationStatus, store::record_event as record_application_event,
    },
    ids::{ApplicationId, PaymentId},
    money::Money,
    notify,
};

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
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The payment moved; `application_paid` when this made its application `paid`.
    Moved {
        from: PaymentStatus,
        to: PaymentStatus,
        application_paid: bool,
        provider: super::Provider,
        created_at: chrono::DateTime<chrono::Utc>,
    },
    /// A duplicate, stale or out-of-order report: nothing changed.
    Unchanged(PaymentRefusal),
    /// The gateway took money for this attempt although another payment of the application had
    /// already succeeded: the attempt is flagged for refund, the application is untouched.
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

/// Applies one report to one payment, in one transaction: the payment's status (through
/// [`PaymentStatus::next`]), its history, the announcement to event streams, and — when it
/// succeeds — its application's move to `paid` (through [`ApplicationStatus::next`]).
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
    if let Applied::Moved {
        to,
        provider,
        created_at,
        ..
    } = &applied
    {
        crate::metrics::payment_moved(*provider, *to, chrono::Utc::now() - *created_at);
    }
    Ok(applied)
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
    // Lock order everywhere: application, then payment.
    let application: ApplicationId =
        sqlx::query_scalar("SELECT application_id FROM payments WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(ApplyError::NotFound)?;
    let app_status: String =
        sqlx::query_scalar("SELECT status FROM applications WHERE id = $1 FOR UPDATE")
            .bind(application)
            .fetch_one(&mut *tx)
            .await?;
    let row: PaymentRow = sqlx::query_as(concat!(
        "SELECT ",
        payment_columns!(),
        " FROM payments WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let payment = row.into_payment()?;

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

    let from = payment.status;
    let to = match from.next(event) {
        Ok(to) => to,
        Err(refusal) => {
            // Still learn the gateway's reference if we did not know it yet.
            if payment.gateway_reference.is_none() && facts.reference.is_some() {
                sqlx::query("UPDATE payments SET gateway_reference = $2 WHERE id = $1")
                    .bind(id)
                    .bind(&facts.reference)
                    .execute(&mut *tx)
                    .await?;
            }
            tracing::info!(payment_id = %id, %refusal, cause, "report ignored: stale or duplicate");
            return Ok(Applied::Unchanged(refusal));
        }
    };

    if to == PaymentStatus::Succeeded {
        let other: Option<PaymentId> = sqlx::query_scalar(
            "SELECT id FROM payments WHERE application_id = $1 AND status = 'succeeded' AND id <> $2",
        )
        .bind(application)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(other) = other {
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
            tracing::warn!(payment_id = %id, paid_by = %other, cause, "gateway charged a second payment; flagged for refund");
            return Ok(Applied::DuplicateCharge);
        }
    }

    let next_action = (to == PaymentStatus::RequiresAction)
        .then(|| facts.next_action.clone())
        .flatten();
    let failed = to == PaymentStatus::Failed;
    sqlx::query(
        "UPDATE payments SET status = $2, gateway_reference = coalesce($3, gateway_reference),
             next_action = $4, failure_code = $5, failure_message = $6, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(&facts.reference)
    .bind(next_action.map(sqlx::types::Json))
    .bind(failed.then(|| facts.failure_code.clone()).flatten())
    .bind(failed.then(|| facts.failure_message.clone()).flatten())
    .execute(&mut *tx)
    .await?;
    store::record_event(tx, id, event.as_str(), Some(from), to, actor, Some(cause)).await?;
    store::notify(tx, id, to).await?;
    if failed {
        notify::record(tx, notify::EventType::PaymentFailed, id.as_uuid()).await?;
    }

    let mut application_paid = false;
    if to == PaymentStatus::Succeeded {
        let app_from: ApplicationStatus = app_status
            .parse()
            .map_err(|_| sqlx::Error::Decode("stored application status is invalid".into()))?;
        match app_from.next(ApplicationEvent::PaymentSucceeded) {
            Ok(app_to) => {
                sqlx::query("UPDATE applications SET status = $2, paid_at = now(), updated_at = now() WHERE id = $1")
                    .bind(application)
                    .bind(app_to.as_str())
                    .execute(&mut *tx)
                    .await?;
                let cause = format!("payment:{id}");
                record_application_event(
                    tx,
                    application,
                    ApplicationEvent::PaymentSucceeded,
                    app_from,
                    app_to,
                    actor,
                    Some(&cause),
                )
                .await?;
                notify::record(
                    tx,
                    notify::EventType::ApplicationPaid,
                    application.as_uuid(),
                )
                .await?;
                application_paid = true;
            }
            Err(refusal) => {
                tracing::warn!(payment_id = %id, %refusal, "payment succeeded but the application cannot become paid");
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
    })
}
