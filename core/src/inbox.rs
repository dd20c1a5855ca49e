//! The inbox of verified gateway callbacks (`gateway_inbox`): written by the API when a webhook
//! or notify arrives, read by the worker that applies it. Each callback is stored, unique by the
//! gateway's event id, before it is acknowledged, so none is lost and none is applied twice.
//!
//! A Stripe event of any type is stored and applied in one transaction (PaymentIntents through
//! [`crate::payment::apply`], refunds through [`crate::refund::from_gateway`], disputes through
//! [`crate::dispute`]): no job, and the gateway's retry covers any failure before the commit.
//! An Alipay notify is stored `received` with a job that applies it.

use sqlx::{PgConnection, PgPool};

use crate::{
    application::Actor,
    dispute,
    gateway::{
        stripe::IntentSnapshot,
        stripe_event::{ChargeSnapshot, StripeEventObject, interpret},
    },
    ids::{ApplicationId, UserId},
    jobs::{self, ProcessGatewayEvent},
    money::Currency,
    payment::{
        Applied, Payment, PaymentStatus, Provider,
        apply::{self, ApplyError},
        store,
    },
    refund,
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

/// Stores a verified Stripe event of any type, unique by its id, and applies it in the same
/// transaction (see [`crate::gateway::stripe_event`] for what each type means): the event is
/// acknowledged only once it is both stored and applied, or found to need no applying
/// (`ignored`, with why) or to contradict our records (`quarantined` for a person). Nothing
/// about an event's content makes this fail: only the database can, and then Stripe retries.
/// A duplicate event id changes nothing.
pub async fn ingest_stripe(
    db: &PgPool,
    event_id: &str,
    event_type: &str,
    payload: &serde_json::Value,
    max_attempts: usize,
) -> Result<StripeIngest, sqlx::Error> {
    let object = interpret(event_type, &payload["data"]["object"]);
    // Most events change nothing: a type we only record, or an intent's success that the
    // worker's own answer already applied. Those are stored with their verdict in one
    // statement, taking no lock; anything else goes the whole way below.
    let settled = match &object {
        StripeEventObject::Other(why) => Some(
            record_settled(
                db,
                event_id,
                event_type,
                payload,
                &Disposition::Ignored(format!("{event_type}: {why}")),
                None,
            )
            .await?,
        ),
        StripeEventObject::Intent(intent) => match already_succeeded(intent) {
            Some(shown) => record_settled(
                db,
                event_id,
                event_type,
                payload,
                &Disposition::Processed,
                Some(&shown),
            )
            .await?
            .then_some(true),
            None => None,
        },
        _ => None,
    };
    match settled {
        Some(true) => {
            return Ok(StripeIngest {
                ingested: Ingested::Applied,
                disposition: match object {
                    StripeEventObject::Other(why) => {
                        Disposition::Ignored(format!("{event_type}: {why}"))
                    }
                    _ => Disposition::Processed,
                },
                failed: None,
            });
        }
        // An ignored type already stored: a duplicate delivery.
        Some(false) => {
            return Ok(StripeIngest {
                ingested: Ingested::Duplicate,
                disposition: Disposition::Processed,
                failed: None,
            });
        }
        // Not settled in one statement (or a duplicate of one that was): the whole way.
        None => {}
    }
    let mut tx = db.begin().await?;
    // Stored first: a second delivery waits here for the first to commit, then stops.
    let inserted: Option<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO gateway_inbox (id, provider, event_id, event_type, payload)
         VALUES ($1, 'stripe', $2, $3, $4)
         ON CONFLICT (provider, event_id) DO NOTHING RETURNING id",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(event_id)
    .bind(event_type)
    .bind(payload)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(inbox_id) = inserted else {
        tx.rollback().await?;
        return Ok(StripeIngest {
            ingested: Ingested::Duplicate,
            disposition: Disposition::Processed,
            failed: None,
        });
    };
    let (disposition, applied) = dispatch(&mut tx, event_id, event_type, object).await?;
    // A refund or dispute may arrive before the answer of the charge it is about has told us the
    // charge's intent: while one of ours is in flight, look again shortly (our queue, not
    // Stripe's retries).
    // One snapshot: the charge still in flight, or its intent committed since the lookup above
    // (both mean the event is about to be ours).
    let in_flight = match &disposition {
        Disposition::Unmatched(intent) => {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM payments WHERE provider = 'stripe'
                                 AND gateway_reference IS NULL
                                 AND status IN ('created', 'processing'))
                     OR EXISTS (SELECT 1 FROM payments WHERE provider = 'stripe'
                                 AND gateway_reference = $1)",
            )
            .bind(intent)
            .fetch_one(&mut *tx)
            .await?
        }
        _ => false,
    };
    if in_flight {
        sqlx::query("UPDATE gateway_inbox SET note = $2 WHERE id = $1")
            .bind(inbox_id)
            .bind(format!("{}; looked at again shortly", disposition.note()))
            .execute(&mut *tx)
            .await?;
        jobs::enqueue_after(
            &mut tx,
            &ProcessGatewayEvent { inbox_id },
            UNMATCHED_RETRY,
            max_attempts,
        )
        .await?;
    } else {
        finish_in(&mut tx, inbox_id, &disposition).await?;
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
            failed = Some((
                payment
                    .allocations
                    .iter()
                    .map(|a| a.application_id)
                    .collect(),
                payment.applicant_id,
            ));
        }
    }
    Ok(StripeIngest {
        ingested: Ingested::Applied,
        disposition,
        failed,
    })
}

/// Applies a stored Stripe event still `received` (one that named an intent we did not know
/// yet), for the worker: this time its verdict is final.
pub async fn apply_stored_stripe(db: &PgPool, inbox_id: uuid::Uuid) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let row: Option<(String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT event_id, event_type, payload FROM gateway_inbox
          WHERE id = $1 AND provider = 'stripe' AND state = 'received' FOR UPDATE",
    )
    .bind(inbox_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((event_id, event_type, payload)) = row else {
        return Ok(());
    };
    let object = interpret(&event_type, &payload["data"]["object"]);
    let (disposition, applied) = dispatch(&mut tx, &event_id, &event_type, object).await?;
    finish_in(&mut tx, inbox_id, &disposition).await?;
    tx.commit().await?;
    if let Some((applied, _)) = &applied {
        apply::announce(applied);
    }
    Ok(())
}

/// Interprets one Stripe event and applies it inside `tx`.
async fn dispatch(
    tx: &mut PgConnection,
    event_id: &str,
    event_type: &str,
    object: StripeEventObject,
) -> Result<(Disposition, Option<(Applied, Payment)>), sqlx::Error> {
    let cause = format!("stripe:{event_id}");
    let mut applied = None;
    let disposition = match object {
        StripeEventObject::Intent(intent) => {
            let (disposition, a) = apply_intent(&mut *tx, &intent, event_type, &cause).await?;
            applied = a;
            disposition
        }
        StripeEventObject::Refund(refund) => {
            refund::from_gateway::apply_stripe_refund(&mut *tx, &refund, &cause).await?
        }
        StripeEventObject::ChargeRefunded(charge) => {
            apply_charge_refunded(&mut *tx, &charge, &cause).await?
        }
        StripeEventObject::Dispute(d) => {
            dispute::apply_stripe_dispute(&mut *tx, &d, &cause).await?
        }
        StripeEventObject::Malformed(why) => Disposition::Quarantined(why),
        StripeEventObject::Other(why) => Disposition::Ignored(format!("{event_type}: {why}")),
    };
    if let Disposition::Quarantined(why) = &disposition {
        tracing::error!(event_id, event_type, reason = %why, "gateway callback quarantined");
    }
    Ok((disposition, applied))
}

/// What a PaymentIntent event must find to change nothing: its payment already `succeeded`
/// through this very intent, for the same amount.
struct AlreadyShown {
    payment_id: crate::ids::PaymentId,
    intent: String,
    amount_minor: i64,
    currency: String,
}

/// The intent's success, if it says that and names our payment (webhooks never carry the
/// card, so there is nothing else such an event could teach us).
fn already_succeeded(intent: &IntentSnapshot) -> Option<AlreadyShown> {
    (intent.status == "succeeded").then_some(())?;
    Some(AlreadyShown {
        payment_id: intent.payment_id()?,
        intent: intent.id.clone(),
        amount_minor: intent.amount,
        currency: intent.currency.to_ascii_uppercase(),
    })
}

/// Stores an event with its final verdict in one statement; with `only_if`, only when the
/// payment already shows what the event says. `false` when nothing was stored: the event id
/// was seen before, or the payment does not (yet) show it.
async fn record_settled(
    db: &PgPool,
    event_id: &str,
    event_type: &str,
    payload: &serde_json::Value,
    disposition: &Disposition,
    only_if: Option<&AlreadyShown>,
) -> Result<bool, sqlx::Error> {
    let note = disposition.note();
    let stored = sqlx::query(
        "INSERT INTO gateway_inbox (id, provider, event_id, event_type, payload, state, note,
                                    processed_at)
         SELECT $1, 'stripe', $2, $3, $4, $5, $6, now()
          WHERE NOT $7 OR EXISTS (SELECT 1 FROM payments
                                   WHERE id = $8 AND provider = 'stripe' AND status = 'succeeded'
                                     AND gateway_reference = $9 AND amount_minor = $10
                                     AND currency = $11)
         ON CONFLICT (provider, event_id) DO NOTHING",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(event_id)
    .bind(event_type)
    .bind(payload)
    .bind(disposition.state())
    .bind((!note.is_empty()).then_some(note))
    .bind(only_if.is_some())
    .bind(only_if.map(|s| s.payment_id))
    .bind(only_if.map(|s| s.intent.as_str()))
    .bind(only_if.map(|s| s.amount_minor))
    .bind(only_if.map(|s| s.currency.as_str()))
    .execute(db)
    .await?
    .rows_affected();
    Ok(stored == 1)
}

async fn finish_in(
    tx: &mut PgConnection,
    inbox_id: uuid::Uuid,
    disposition: &Disposition,
) -> Result<(), sqlx::Error> {
    let note = disposition.note();
    sqlx::query(
        "UPDATE gateway_inbox SET state = $2, note = $3, processed_at = now() WHERE id = $1",
    )
    .bind(inbox_id)
    .bind(disposition.state())
    .bind((!note.is_empty()).then_some(note))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A PaymentIntent event: the payment's transition, through [`apply::apply_locked`].
async fn apply_intent(
    tx: &mut PgConnection,
    intent: &IntentSnapshot,
    event_type: &str,
    cause: &str,
) -> Result<(Disposition, Option<(Applied, Payment)>), sqlx::Error> {
    // Our metadata names the payment; an intent without it is looked up by its id.
    let payment_id = match intent.payment_id() {
        Some(id) => Some(id),
        None => store::find_by_gateway_reference(&mut *tx, Provider::Stripe, &intent.id)
            .await?
            .map(|p| p.id),
    };
    let Some(id) = payment_id else {
        return Ok((Disposition::Ignored("no payment of ours".into()), None));
    };
    let Some(report) = intent.report() else {
        return Ok((
            Disposition::Ignored(format!("{event_type}: nothing to apply")),
            None,
        ));
    };
    let locked = match apply::lock(tx, id).await {
        Ok(locked) => locked,
        Err(ApplyError::NotFound) => {
            return Ok((Disposition::Ignored("no payment of ours".into()), None));
        }
        Err(ApplyError::Database(e)) => return Err(e),
        Err(e) => return Ok((Disposition::Quarantined(e.to_string()), None)),
    };
    match apply::apply_locked(
        tx,
        &locked,
        report.event,
        &report.facts,
        Actor::Gateway,
        cause,
    )
    .await
    {
        Ok(a) => Ok((Disposition::Processed, Some((a, locked.payment)))),
        Err(ApplyError::Database(e)) => Err(e),
        Err(e) => Ok((Disposition::Quarantined(e.to_string()), None)),
    }
}

/// `charge.refunded`: the refunds it lists (older API versions) are applied like refund events;
/// its running total is remembered, so that the reconciliation report can flag what no refund
/// event has explained (current API versions list no refunds: the `refund.*` events name them).
async fn apply_charge_refunded(
    tx: &mut PgConnection,
    charge: &ChargeSnapshot,
    cause: &str,
) -> Result<Disposition, sqlx::Error> {
    let Some(intent) = charge.payment_intent.as_deref() else {
        return Ok(Disposition::Ignored(format!(
            "charge {} names no PaymentIntent",
            charge.id
        )));
    };
    let Some(payment) =
        store::find_by_gateway_reference(&mut *tx, Provider::Stripe, intent).await?
    else {
        return Ok(Disposition::Ignored("no payment of ours".into()));
    };
    let mut notes = Vec::new();
    for r in charge.refunds.iter().flat_map(|l| &l.data) {
        match refund::from_gateway::apply_stripe_refund(&mut *tx, r, cause).await? {
            Disposition::Processed => {}
            Disposition::Ignored(n) => notes.push(n),
            u @ Disposition::Unmatched(_) => notes.push(u.note()),
            Disposition::Quarantined(n) => return Ok(Disposition::Quarantined(n)),
        }
    }
    if !Currency::parse(&charge.currency.to_ascii_uppercase())
        .is_ok_and(|c| c == payment.amount.currency())
        || charge.amount_refunded < 0
        || charge.amount_refunded > payment.amount.amount_minor()
    {
        return Ok(Disposition::Quarantined(format!(
            "charge {} reports {} {} refunded of a payment for {:?}",
            charge.id, charge.amount_refunded, charge.currency, payment.amount
        )));
    }
    // The most Stripe has said: a refund that fails later lowers its total, but the events of
    // that refund record that.
    let known: i64 = sqlx::query_scalar(
        "WITH seen AS (UPDATE payments
                          SET gateway_refunded_minor = greatest(coalesce(gateway_refunded_minor, 0), $2)
                        WHERE id = $1)
         SELECT coalesce(sum(amount_minor), 0)::bigint FROM refunds
          WHERE payment_id = $1 AND status IN ('pending', 'succeeded')",
    )
    .bind(payment.id)
    .bind(charge.amount_refunded)
    .fetch_one(&mut *tx)
    .await?;
    if charge.amount_refunded > known {
        tracing::warn!(payment_id = %payment.id, reported = charge.amount_refunded, known, "Stripe reports more refunded than our refunds explain");
        return Ok(Disposition::Processed);
    }
    Ok(if notes.is_empty() {
        Disposition::Processed
    } else {
        Disposition::Ignored(notes.join("; "))
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
