//! Stored reconciliation reports: started by an admin, filled in by a worker's job
//! ([`crate::reconciliation::report`]), read later.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};

use crate::{ids::UserId, reconciliation::Disagreement};

/// A report's own id.
pub type ReportId = uuid::Uuid;

/// A report as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredReport {
    pub id: ReportId,
    pub requested_by: UserId,
    pub since: NaiveDate,
    /// `running`, `done` or `failed`.
    pub status: String,
    pub checked: Option<i32>,
    pub disagreements: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, requested_by, since, status, checked, disagreements, error, created_at, finished_at";

/// Records a running report in the caller's transaction (which also enqueues its job).
pub async fn start(
    conn: &mut PgConnection,
    requested_by: UserId,
    since: NaiveDate,
) -> Result<StoredReport, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO reconciliation_reports (id, requested_by, since) VALUES ($1, $2, $3)
         RETURNING {COLUMNS}"
    )))
    .bind(uuid::Uuid::now_v7())
    .bind(requested_by)
    .bind(since)
    .fetch_one(conn)
    .await
}

pub async fn get(pool: &PgPool, id: ReportId) -> Result<Option<StoredReport>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM reconciliation_reports WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The outcome of a report's run: what it found, or why it could not finish.
pub async fn finish(
    pool: &PgPool,
    id: ReportId,
    outcome: Result<(usize, &[Disagreement]), &str>,
) -> Result<(), sqlx::Error> {
    let (status, checked, found, error) = match outcome {
        Ok((checked, found)) => (
            "done",
            Some(i32::try_from(checked).unwrap_or(i32::MAX)),
            Some(serde_json::to_value(found).unwrap_or_default()),
            None,
        ),
        Err(e) => ("failed", None, None, Some(e)),
    };
    sqlx::query(
        "UPDATE reconciliation_reports
            SET status = $2, checked = $3, disagreements = $4, error = $5, finished_at = now()
          WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .bind(status)
    .bind(checked)
    .bind(found)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}
