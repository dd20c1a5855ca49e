//! The inbox of verified gateway callbacks (`gateway_inbox`): written by the API when a webhook
//! or notify arrives, read by the worker that applies it. Each callback is stored, unique by the
//! gateway's event id, before it is acknowledged, so none is lost and none is applied twice.
//!
//! A Stripe event of any type is stored and applied in one transaction (PaymentIntents through
//! [`crate::payment::apply`], refunds through [`crate::refund::from_gateway`], disputes through
//! [`crate::dispute`]): no job, and the gateway's retry covers any failure before the commit.
//! An Alipay notify is stored `received` with a job that applies it.
//!
//! - [`stripe`]: what a Stripe event does, from its verified document to its verdict.
//! - [`settled`]: the events that change nothing, stored with their verdict in batches.

mod settled;
mod stripe;

use sqlx::{PgConnection, PgPool};

use crate::ids::{ApplicationId, UserId};
use evisa_jobs::ProcessGatewayEvent;

pub use settled::SettledWriter;
pub use stripe::{apply_stored_stripe, ingest_stripe};

/// A verified callback as stored.
pub struct Stored {
    pub provider: String,
    pub event_id: String,
    pub event_type: String,
    pub state: String,
    pub payload: serde_json::Value,
}

/// What became of an arriving callback.
#[derive(Debug, PartialEq, Eq)]
pub enum Ingested {
    /// Stored, and a job will apply it.
    Queued,
    /// Stored and applied (or found to need no applying) in one transaction.
    Applied,
    /// Seen before (same event id): nothing stored.
    Duplicate,
}

/// What became of a stored event: the inbox row's final state and its note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Applied (or found to be already applied).
    Processed,
    /// Nothing of ours to change, and why.
    Ignored(String),
    /// Does not match our records: never applied, kept for a person.
    Quarantined(String),
    /// Names a PaymentIntent (this one) that no payment of ours has — yet, while a charge of
    /// ours is in flight whose answer has not named its intent; otherwise another product's.
    Unmatched(String),
}

impl Disposition {
    fn note(&self) -> String {
        match self {
            Disposition::Processed => String::new(),
            Disposition::Ignored(n) | Disposition::Quarantined(n) => n.clone(),
            Disposition::Unmatched(intent) => format!("no payment of ours has intent {intent}"),
        }
    }

    fn state(&self) -> &'static str {
        match self {
            Disposition::Processed => "processed",
            Disposition::Ignored(_) | Disposition::Unmatched(_) => "ignored",
            Disposition::Quarantined(_) => "quarantined",
        }
    }
}

/// How long an event naming an intent we do not know yet waits before it is applied again.
pub const UNMATCHED_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// What a Stripe event did, once stored.
pub struct StripeIngest {
    pub ingested: Ingested,
    /// What became of it (`Processed` for a duplicate: the first delivery decided).
    pub disposition: Disposition,
    /// The payment it moved to `failed`, if it did: (applications, applicant), for the attempt
    /// limits.
    pub failed: Option<(Vec<ApplicationId>, UserId)>,
}

/// Stores a verified callback (unique per provider and event id) in one transaction with the
/// job that applies it.
pub async fn ingest(
    db: &PgPool,
    provider: &str,
    event_id: &str,
    event_type: &str,
    payload: &serde_json::Value,
    max_attempts: Option<usize>,
) -> Result<Ingested, sqlx::Error> {
    let mut tx = db.begin().await?;
    let ingested = store_in(
        &mut tx,
        provider,
        event_id,
        event_type,
        payload,
        max_attempts,
    )
    .await?;
    tx.commit().await?;
    Ok(ingested)
}

async fn store_in(
    tx: &mut PgConnection,
    provider: &str,
    event_id: &str,
    event_type: &str,
    payload: &serde_json::Value,
    max_attempts: Option<usize>,
) -> Result<Ingested, sqlx::Error> {
    let inserted: Option<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO gateway_inbox (id, provider, event_id, event_type, payload)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (provider, event_id) DO NOTHING RETURNING id",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(provider)
    .bind(event_id)
    .bind(event_type)
    .bind(payload)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(inbox_id) = inserted else {
        return Ok(Ingested::Duplicate);
    };
    evisa_jobs::enqueue(tx, &ProcessGatewayEvent { inbox_id }, max_attempts).await?;
    Ok(Ingested::Queued)
}

/// A stored callback still to be applied.
pub async fn get(db: &PgPool, id: uuid::Uuid) -> Result<Option<Stored>, sqlx::Error> {
    let row: Option<(String, String, String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT provider, event_id, event_type, state, payload FROM gateway_inbox WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(
        row.map(|(provider, event_id, event_type, state, payload)| Stored {
            provider,
            event_id,
            event_type,
            state,
            payload,
        }),
    )
}

/// Records what applying a stored callback came to (`processed`, `ignored`, `quarantined`).
pub async fn finish(
    db: &PgPool,
    id: uuid::Uuid,
    state: &str,
    note: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE gateway_inbox SET state = $2, note = $3, processed_at = now()
          WHERE id = $1 AND state = 'received'",
    )
    .bind(id)
    .bind(state)
    .bind(note)
    .execute(db)
    .await?;
    Ok(())
}

/// Callbacks stored but not applied yet.
pub async fn unprocessed(db: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM gateway_inbox WHERE state = 'received'")
        .fetch_one(db)
        .await
}
