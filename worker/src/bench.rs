//! The job layer alone, configured as `evisa work` configures it: how fast it drains no-op jobs,
//! with and without a long history of finished jobs beside them (`evisa bench jobs`). The jobs
//! are added first, in bulk; what is timed is the queue draining them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use apalis::prelude::*;
use evisa_core::config::Config;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::{Job, queue};

/// A job that does nothing: what is measured is the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Noop {
    pub n: u64,
}

impl Job for Noop {
    const QUEUE: &'static str = "evisa.bench_noop";
    const MAX_ATTEMPTS: usize = 12;
}

async fn noop(_job: Noop, done: Data<Arc<AtomicUsize>>) -> Result<(), BoxDynError> {
    done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Jobs of the bench queue not finished yet (finished ones leave `jobs`).
async fn unfinished(db: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE queue = $1")
        .bind(Noop::QUEUE)
        .fetch_one(db)
        .await
}

/// Adds `count` no-op jobs, then runs one worker process's worth of the job layer until every
/// one is recorded done; returns how long that took.
pub async fn drain(db: &PgPool, config: &Config, count: usize) -> anyhow::Result<Duration> {
    let mut added = 0;
    while added < count {
        let n = (count - added).min(5000);
        let args: Vec<Vec<u8>> = (added..added + n)
            .map(|i| serde_json::to_vec(&Noop { n: i as u64 }).expect("serialisable"))
            .collect();
        sqlx::query(
            "INSERT INTO jobs (queue, args, max_attempts) SELECT $1, a, $2 FROM unnest($3::bytea[]) a",
        )
        .bind(Noop::QUEUE)
        .bind(evisa_jobs::attempts_of::<Noop>(config.jobs.max_attempts) as i32)
        .bind(&args)
        .execute(db)
        .await?;
        added += n;
    }
    let done = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let backend = queue::<Noop>(db, config);
    let name = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let wakeups = crate::queue::relay_notifications(db.clone());
    let started = Instant::now();
    let monitor = tokio::spawn(
        crate::register_worker!(Monitor::new(), &config.jobs, name, backend, done, noop)
            .shutdown_timeout(Duration::from_secs(10))
            .run_with_signal(async move {
                let mut stop = stop_rx;
                let _ = stop.wait_for(|s| *s).await;
                Ok(())
            }),
    );
    // Every job ran, and its completion is stored.
    let deadline = started + Duration::from_secs(600);
    while done.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while unfinished(db).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    let _ = monitor.await;
    backend.outcomes_written().await?;
    wakeups.abort();
    if done.load(Ordering::Relaxed) < count {
        anyhow::bail!(
            "only {} of {count} jobs ran within 10 minutes",
            done.load(Ordering::Relaxed)
        );
    }
    Ok(elapsed)
}

/// Adds `rows` finished jobs to the history, as days of running would leave them.
pub async fn add_history(db: &PgPool, rows: usize) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO jobs_done (id, queue, attempts, created_at, done_at)
         SELECT -g, $1, 1, now() - interval '1 day', now() - interval '1 day'
           FROM generate_series(1, $2) g",
    )
    .bind(Noop::QUEUE)
    .bind(rows as i64)
    .execute(db)
    .await?;
    sqlx::query("ANALYZE jobs_done").execute(db).await?;
    Ok(())
}

/// Adds `count` no-op jobs one at a time, each in its own transaction, to an idle worker, and
/// returns how long each took from its commit to its run: how fast a woken worker picks up work.
pub async fn pickup(db: &PgPool, config: &Config, count: usize) -> anyhow::Result<Vec<Duration>> {
    let done = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let backend = queue::<Noop>(db, config);
    let written = backend.clone();
    let counter = done.clone();
    let name = format!("pickup-{}", uuid::Uuid::now_v7().simple());
    let wakeups = crate::queue::relay_notifications(db.clone());
    let monitor = tokio::spawn(
        Monitor::new()
            .register(move |restarts| {
                WorkerBuilder::new(format!("{name}-{restarts}"))
                    .backend(backend.clone())
                    .data(counter.clone())
                    .concurrency(1)
                    .build(noop)
            })
            .shutdown_timeout(Duration::from_secs(10))
            .run_with_signal(async move {
                let mut stop = stop_rx;
                let _ = stop.wait_for(|s| *s).await;
                Ok(())
            }),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut took = Vec::new();
    for i in 0..count {
        let before = done.load(Ordering::Relaxed);
        let mut tx = db.begin().await?;
        crate::enqueue(&mut tx, &Noop { n: i as u64 }, Some(1)).await?;
        tx.commit().await?;
        let start = Instant::now();
        while done.load(Ordering::Relaxed) == before {
            if start.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("job {i} was not picked up within 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        took.push(start.elapsed());
        // Let the worker go idle again between jobs.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let _ = monitor.await;
    written.outcomes_written().await?;
    wakeups.abort();
    Ok(took)
}
