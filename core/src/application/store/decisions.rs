//! What officers and time decide: decisions, the history they leave, and the expiry of
//! applications left unpaid.

use super::*;

/// An officer's decision: paid → processing → approved | rejected, inside the caller's
/// transaction (a rejection may start a refund in the same transaction).
pub async fn decide(
    conn: &mut PgConnection,
    keys: &DataKeys,
    officer: Actor,
    id: ApplicationId,
    decision: &Decision,
) -> Result<Application, ApplicationError> {
    let event = match decision {
        Decision::BeginProcessing => ApplicationEvent::BeginProcessing,
        Decision::Approve => ApplicationEvent::Approve,
        Decision::Reject { .. } => ApplicationEvent::Reject,
    };
    let reason = match decision {
        Decision::Reject { reason } => Some(reason.as_str()),
        _ => None,
    };
    let status: String =
        sqlx::query_scalar("SELECT status FROM applications WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(ApplicationError::NotFound)?;
    let from: ApplicationStatus = status.parse().map_err(|_| {
        ApplicationError::Database(sqlx::Error::Decode("stored status is invalid".into()))
    })?;
    // Under the application's row lock, which a dispute's event and its resolution take too.
    if let Some((dispute_id, dispute, payment)) =
        crate::dispute::holding_application(conn, id).await?
    {
        return Err(ApplicationError::OnHold {
            dispute_id,
            dispute,
            payment,
        });
    }
    let to = from.next(event)?;
    let decided = matches!(
        to,
        ApplicationStatus::Approved | ApplicationStatus::Rejected
    );
    sqlx::query(
        "UPDATE applications SET status = $2, decision_reason = coalesce($3, decision_reason),
             decided_at = CASE WHEN $4 THEN now() ELSE decided_at END, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(reason)
    .bind(decided)
    .execute(&mut *conn)
    .await?;
    record_event(conn, id, event, from, to, officer, None).await?;
    if decided {
        crate::notify::record(
            conn,
            crate::notify::EventType::ApplicationDecided,
            id.as_uuid(),
        )
        .await?;
    }
    let row: ApplicationRow = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    row.open(keys)
}

/// One entry of an application's history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryEntry {
    pub event: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor_kind: String,
    pub actor_id: Option<UserId>,
    pub cause: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// The status history of an application, oldest first.
pub async fn history(pool: &PgPool, id: ApplicationId) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event, from_status, to_status, actor_kind, actor_id, cause, occurred_at
           FROM application_events WHERE application_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// Expires submitted applications unpaid for longer than `after` with no payment in flight, single
/// or group (an attempt in flight decides first; the database refuses otherwise, see
/// `applications_held_by_payment_in_flight`). Returns the ids expired. Safe to run from several processes
/// at once: each application is locked and re-checked before it moves.
pub async fn expire_unpaid(
    pool: &PgPool,
    after: chrono::Duration,
    limit: i64,
) -> Result<Vec<ApplicationId>, ApplicationError> {
    let candidates: Vec<ApplicationId> = sqlx::query_scalar(
        "SELECT a.id FROM applications a
          WHERE a.status = 'submitted' AND a.submitted_at < now() - $1
            AND NOT EXISTS (SELECT 1 FROM payment_allocations al WHERE al.application_id = a.id
                             AND al.payment_state = 'in_flight')
          ORDER BY a.submitted_at LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut expired = Vec::new();
    for id in candidates {
        let mut tx = pool.begin().await?;
        // Payment creation locks this row too, so no attempt can start while we decide.
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM applications a WHERE id = $1 AND submitted_at < now() - $2
               AND NOT EXISTS (SELECT 1 FROM payment_allocations al WHERE al.application_id = a.id
                                AND al.payment_state = 'in_flight')
             FOR UPDATE",
        )
        .bind(id)
        .bind(after)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(from) = status.and_then(|s| s.parse::<ApplicationStatus>().ok()) else {
            continue;
        };
        let Ok(to) = from.next(ApplicationEvent::Expire) else {
            continue;
        };
        sqlx::query("UPDATE applications SET status = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(to.as_str())
            .execute(&mut *tx)
            .await?;
        record_event(
            &mut tx,
            id,
            ApplicationEvent::Expire,
            from,
            to,
            Actor::System,
            Some("expiry"),
        )
        .await?;
        crate::notify::record(
            &mut tx,
            crate::notify::EventType::ApplicationExpired,
            id.as_uuid(),
        )
        .await?;
        tx.commit().await?;
        expired.push(id);
    }
    Ok(expired)
}
