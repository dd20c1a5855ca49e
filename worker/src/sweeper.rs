//! Periodic work: reconcile payments the gateway has not told us about, expire abandoned ones,
//! expire applications left unpaid, and prune old rows. One process at a time does it (a Postgres advisory lock), so several
//! workers can run without doing it twice; a missed period is caught up by the next.

use std::sync::Arc;

use evisa_core::{
    application::Actor,
    config::PaymentSettings,
    gateway::GatewayError,
    idempotency,
    payment::{self, GatewayFacts, Payment, PaymentEvent, PaymentStatus, Provider, store},
};

use crate::WorkerContext;

/// Distinguishes our advisory lock from any other.
const SWEEP_LOCK: i64 = 0x6576_6973_615f_7377; // "evisa_sw"

/// Sweeps every period until `stop` says so. A pass in progress finishes first: it is never
/// cut off between a gateway call and the transaction that records its answer.
pub async fn run(
    ctx: Arc<WorkerContext>,
    settings: PaymentSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = sweep_once(&ctx, &settings).await {
            tracing::error!(error = %e, "sweep failed; will try again next period");
        }
    }
}

/// One pass, if no other process is sweeping.
pub async fn sweep_once(ctx: &WorkerContext, settings: &PaymentSettings) -> anyhow::Result<()> {
    let mut lock = ctx.db.begin().await?;
    let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(SWEEP_LOCK)
        .fetch_one(&mut *lock)
        .await?;
    if !mine {
        return Ok(());
    }
    let idle = chrono::Duration::from_std(settings.reconcile_after)?;
    for p in store::stale_open(&ctx.db, Provider::Stripe, idle, 200).await? {
        if let Err(e) = reconcile(ctx, &p).await {
            tracing::warn!(payment_id = %p.id, error = %e, "reconciliation failed");
        }
    }
    refund_duplicate_charges(ctx).await?;
    let after = chrono::Duration::from_std(settings.application_expiry)?;
    let expired = evisa_core::application::store::expire_unpaid(&ctx.db, after, 500).await?;
    if !expired.is_empty() {
        tracing::info!(count = expired.len(), "unpaid applications expired");
    }
    let idempotency = idempotency::prune(&ctx.db).await?;
    let jobs = evisa_jobs::prune_finished(&ctx.db).await?;
    if idempotency + jobs > 0 {
        tracing::info!(idempotency, jobs, "pruned");
    }
    if let Err(e) = checkpoint_if_due(ctx).await {
        tracing::error!(error = %e, "audit checkpoint not written");
    }
    lock.commit().await?;
    Ok(())
}

/// Writes a signed checkpoint of the event logs to `EVISA_AUDIT_CHECKPOINT_DIR` when the newest
/// one there is older than the interval (the directory itself is the schedule, so restarts and
/// several workers agree).
async fn checkpoint_if_due(ctx: &WorkerContext) -> anyhow::Result<()> {
    let (Some(key), Some(dir)) = (&ctx.audit.signing_key, &ctx.audit.checkpoint_dir) else {
        return Ok(());
    };
    let newest = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max();
    if newest.is_some_and(|t| t.elapsed().unwrap_or_default() < ctx.audit.checkpoint_interval) {
        return Ok(());
    }
    let signed = evisa_core::audit::checkpoint::take(&ctx.db, key.expose()).await?;
    let name = format!(
        "checkpoint-{}.json",
        signed.checkpoint.created_at.format("%Y%m%dT%H%M%S%.6fZ")
    );
    // Written whole, then renamed: a reader never sees half a checkpoint.
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, serde_json::to_vec_pretty(&signed)?)?;
    std::fs::rename(&partial, dir.join(&name))?;
    tracing::info!(file = %name, chains = signed.checkpoint.chains.len(), "audit checkpoint written");
    Ok(())
}

/// Brings one open payment to the gateway's truth, expiring it when its time is up.
/// Keeps the card's brand and last four digits for the receipt, once a card payment succeeded.
/// Best effort: a receipt without them still says "card".
async fn remember_card(ctx: &WorkerContext, payment: &payment::Payment) {
    let Some(method) = payment.payment_method.as_deref() else {
        return;
    };
    match ctx.stripe.card_of(method).await {
        Ok((brand, last4)) => {
            let stored =
                sqlx::query("UPDATE payments SET card_brand = $2, card_last4 = $3 WHERE id = $1")
                    .bind(payment.id)
                    .bind(brand)
                    .bind(last4)
                    .execute(&ctx.db)
                    .await;
            if let Err(e) = stored {
                tracing::warn!(payment_id = %payment.id, error = %e, "card details not stored");
            }
        }
        Err(e) => {
            tracing::warn!(payment_id = %payment.id, error = %e, "card details not available")
        }
    }
}

async fn reconcile(ctx: &WorkerContext, p: &Payment) -> anyhow::Result<()> {
    let expired = p.expires_at < chrono::Utc::now();
    let report = match &p.gateway_reference {
        Some(intent) => ctx.stripe.retrieve(intent).await?.report(),
        // No answer was ever recorded: ask again with the same idempotency key, which replays
        // the first charge's outcome rather than charging twice. When that replays an error
        // (or the payment is past its deadline), look for the intent by our metadata: the
        // charge may have happened all the same.
        None if p.status == PaymentStatus::Processing && !expired => {
            match ctx.stripe.charge(p).await {
                Ok(report) => Some(report),
                Err(e) => match ctx.stripe.find(p.id).await? {
                    Some(intent) => intent.report(),
                    None => return Err(e.into()),
                },
            }
        }
        None => ctx.stripe.find(p.id).await?.and_then(|i| i.report()),
    };
    if let Some(report) = &report {
        let moved = payment::apply(
            &ctx.db,
            p.id,
            report.event,
            &report.facts,
            Actor::Gateway,
            "reconcile",
        )
        .await;
        match moved {
            Ok(payment::Applied::Moved {
                to: PaymentStatus::Succeeded,
                ..
            }) => remember_card(ctx, p).await,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(payment_id = %p.id, error = %e, "reconciliation report not applied")
            }
        }
    }
    if !expired {
        return Ok(());
    }
    let Some(current) = store::get(&ctx.db, p.id).await? else {
        return Ok(());
    };
    if current.status.is_terminal() {
        return Ok(());
    }
    // Ask the gateway to cancel first: it may have been paid a moment ago.
    if let Some(intent) = &current.gateway_reference {
        match ctx.stripe.cancel(&current, intent).await {
            Ok(_) => {}
            Err(GatewayError::Rejected(reason)) => {
                // Typically "already succeeded": take the gateway's word for it.
                tracing::info!(payment_id = %p.id, %reason, "cancel refused; re-reading the intent");
                if let Some(report) = ctx.stripe.retrieve(intent).await?.report() {
                    payment::apply(
                        &ctx.db,
                        p.id,
                        report.event,
                        &report.facts,
                        Actor::Gateway,
                        "expiry",
                    )
                    .await?;
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    payment::apply(
        &ctx.db,
        p.id,
        PaymentEvent::Expired,
        &GatewayFacts::default(),
        Actor::System,
        "expiry",
    )
    .await?;
    Ok(())
}

/// Gives back money a gateway took twice for one application (flagged by `payment::apply`).
async fn refund_duplicate_charges(ctx: &WorkerContext) -> anyhow::Result<()> {
    let ids: Vec<evisa_core::ids::PaymentId> = sqlx::query_scalar(
        "SELECT id FROM payments WHERE duplicate_charge AND duplicate_refund_reference IS NULL
            AND gateway_reference IS NOT NULL AND provider = 'stripe' LIMIT 100",
    )
    .fetch_all(&ctx.db)
    .await?;
    for id in ids {
        let Some(p) = store::get(&ctx.db, id).await? else {
            continue;
        };
        let Some(intent) = p.gateway_reference.as_deref() else {
            continue;
        };
        match ctx.stripe.refund_duplicate(&p, intent).await {
            Ok(refund) => {
                let mut tx = ctx.db.begin().await?;
                sqlx::query("UPDATE payments SET duplicate_refund_reference = $2, updated_at = now() WHERE id = $1")
                    .bind(id)
                    .bind(&refund)
                    .execute(&mut *tx)
                    .await?;
                store::record_refund_of_duplicate(&mut tx, &p, &refund).await?;
                tx.commit().await?;
                tracing::info!(payment_id = %id, %refund, "duplicate charge refunded");
            }
            Err(e) => {
                tracing::warn!(payment_id = %id, error = %e, "duplicate charge not refunded yet")
            }
        }
    }
    Ok(())
}
