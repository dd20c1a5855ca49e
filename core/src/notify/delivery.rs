//! Deliveries: claimed by a worker when due, signed, POSTed, and recorded attempt by attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::hmac;
use sqlx::PgPool;

use super::{EventType, ObjectKind, endpoints};
use crate::{crypto::DataKeys, secret::Secret};

/// How long a claim lasts: past the 10 s request timeout, after which another worker may take
/// the delivery (its first claimant was killed).
pub const CLAIM: Duration = Duration::from_secs(15);

/// The wait after each failed attempt before the next: about four days in all, then the delivery
/// is failed (an operator can still `evisa notify redeliver` it).
pub const DEFAULT_SCHEDULE: &[Duration] = &[
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(12 * 3600),
    Duration::from_secs(24 * 3600),
    Duration::from_secs(24 * 3600),
    Duration::from_secs(24 * 3600),
];

/// A delivery a worker holds: everything needed to send it.
pub struct Claimed {
    pub id: uuid::Uuid,
    pub event_id: uuid::Uuid,
    pub event_type: EventType,
    pub object_kind: ObjectKind,
    pub object_id: uuid::Uuid,
    pub created: DateTime<Utc>,
    pub url: String,
    pub attempts: i32,
    /// Every secret that signs for the endpoint now (the previous one during a rotation).
    pub secrets: Vec<Secret<Vec<u8>>>,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: uuid::Uuid,
    event_id: uuid::Uuid,
    event_type: String,
    object_kind: String,
    object_id: uuid::Uuid,
    created: DateTime<Utc>,
    url: String,
    attempts: i32,
    endpoint_id: uuid::Uuid,
    secret_sealed: Vec<u8>,
    previous_secret_sealed: Option<Vec<u8>>,
}

/// Claims up to `limit` due deliveries for [`CLAIM`]; others skip them meanwhile.
pub async fn claim(
    pool: &PgPool,
    keys: &DataKeys,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "WITH due AS (
            SELECT id FROM notification_deliveries
             WHERE status = 'pending' AND next_attempt_at <= now()
               AND (locked_until IS NULL OR locked_until < now())
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED
         ), claimed AS (
            UPDATE notification_deliveries d SET locked_until = now() + $2
              FROM due WHERE d.id = due.id
            RETURNING d.id, d.event_id, d.endpoint_id, d.attempts
         )
         SELECT c.id, c.event_id, e.type AS event_type, e.object_kind, e.object_id,
                e.created_at AS created, n.url, c.attempts, n.id AS endpoint_id, n.secret_sealed,
                CASE WHEN n.previous_expires_at > now() THEN n.previous_secret_sealed END
                    AS previous_secret_sealed
           FROM claimed c
           JOIN notification_events e ON e.id = c.event_id
           JOIN notification_endpoints n ON n.id = c.endpoint_id",
    )
    .bind(limit)
    .bind(CLAIM)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(Claimed {
                secrets: endpoints::signing_secrets(
                    keys,
                    r.endpoint_id,
                    &r.secret_sealed,
                    r.previous_secret_sealed.as_deref(),
                ),
                id: r.id,
                event_id: r.event_id,
                event_type: r.event_type.parse().ok()?,
                object_kind: r.object_kind.parse().ok()?,
                object_id: r.object_id,
                created: r.created,
                url: r.url,
                attempts: r.attempts,
            })
        })
        .collect())
}

/// The notification body: `{id, type, created, data: {object}}`.
pub fn body(claimed: &Claimed, object: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": claimed.event_id,
        "type": claimed.event_type.as_str(),
        "created": claimed.created.timestamp(),
        "data": {"object": object},
    }))
    .expect("a JSON value serializes")
}

/// `Evisa-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, one `v1` per
/// secret.
pub fn signature(secrets: &[Secret<Vec<u8>>], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose());
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        let tag = ctx.sign();
        header.push_str(",v1=");
        header.extend(tag.as_ref().iter().map(|b| format!("{b:02x}")));
    }
    header
}

/// What one attempt got.
pub struct Attempt {
    pub http_status: Option<u16>,
    pub latency: Duration,
    pub error: Option<String>,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.http_status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// How a delivery stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    RetryIn(Duration),
    GaveUp,
}

/// Records an attempt and moves the delivery on: delivered, due again after the schedule's next
/// wait, or failed when the schedule is spent.
pub async fn finish(
    pool: &PgPool,
    claimed: &Claimed,
    attempt: &Attempt,
    schedule: &[Duration],
) -> Result<Outcome, sqlx::Error> {
    let attempts = claimed.attempts + 1;
    let outcome = if attempt.succeeded() {
        Outcome::Delivered
    } else {
        match schedule.get(claimed.attempts.max(0) as usize) {
            Some(wait) => Outcome::RetryIn(*wait),
            None => Outcome::GaveUp,
        }
    };
    let (status, wait) = match outcome {
        Outcome::Delivered => ("delivered", Duration::ZERO),
        Outcome::RetryIn(wait) => ("pending", wait),
        Outcome::GaveUp => ("failed", Duration::ZERO),
    };
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO notification_attempts (delivery_id, http_status, latency_ms, error)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(claimed.id)
    .bind(attempt.http_status.map(i32::from))
    .bind(attempt.latency.as_millis().min(i32::MAX as u128) as i32)
    .bind(attempt.error.as_deref())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE notification_deliveries
            SET status = $2, attempts = $3, next_attempt_at = now() + $4, locked_until = NULL,
                updated_at = now()
          WHERE id = $1",
    )
    .bind(claimed.id)
    .bind(status)
    .bind(attempts)
    .bind(wait)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(outcome)
}

/// One attempt, as an admin reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRecord {
    pub attempted_at: DateTime<Utc>,
    pub http_status: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
}

/// A delivery with its attempts.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: uuid::Uuid,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub endpoint_id: uuid::Uuid,
    pub status: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub attempts: Vec<AttemptRecord>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: uuid::Uuid,
    event_id: uuid::Uuid,
    event_type: String,
    endpoint_id: uuid::Uuid,
    status: String,
    next_attempt_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct AttemptOf {
    delivery_id: uuid::Uuid,
    #[sqlx(flatten)]
    attempt: AttemptRecord,
}

/// The newest deliveries (at most `limit`), optionally of one endpoint and in one status.
pub async fn list(
    pool: &PgPool,
    endpoint: Option<uuid::Uuid>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryRecord>, sqlx::Error> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT d.id, d.event_id, e.type AS event_type, d.endpoint_id, d.status,
                d.next_attempt_at, d.created_at
           FROM notification_deliveries d JOIN notification_events e ON e.id = d.event_id
          WHERE ($1::uuid IS NULL OR d.endpoint_id = $1) AND ($2::text IS NULL OR d.status = $2)
          ORDER BY d.created_at DESC, d.id DESC LIMIT $3",
    )
    .bind(endpoint)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
    let attempts: Vec<AttemptOf> = sqlx::query_as(
        "SELECT delivery_id, attempted_at, http_status, latency_ms, error
           FROM notification_attempts WHERE delivery_id = ANY ($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DeliveryRecord {
            attempts: attempts
                .iter()
                .filter(|a| a.delivery_id == r.id)
                .map(|a| a.attempt.clone())
                .collect(),
            next_attempt_at: (r.status == "pending").then_some(r.next_attempt_at),
            id: r.id,
            event_id: r.event_id,
            event_type: r.event_type,
            endpoint_id: r.endpoint_id,
            status: r.status,
            created_at: r.created_at,
        })
        .collect())
}

/// Sends an event again to every live endpoint it went to, now, with a fresh schedule. Returns
/// how many deliveries were put back; 0 when no such event.
pub async fn redeliver(pool: &PgPool, event: uuid::Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE notification_deliveries d
            SET status = 'pending', attempts = 0, next_attempt_at = now(), locked_until = NULL,
                updated_at = now()
           FROM notification_endpoints n
          WHERE d.event_id = $1 AND n.id = d.endpoint_id AND n.deleted_at IS NULL",
    )
    .bind(event)
    .execute(pool)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body_per_secret() {
        let secrets = vec![
            Secret::new(b"evsec_one".to_vec()),
            Secret::new(b"evsec_two".to_vec()),
        ];
        let header = signature(&secrets, 1_700_000_000, b"{\"a\":1}");
        let parts: Vec<&str> = header.split(',').collect();
        assert_eq!(parts[0], "t=1700000000");
        assert_eq!(parts.len(), 3);
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"evsec_two");
        let tag = hmac::sign(&key, b"1700000000.{\"a\":1}");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parts[2], format!("v1={hex}"));
    }

    #[test]
    fn the_default_schedule_spans_at_least_three_days() {
        let total: Duration = DEFAULT_SCHEDULE.iter().sum();
        assert!(total >= Duration::from_secs(3 * 24 * 3600), "{total:?}");
    }
}
