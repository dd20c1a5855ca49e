//! The background job kinds. Each is a plain serde struct with its queue name; [`enqueue`] adds
//! one inside the caller's transaction, so the job exists if and only if the rows it acts on do.
//! The API enqueues them and `evisa-worker` runs them: both speak of jobs through this module, so
//! the API never depends on the worker.

use crate::ids::PaymentId;
use apalis::prelude::TaskBuilder;
use apalis_postgres::queries::push_tasks;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

/// A kind of background job.
pub trait Job: Serialize {
    /// The apalis queue (stored as `apalis.jobs.job_type`).
    const QUEUE: &'static str;
}

/// Create and confirm the card payment's PaymentIntent, and apply the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeCard {
    pub payment_id: PaymentId,
}

impl Job for ChargeCard {
    const QUEUE: &'static str = "evisa.charge_card";
}

/// Apply a verified gateway callback stored in `gateway_inbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessGatewayEvent {
    pub inbox_id: uuid::Uuid,
}

impl Job for ProcessGatewayEvent {
    const QUEUE: &'static str = "evisa.gateway_event";
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
}

/// Carry out a pending refund at the gateway and record its outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundPayment {
    pub refund_id: uuid::Uuid,
}

impl Job for RefundPayment {
    const QUEUE: &'static str = "evisa.refund";
}

/// Compare every payment since a date with its gateway and store what disagrees (an admin's
/// reconciliation report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub report_id: uuid::Uuid,
}

impl Job for ReconcileReport {
    const QUEUE: &'static str = "evisa.reconcile_report";
}

/// Adds `job` to run after `delay`, in the caller's transaction.
pub async fn enqueue_after<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    delay: std::time::Duration,
    max_attempts: usize,
) -> Result<(), sqlx::Error> {
    let args = serde_json::to_vec(job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let task = TaskBuilder::new(args)
        .run_after(delay)
        .max_attempts(max_attempts)
        .build();
    push_tasks(conn, J::QUEUE, vec![task])
        .await
        .map_err(as_sqlx)
}

/// The queue's errors as the database errors they are (so callers can tell an outage apart).
fn as_sqlx(e: apalis_postgres::Error) -> sqlx::Error {
    match e {
        apalis_postgres::Error::Database(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// Adds `job` to its queue in the caller's transaction. `max_attempts` bounds retries; a job that
/// exhausts them is dead until an operator retries it.
pub async fn enqueue<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    max_attempts: usize,
) -> Result<(), sqlx::Error> {
    let args = serde_json::to_vec(job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let task = TaskBuilder::new(args).max_attempts(max_attempts).build();
    push_tasks(conn, J::QUEUE, vec![task])
        .await
        .map_err(as_sqlx)
}
