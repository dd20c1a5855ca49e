//! What Stripe's refund events do: settle our pending refunds (through [`super::settle_in`], the
//! path the refund job's poll takes too), and record refunds made outside evisa-pay (in the
//! Stripe dashboard) as refunds of origin `gateway`, one per Stripe refund id.
//!
//! Every event names a refund's state at one moment and they arrive in any order, so a verdict
//! only ever moves a refund out of `pending`: a late `pending` after `succeeded` changes nothing,
//! and a verdict that contradicts a settled refund is quarantined for a person.

use sqlx::PgConnection;

use super::{COLUMNS, RefundRow, RefundStatus};
use crate::{
    application::Actor,
    gateway::stripe_event::{RefundSnapshot, RefundVerdict},
    inbox::Disposition,
    payment::{Provider, store as payments},
};

/// Applies one Stripe Refund object (from `refund.*` or a `charge.refunded` list) inside the
/// caller's transaction.
pub async fn apply_stripe_refund(
    conn: &mut PgConnection,
    r: &RefundSnapshot,
    cause: &str,
) -> Result<Disposition, sqlx::Error> {
    let Some(amount) = r.amount() else {
        return Ok(Disposition::Quarantined(format!(
            "refund {}: unknown currency {}",
            r.id, r.currency
        )));
    };
    // Ours by the metadata we set, or one recorded before by Stripe's id.
    if let Some(known) = find(conn, r).await? {
        return settle_known(conn, known, r, amount.amount_minor()).await;
    }
    if let Some(id) = r.refund_id() {
        return Ok(Disposition::Ignored(format!(
            "refund {} names refund {id}, which is not ours",
            r.id
        )));
    }
    let Some(intent) = r.payment_intent.as_deref() else {
        return Ok(Disposition::Ignored(format!(
            "refund {} names no PaymentIntent (charge {})",
            r.id,
            r.charge.as_deref().unwrap_or("unknown")
        )));
    };
    let Some(payment) =
        payments::find_by_gateway_reference(&mut *conn, Provider::Stripe, intent).await?
    else {
        return Ok(Disposition::Unmatched(intent.to_string()));
    };
    // Locked, so that two events about the same new refund record it once: the second finds
    // the first's row below.
    let payment = payments::get_for_update(&mut *conn, payment.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    if let Some(known) = find(conn, r).await? {
        return settle_known(conn, known, r, amount.amount_minor()).await;
    }
    if r.is_duplicate_charge_refund()
        || payment_duplicate_refund(conn, payment.id).await?.as_deref() == Some(r.id.as_str())
    {
        return Ok(Disposition::Ignored(format!(
            "refund {} gives back a duplicate charge",
            r.id
        )));
    }
    if amount.currency() != payment.amount.currency() {
        return Ok(Disposition::Quarantined(format!(
            "refund {} is in {}, the payment in {}",
            r.id,
            amount.currency(),
            payment.amount.currency()
        )));
    }
    if r.verdict() != RefundVerdict::Failed
        && payment.refunded_amount + amount.amount_minor() > payment.amount.amount_minor()
    {
        return Ok(Disposition::Quarantined(format!(
            "refund {} of {} would take the refunds beyond the payment's {:?}",
            r.id,
            amount.amount_minor(),
            payment.amount
        )));
    }
    let reason = match r.reason.as_deref() {
        Some(why) => format!("refunded outside evisa-pay (Stripe: {why})"),
        None => "refunded outside evisa-pay".to_string(),
    };
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO refunds (id, payment_id, amount_minor, currency, reason, status,
                              gateway_reference, origin, application_id)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, 'gateway', $7) RETURNING id",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(payment.id)
    .bind(amount.amount_minor())
    .bind(amount.currency().code())
    .bind(&reason)
    .bind(&r.id)
    // A payment of one application: its share is the whole. Of a group, the gateway cannot say
    // whose share it gave back, so it names none (bounded by the payment's total).
    .bind(match payment.allocations.as_slice() {
        [only] => Some(only.application_id),
        _ => None,
    })
    .fetch_one(&mut *conn)
    .await?;
    let cause = format!("{cause} refund:{id}");
    payments::record_event(
        &mut *conn,
        payment.id,
        "outside_refund_recorded",
        Some(payment.status),
        payment.status,
        Actor::Gateway,
        Some(&cause),
    )
    .await?;
    tracing::warn!(payment_id = %payment.id, refund = %r.id, amount = amount.amount_minor(), "refund made outside evisa-pay recorded");
    match r.verdict() {
        RefundVerdict::Pending => {}
        RefundVerdict::Succeeded => {
            super::settle_in(conn, id, true, None, None).await?;
        }
        RefundVerdict::Failed => {
            super::settle_in(conn, id, false, None, Some(&failure(r))).await?;
        }
    }
    Ok(Disposition::Processed)
}

async fn find(
    conn: &mut PgConnection,
    r: &RefundSnapshot,
) -> Result<Option<super::Refund>, sqlx::Error> {
    let row: Option<RefundRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM refunds WHERE gateway_reference = $1 OR id = $2
          ORDER BY (gateway_reference = $1) IS TRUE DESC LIMIT 1 FOR UPDATE"
    )))
    .bind(&r.id)
    .bind(r.refund_id())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(RefundRow::into_refund).transpose()
}

async fn payment_duplicate_refund(
    conn: &mut PgConnection,
    payment: crate::ids::PaymentId,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT duplicate_refund_reference FROM payments WHERE id = $1")
        .bind(payment)
        .fetch_one(conn)
        .await
}

fn failure(r: &RefundSnapshot) -> String {
    match r.failure_reason.as_deref() {
        Some(why) => format!("the gateway declined the refund ({why})"),
        None => "the gateway declined the refund".into(),
    }
}

/// A refund we know (ours, or an outside one recorded before), locked: the verdict settles it
/// if it is still pending.
async fn settle_known(
    conn: &mut PgConnection,
    known: super::Refund,
    r: &RefundSnapshot,
    amount: i64,
) -> Result<Disposition, sqlx::Error> {
    if known.amount.amount_minor() != amount {
        return Ok(Disposition::Quarantined(format!(
            "refund {} is for {amount} at Stripe but refund {} is for {} here",
            r.id,
            known.id,
            known.amount.amount_minor()
        )));
    }
    if let Some(reference) = known.gateway_reference.as_deref()
        && reference != r.id
    {
        return Ok(Disposition::Quarantined(format!(
            "refund {} is {reference} at Stripe, not {}",
            known.id, r.id
        )));
    }
    let verdict = r.verdict();
    match (known.status, verdict) {
        (RefundStatus::Pending, RefundVerdict::Pending) => {
            // Remembered, so the refund job asks Stripe about this refund instead of creating.
            sqlx::query(
                "UPDATE refunds SET gateway_reference = $2, updated_at = now()
                  WHERE id = $1 AND gateway_reference IS NULL",
            )
            .bind(known.id)
            .bind(&r.id)
            .execute(&mut *conn)
            .await?;
            Ok(Disposition::Processed)
        }
        (RefundStatus::Pending, RefundVerdict::Succeeded) => {
            super::settle_in(conn, known.id, true, Some(&r.id), None).await?;
            crate::metrics::refund_finished(true);
            tracing::info!(refund_id = %known.id, "refund settled by Stripe's event: succeeded");
            Ok(Disposition::Processed)
        }
        (RefundStatus::Pending, RefundVerdict::Failed) => {
            super::settle_in(conn, known.id, false, Some(&r.id), Some(&failure(r))).await?;
            crate::metrics::refund_finished(false);
            tracing::info!(refund_id = %known.id, "refund settled by Stripe's event: failed");
            Ok(Disposition::Processed)
        }
        (RefundStatus::Succeeded, RefundVerdict::Failed) => Ok(Disposition::Quarantined(format!(
            "refund {} succeeded here, but Stripe now says {} is {}",
            known.id,
            r.id,
            r.status.as_deref().unwrap_or("failed")
        ))),
        (RefundStatus::Failed, RefundVerdict::Succeeded) => Ok(Disposition::Quarantined(format!(
            "refund {} failed here, but Stripe says {} succeeded",
            known.id, r.id
        ))),
        (RefundStatus::PendingApproval | RefundStatus::Declined, _) => {
            Ok(Disposition::Quarantined(format!(
                "refund {} was never sent to Stripe ({}), yet Stripe reports {}",
                known.id, known.status, r.id
            )))
        }
        (status, _) => Ok(Disposition::Ignored(format!(
            "refund {} is already {status}",
            known.id
        ))),
    }
}
