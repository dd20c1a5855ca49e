//! What a worker's finished jobs leave behind, written in batches in the background: done jobs
//! move to the history, failed ones wait for their next run (or are dead).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use apalis::prelude::*;
use apalis_core::backend::persistence::TaskEvent;
use serde_json::Value;
use sqlx::PgPool;

use super::{backoff, job_id};

/// What a batch of task events says: the jobs done, and the jobs that failed with when each
/// runs again (or that it is dead).
#[derive(Debug, Default)]
pub(super) struct Outcomes {
    done: Vec<i64>,
    failed: Vec<i64>,
    attempts: Vec<i32>,
    errors: Vec<String>,
    delays_ms: Vec<i64>,
    dead: Vec<bool>,
}

impl Outcomes {
    pub(super) fn of(events: Vec<TaskEvent<Value>>) -> Self {
        let mut o = Outcomes::default();
        for event in events {
            let TaskEvent::Complete(result) = event else {
                continue;
            };
            let Some(id) = job_id(&result.task_id) else {
                continue;
            };
            match (&result.status, &result.result) {
                (Status::Done, _) | (_, Ok(_)) => o.done.push(id),
                (status, Err(error)) => {
                    o.failed.push(id);
                    o.attempts.push(result.attempt as i32);
                    o.errors.push(error.clone());
                    o.delays_ms
                        .push(backoff(result.attempt.max(1)).as_millis() as i64);
                    o.dead.push(*status == Status::Killed);
                }
            }
        }
        o
    }

    pub(super) fn is_empty(&self) -> bool {
        self.done.is_empty() && self.failed.is_empty()
    }

    fn extend(&mut self, more: Outcomes) {
        self.done.extend(more.done);
        self.failed.extend(more.failed);
        self.attempts.extend(more.attempts);
        self.errors.extend(more.errors);
        self.delays_ms.extend(more.delays_ms);
        self.dead.extend(more.dead);
    }

    /// Finished jobs leave the queue for the history; failed ones wait for their next run.
    async fn write(self, db: &PgPool, worker: &str) -> Result<(), sqlx::Error> {
        if !self.done.is_empty() {
            // One statement for the whole batch: out of the queue, into the history.
            sqlx::query(
                "WITH finished AS (DELETE FROM jobs WHERE id = ANY($1) AND locked_by = $2
                                   RETURNING id, queue, attempts, created_at)
                 INSERT INTO jobs_done (id, queue, attempts, created_at)
                 SELECT id, queue, attempts + 1, created_at FROM finished",
            )
            .bind(&self.done)
            .bind(worker)
            .execute(db)
            .await?;
        }
        if !self.failed.is_empty() {
            sqlx::query(
                "UPDATE jobs j SET attempts = f.attempt, last_error = left(f.error, 2000),
                     locked_by = NULL, locked_at = NULL,
                     run_at = now() + f.delay_ms * interval '1 millisecond',
                     dead_at = CASE WHEN f.dead OR f.attempt >= j.max_attempts THEN now() END
                   FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::bigint[], $5::bool[])
                        AS f(id, attempt, error, delay_ms, dead)
                  WHERE j.id = f.id AND j.locked_by = $6",
            )
            .bind(&self.failed)
            .bind(&self.attempts)
            .bind(&self.errors)
            .bind(&self.delays_ms)
            .bind(&self.dead)
            .bind(worker)
            .execute(db)
            .await?;
        }
        Ok(())
    }
}

/// How long a write waits for more outcomes to join it. Nothing waits on it (the jobs are done,
/// and a claimed job is no one else's), so a little patience saves statements and commits.
const GATHER: Duration = Duration::from_millis(5);

/// A queue's outcomes on their way to the database: one background write at a time, which takes
/// everything that arrived while the write before it ran (under load, batches stay large and
/// outcomes are stored in the order they came).
#[derive(Debug, Default)]
pub(super) struct Writer {
    state: Mutex<WriterState>,
}

#[derive(Debug, Default)]
struct WriterState {
    /// Outcomes no write has taken yet, per worker name (a restarted worker has a new one).
    pending: Vec<(String, Outcomes)>,
    /// Whether a write is running; it goes on until nothing is pending.
    writing: bool,
    /// The first error of a write since the last one reported.
    error: Option<sqlx::Error>,
}

impl Writer {
    fn state(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.state
            .lock()
            .expect("never poisoned: no code panics while holding it")
    }

    /// Queues the outcomes of `worker`'s jobs, starting a write unless one is running, and
    /// returns at once: the error of an earlier write, if there was one.
    pub(super) fn add(
        self: &Arc<Self>,
        db: &PgPool,
        worker: &str,
        outcomes: Outcomes,
    ) -> Result<(), sqlx::Error> {
        let mut state = self.state();
        if !outcomes.is_empty() {
            match state.pending.last_mut() {
                Some((name, queued)) if name == worker => queued.extend(outcomes),
                _ => state.pending.push((worker.to_owned(), outcomes)),
            }
            if !state.writing {
                state.writing = true;
                let (writer, db) = (self.clone(), db.clone());
                tokio::spawn(async move { writer.write_pending(&db).await });
            }
        }
        state.error.take().map_or(Ok(()), Err)
    }

    async fn write_pending(&self, db: &PgPool) {
        loop {
            // What finishes meanwhile joins this write: one statement for several jobs.
            tokio::time::sleep(GATHER).await;
            let batches = {
                let mut state = self.state();
                if state.pending.is_empty() {
                    state.writing = false;
                    return;
                }
                std::mem::take(&mut state.pending)
            };
            for (worker, outcomes) in batches {
                if let Err(e) = outcomes.write(db, &worker).await {
                    self.state().error.get_or_insert(e);
                }
            }
        }
    }

    /// Waits until every queued outcome is written; the error of a write, if one failed.
    pub(super) async fn idle(&self) -> Result<(), sqlx::Error> {
        loop {
            {
                let mut state = self.state();
                if !state.writing {
                    return state.error.take().map_or(Ok(()), Err);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
