//! The handlers as apalis runs them: every run of every job is timed and counted (retries, jobs
//! that died) through `evisa_core::metrics`, in one place rather than in each handler.

use std::{future::Future, sync::Arc, time::Instant};

use apalis::prelude::*;

use crate::{
    ChargeCard, Job, PollAlipay, ProcessGatewayEvent, ReconcileReport, RefundPayment,
    WorkerContext, handlers,
};

async fn observe<J: Job>(
    attempt: &Attempt,
    configured: Option<usize>,
    run: impl Future<Output = Result<(), BoxDynError>>,
) -> Result<(), BoxDynError> {
    let max_attempts = evisa_jobs::attempts_of::<J>(configured);
    let started = Instant::now();
    let result = run.await;
    evisa_core::metrics::job_run(
        J::QUEUE,
        attempt.current(),
        max_attempts,
        result.is_ok(),
        started.elapsed().as_secs_f64(),
    );
    result
}

pub async fn charge_card(
    job: ChargeCard,
    task: TaskId,
    attempt: Attempt,
    ctx: Data<Arc<WorkerContext>>,
) -> Result<(), BoxDynError> {
    let max = ctx.max_attempts;
    let run = handlers::charge_card(job, task, attempt.clone(), ctx);
    observe::<ChargeCard>(&attempt, max, run).await
}

pub async fn process_gateway_event(
    job: ProcessGatewayEvent,
    attempt: Attempt,
    ctx: Data<Arc<WorkerContext>>,
) -> Result<(), BoxDynError> {
    let max = ctx.max_attempts;
    let run = handlers::process_gateway_event(job, ctx);
    observe::<ProcessGatewayEvent>(&attempt, max, run).await
}

pub async fn poll_alipay(
    job: PollAlipay,
    task: TaskId,
    attempt: Attempt,
    ctx: Data<Arc<WorkerContext>>,
) -> Result<(), BoxDynError> {
    let max = ctx.max_attempts;
    let run = handlers::poll_alipay(job, task, ctx);
    observe::<PollAlipay>(&attempt, max, run).await
}

pub async fn refund_payment(
    job: RefundPayment,
    attempt: Attempt,
    ctx: Data<Arc<WorkerContext>>,
) -> Result<(), BoxDynError> {
    let max = ctx.max_attempts;
    let run = handlers::refund_payment(job, ctx);
    observe::<RefundPayment>(&attempt, max, run).await
}

pub async fn reconcile_report(
    job: ReconcileReport,
    attempt: Attempt,
    ctx: Data<Arc<WorkerContext>>,
) -> Result<(), BoxDynError> {
    let max = ctx.max_attempts;
    let run = handlers::reconcile_report(job, ctx);
    observe::<ReconcileReport>(&attempt, max, run).await
}

/// Sets the queue gauges (waiting and dead jobs per queue) from `jobs`, which holds only jobs
/// not finished; run at each scrape.
pub async fn sample_queues(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT q.queue, count(j.id) FILTER (WHERE j.dead_at IS NULL),
                count(j.id) FILTER (WHERE j.dead_at IS NOT NULL)
           FROM unnest($1::text[]) AS q(queue)
           LEFT JOIN jobs j ON j.queue = q.queue
          GROUP BY q.queue",
    )
    .bind(QUEUES)
    .fetch_all(pool)
    .await?;
    for (queue, waiting, dead) in rows {
        evisa_core::metrics::job_queue(queue, waiting, dead);
    }
    Ok(())
}

/// Every queue, so that empty ones still show 0.
const QUEUES: &[&str] = &[
    ChargeCard::QUEUE,
    ProcessGatewayEvent::QUEUE,
    PollAlipay::QUEUE,
    RefundPayment::QUEUE,
    ReconcileReport::QUEUE,
];
