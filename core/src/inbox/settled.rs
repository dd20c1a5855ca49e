//! Events that change nothing — a type we only record, or a success the payment already shows —
//! are stored with their final verdict in one INSERT that takes no lock. Stripe sends several
//! such events per payment, so under load many arrive together: [`SettledWriter`] gathers the
//! ones waiting into one statement, so one commit (one WAL flush) stores a batch instead of one
//! event. Each caller is answered only after the statement that stored its event committed:
//! nothing is acknowledged before it is durable, and no Postgres setting is traded for it.

use std::{collections::HashSet, sync::Arc};

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::Disposition;
use crate::ids::PaymentId;

/// At most this many events per statement (a Stripe event document is a few kB).
const MAX_BATCH: usize = 128;
/// Statements in flight at once: one is being committed while the next gathers.
const WRITERS: usize = 2;
/// Events waiting for a writer before senders wait too.
const QUEUE: usize = 4096;

/// What a PaymentIntent event must find to change nothing: its payment already `succeeded`
/// through this very intent, for the same amount.
pub(super) struct AlreadyShown {
    pub payment_id: PaymentId,
    pub intent: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// One event to store with its verdict; with `only_if`, only when the payment already shows
/// what the event says.
pub(super) struct Settled {
    pub event_id: String,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub disposition: Disposition,
    pub only_if: Option<AlreadyShown>,
}

struct Pending {
    row: Settled,
    reply: oneshot::Sender<Result<bool, String>>,
}

/// Stores settled events, one statement per event ([`SettledWriter::direct`]) or gathered into
/// batches by background writers ([`SettledWriter::batched`]).
#[derive(Clone)]
pub struct SettledWriter {
    db: PgPool,
    queue: Option<mpsc::Sender<Pending>>,
}

impl SettledWriter {
    /// One statement per event, in the caller's task.
    pub fn direct(db: PgPool) -> SettledWriter {
        SettledWriter { db, queue: None }
    }

    /// Events from concurrent callers gathered into shared statements by writers spawned on
    /// the current Tokio runtime. They end when every clone of the writer is dropped.
    pub fn batched(db: PgPool) -> SettledWriter {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(write_batches(db.clone(), rx.clone()));
        }
        SettledWriter {
            db,
            queue: Some(tx),
        }
    }

    /// Stores `row`; `false` when nothing was stored: the event id was seen before, or the
    /// payment does not (yet) show what the event says.
    pub(super) async fn record(&self, row: Settled) -> Result<bool, sqlx::Error> {
        let Some(queue) = &self.queue else {
            return Ok(write(&self.db, &[&row]).await?[0]);
        };
        let (reply, answer) = oneshot::channel();
        match queue.send(Pending { row, reply }).await {
            Ok(()) => match answer.await {
                Ok(Ok(stored)) => Ok(stored),
                Ok(Err(e)) => Err(sqlx::Error::Io(std::io::Error::other(e))),
                // The writer went away mid-batch: whether it committed is unknown, so the
                // caller answers an error and the gateway delivers the event again.
                Err(_) => Err(sqlx::Error::WorkerCrashed),
            },
            // No writer left (the runtime is stopping): store it here.
            Err(mpsc::error::SendError(p)) => Ok(write(&self.db, &[&p.row]).await?[0]),
        }
    }
}

/// A writer: takes whatever is waiting (at least one event, at most [`MAX_BATCH`]), stores it
/// in one statement, answers each caller, and again.
async fn write_batches(db: PgPool, queue: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            batch
        };
        let rows: Vec<&Settled> = batch.iter().map(|p| &p.row).collect();
        match write(&db, &rows).await {
            Ok(stored) => {
                for (p, stored) in batch.into_iter().zip(stored) {
                    let _ = p.reply.send(Ok(stored));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Stores `rows` in one statement; for each, whether it was stored. Two rows with one event id
/// (a delivery and its retry in the same batch) store the first only.
async fn write(db: &PgPool, rows: &[&Settled]) -> Result<Vec<bool>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = rows.iter().map(|_| uuid::Uuid::now_v7()).collect();
    let notes: Vec<Option<String>> = rows
        .iter()
        .map(|r| Some(r.disposition.note()).filter(|n| !n.is_empty()))
        .collect();
    let stored: HashSet<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO gateway_inbox (id, provider, event_id, event_type, payload, state, note,
                                    processed_at)
         SELECT r.id, 'stripe', r.event_id, r.event_type, r.payload, r.state, r.note, now()
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[],
                       $7::uuid[], $8::text[], $9::bigint[], $10::text[])
                  WITH ORDINALITY
                  AS r(id, event_id, event_type, payload, state, note,
                       payment_id, intent, amount_minor, currency, n)
          WHERE r.payment_id IS NULL
             OR EXISTS (SELECT 1 FROM payments p
                         WHERE p.id = r.payment_id AND p.provider = 'stripe'
                           AND p.status = 'succeeded' AND p.gateway_reference = r.intent
                           AND p.amount_minor = r.amount_minor AND p.currency = r.currency)
          ORDER BY r.n
         ON CONFLICT (provider, event_id) DO NOTHING
         RETURNING id",
    )
    .bind(&ids)
    .bind(rows.iter().map(|r| r.event_id.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.event_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| &r.payload).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.disposition.state())
            .collect::<Vec<_>>(),
    )
    .bind(&notes)
    .bind(
        rows.iter()
            .map(|r| r.only_if.as_ref().map(|s| s.payment_id.as_uuid()))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.only_if.as_ref().map(|s| s.intent.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.only_if.as_ref().map(|s| s.amount_minor))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.only_if.as_ref().map(|s| s.currency.as_str()))
            .collect::<Vec<_>>(),
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .collect();
    Ok(ids.iter().map(|id| stored.contains(id)).collect())
}
