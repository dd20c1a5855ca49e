//! What each job does. Handlers are idempotent: they look at the current state first and call
//! gateways with idempotency keys derived from our ids.

use std::{sync::Arc, time::Duration};

use apalis::prelude::*;
use evisa_core::{
    application::Actor,
    gateway::{
        GatewayError,
        alipay::{self, NotifyMeaning, TradeState, VerifiedNotify},
    },
    inbox,
    payment::{self, GatewayFacts, PaymentEvent, PaymentStatus, store},
    refund,
};

use crate::{ChargeCard, Outcome, PollAlipay, ProcessGatewayEvent, RefundPayment, WorkerContext};

/// Charges a card payment: created → processing → the gateway's answer.
pub async fn charge_card(
    job: ChargeCard,
    task: TaskId,
    attempt: Attempt,
    ctx: Data<Arc<WorkerContext>>,
) -> Result<(), BoxDynError> {
    let cause = format!("job:{task}");
    // created → processing, or the payment as a previous run left it.
    // Together with the other charges starting now: one statement and one commit.
    let Some(payment) = ctx.charge_starts.start(job.payment_id, &cause).await? else {
        tracing::warn!(payment_id = %job.payment_id, "charge for an unknown payment; dropped");
        return Ok(());
    };
    if payment.status != PaymentStatus::Processing {
        tracing::info!(payment_id = %payment.id, status = %payment.status, "already charged; nothing to do");
        return Ok(());
    }
    match ctx.stripe.charge(&payment).await {
        Ok(report) => {
            ctx.apply_report(&payment, &report, &cause).await?;
            Ok(())
        }
        Err(GatewayError::Transient(reason)) => {
            tracing::warn!(payment_id = %payment.id, %reason, attempt = attempt.current(), "gateway unavailable");
            Err(format!("gateway unavailable: {reason}").into())
        }
        Err(GatewayError::Rejected(reason)) => {
            tracing::error!(payment_id = %payment.id, %reason, "gateway refused the charge request");
            let facts = GatewayFacts {
                failure_code: Some("gateway_rejected".into()),
                failure_message: Some(
                    "The payment could not be processed. Try again later or use another card."
                        .into(),
                ),
                ..GatewayFacts::default()
            };
            ctx.apply(
                &payment,
                PaymentEvent::Declined,
                &facts,
                Actor::Gateway,
                &cause,
            )
            .await?;
            Ok(())
        }
    }
}

/// Applies a stored gateway callback, once.
pub async fn process_gateway_event(
    job: ProcessGatewayEvent,
    ctx: Data<Arc<WorkerContext>>,
) -> Result<(), BoxDynError> {
    let Some(stored) = inbox::get(&ctx.db, job.inbox_id).await? else {
        return Ok(());
    };
    if stored.state != "received" {
        return Ok(());
    }
    if stored.provider == "stripe" {
        // A Stripe event that named an intent we did not know yet: the same reading and
        // appliers as on arrival, final this time.
        inbox::apply_stored_stripe(&ctx.db, job.inbox_id).await?;
        return Ok(());
    }
    let (provider, event_id, kind) = (&stored.provider, &stored.event_id, &stored.event_type);
    let cause = format!("{provider}:{event_id}");
    // An Alipay notify: which payment, and what it says about it (the form as it was verified
    // on arrival).
    let (payment, report) = {
        let notify = VerifiedNotify::from_inbox(&stored.payload);
        let payment = match notify.as_ref().and_then(VerifiedNotify::payment_id) {
            Some(id) => store::get(&ctx.db, id).await?,
            None => None,
        };
        let (Some(notify), Some(p)) = (notify, payment) else {
            inbox::finish(&ctx.db, job.inbox_id, "ignored", Some("no payment of ours")).await?;
            return Ok(());
        };
        let expired = p.expires_at <= chrono::Utc::now();
        match notify.interpret(p.status, expired) {
            NotifyMeaning::Payment(report) => (Some(p), Some(report)),
            NotifyMeaning::Refund { out_request_no } => {
                let (state, note) = confirm_refund(&ctx, &p, out_request_no.as_deref()).await?;
                inbox::finish(&ctx.db, job.inbox_id, state, Some(&note)).await?;
                return Ok(());
            }
            NotifyMeaning::Nothing(note) => {
                inbox::finish(&ctx.db, job.inbox_id, "ignored", Some(&note)).await?;
                return Ok(());
            }
        }
    };
    let outcome = match (payment, report) {
        (None, _) => ("ignored", Some("no payment of ours".to_string())),
        (Some(_), None) => ("ignored", Some(format!("{kind}: nothing to apply"))),
        (Some(p), Some(report)) => match ctx.apply_report(&p, &report, &cause).await? {
            Outcome::Applied(_) => ("processed", None),
            Outcome::Mismatch(note) => ("quarantined", Some(note)),
        },
    };
    inbox::finish(&ctx.db, job.inbox_id, outcome.0, outcome.1.as_deref()).await?;
    Ok(())
}

/// An Alipay refund notify: confirms the refund it names, if still pending; the payment itself
/// never moves. Returns the inbox state and note.
async fn confirm_refund(
    ctx: &WorkerContext,
    payment: &payment::Payment,
    out_request_no: Option<&str>,
) -> Result<(&'static str, String), sqlx::Error> {
    let Some(out_request_no) = out_request_no else {
        return Ok((
            "ignored",
            "trade closed after a refund in full; no refund named".into(),
        ));
    };
    Ok(
        match refund::confirm_by_gateway(&ctx.db, payment.id, out_request_no).await? {
            refund::Confirmation::Confirmed(id) => {
                tracing::info!(payment_id = %payment.id, refund_id = %id, "refund confirmed by an Alipay notify");
                ("processed", format!("refund {id} confirmed"))
            }
            refund::Confirmation::AlreadyConfirmed(id) => {
                ("ignored", format!("refund {id} was already confirmed"))
            }
            refund::Confirmation::NotOurs => ("ignored", "a refund that is not ours".into()),
            refund::Confirmation::Conflict { refund, status } => {
                tracing::error!(payment_id = %payment.id, refund_id = %refund, %status, "Alipay reports a refund done that we recorded otherwise");
                (
                    "quarantined",
                    format!("Alipay reports refund {refund} done, but it is {status} here"),
                )
            }
        },
    )
}

/// The delay before poll `round` + 1: the first configured delay, doubling, at most 2 minutes.
pub fn poll_delay(first: Duration, round: u32) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(round.min(10)))
        .min(Duration::from_secs(120))
}

/// Polls an Alipay trade: applies a final status, or re-schedules itself; at the deadline it
/// closes the trade (and if closing finds it paid, the payment succeeds).
pub async fn poll_alipay(
    job: PollAlipay,
    task: TaskId,
    ctx: Data<Arc<WorkerContext>>,
) -> Result<(), BoxDynError> {
    let Some(alipay) = ctx.alipay.as_ref() else {
        tracing::error!(payment_id = %job.payment_id, "Alipay poll but Alipay is not configured");
        return Ok(());
    };
    let Some(payment) = store::get(&ctx.db, job.payment_id).await? else {
        return Ok(());
    };
    if payment.status.is_terminal() {
        return Ok(());
    }
    let cause = format!("job:{task}");
    let trade_no = alipay::out_trade_no(payment.id);
    let now = chrono::Utc::now();
    let at_deadline = payment.expires_at <= now;
    let result = if at_deadline {
        match alipay.close(&trade_no).await {
            // Closed, or never opened: nothing was paid.
            Ok(None) | Ok(Some(TradeState::NotCreated)) => Ok(Some(TradeState::Closed)),
            Ok(Some(state)) => Ok(Some(state)),
            Err(e) => Err(e),
        }
    } else {
        alipay.query(&trade_no).await.map(Some)
    };
    let state = match result {
        Ok(state) => state,
        Err(GatewayError::Transient(reason)) => {
            tracing::warn!(payment_id = %payment.id, %reason, "Alipay unavailable");
            return Err(format!("alipay unavailable: {reason}").into());
        }
        Err(GatewayError::Rejected(reason)) => {
            tracing::error!(payment_id = %payment.id, %reason, "Alipay refused the poll");
            return Err(AbortError::new(std::io::Error::other(reason)).into());
        }
    };
    if let Some(report) = state.as_ref().and_then(|s| s.report(at_deadline)) {
        ctx.apply_report(&payment, &report, &cause).await?;
        return Ok(());
    }
    // Not final yet: ask again later, and no later than the deadline.
    let until_deadline = (payment.expires_at - now).to_std().unwrap_or_default();
    let delay = poll_delay(ctx.alipay_poll_first, job.round).min(until_deadline);
    let mut tx = ctx.db.begin().await?;
    crate::enqueue_after(
        &mut tx,
        &PollAlipay {
            payment_id: payment.id,
            round: job.round + 1,
        },
        delay,
        ctx.max_attempts,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Carries out a pending refund: Stripe with the refund id as idempotency key, Alipay with it as
/// `out_request_no`, then confirms (Alipay: by refund query) and records the outcome once.
pub async fn refund_payment(
    job: RefundPayment,
    ctx: Data<Arc<WorkerContext>>,
) -> Result<(), BoxDynError> {
    let Some(r) = refund::get(&ctx.db, job.refund_id).await? else {
        return Ok(());
    };
    if r.status != refund::RefundStatus::Pending {
        return Ok(());
    }
    let Some(p) = store::get(&ctx.db, r.payment_id).await? else {
        return Ok(());
    };
    let key = r.id.simple().to_string();
    let outcome = match p.provider {
        payment::Provider::Stripe => match (
            r.gateway_reference.as_deref(),
            p.gateway_reference.as_deref(),
        ) {
            // Created earlier and pending then: ask how it stands (a new create would only
            // replay the first, pending answer).
            (Some(refund_ref), _) => ctx
                .stripe
                .refund_status(refund_ref)
                .await
                .map(|done| (Some(refund_ref.to_string()), done)),
            (None, Some(intent)) => ctx
                .stripe
                .refund(intent, r.amount, &key)
                .await
                .map(|(id, done)| (Some(id), done)),
            (None, None) => Err(GatewayError::Rejected(
                "payment has no PaymentIntent".into(),
            )),
        },
        payment::Provider::Alipay => match ctx.alipay.as_ref() {
            None => Err(GatewayError::Rejected("Alipay is not configured".into())),
            Some(alipay) => {
                let trade = alipay::out_trade_no(p.id);
                match alipay.refund(&trade, r.amount, &key).await {
                    // Ask whether it went through: code 10000 alone only means the call worked.
                    Ok(_) => alipay
                        .refund_query(&trade, &key)
                        .await
                        .map(|done| (None, done.then_some(true))),
                    // A refused repeat (the trade closed when an earlier run refunded it in
                    // full) must not record as failed a refund that went through.
                    Err(GatewayError::Rejected(reason)) => {
                        match alipay.refund_query(&trade, &key).await {
                            Ok(true) => Ok((None, Some(true))),
                            Ok(false) => Err(GatewayError::Rejected(reason)),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        },
    };
    match outcome {
        Ok((reference, Some(succeeded))) => {
            refund::settle(
                &ctx.db,
                r.id,
                succeeded,
                reference.as_deref(),
                (!succeeded).then_some("the gateway declined the refund"),
            )
            .await?;
            tracing::info!(refund_id = %r.id, succeeded, "refund settled");
            Ok(())
        }
        Ok((reference, None)) => {
            // Accepted but not final yet: look again later.
            if let Some(reference) = reference.as_deref() {
                refund::remember_reference(&ctx.db, r.id, reference).await?;
            }
            Err("refund pending at the gateway".into())
        }
        Err(GatewayError::Transient(reason)) => {
            Err(format!("gateway unavailable: {reason}").into())
        }
        Err(GatewayError::Rejected(reason)) => {
            tracing::error!(refund_id = %r.id, %reason, "refund refused by the gateway");
            refund::settle(&ctx.db, r.id, false, None, Some(&reason)).await?;
            Ok(())
        }
    }
}

/// Runs an admin's reconciliation report and stores what it found (or why it could not finish).
pub async fn reconcile_report(
    job: crate::ReconcileReport,
    ctx: Data<Arc<WorkerContext>>,
) -> Result<(), BoxDynError> {
    use evisa_core::reconciliation_reports as reports;
    let Some(report) = reports::get(&ctx.db, job.report_id).await? else {
        return Ok(());
    };
    if report.status != "running" {
        return Ok(());
    }
    let since = report
        .since
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    match evisa_core::reconciliation::report(&ctx.db, &ctx.stripe, ctx.alipay.as_ref(), since).await
    {
        Ok((checked, found)) => reports::finish(&ctx.db, report.id, Ok((checked, &found))).await?,
        // A gateway that is down: retried by the job's backoff; the report stays running.
        Err(e)
            if e.downcast_ref::<evisa_core::gateway::GatewayError>()
                .is_some() =>
        {
            return Err(e.to_string().into());
        }
        Err(e) => reports::finish(&ctx.db, report.id, Err(&e.to_string())).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::queue::backoff;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for attempt in 1..=30 {
            let d = backoff(attempt);
            let full = Duration::from_secs(1)
                .saturating_mul(2u32.pow((attempt as u32 - 1).min(16)))
                .min(Duration::from_secs(300));
            assert!(
                d >= full / 2 && d < full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }
}
