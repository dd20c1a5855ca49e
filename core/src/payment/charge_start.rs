//! Starting card charges: each `created` payment becomes `processing`, with its event, before
//! the gateway is asked (so that a crash mid-call leaves a payment we know may have been
//! charged). Charges claimed together start in one statement and one commit.

use sqlx::PgPool;

use super::{
    Payment, PaymentEvent, PaymentStatus,
    apply::{Applied, ApplyError, announce},
    store::{self, PaymentRow},
};
use crate::{application::Actor, ids::PaymentId};

/// Starts the charge of each payment of `starts` (its id and the cause its event records):
/// every one still `created` becomes `processing`. One statement, its own transaction: each move
/// is a compare-and-set on `created` (waiting for any transaction holding the payment; the
/// payments are locked in id order), and takes no lock on the applications. Returns, in the
/// order of `starts`, each payment as it now is, for the caller to charge when it is
/// `processing`; `None` where there is no such payment.
pub async fn start_charges(
    pool: &PgPool,
    starts: &[(PaymentId, &str)],
) -> Result<Vec<Option<Payment>>, ApplyError> {
    let event = PaymentEvent::ChargeStarted;
    let from = PaymentStatus::Created;
    let to = from
        .next(event)
        .expect("a created payment's charge can start");
    let (kind, actor_id) = Actor::System.parts();
    // The event's hash chains to the payment's previous one, as `audit::chained_event!` does for
    // one row; a payment appears once (its row lock orders the chain's writers).
    const SQL: &str = concat!(
        "WITH input AS (SELECT DISTINCT ON (id) * FROM unnest($1::uuid[], $2::text[]) AS i(id, cause)),
         locked AS (
           SELECT p.id FROM payments p
            WHERE p.id IN (SELECT id FROM input) AND p.status = $4
            ORDER BY p.id FOR UPDATE),
         moved AS (
           UPDATE payments p SET status = $5, updated_at = now()
             FROM locked l WHERE p.id = l.id AND p.status = $4
           RETURNING ",
        store::payment_columns!(),
        "),
         logged AS (
           INSERT INTO payment_events (id, payment_id, event, from_status, to_status,
                                       actor_kind, actor_id, cause, occurred_at, prev_hash, hash)
           OVERRIDING SYSTEM VALUE
           SELECT n.id, n.payment_id, $3, $4, $5, $6, $7, n.cause, n.at, n.prev,
                  audit_hash(n.prev, n.id, n.payment_id, $3, $4, $5, $6, $7, n.cause, n.at)
             FROM (SELECT nextval('payment_events_id_seq') AS id, now() AS at,
                          m.id AS payment_id, i.cause,
                          (SELECT e.hash FROM payment_events e WHERE e.payment_id = m.id
                            ORDER BY e.id DESC LIMIT 1) AS prev
                     FROM moved m JOIN input i ON i.id = m.id) n)
         SELECT * FROM moved"
    );
    let ids: Vec<uuid::Uuid> = starts.iter().map(|(id, _)| id.as_uuid()).collect();
    let causes: Vec<&str> = starts.iter().map(|(_, cause)| *cause).collect();
    let rows: Vec<PaymentRow> = sqlx::query_as(SQL)
        .bind(&ids)
        .bind(&causes)
        .bind(event.as_str())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(kind)
        .bind(actor_id)
        .fetch_all(pool)
        .await?;
    let mut moved = Vec::with_capacity(rows.len());
    for row in rows {
        let announcement = store::announcement_of(&row);
        let payment = row.into_payment()?;
        announce(&Applied::Moved {
            from,
            to,
            application_paid: false,
            provider: payment.provider,
            created_at: payment.created_at,
            announcement,
        });
        moved.push(payment);
    }
    let mut now = Vec::with_capacity(starts.len());
    for (id, _) in starts {
        match moved.iter().position(|p| p.id == *id) {
            Some(i) => now.push(Some(moved.swap_remove(i))),
            // Not `created` (a previous run started it, or it ended), or no such payment.
            None => now.push(store::get(pool, *id).await?),
        }
    }
    Ok(now)
}
