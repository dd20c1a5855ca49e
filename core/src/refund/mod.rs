//! Refunds of succeeded payments: asked for by officers, carried out by a job, confirmed by the
//! gateway (by the job's answer or poll, or by the gateway's event: both through [`settle_in`]).
//! Refunds made outside evisa-pay are recorded from the gateway's events ([`from_gateway`]).
//! A refund gives back part of one application's share of its payment (the whole payment, for a
//! payment of one application). Over-refunding is impossible: the payment row is locked while
//! what is already pending or refunded is added up, and CHECK constraints bound both the
//! payment's `refunded_amount_minor` and each allocation's `refunded_minor`.

pub mod from_gateway;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::{
    application::Actor,
    ids::{ApplicationId, PaymentId, UserId},
    money::{Currency, Money},
    payment::{Payment, PaymentStatus, store as payments},
    visa::string_enum,
};

/// A refund's own id (also its idempotency key at the gateway).
pub type RefundId = uuid::Uuid;

/// Where a refund is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundStatus {
    /// Above the approval threshold: waits for a different staff member.
    PendingApproval,
    /// Asked of the gateway (or about to be).
    Pending,
    Succeeded,
    Failed,
    /// Declined by the second staff member; nothing was asked of the gateway.
    Declined,
}

string_enum!(RefundStatus, "refund status", PendingApproval => "pending_approval", Pending => "pending", Succeeded => "succeeded", Failed => "failed", Declined => "declined");

/// Who made a refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundOrigin {
    /// Asked for by staff (or by the rejection policy) through evisa-pay.
    Evisa,
    /// Made at the gateway outside evisa-pay (e.g. in the Stripe dashboard), recorded from its
    /// events.
    Gateway,
}

string_enum!(RefundOrigin, "refund origin", Evisa => "evisa", Gateway => "gateway");

/// Which refunds need a second staff member (`EVISA_REFUND_APPROVAL_ABOVE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalPolicy {
    /// Refunds of more than this many minor units of the payment's currency.
    Above(i64),
    /// Refunds that leave nothing refundable (the default): a refund in full, and the last part
    /// of one made in parts, so that splitting it does not get round the second pair of eyes.
    FullRefunds,
}

impl ApprovalPolicy {
    /// Whether refunding `amount`, when `remaining` is still refundable, needs a second staff
    /// member.
    pub fn needs_approval(self, amount: i64, remaining: i64) -> bool {
        match self {
            ApprovalPolicy::Above(limit) => amount > limit,
            ApprovalPolicy::FullRefunds => amount >= remaining,
        }
    }
}

/// Why a pending-approval refund cannot be approved or declined.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("refund not found")]
    NotFound,
    #[error("only a refund waiting for approval can be approved or declined; this one is {0}")]
    NotAwaitingApproval(RefundStatus),
    #[error("a different staff member must decide on a refund than the one who asked for it")]
    SameStaffMember,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A refund.
#[derive(Debug, Clone)]
pub struct Refund {
    pub id: RefundId,
    pub payment_id: PaymentId,
    /// Whose share it gives back; none for a refund of a group payment made at the gateway.
    pub application_id: Option<ApplicationId>,
    pub amount: Money,
    pub reason: String,
    pub status: RefundStatus,
    pub gateway_reference: Option<String>,
    pub failure_message: Option<String>,
    pub origin: RefundOrigin,
    /// The staff member who asked for it; none for a refund made outside evisa-pay.
    pub requested_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RefundRow {
    id: RefundId,
    payment_id: PaymentId,
    application_id: Option<ApplicationId>,
    amount_minor: i64,
    currency: String,
    reason: String,
    status: String,
    gateway_reference: Option<String>,
    failure_message: Option<String>,
    origin: String,
    requested_by: Option<UserId>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl RefundRow {
    fn into_refund(self) -> Result<Refund, sqlx::Error> {
        let corrupt = |what: &str| {
            sqlx::Error::Decode(format!("refund {}: stored {what} is invalid", self.id).into())
        };
        let currency = Currency::parse(&self.currency).map_err(|_| corrupt("currency"))?;
        Ok(Refund {
            id: self.id,
            payment_id: self.payment_id,
            application_id: self.application_id,
            amount: Money::new(self.amount_minor, currency).map_err(|_| corrupt("amount"))?,
            reason: self.reason,
            status: self.status.parse().map_err(|_| corrupt("status"))?,
            gateway_reference: self.gateway_reference,
            failure_message: self.failure_message,
            origin: self.origin.parse().map_err(|_| corrupt("origin"))?,
            requested_by: self.requested_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const COLUMNS: &str = "id, payment_id, application_id, amount_minor, currency, reason, status, gateway_reference, \
                       failure_message, origin, requested_by, created_at, updated_at";

/// Why a refund cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("payment not found")]
    PaymentNotFound,
    #[error("only succeeded payments can be refunded; this one is {0}")]
    NotRefundable(PaymentStatus),
    /// More than what remains refundable (what is pending counts as given back).
    #[error("at most {remaining:?} can still be refunded")]
    TooMuch { remaining: Money },
    #[error("the payment has been refunded in full")]
    NothingLeft,
    /// A group payment: which application's share is to be refunded must be said.
    #[error("the payment pays several applications; name the one whose share to refund")]
    ApplicationRequired,
    /// The payment does not pay this application.
    #[error("the payment does not pay application {0}")]
    NotAllocated(ApplicationId),
    /// A dispute (chargeback) is open: refunding now could give the money back twice.
    #[error("the payment is disputed (dispute {0}); no refund until the dispute is closed")]
    Disputed(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Records a refund of `amount` (everything that remains of the share when `None`) of
/// `application`'s share of a payment (may be `None` for a payment of one application) inside
/// the caller's transaction: `pending` (the caller enqueues the gateway work), or
/// `pending_approval` when `policy` asks for a second staff member.
#[allow(clippy::too_many_arguments)]
pub async fn request(
    conn: &mut PgConnection,
    payment: PaymentId,
    application: Option<ApplicationId>,
    amount: Option<i64>,
    reason: &str,
    officer: Actor,
    officer_id: UserId,
    policy: ApprovalPolicy,
) -> Result<(Refund, Payment), RefundError> {
    let p = payments::get_for_update(conn, payment)
        .await?
        .ok_or(RefundError::PaymentNotFound)?;
    let share = match (application, p.allocations.as_slice()) {
        (None, [only]) => only.clone(),
        (None, _) => return Err(RefundError::ApplicationRequired),
        (Some(a), all) => all
            .iter()
            .find(|s| s.application_id == a)
            .cloned()
            .ok_or(RefundError::NotAllocated(a))?,
    };
    if p.status != PaymentStatus::Succeeded {
        return Err(RefundError::NotRefundable(p.status));
    }
    if let Some(dispute) = crate::dispute::open_on_payment(conn, payment).await? {
        return Err(RefundError::Disputed(dispute));
    }
    // What is committed of the payment and of the share. What a lost dispute took back is gone
    // as surely as a refund.
    let (committed, committed_share): (i64, i64) = sqlx::query_as(
        "SELECT (coalesce(sum(amount_minor), 0)
                 + (SELECT coalesce(sum(amount_minor), 0) FROM disputes
                     WHERE payment_id = $1 AND outcome = 'lost'))::bigint,
                coalesce(sum(amount_minor) FILTER (WHERE application_id = $2), 0)::bigint
           FROM refunds
          WHERE payment_id = $1 AND status NOT IN ('failed', 'declined')",
    )
    .bind(payment)
    .bind(share.application_id)
    .fetch_one(&mut *conn)
    .await?;
    let remaining =
        (p.amount.amount_minor() - committed).min(share.amount.amount_minor() - committed_share);
    if remaining <= 0 {
        return Err(RefundError::NothingLeft);
    }
    let amount = amount.unwrap_or(remaining);
    if amount <= 0 || amount > remaining {
        return Err(RefundError::TooMuch {
            remaining: Money::new(remaining, p.amount.currency()).expect("positive"),
        });
    }
    let id = uuid::Uuid::now_v7();
    let status = if policy.needs_approval(amount, remaining) {
        RefundStatus::PendingApproval
    } else {
        RefundStatus::Pending
    };
    let row: RefundRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO refunds (id, payment_id, amount_minor, currency, reason, requested_by, status,
                              application_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(payment)
    .bind(amount)
    .bind(p.amount.currency().code())
    .bind(reason)
    .bind(officer_id)
    .bind(status.as_str())
    .bind(share.application_id)
    .fetch_one(&mut *conn)
    .await?;
    let cause = format!("refund:{id}");
    payments::record_event(
        conn,
        payment,
        "refund_requested",
        Some(p.status),
        p.status,
        officer,
        Some(&cause),
    )
    .await?;
    Ok((row.into_refund()?, p))
}

/// A second staff member's decision on a refund waiting for approval, inside the caller's
/// transaction: approved, it becomes `pending` (the caller enqueues the gateway work); declined,
/// it frees its amount. Both are recorded in the payment's history.
pub async fn decide(
    conn: &mut PgConnection,
    id: RefundId,
    approve: bool,
    staff: Actor,
    staff_id: UserId,
) -> Result<Refund, ApprovalError> {
    let current: RefundRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM refunds WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ApprovalError::NotFound)?;
    let current = current.into_refund()?;
    if current.status != RefundStatus::PendingApproval {
        return Err(ApprovalError::NotAwaitingApproval(current.status));
    }
    if current.requested_by == Some(staff_id) {
        return Err(ApprovalError::SameStaffMember);
    }
    let to = if approve {
        RefundStatus::Pending
    } else {
        RefundStatus::Declined
    };
    let row: RefundRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE refunds SET status = $2, decided_by = $3, decided_at = now(), updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(to.as_str())
    .bind(staff_id)
    .fetch_one(&mut *conn)
    .await?;
    // Locked: this appends to the payment's history chain.
    let p = payments::get_for_update(&mut *conn, current.payment_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let cause = format!("refund:{id}");
    payments::record_event(
        conn,
        current.payment_id,
        if approve {
            "refund_approved"
        } else {
            "refund_declined"
        },
        Some(p.status),
        p.status,
        staff,
        Some(&cause),
    )
    .await?;
    Ok(row.into_refund()?)
}

/// A refund by id.
pub async fn get(pool: &PgPool, id: RefundId) -> Result<Option<Refund>, sqlx::Error> {
    let row: Option<RefundRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM refunds WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(RefundRow::into_refund).transpose()
}

/// A payment's refunds, oldest first.
pub async fn list(pool: &PgPool, payment: PaymentId) -> Result<Vec<Refund>, sqlx::Error> {
    let rows: Vec<RefundRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM refunds WHERE payment_id = $1 ORDER BY id"
    )))
    .bind(payment)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(RefundRow::into_refund).collect()
}

/// Remembers the gateway's id of a refund still pending there, to ask about it later.
pub async fn remember_reference(
    pool: &PgPool,
    id: RefundId,
    reference: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE refunds SET gateway_reference = $2, updated_at = now() WHERE id = $1 AND status = 'pending'")
        .bind(id)
        .bind(reference)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records the gateway's verdict on a pending refund (once; later verdicts are ignored), in its
/// own transaction.
pub async fn settle(
    pool: &PgPool,
    id: RefundId,
    succeeded: bool,
    gateway_reference: Option<&str>,
    failure: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let settled = settle_in(&mut tx, id, succeeded, gateway_reference, failure).await?;
    tx.commit().await?;
    if settled {
        crate::metrics::refund_finished(succeeded);
    }
    Ok(settled)
}

/// Records the gateway's verdict on a pending refund inside the caller's transaction: the one
/// path for the refund job's answer, its poll and the gateway's refund events. Returns false
/// (and changes nothing) when the refund is not pending any more. A success adds to the
/// payment's `refunded_amount_minor`; a failure frees the amount to be refunded again.
pub async fn settle_in(
    conn: &mut PgConnection,
    id: RefundId,
    succeeded: bool,
    gateway_reference: Option<&str>,
    failure: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let status = if succeeded { "succeeded" } else { "failed" };
    let updated: Option<(PaymentId, i64, Option<ApplicationId>)> = sqlx::query_as(
        "UPDATE refunds SET status = $2, gateway_reference = coalesce($3, gateway_reference),
             failure_message = $4, updated_at = now()
         WHERE id = $1 AND status = 'pending' RETURNING payment_id, amount_minor, application_id",
    )
    .bind(id)
    .bind(status)
    .bind(gateway_reference)
    .bind(failure)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((payment, amount, application)) = updated else {
        return Ok(false);
    };
    if succeeded {
        sqlx::query("UPDATE payments SET refunded_amount_minor = refunded_amount_minor + $2, updated_at = now() WHERE id = $1")
            .bind(payment)
            .bind(amount)
            .execute(&mut *conn)
            .await?;
        // The share it gave back, bounded by `refunded_minor <= amount_minor`.
        sqlx::query(
            "UPDATE payment_allocations SET refunded_minor = refunded_minor + $3
              WHERE payment_id = $1 AND application_id = $2",
        )
        .bind(payment)
        .bind(application)
        .bind(amount)
        .execute(&mut *conn)
        .await?;
    }
    // Locked: this appends to the payment's history chain.
    let p = payments::get_for_update(&mut *conn, payment)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let cause = format!("refund:{id}");
    let event = if succeeded {
        "refund_succeeded"
    } else {
        "refund_failed"
    };
    payments::record_event(
        &mut *conn,
        payment,
        event,
        Some(p.status),
        p.status,
        Actor::Gateway,
        Some(&cause),
    )
    .await?;
    let kind = if succeeded {
        crate::notify::EventType::RefundSucceeded
    } else {
        crate::notify::EventType::RefundFailed
    };
    crate::notify::record(&mut *conn, kind, id).await?;
    Ok(true)
}

/// What a gateway's report that a refund went through (an Alipay refund notify) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The refund was pending and is now succeeded.
    Confirmed(RefundId),
    /// Already succeeded: a repeat, or the refund query got there first.
    AlreadyConfirmed(RefundId),
    /// Not a refund of this payment (another system's refund, or not one of our ids).
    NotOurs,
    /// We recorded the refund as something other than pending or succeeded: a person must look.
    Conflict {
        refund: RefundId,
        status: RefundStatus,
    },
}

/// Confirms the refund `out_request_no` (our refund id, as sent to the gateway) of `payment`
/// because the gateway reports it done: the same, idempotent step as a refund query's success.
pub async fn confirm_by_gateway(
    pool: &PgPool,
    payment: PaymentId,
    out_request_no: &str,
) -> Result<Confirmation, sqlx::Error> {
    let Ok(id) = uuid::Uuid::try_parse(out_request_no) else {
        return Ok(Confirmation::NotOurs);
    };
    let Some(r) = get(pool, id).await? else {
        return Ok(Confirmation::NotOurs);
    };
    if r.payment_id != payment {
        return Ok(Confirmation::NotOurs);
    }
    match r.status {
        RefundStatus::Pending => Ok(if settle(pool, id, true, None, None).await? {
            Confirmation::Confirmed(id)
        } else {
            // Settled between our read and our update: whatever settled it decided.
            match get(pool, id).await?.map(|r| r.status) {
                Some(RefundStatus::Succeeded) => Confirmation::AlreadyConfirmed(id),
                Some(status) => Confirmation::Conflict { refund: id, status },
                None => Confirmation::NotOurs,
            }
        }),
        RefundStatus::Succeeded => Ok(Confirmation::AlreadyConfirmed(id)),
        status => Ok(Confirmation::Conflict { refund: id, status }),
    }
}
