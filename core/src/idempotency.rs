//! Idempotent POSTs: the same `Idempotency-Key` and the same request replay the first answer for
//! 24 hours; the same key with another request is refused; a key whose first request is still
//! running is refused too (the caller retries later).
//!
//! The work and the saved answer commit in one transaction, under a transaction-scoped advisory
//! lock on (user, key): the key is recorded if and only if the work happened, and a crash leaves
//! nothing behind to clean up.

use sqlx::PgConnection;

use crate::ids::UserId;

/// How long an answer is replayed.
pub const RETENTION_HOURS: i64 = 24;

/// A client's `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be 1 to 255 visible ASCII characters (a UUID is a good choice)")]
pub struct BadIdempotencyKey;

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, BadIdempotencyKey> {
        if (1..=255).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(raw.to_string()))
        } else {
            Err(BadIdempotencyKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A fingerprint of a request: method, path and canonical JSON body.
pub fn request_hash(method: &str, path: &str, body: &serde_json::Value) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(method.as_bytes());
    ctx.update(b"\n");
    ctx.update(path.as_bytes());
    ctx.update(b"\n");
    // serde_json's maps are ordered by key, so equal documents serialise to equal bytes.
    ctx.update(body.to_string().as_bytes());
    ctx.finish().as_ref().to_vec()
}

/// How a keyed request starts.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// First time: do the work, then [`save`] the answer in the same transaction.
    New,
    /// Seen before with the same request: answer this again, do nothing.
    Replay {
        status: u16,
        body: serde_json::Value,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The first request with this key has not finished.
    #[error("a request with this Idempotency-Key is still being processed")]
    InFlight,
    /// The key was used for a different request.
    #[error("this Idempotency-Key was used for a different request")]
    Mismatch,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The advisory lock that marks a key as in flight.
pub fn lock_id(user: UserId, key: &IdempotencyKey) -> i64 {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("idempotency:{user}:{}", key.as_str()).as_bytes(),
    );
    i64::from_be_bytes(digest.as_ref()[..8].try_into().expect("8 bytes"))
}

/// Claims the key for this transaction, or says why not. Call first in the transaction that does
/// the work.
///
/// One statement takes the lock and reads any saved answer. Its snapshot is taken before the
/// lock, so a first request that commits in between is not seen here although its lock is gone:
/// [`save`] then finds that answer and says [`Saved::Raced`], and the caller rolls back and asks
/// again (and replays it).
pub async fn begin(
    conn: &mut PgConnection,
    user: UserId,
    key: &IdempotencyKey,
    hash: &[u8],
) -> Result<Begin, IdempotencyError> {
    type Row = (
        bool,
        Option<Vec<u8>>,
        Option<i16>,
        Option<serde_json::Value>,
    );
    let (locked, saved_hash, status, body): Row = sqlx::query_as(
        "SELECT pg_try_advisory_xact_lock($1), k.request_hash, k.response_status, k.response_body
           FROM (SELECT) one
           LEFT JOIN idempotency_keys k
             ON k.user_id = $2 AND k.key = $3
            AND k.created_at > now() - make_interval(hours => $4)",
    )
    .bind(lock_id(user, key))
    .bind(user)
    .bind(key.as_str())
    .bind(RETENTION_HOURS as i32)
    .fetch_one(&mut *conn)
    .await?;
    if !locked {
        return Err(IdempotencyError::InFlight);
    }
    match (saved_hash, status, body) {
        (Some(saved_hash), Some(status), Some(body)) if saved_hash == hash => Ok(Begin::Replay {
            status: status as u16,
            body,
        }),
        (Some(_), _, _) => Err(IdempotencyError::Mismatch),
        _ => Ok(Begin::New),
    }
}

/// What [`save`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Saved {
    Saved,
    /// A request with the same key committed its answer after [`begin`] looked: roll back this
    /// one's work and begin again.
    Raced,
}

/// Records the answer to a [`Begin::New`] request, in the transaction that did the work. An
/// answer of the same key past its retention is replaced; a live one is never overwritten.
pub async fn save(
    conn: &mut PgConnection,
    user: UserId,
    key: &IdempotencyKey,
    hash: &[u8],
    status: u16,
    body: &serde_json::Value,
) -> Result<Saved, sqlx::Error> {
    let saved = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, response_status, response_body)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash,
             response_status = excluded.response_status, response_body = excluded.response_body,
             created_at = now()
          WHERE idempotency_keys.created_at <= now() - make_interval(hours => $6)",
    )
    .bind(user)
    .bind(key.as_str())
    .bind(hash)
    .bind(status as i16)
    .bind(body)
    .bind(RETENTION_HOURS as i32)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(if saved == 1 {
        Saved::Saved
    } else {
        Saved::Raced
    })
}

/// Forgets answers older than the retention period; returns how many.
pub async fn prune(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(RETENTION_HOURS as i32)
    .execute(pool)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_hashes() {
        assert!(IdempotencyKey::parse("0190a000-0000-7000-8000-000000000001").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        let a = serde_json::json!({"b": 1, "a": 2});
        let b: serde_json::Value = serde_json::from_str(r#"{ "a": 2, "b": 1 }"#).unwrap();
        assert_eq!(
            request_hash("POST", "/x", &a),
            request_hash("POST", "/x", &b)
        );
        assert_ne!(
            request_hash("POST", "/x", &a),
            request_hash("POST", "/y", &a)
        );
    }
}
