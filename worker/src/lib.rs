//! Background work of evisa-pay, on apalis over Postgres.
//!
//! - [`jobs`]: the job kinds, their queues, and enqueueing inside the caller's transaction.
//! - [`handlers`]: what each job does (charge a card, apply a gateway callback, poll an Alipay
//!   trade, carry out a refund).
//! - [`sweeper`]: periodic reconciliation with Stripe, expiry of abandoned payments and of unpaid
//!   applications, refunds of duplicate charges, pruning.
//! - [`dead`]: jobs that exhausted their attempts, for operators to list and retry.
//!
//! Delivery is at least once: every handler checks state first and calls gateways with
//! idempotency keys, so running a job twice has the effect of running it once.

pub mod bench;
pub mod charge_starts;
pub mod dead;
pub mod handlers;
pub mod notify;
pub mod observed;
pub mod queue;
pub mod sweeper;

use std::{sync::Arc, time::Duration};

use apalis::prelude::*;
use evisa_core::{
    application::Actor,
    config::{AuditSettings, Config, LimitSettings},
    gateway::{Report, alipay::AlipayClient, stripe::StripeGateway},
    payment::{
        self, Applied, GatewayFacts, Payment, PaymentEvent, PaymentStatus, apply::ApplyError,
    },
    ratelimit::{self, RateLimiter},
};
use queue::{JobQueue, QueueConfig};
use sqlx::PgPool;

pub use evisa_jobs::{
    ChargeCard, Job, PollAlipay, ProcessGatewayEvent, ReconcileReport, RefundPayment, enqueue,
    enqueue_after,
};

/// What handlers need.
pub struct WorkerContext {
    pub db: PgPool,
    /// Counts failed payments against the attempt limits; `None` when Redis was unreachable at
    /// start-up (then failures go uncounted, and the API's limits fail open).
    pub limiter: Option<RateLimiter>,
    pub limits: LimitSettings,
    pub audit: AuditSettings,
    pub stripe: StripeGateway,
    /// `None` when Alipay is not configured.
    pub alipay: Option<AlipayClient>,
    /// `EVISA_JOB_MAX_ATTEMPTS`, when set (else each job kind's own).
    pub max_attempts: Option<usize>,
    /// First poll delay of an Alipay trade (later polls back off).
    pub alipay_poll_first: Duration,
    /// Charge jobs' starts (`created` → `processing`), made together.
    pub charge_starts: charge_starts::ChargeStarts,
}

/// What became of a gateway's report the worker applied.
pub enum Outcome {
    Applied(Applied),
    /// The report's amount or gateway object is not the payment's: never applied and never
    /// retried, a person must look (the note says what differs).
    Mismatch(String),
}

impl WorkerContext {
    /// Applies a gateway's report to a payment ([`payment::apply`]). A payment that this made
    /// `failed` counts against its application's and applicant's attempt limits, which the API
    /// checks before it starts another attempt (so card testing stops at the limit).
    pub async fn apply(
        &self,
        payment: &Payment,
        event: PaymentEvent,
        facts: &GatewayFacts,
        actor: Actor,
        cause: &str,
    ) -> Result<Applied, ApplyError> {
        let applied = payment::apply(&self.db, payment.id, event, facts, actor, cause).await?;
        if let (
            Applied::Moved {
                to: PaymentStatus::Failed,
                ..
            },
            Some(limiter),
        ) = (&applied, &self.limiter)
        {
            let applications: Vec<_> = payment
                .allocations
                .iter()
                .map(|a| a.application_id)
                .collect();
            ratelimit::count_failed_payment(
                limiter,
                &self.limits,
                &applications,
                payment.applicant_id,
            )
            .await;
        }
        Ok(applied)
    }

    /// Applies a gateway's report ([`WorkerContext::apply`]), telling a report about another
    /// amount or gateway object apart from a failure worth retrying.
    pub async fn apply_report(
        &self,
        payment: &Payment,
        report: &Report,
        cause: &str,
    ) -> Result<Outcome, ApplyError> {
        match self
            .apply(payment, report.event, &report.facts, Actor::Gateway, cause)
            .await
        {
            Ok(applied) => Ok(Outcome::Applied(applied)),
            Err(e @ (ApplyError::AmountMismatch { .. } | ApplyError::ReferenceMismatch { .. })) => {
                tracing::error!(payment_id = %payment.id, cause, error = %e, "gateway report does not match the payment; not applied");
                Ok(Outcome::Mismatch(e.to_string()))
            }
            Err(e) => Err(e),
        }
    }
}

async fn connect_limiter(config: &Config) -> Option<RateLimiter> {
    match tokio::time::timeout(
        Duration::from_secs(5),
        ratelimit::connect(config.redis_url.expose()),
    )
    .await
    {
        Ok(Ok(conn)) => {
            // The payment changes this process commits reach the API processes' event streams,
            // and the API processes' job wake-ups reach these workers, through the same Redis.
            evisa_core::signals::connect(
                conn.clone(),
                config.redis_url.expose(),
                &config.redis_prefix,
            );
            Some(RateLimiter::new(conn, &config.redis_prefix))
        }
        _ => {
            tracing::warn!(
                "Redis unreachable: failed payments will not be counted against attempt limits, event streams learn of payment changes only by re-reading, and card charges wait for the next poll"
            );
            None
        }
    }
}

/// The queue settings of `evisa work`: `EVISA_JOB_BATCH` jobs claimed per fetch, a heartbeat
/// three times per orphan timeout (a killed worker's jobs return within the timeout).
fn queue_config(queue: &'static str, config: &Config) -> QueueConfig {
    let jobs = &config.jobs;
    QueueConfig {
        queue,
        batch_size: jobs.batch_size,
        heartbeat: (jobs.orphan_timeout / 3).max(Duration::from_secs(1)),
        orphan_after: jobs.orphan_timeout,
    }
}

/// Registers on `$monitor` the worker of one queue as `evisa work` runs it: named `$name`,
/// `EVISA_WORKER_CONCURRENCY` jobs at once, each running `$handler` with `$data`. (One worker
/// per queue: more, claiming from the same queue, only got in each other's way.)
#[macro_export]
macro_rules! register_worker {
    ($monitor:expr, $jobs:expr, $name:expr, $backend:expr, $data:expr, $handler:expr) => {{
        let jobs: &evisa_core::config::JobSettings = $jobs;
        let concurrency = jobs.concurrency;
        let (name, backend, data) = ($name, $backend.clone(), $data.clone());
        $monitor.register(move |restarts| {
            apalis::prelude::WorkerBuilder::new(format!("{name}-{restarts}"))
                .backend(backend.clone())
                .data(data.clone())
                .concurrency(concurrency)
                .parallelize(tokio::spawn)
                .build($handler)
        })
    }};
}

/// One queue's storage as `evisa work` runs it.
pub type Queue<J> = PollWith<JobQueue<J>, StreamStrategy<queue::Wakeups>>;

// A queue must be `Clone` itself: were it not, `queue.clone()` would resolve through `Deref` to
// the bare `JobQueue`, which no wake-up or poll reaches, and idle workers would sleep.
const _: fn() = || {
    fn clone<T: Clone>() {}
    clone::<Queue<ChargeCard>>();
};

/// The storage of `J`'s queue, configured as in production.
pub fn queue<J: Job>(db: &PgPool, config: &Config) -> Queue<J> {
    JobQueue::<J>::new(db, queue_config(J::QUEUE, config))
        .woken_and_polled(config.jobs.poll_interval)
}

/// Runs the workers and the sweeper until `shutdown` resolves; in-flight jobs finish first.
pub async fn run(
    config: Arc<Config>,
    db: PgPool,
    stripe: StripeGateway,
    render: evisa_core::notify::RenderObject,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config_arc = config.clone();
    let config: &Config = &config;
    let ctx = Arc::new(WorkerContext {
        db: db.clone(),
        limiter: connect_limiter(config).await,
        limits: config.limits.clone(),
        audit: config.audit.clone(),
        stripe,
        alipay: evisa_core::gateway::alipay::client_for(config),
        max_attempts: config.jobs.max_attempts,
        alipay_poll_first: config.alipay.poll_first,
        charge_starts: charge_starts::ChargeStarts::spawn(db.clone()),
    });
    // Unique per process: apalis tracks liveness by worker name.
    let instance = uuid::Uuid::now_v7().simple().to_string();

    let charge = queue::<ChargeCard>(&db, config);
    let events = queue::<ProcessGatewayEvent>(&db, config);
    let polls = queue::<PollAlipay>(&db, config);
    let refunds = queue::<RefundPayment>(&db, config);
    let reports = queue::<ReconcileReport>(&db, config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let sweeper = tokio::spawn(sweeper::run(
        ctx.clone(),
        config.payments.clone(),
        stop_rx.clone(),
    ));
    let relay = tokio::spawn(notify::run(config_arc, db.clone(), render, stop_rx.clone()));
    let wakeups = queue::relay_notifications(db.clone());
    let mut stop = stop_rx.clone();
    let jobs = &config.jobs;
    let monitor = Monitor::new();
    let monitor = register_worker!(
        monitor,
        jobs,
        format!("charge-{instance}"),
        charge,
        ctx,
        observed::charge_card
    );
    let monitor = register_worker!(
        monitor,
        jobs,
        format!("events-{instance}"),
        events,
        ctx,
        observed::process_gateway_event
    );
    let monitor = register_worker!(
        monitor,
        jobs,
        format!("poll-{instance}"),
        polls,
        ctx,
        observed::poll_alipay
    );
    let monitor = register_worker!(
        monitor,
        jobs,
        format!("refund-{instance}"),
        refunds,
        ctx,
        observed::refund_payment
    );
    let (name5, ctx5) = (format!("reconcile-{instance}"), ctx.clone());
    let reports_handle = reports.clone();
    let result = monitor
        .register(move |restarts| {
            WorkerBuilder::new(format!("{name5}-{restarts}"))
                .backend(reports.clone())
                .data(ctx5.clone())
                // One report at a time per process: each walks every payment since its date.
                .concurrency(1)
                .build(observed::reconcile_report)
        })
        // A worker whose backend failed (Postgres went away) starts again under a new name: the
        // jobs it held are orphans of the old name, taken back after the orphan timeout.
        .should_restart(|worker, error| {
            tracing::warn!(worker = %worker.name(), %error, "worker stopped on an error; restarting");
            true
        })
        .shutdown_timeout(Duration::from_secs(30))
        .run_with_signal(async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        })
        .await;
    // The outcomes of the last jobs (written in the background) are in before the process ends.
    let written = [
        charge.outcomes_written().await,
        events.outcomes_written().await,
        polls.outcomes_written().await,
        refunds.outcomes_written().await,
        reports_handle.outcomes_written().await,
    ];
    for error in written.into_iter().filter_map(Result::err) {
        tracing::warn!(%error, "the outcomes of the last jobs could not be stored; those jobs run again once taken back");
    }
    let asked_to_stop = *stop_rx.borrow();
    // The sweeper ends its pass in progress, if any (each gateway call is bounded by its
    // timeout); it is stopped by the signal, never aborted mid-transaction.
    if asked_to_stop {
        let _ = tokio::time::timeout(Duration::from_secs(30), sweeper).await;
    } else {
        sweeper.abort();
    }
    // The relay stops after the deliveries in flight (each bounded by its 10 s timeout).
    let _ = tokio::time::timeout(Duration::from_secs(15), relay).await;
    wakeups.abort();
    result.map_err(|e| anyhow::anyhow!("workers stopped: {e}"))?;
    if !asked_to_stop {
        anyhow::bail!("the workers ended without being asked to stop");
    }
    Ok(())
}
