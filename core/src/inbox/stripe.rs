//! Stripe events: stored and applied in one transaction (PaymentIntents through
//! [`crate::payment::apply`], refunds through [`crate::refund::from_gateway`], disputes through
//! [`crate::dispute`]), or, when they change nothing, stored with their verdict by
//! [`super::settled`].

use sqlx::{PgConnection, PgPool};

use super::{
    Disposition, Ingested, StripeIngest, UNMATCHED_RETRY,
    settled::{AlreadyShown, Settled, SettledWriter},
};
use crate::{
    application::Actor,
    dispute,
    gateway::{
        stripe::IntentSnapshot,
        stripe_event::{ChargeSnapshot, StripeEventObject, interpret},
    },
    money::Currency,
    payment::{
        Applied, Payment, PaymentStatus, Provider,
        apply::{self, ApplyError},
        store,
    },
    refund,
};
use evisa_jobs::ProcessGatewayEvent;

/// Stores a verified Stripe event of any type, unique by its id, and applies it in the same
/// transaction (see [`crate::gateway::stripe_event`] for what each type means): the event is
/// acknowledged only once it is both stored and applied, or found to need no applying
/// (`ignored`, with why) or to contradict our records (`quarantined` for a person). Nothing
/// about an event's content makes this fail: only the database can, and then Stripe retries.
/// A duplicate event id changes nothing.
pub async fn ingest_stripe(
    db: &PgPool,
    settled: &SettledWriter,
    event_id: &str,
    event_type: &str,
    payload: &serde_json::Value,
    max_attempts: Option<usize>,
) -> Result<StripeIngest, sqlx::Error> {
    let object = interpret(event_type, &payload["data"]["object"]);
    // Most events change nothing: a type we only record, or an intent's success that the
    // worker's own answer already applied. Those are stored with their verdict in one
    // statement, taking no lock (shared with other such events arriving at the same time);
    // anything else goes the whole way below.
    let settle = |disposition, only_if| Settled {
        event_id: event_id.to_string(),
        event_type: event_type.to_string(),
        payload: payload.clone(),
        disposition,
        only_if,
    };
    let settled = match &object {
        StripeEventObject::Other(why) => Some(
            settled
                .record(settle(
                    Disposition::Ignored(format!("{event_type}: {why}")),
                    None,
                ))
                .await?,
        ),
        StripeEventObject::Intent(intent) => match already_succeeded(intent) {
            Some(shown) => settled
                .record(settle(Disposition::Processed, Some(shown)))
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
        evisa_jobs::enqueue_after(
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
