//! The background job kinds. Each is a plain serde struct with its queue name and attempt limit;
//! [`enqueue`] adds one inside the caller's transaction, so the job exists if and only if the
//! rows it acts on do. The domain's use cases (`evisa-core`) and the API add them and
//! `evisa-worker` runs them: all three speak of jobs through this crate, so the API never
//! depends on the worker.
//!
//! Waking the workers of other processes once a transaction has committed goes through
//! `evisa_core::signals::wake_workers`, which delivers here through [`deliver_wake`].

use evisa_ids::PaymentId;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::time::Duration;

/// A kind of background job.
pub trait Job: Serialize {
    /// The queue (stored as `jobs.queue`).
    const QUEUE: &'static str;
    /// Attempts before a job of this kind is dead (listed by `evisa jobs dead`), with exponential
    /// backoff and jitter from 1 s to 5 min between them: 12 attempts span about 20 minutes.
    /// `EVISA_JOB_MAX_ATTEMPTS` replaces it for every kind (tests use a small one).
    const MAX_ATTEMPTS: usize;
}

/// The attempt limit a job of kind `J` is given: `EVISA_JOB_MAX_ATTEMPTS` when set, else the
/// kind's own.
pub fn attempts_of<J: Job>(configured: Option<usize>) -> usize {
    configured.unwrap_or(J::MAX_ATTEMPTS)
}

/// Create and confirm the card payment's PaymentIntent, and apply the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeCard {
    pub payment_id: PaymentId,
}

impl Job for ChargeCard {
    const QUEUE: &'static str = "evisa.charge_card";
    // Every attempt reuses the charge's idempotency key, so a retry never charges twice; a
    // gateway away for minutes is outlasted.
    const MAX_ATTEMPTS: usize = 12;
}

/// Apply a verified gateway callback stored in `gateway_inbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessGatewayEvent {
    pub inbox_id: uuid::Uuid,
}

impl Job for ProcessGatewayEvent {
    const QUEUE: &'static str = "evisa.gateway_event";
    // Applying a stored callback only needs our database: retries outlast a restart or failover.
    const MAX_ATTEMPTS: usize = 12;
}

/// Ask Alipay how a redirect payment stands; re-schedules itself with a later `run_at` until a
/// final status or the payment's deadline, when it closes the trade.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollAlipay {
    pub payment_id: PaymentId,
    /// How many polls came before this one (drives the backoff).
    pub round: u32,
}

impl Job for PollAlipay {
    const QUEUE: &'static str = "evisa.poll_alipay";
    // Failures of one poll (Alipay unreachable); the polling schedule itself is `round`'s.
    const MAX_ATTEMPTS: usize = 12;
}

/// Carry out a pending refund at the gateway and record its outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundPayment {
    pub refund_id: uuid::Uuid,
}

impl Job for RefundPayment {
    const QUEUE: &'static str = "evisa.refund";
    // Like a charge: the refund's idempotency key makes every retry safe.
    const MAX_ATTEMPTS: usize = 12;
}

/// Compare every payment since a date with its gateway and store what disagrees (an admin's
/// reconciliation report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub report_id: uuid::Uuid,
}

impl Job for ReconcileReport {
    const QUEUE: &'static str = "evisa.reconcile_report";
    // Read-only at the gateways; a report that still fails is retried by its admin.
    const MAX_ATTEMPTS: usize = 12;
}

/// The channel on which adding a job with no delay wakes its queue's workers (payload: the
/// queue's name); delivered when the transaction commits.
pub const WAKE_CHANNEL: &str = "evisa_jobs";

/// Wake-ups for this process's workers: the queue's name.
static WOKEN: std::sync::LazyLock<tokio::sync::broadcast::Sender<std::sync::Arc<str>>> =
    std::sync::LazyLock::new(|| tokio::sync::broadcast::channel(256).0);

/// The wake-ups of this process's workers: sent after commit in this process, or relayed from
/// the others (`evisa_core::signals`) or from Postgres.
pub fn woken() -> tokio::sync::broadcast::Receiver<std::sync::Arc<str>> {
    WOKEN.subscribe()
}

/// Wakes this process's workers of `queue` (woken here, or relayed from another process or
/// from Postgres).
pub fn deliver_wake(queue: &str) {
    // No workers here is fine.
    let _ = WOKEN.send(queue.into());
}

/// Adds `job`, due at once, in the caller's transaction, without waking its workers through
/// Postgres: the caller calls `evisa_core::signals::wake_workers` once the transaction has
/// committed. For the payment's first transaction, which should not queue its commit behind
/// other processes' `NOTIFY`s (see `evisa_core::signals`).
pub async fn enqueue_then_wake<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    max_attempts: Option<usize>,
) -> Result<(), sqlx::Error> {
    let args = serde_json::to_vec(job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let max_attempts = attempts_of::<J>(max_attempts);
    add(conn, J::QUEUE, &args, Duration::ZERO, max_attempts, false).await
}

/// Adds `job` to run after `delay`, in the caller's transaction.
pub async fn enqueue_after<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    delay: Duration,
    max_attempts: Option<usize>,
) -> Result<(), sqlx::Error> {
    let args = serde_json::to_vec(job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    insert(conn, J::QUEUE, &args, delay, attempts_of::<J>(max_attempts)).await
}

/// Adds `job` to its queue in the caller's transaction. Its attempts are bounded by
/// [`attempts_of`] (`max_attempts`: `EVISA_JOB_MAX_ATTEMPTS`, when set); a job that exhausts them
/// is dead until an operator retries it.
pub async fn enqueue<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    max_attempts: Option<usize>,
) -> Result<(), sqlx::Error> {
    enqueue_after(conn, job, Duration::ZERO, max_attempts).await
}

/// Adds a job of `queue` with its arguments already encoded (one statement, which also wakes the
/// queue's workers when the job is due at once).
pub async fn insert(
    conn: &mut PgConnection,
    queue: &str,
    args: &[u8],
    delay: Duration,
    max_attempts: usize,
) -> Result<(), sqlx::Error> {
    add(conn, queue, args, delay, max_attempts, true).await
}

/// The job's row, and with `notify` the `NOTIFY` that wakes its workers at commit when it is due.
async fn add(
    conn: &mut PgConnection,
    queue: &str,
    args: &[u8],
    delay: Duration,
    max_attempts: usize,
    notify: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH added AS (INSERT INTO jobs (queue, args, run_at, max_attempts)
                        VALUES ($1, $2, now() + $3, $4) RETURNING run_at <= now() AS due)
         SELECT pg_notify($5, $1) FROM added WHERE due AND $6",
    )
    .bind(queue)
    .bind(args)
    .bind(delay)
    .bind(max_attempts.clamp(1, i32::MAX as usize) as i32)
    .bind(WAKE_CHANNEL)
    .bind(notify)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes finished jobs older than a week (the history never slows the queue: it only takes
/// room). Returns how many went.
pub async fn prune_finished(db: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM jobs_done WHERE done_at < now() - interval '7 days'")
            .execute(db)
            .await?
            .rows_affected(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_keeps_its_own_attempt_limit_unless_one_is_configured_for_all() {
        assert_eq!(attempts_of::<ChargeCard>(None), ChargeCard::MAX_ATTEMPTS);
        assert_eq!(attempts_of::<ReconcileReport>(None), 12);
        assert_eq!(attempts_of::<ChargeCard>(Some(2)), 2);
        assert_eq!(attempts_of::<RefundPayment>(Some(2)), 2);
    }
}
