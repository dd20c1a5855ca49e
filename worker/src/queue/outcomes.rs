//! What a worker's finished jobs leave behind, written in batches: done jobs move to the history,
//! failed ones wait for their next run (or are dead).

use apalis::prelude::*;
use apalis_core::backend::persistence::TaskEvent;
use serde_json::Value;
use sqlx::PgPool;

use super::{backoff, job_id};

/// What a batch of task events says: the jobs done, and the jobs that failed with when each
/// runs again (or that it is dead).
#[derive(Default)]
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

    /// Finished jobs leave the queue for the history; failed ones wait for their next run.
    pub(super) async fn write(self, db: &PgPool, worker: &str) -> Result<(), sqlx::Error> {
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
