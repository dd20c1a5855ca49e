//! Everything evisa-pay counts, in one place: each metric's name, labels and meaning.
//!
//! Code records through the functions here (the `metrics` facade underneath). Until a process
//! installs a recorder they cost nothing; `evisa serve`, `work` and `dev` install the Prometheus
//! one and serve it on `EVISA_METRICS_ADDR`. Labels take values from closed sets (route
//! templates, statuses, queue names, reasons), never ids or user input, so series stay few.

use std::{future::Future, time::Instant};

use crate::{
    gateway::GatewayError,
    payment::{PaymentStatus, Provider},
};

/// Counter: requests answered, by `route` (the matched template, e.g. `/v1/payments/{id}`),
/// `method` and `status`.
pub const HTTP_REQUESTS: &str = "evisa_http_requests_total";
/// Histogram (seconds): time to answer, by `route` and `method`.
pub const HTTP_DURATION: &str = "evisa_http_request_duration_seconds";
/// Counter: payment attempts created, by `provider`.
pub const PAYMENTS_CREATED: &str = "evisa_payments_created_total";
/// Counter: payment attempts that reached a final status, by `provider` and `status`.
pub const PAYMENTS_FINISHED: &str = "evisa_payments_finished_total";
/// Histogram (seconds): from an attempt's creation to its final status, by `provider` and `status`.
pub const PAYMENT_DURATION: &str = "evisa_payment_duration_seconds";
/// Gauge: jobs waiting to run (pending, or failed with attempts left), by `queue`.
pub const JOB_QUEUE_DEPTH: &str = "evisa_job_queue_depth";
/// Gauge: dead jobs (attempts exhausted, or killed) an operator must look at, by `queue`.
pub const JOBS_DEAD: &str = "evisa_jobs_dead";
/// Histogram (seconds): one run of a job's handler, by `queue` and `outcome` (`ok`, `error`).
pub const JOB_DURATION: &str = "evisa_job_run_duration_seconds";
/// Counter: job runs that were retries of an earlier failed run, by `queue`.
pub const JOB_RETRIES: &str = "evisa_job_retries_total";
/// Counter: jobs whose last allowed attempt failed (they are now dead), by `queue`.
pub const JOBS_DIED: &str = "evisa_jobs_died_total";
/// Counter: calls to a gateway, by `gateway`, `operation` and `outcome` (`ok`, `transient`,
/// `rejected`).
pub const GATEWAY_CALLS: &str = "evisa_gateway_calls_total";
/// Histogram (seconds): a gateway call's latency, by `gateway` and `operation`.
pub const GATEWAY_DURATION: &str = "evisa_gateway_call_duration_seconds";
/// Counter: webhooks (Stripe) and notifies (Alipay) received, by `source`.
pub const CALLBACKS_RECEIVED: &str = "evisa_callbacks_received_total";
/// Counter: callbacks refused, by `source` and `reason`.
pub const CALLBACKS_REFUSED: &str = "evisa_callbacks_refused_total";
/// Counter: verified callbacks already received before (stored once, acknowledged again).
pub const CALLBACKS_DUPLICATE: &str = "evisa_callbacks_duplicate_total";
/// Counter: refunds that reached an outcome, by `outcome` (`succeeded`, `failed`).
pub const REFUNDS: &str = "evisa_refunds_total";
/// Counter: requests refused by a rate limit, by `limit`.
pub const RATE_LIMITED: &str = "evisa_rate_limited_total";
/// Gauge: database connections of this process's pool, by `state` (`in_use`, `idle`).
pub const DB_CONNECTIONS: &str = "evisa_db_pool_connections";
/// Counter: signed notifications to portals' back offices, by `outcome` (`delivered`,
/// `failed_attempt`, `gave_up`).
pub const NOTIFICATIONS: &str = "evisa_notification_deliveries_total";

/// Histogram buckets (seconds) for everything timed here: 1 ms to 60 s.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

pub fn http_request(route: String, method: String, status: u16, seconds: f64) {
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method.clone(),
        "status" => status.to_string())
    .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route, "method" => method).record(seconds);
}

pub fn payment_created(provider: Provider) {
    metrics::counter!(PAYMENTS_CREATED, "provider" => provider.as_str()).increment(1);
}

/// A committed move of a payment; counted when `to` is final.
pub fn payment_moved(provider: Provider, to: PaymentStatus, age: chrono::Duration) {
    if !to.is_terminal() {
        return;
    }
    let labels = [("provider", provider.as_str()), ("status", to.as_str())];
    metrics::counter!(PAYMENTS_FINISHED, &labels).increment(1);
    let seconds = age.num_milliseconds().max(0) as f64 / 1000.0;
    metrics::histogram!(PAYMENT_DURATION, &labels).record(seconds);
}

/// Times one gateway call and counts its outcome.
pub async fn gateway_call<T>(
    gateway: &'static str,
    operation: &'static str,
    call: impl Future<Output = Result<T, GatewayError>>,
) -> Result<T, GatewayError> {
    let started = Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(GatewayError::Transient(_)) => "transient",
        Err(GatewayError::Rejected(_)) => "rejected",
    };
    gateway_outcome(gateway, operation, outcome, started.elapsed().as_secs_f64());
    result
}

/// Counts a gateway call whose outcome the caller classified itself.
pub fn gateway_outcome(
    gateway: &'static str,
    operation: &'static str,
    outcome: &'static str,
    s: f64,
) {
    metrics::counter!(GATEWAY_CALLS, "gateway" => gateway, "operation" => operation,
        "outcome" => outcome)
    .increment(1);
    metrics::histogram!(GATEWAY_DURATION, "gateway" => gateway, "operation" => operation).record(s);
}

/// One run of a job handler: `attempt` is apalis's count including this run (1 on the first).
pub fn job_run(queue: &'static str, attempt: usize, max_attempts: usize, ok: bool, seconds: f64) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::histogram!(JOB_DURATION, "queue" => queue, "outcome" => outcome).record(seconds);
    if attempt > 1 {
        metrics::counter!(JOB_RETRIES, "queue" => queue).increment(1);
    }
    if !ok && attempt >= max_attempts {
        metrics::counter!(JOBS_DIED, "queue" => queue).increment(1);
    }
}

pub fn job_queue(queue: String, waiting: i64, dead: i64) {
    metrics::gauge!(JOB_QUEUE_DEPTH, "queue" => queue.clone()).set(waiting as f64);
    metrics::gauge!(JOBS_DEAD, "queue" => queue).set(dead as f64);
}

pub fn callback_received(source: &'static str) {
    metrics::counter!(CALLBACKS_RECEIVED, "source" => source).increment(1);
}

pub fn callback_refused(source: &'static str, reason: &'static str) {
    metrics::counter!(CALLBACKS_REFUSED, "source" => source, "reason" => reason).increment(1);
}

pub fn callback_duplicate(source: &'static str) {
    metrics::counter!(CALLBACKS_DUPLICATE, "source" => source).increment(1);
}

pub fn refund_finished(succeeded: bool) {
    let outcome = if succeeded { "succeeded" } else { "failed" };
    metrics::counter!(REFUNDS, "outcome" => outcome).increment(1);
}

pub fn rate_limited(limit: &'static str) {
    metrics::counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

pub fn db_pool(pool: &sqlx::PgPool) {
    let (size, idle) = (pool.size() as f64, pool.num_idle() as f64);
    metrics::gauge!(DB_CONNECTIONS, "state" => "in_use").set(size - idle);
    metrics::gauge!(DB_CONNECTIONS, "state" => "idle").set(idle);
}

pub fn notification(outcome: &'static str) {
    metrics::counter!(NOTIFICATIONS, "outcome" => outcome).increment(1);
}
