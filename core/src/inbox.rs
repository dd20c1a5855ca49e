//! The inbox of verified gateway callbacks (`gateway_inbox`): written by the API when a webhook
//! or notify arrives, read by the worker that applies it. Each callback is stored, unique by the
//! gateway's event id, before it is acknowledged, so none is lost and none is applied twice.
//!
//! A Stripe event is applied (through [`crate::payment::apply`]) in the transaction that stores
//! it: no job, and the gateway's retry covers any failure before the commit. An Alipay notify is
//! stored `received` with a job that applies it.

use sqlx::{PgConnection, PgPool};

use crate::{
    application::Actor,
    gateway::stripe::IntentSnapshot,
    ids::{ApplicationId, UserId},
    jobs::{self, ProcessGatewayEvent},
    payment::{
        Applied, Payment, PaymentStatus, Provider,
        apply::{self, ApplyError},
        store,
    },
};

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

/// A Stripe event's PaymentIntent, and the payment of ours it is about (by the metadata we set,
/// or else by the intent's id).
pub async fn stripe_payment(
    conn: &mut PgConnection,
    payload: &serde_json::Value,
) -> Result<Option<(Payment, IntentSnapshot)>, sqlx::Error> {
    let Ok(intent) = serde_json::from_value::<IntentSnapshot>(payload["data"]["object"].clone())
    else {
        return Ok(None);
    };
    let payment = match intent.payment_id() {
        Some(id) => store::get(&mut *conn, id).await?,
        None => store::find_by_gateway_reference(&mut *conn, Provider::Stripe, &intent.id).await?,
    };
    Ok(payment.map(|p| (p, intent)))
}

/// What a Stripe event did, once stored.
pub struct StripeIngest {
    pub ingested: Ingested,
    /// The payment it moved to `failed`, if it did: (application, applicant), for the attempt
    /// limits.
    pub failed: Option<(ApplicationId, UserId)>,
}

/// Stores a verified Stripe event, unique by its id, and applies it in the same transaction:
/// the event is acknowledged only once it is both stored and applied (or found to need no
/// applying: a repeat, an unknown payment, or a report that does not match its payment, which
/// is quarantined for a person). A duplicate event id changes nothing.
pub async fn ingest_stripe(
    db: &PgPool,
    event_id: &str,
    event_type: &str,
    payload: &serde_json::Value,
) -> Result<StripeIngest, sqlx::Error> {
    let mut tx = db.begin().await?;
    let cause = format!("stripe:{event_id}");
    let intent = serde_json::from_value::<IntentSnapshot>(payload["data"]["object"].clone()).ok();
    // Our metadata names the payment; an intent without it is looked up by its id.
    let payment_id = match &intent {
        None => None,
        Some(i) => match i.payment_id() {
            Some(id) => Some(id),
            None => store::find_by_gateway_reference(&mut *tx, Provider::Stripe, &i.id)
                .await?
                .map(|p| p.id),
        },
    };
    let report = intent.as_ref().and_then(IntentSnapshot::report);
    let mut applied = None;
    let (state, note) = match (payment_id, report) {
        (None, _) => ("ignored", Some("no payment of ours".to_string())),
        (Some(_), None) => ("ignored", Some(format!("{event_type}: nothing to apply"))),
        (Some(id), Some(report)) => match apply::lock(&mut tx, id).await {
            Err(ApplyError::NotFound) => ("ignored", Some("no payment of ours".to_string())),
            Err(ApplyError::Database(e)) => return Err(e),
            Err(e) => ("quarantined", Some(e.to_string())),
            Ok(locked) => {
                let outcome = apply::apply_locked(
                    &mut tx,
                    &locked,
                    report.event,
                    &report.facts,
                    Actor::Gateway,
                    &cause,
                )
                .await;
                match outcome {
                    Ok(a) => {
                        applied = Some((a, locked.payment));
                        ("processed", None)
                    }
                    Err(ApplyError::Database(e)) => return Err(e),
                    Err(e) => {
                        tracing::error!(event_id, error = %e, "gateway callback quarantined");
                        ("quarantined", Some(e.to_string()))
                    }
                }
            }
        },
    };
    let inserted: Option<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO gateway_inbox (id, provider, event_id, event_type, payload, state, note,
                                    processed_at)
         VALUES ($1, 'stripe', $2, $3, $4, $5, $6, now())
         ON CONFLICT (provider, event_id) DO NOTHING RETURNING id",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(event_id)
    .bind(event_type)
    .bind(payload)
    .bind(state)
    .bind(note)
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        // Seen and applied before: undo this second application.
        tx.rollback().await?;
        return Ok(StripeIngest {
            ingested: Ingested::Duplicate,
            failed: None,
        });
    }
    tx.commit().await?;
    let mut failed = None;
    if let Some((applied, payment)) = &applied {
        apply::announce(applied);
        if matches!(
            applied,
            Applied::Moved {
                to: PaymentStatus::Failed,
                ..
            }
        ) {
            failed = Some((payment.application_id, payment.applicant_id));
        }
    }
    Ok(StripeIngest {
        ingested: Ingested::Applied,
        failed,
    })
}

/// Stores a verified callback (unique per provider and event id) in one transaction with the
/// job that applies it.
pub async fn ingest(
    db: &PgPool,
    provider: &str,
    event_id: &str,
    event_type: &str,
    payload: &serde_json::Value,
    max_attempts: usize,
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
    max_attempts: usize,
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
    jobs::enqueue(tx, &ProcessGatewayEvent { inbox_id }, max_attempts).await?;
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
