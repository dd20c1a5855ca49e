//! Jobs that exhausted their attempts (or were aborted): listed and retried by operators with
//! `evisa jobs dead` and `evisa jobs retry ID`.

use sqlx::PgPool;

/// A dead job.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct DeadJob {
    pub id: String,
    pub queue: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub dead_at: Option<chrono::DateTime<chrono::Utc>>,
    pub args: serde_json::Value,
}

pub async fn list(pool: &PgPool) -> Result<Vec<DeadJob>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id::text AS id, queue, attempts, last_error, dead_at,
                convert_from(args, 'UTF8')::jsonb AS args
           FROM jobs WHERE dead_at IS NOT NULL
          ORDER BY dead_at DESC",
    )
    .fetch_all(pool)
    .await
}

/// Puts a dead job back in its queue with fresh attempts. `false` when no dead job has this id.
pub async fn retry(pool: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    let Ok(id) = id.parse::<i64>() else {
        return Ok(false);
    };
    let updated = sqlx::query(
        "WITH retried AS (
             UPDATE jobs SET dead_at = NULL, attempts = 0, run_at = now(), locked_by = NULL,
                    locked_at = NULL
              WHERE id = $1 AND dead_at IS NOT NULL RETURNING queue)
         SELECT pg_notify($2, queue) FROM retried",
    )
    .bind(id)
    .bind(evisa_jobs::WAKE_CHANNEL)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}
