//! The job queue: apalis's workers (tasks, concurrency, monitor, graceful stop) over evisa's own
//! `jobs` table, with the queries a payment service needs to stay near what Postgres can commit.
//!
//! - A job is one row while it waits or runs. Fetching claims up to a batch with one
//!   `UPDATE … FOR UPDATE SKIP LOCKED` on a partial index of waiting jobs only.
//! - Finished jobs leave the table in batches (one statement for every job a worker finished
//!   since its last flush) into `jobs_done`, an append-only history pruned by age: a long history
//!   never slows the fetch. A batch is written in the background while the worker fetches its
//!   next jobs, each worker's batches in order.
//! - A failed job waits out an exponential backoff with jitter and runs again; one that exhausts
//!   its attempts (or is aborted) stays, `dead`, until an operator retries it.
//! - A worker whose heartbeat stops (killed, or cut off from Postgres) loses its claimed jobs to
//!   the other workers of the queue after the orphan timeout; the cut-off run counts as an
//!   attempt.
//! - Jobs added with no delay wake the queue's workers through LISTEN/NOTIFY (`evisa_jobs`,
//!   payload: the queue), or — a card's charge, added in the payment's first transaction —
//!   through `signals::wake_workers` once that transaction has committed (in this process, and in others
//!   through Redis); a poll at the configured interval covers delayed jobs and lost wake-ups.
//!   One LISTEN connection per process hands the notifications to every worker
//!   ([`relay_notifications`]).
//! - A fetch asks Postgres only when there may be news (a wake-up, a poll tick, or a full batch
//!   before it): apalis asks for jobs whenever anything wakes a worker.

use std::{
    marker::PhantomData,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::*;
use apalis_codec::json::JsonCodec;
use apalis_core::backend::{
    BackendConfig, WireFormatBackend,
    finalize::Durable,
    persistence::{Persisted, Persistence, TaskEvent, TaskPersistLayer},
};
use rand::Rng;
use serde_json::Value;
use sqlx::PgPool;

pub use evisa_jobs::WAKE_CHANNEL;

mod outcomes;
mod wakeups;

use outcomes::Outcomes;
pub use wakeups::{Wakeups, relay_notifications};

/// How a queue runs.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub queue: &'static str,
    /// Jobs claimed per fetch.
    pub batch_size: usize,
    /// How often a worker says it is alive.
    pub heartbeat: Duration,
    /// A worker silent this long is presumed dead and its jobs are taken back.
    pub orphan_after: Duration,
}

/// Exponential backoff with jitter: 1 s, 2 s, 4 s … capped at 5 minutes, each scaled by a random
/// factor in [0.5, 1) so that retries of many jobs do not arrive together.
pub fn backoff(attempt: usize) -> Duration {
    let exp = attempt.saturating_sub(1).min(16) as u32;
    let base = Duration::from_secs(1).saturating_mul(2u32.saturating_pow(exp));
    let capped = base.min(Duration::from_secs(300));
    capped.mul_f64(rand::rng().random_range(0.5..1.0))
}

#[derive(Debug, Clone)]
struct Store {
    db: PgPool,
    config: QueueConfig,
    /// Whether a fetch may find something: set by every wake-up and poll tick ([`Wakeups`]) and
    /// by a fetch that came back full, taken by the next fetch. apalis asks for the next jobs
    /// whenever anything wakes the worker (a job ending, an acknowledgement); without news
    /// there is nothing to claim, and the fetch answers empty without asking Postgres.
    news: Arc<AtomicBool>,
    /// The queue's finished jobs on their way to the database (see `handle_events`).
    outcomes: Arc<outcomes::Writer>,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    args: Vec<u8>,
    attempts: i32,
    max_attempts: i32,
}

fn job_id(id: &TaskId) -> Option<i64> {
    id.as_int().and_then(|i| i64::try_from(i).ok())
}

impl Store {
    /// Takes back the jobs of workers of this queue that stopped saying they are alive.
    async fn take_back_orphans(&self) -> Result<u64, sqlx::Error> {
        let taken = sqlx::query(
            "WITH gone AS (DELETE FROM job_workers
                            WHERE queue = $1 AND last_seen < now() - $2 RETURNING name)
             UPDATE jobs SET locked_by = NULL, locked_at = NULL, attempts = attempts + 1,
                    last_error = 'its worker ' || locked_by || ' stopped while it ran'
              WHERE locked_by IN (SELECT name FROM gone)",
        )
        .bind(self.config.queue)
        .bind(self.config.orphan_after)
        .execute(&self.db)
        .await?
        .rows_affected();
        if taken > 0 {
            tracing::warn!(
                queue = self.config.queue,
                taken,
                "jobs of a silent worker taken back"
            );
        }
        Ok(taken)
    }

    async fn alive(&self, worker: &WorkerContext) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO job_workers (name, queue, last_seen) VALUES ($1, $2, now())
             ON CONFLICT (name) DO UPDATE SET last_seen = now()",
        )
        .bind(worker.name())
        .bind(self.config.queue)
        .execute(&self.db)
        .await?;
        Ok(())
    }
}

impl Persistence for Store {
    type Compact = Vec<u8>;
    type Response = Value;
    type Error = sqlx::Error;

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), sqlx::Error> {
        self.alive(worker).await?;
        self.take_back_orphans().await?;
        Ok(())
    }

    async fn heartbeat(&mut self, worker: &WorkerContext) -> Result<(), sqlx::Error> {
        self.alive(worker).await?;
        self.take_back_orphans().await?;
        Ok(())
    }

    async fn fetch_next(
        &mut self,
        worker: &WorkerContext,
    ) -> Result<Vec<Task<Vec<u8>>>, sqlx::Error> {
        // Taken before the query: a wake-up that comes while it runs is kept for the next one.
        if !self.news.swap(false, Ordering::AcqRel) {
            return Ok(Vec::new());
        }
        // `id = ANY(ARRAY(…))`, not `id IN (…)`: for the IN form Postgres plans a hash join
        // that reads every row of `jobs` (a claim of 1,000 among 20,000 waiting took 7.1 ms,
        // and more as the backlog grows); the array form looks each claimed id up in the key
        // (4.7 ms).
        let rows: Vec<JobRow> = sqlx::query_as(
            "UPDATE jobs SET locked_by = $1, locked_at = now()
              WHERE id = ANY(ARRAY(SELECT id FROM jobs
                                    WHERE queue = $2 AND locked_by IS NULL AND dead_at IS NULL
                                      AND run_at <= now()
                                    ORDER BY run_at LIMIT $3
                                      FOR UPDATE SKIP LOCKED))
             RETURNING id, args, attempts, max_attempts",
        )
        .bind(worker.name())
        .bind(self.config.queue)
        .bind(self.config.batch_size as i64)
        .fetch_all(&self.db)
        .await
        .inspect_err(|_| self.news.store(true, Ordering::Release))?;
        if rows.len() >= self.config.batch_size {
            // A full batch: more may be waiting.
            self.news.store(true, Ordering::Release);
        }
        // Jobs that ended while this query ran have queued their outcomes, and apalis takes
        // outcomes only when the worker's task runs again outside a fetch. After a fetch that
        // finds nothing it would sleep with them until the next wake-up or poll tick (up to
        // `EVISA_JOB_POLL_MS`: seen as a 230 ms stall at the end of a 20,000-job drain), so
        // the task is woken once more. (This future is polled by the worker's task itself; a
        // fetch that found jobs is followed by another look anyway.)
        if rows.is_empty() {
            std::future::poll_fn(|cx| {
                cx.waker().wake_by_ref();
                Poll::Ready(())
            })
            .await;
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                TaskBuilder::new(r.args)
                    .task_id(TaskId::from_int(r.id as u64))
                    .queue(self.config.queue.into())
                    .attempt(r.attempts as usize)
                    .max_attempts(r.max_attempts as usize)
                    .build()
            })
            .collect())
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<Vec<u8>>>,
        worker: &WorkerContext,
    ) -> Result<u64, sqlx::Error> {
        let ids: Vec<i64> = tasks
            .iter()
            .filter_map(|t| t.task_id().and_then(job_id))
            .collect();
        Ok(sqlx::query(
            "UPDATE jobs SET locked_by = NULL, locked_at = NULL
              WHERE id = ANY($1) AND locked_by = $2",
        )
        .bind(&ids)
        .bind(worker.name())
        .execute(&self.db)
        .await?
        .rows_affected())
    }

    /// Hands the batch's outcomes to the queue's background writer and returns at once: the
    /// next fetch need not wait for them (apalis runs a worker's fetches and event batches one
    /// after the other). Outcomes are written in the order they came, those that arrive during
    /// a write together in the next; a write's error surfaces here at the next batch, and the
    /// worker restarts as on any storage error. A job whose outcome is not stored yet stays
    /// claimed, so no one else runs it; were the process to die first, it runs again once taken
    /// back as an orphan, as any job cut off mid-run does. [`JobQueue::outcomes_written`] waits
    /// for the writer when the workers stop.
    async fn handle_events(
        &mut self,
        events: Vec<TaskEvent<Value>>,
        worker: &WorkerContext,
    ) -> Result<(), sqlx::Error> {
        self.outcomes
            .add(&self.db, worker.name(), Outcomes::of(events))
    }

    async fn push_tasks(&mut self, tasks: Vec<Task<Vec<u8>>>) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        for task in tasks {
            evisa_jobs::insert(
                &mut tx,
                self.config.queue,
                &task.args,
                Duration::ZERO,
                task.max_attempts().unwrap_or(1),
            )
            .await?;
        }
        tx.commit().await
    }
}

/// A queue's storage, as apalis's workers consume it.
#[pin_project::pin_project]
pub struct JobQueue<Args> {
    #[pin]
    persistence: Persisted<Store>,
    codec: JsonCodec<Vec<u8>>,
    _args: PhantomData<Args>,
}

impl<Args> Clone for JobQueue<Args> {
    fn clone(&self) -> Self {
        Self {
            persistence: self.persistence.clone(),
            codec: JsonCodec::default(),
            _args: PhantomData,
        }
    }
}

impl<Args> JobQueue<Args> {
    pub fn new(db: &PgPool, config: QueueConfig) -> Self {
        Self {
            persistence: Persisted::new(Store {
                db: db.clone(),
                config,
                news: Arc::new(AtomicBool::new(true)),
                outcomes: Arc::default(),
            }),
            codec: JsonCodec::default(),
            _args: PhantomData,
        }
    }

    /// Waits until every batch of outcomes handed to the background is written (call it once
    /// the workers have stopped): every job that finished has then left the queue.
    pub async fn outcomes_written(&self) -> Result<(), sqlx::Error> {
        self.persistence.outcomes.idle().await
    }

    /// Woken when a job is added (see [`Wakeups`]), and polled every `interval` besides.
    pub fn woken_and_polled(self, interval: Duration) -> PollWith<Self, StreamStrategy<Wakeups>> {
        let wakeups = Wakeups::new(
            self.persistence.config.queue,
            self.persistence.news.clone(),
            interval,
        );
        PollWith::new(self, StreamStrategy::new(wakeups))
    }
}

impl<Args> Backend for JobQueue<Args> {
    type Task = Task<Vec<u8>>;
    type Error = sqlx::Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        let heartbeat = self.persistence.config.heartbeat;
        self.persistence.poll_ready(cx, worker, heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.persistence.poll_next(cx, worker)
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.persistence.poll_close(cx, worker)
    }
}

impl<Args> BackendConfig for JobQueue<Args> {
    type Args = Args;
    type Kind = Durable;
    type Id = u64;
    type Config = QueueConfig;
    type Layer = TaskPersistLayer<JsonCodec<Value>, Value>;

    fn config(&self) -> &QueueConfig {
        &self.persistence.config
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        let batch = self.persistence.config.batch_size;
        self.persistence
            .layer(JsonCodec::<Value>::default(), batch)
            // Every outcome is reported (and batched): that is how finished jobs leave.
            .persist_results(true)
            .lock_tasks(false)
    }
}

impl<Args> WireFormatBackend for JobQueue<Args> {
    type Codec = JsonCodec<Vec<u8>>;
    type Compact = Vec<u8>;

    fn codec(&self) -> &Self::Codec {
        &self.codec
    }
}
