//! Jobs that exhausted their attempts (or were aborted): listed and retried by operators with
//! `evisa jobs dead` and `evisa jobs retry ID`.

use sqlx::PgPool;

/// A dead job.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct DeadJob {
    pub id: String,
    pub queue: String,
    pub attempts: i32,
    pub last_result: Option<serde_json::Value>,
    pub done_at: Option<chrono::DateTime<chrono::Utc>>,
    pub args: serde_json::Value,
}

pub async fn list(pool: &PgPool) -> Result<Vec<DeadJob>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, job_type AS queue, attempts, last_result, done_at,
                convert_from(job, 'UTF8')::jsonb AS args
           FROM apalis.jobs
          WHERE status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts)
          ORDER BY done_at DESC NULLS LAST",
    )
    .fetch_all(pool)
    .await
}

/// Puts a dead job back in its queue with fresh attempts. `false` when no dead job has this id.
pub async fn retry(pool: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, run_at = now(), lock_by = NULL,
                lock_at = NULL, done_at = NULL
          WHERE id = $1 AND (status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}
