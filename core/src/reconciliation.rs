//! The reconciliation report: every disagreement between our records and the gateways' — payment
//! statuses and amounts (Stripe intents, Alipay trades) and Stripe refunds — and what the
//! gateway's events told us that finance must see: refunds made outside evisa-pay, refund totals
//! no refund explains, and disputes (chargebacks). Empty when all is well.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::{
    gateway::{
        GatewayError,
        alipay::{AlipayClient, TradeState},
        stripe::StripeGateway,
    },
    payment::{PaymentEvent, PaymentStatus, Provider, store},
    refund::{self, RefundStatus},
};

/// One thing our records and a gateway disagree on.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Disagreement {
    pub payment_id: String,
    pub provider: String,
    /// What we recorded.
    pub ours: String,
    /// What the gateway says.
    pub gateway: String,
    pub detail: String,
}

/// The statuses of ours that agree with what the gateway reports.
fn agreeing(event: Option<PaymentEvent>) -> &'static [PaymentStatus] {
    use PaymentStatus as S;
    match event {
        Some(PaymentEvent::GatewaySaysSucceeded) => &[S::Succeeded],
        Some(PaymentEvent::Declined) => &[S::Failed],
        Some(PaymentEvent::Cancelled) | Some(PaymentEvent::Expired) => {
            &[S::Cancelled, S::Expired, S::Failed]
        }
        Some(PaymentEvent::GatewayRequiresAction) => &[S::RequiresAction],
        Some(PaymentEvent::GatewaySaysProcessing) => &[S::Processing],
        Some(PaymentEvent::ChargeStarted) | None => &[
            S::Created,
            S::Processing,
            S::RequiresAction,
            S::Failed,
            S::Cancelled,
            S::Expired,
        ],
    }
}

/// Compares every payment created since `since` with its gateway.
pub async fn report(
    pool: &PgPool,
    stripe: &StripeGateway,
    alipay: Option<&AlipayClient>,
    since: DateTime<Utc>,
) -> anyhow::Result<(usize, Vec<Disagreement>)> {
    let ids: Vec<crate::ids::PaymentId> =
        sqlx::query_scalar("SELECT id FROM payments WHERE created_at >= $1 ORDER BY id")
            .bind(since)
            .fetch_all(pool)
            .await?;
    let mut found = Vec::new();
    for id in &ids {
        let Some(p) = store::get(pool, *id).await? else {
            continue;
        };
        let mut disagree = |gateway: String, detail: &str| {
            found.push(Disagreement {
                payment_id: p.id.to_string(),
                provider: p.provider.to_string(),
                ours: p.status.to_string(),
                gateway,
                detail: detail.to_string(),
            })
        };
        match p.provider {
            Provider::Stripe => {
                let Some(intent) = p.gateway_reference.as_deref() else {
                    if p.status == PaymentStatus::Succeeded {
                        disagree(
                            "no PaymentIntent".into(),
                            "succeeded here, but nothing at Stripe",
                        );
                    }
                    continue;
                };
                let snapshot = match stripe.retrieve(intent).await {
                    Ok(s) => s,
                    Err(GatewayError::Rejected(e)) => {
                        disagree(format!("unknown intent {intent}"), &e);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let event = snapshot.report().map(|r| r.event);
                // A flagged duplicate charge was refunded: its intent succeeded, ours did not.
                let duplicate = p.duplicate_charge && snapshot.status == "succeeded";
                if !duplicate && !agreeing(event).contains(&p.status) {
                    disagree(
                        format!("intent {intent} is {}", snapshot.status),
                        "status differs",
                    );
                }
                if snapshot.amount() != Some(p.amount) {
                    disagree(
                        format!("intent amount {} {}", snapshot.amount, snapshot.currency),
                        "amount differs",
                    );
                }
                for r in refund::list(pool, p.id).await? {
                    let Some(reference) = r.gateway_reference.as_deref() else {
                        continue;
                    };
                    match stripe.refund_status(reference).await {
                        Err(GatewayError::Rejected(e)) => disagree(
                            format!("unknown refund {reference}"),
                            &format!("refund {} is {} here: {e}", r.id, r.status),
                        ),
                        Err(e) => return Err(e.into()),
                        Ok(Some(succeeded))
                            if succeeded != (r.status == RefundStatus::Succeeded) =>
                        {
                            disagree(
                                format!(
                                    "refund {reference} {}",
                                    if succeeded {
                                        "succeeded"
                                    } else {
                                        "not succeeded"
                                    }
                                ),
                                &format!("refund {} is {} here", r.id, r.status),
                            )
                        }
                        _ => {}
                    }
                }
            }
            Provider::Alipay => {
                let Some(alipay) = alipay else { continue };
                let trade = crate::gateway::alipay::out_trade_no(p.id);
                let state = alipay.query(&trade).await?;
                let refunded_in_full = p.refunded_amount >= p.amount.amount_minor();
                match (&state, p.status) {
                    // Alipay closes a trade once it is refunded in full: that agrees with a
                    // succeeded payment whose refunds gave everything back, and with no other.
                    (TradeState::Closed, PaymentStatus::Succeeded) => {
                        if !refunded_in_full {
                            disagree(
                                "trade TRADE_CLOSED".into(),
                                &format!(
                                    "closed at Alipay, but {} of {} refunded here",
                                    p.refunded_amount,
                                    p.amount.amount_minor()
                                ),
                            );
                        }
                    }
                    (TradeState::Paid { .. }, PaymentStatus::Succeeded) if refunded_in_full => {
                        disagree(
                            "trade TRADE_SUCCESS".into(),
                            "refunded in full here, but the trade is still paid at Alipay",
                        )
                    }
                    _ => {
                        let event = state
                            .report(p.status == PaymentStatus::Expired)
                            .map(|r| r.event);
                        if !agreeing(event).contains(&p.status) {
                            disagree(format!("trade {state:?}"), "status differs");
                        }
                    }
                }
                if let TradeState::Paid { total_amount, .. } = &state
                    && crate::gateway::alipay::parse_cny(total_amount) != Some(p.amount)
                {
                    disagree(format!("trade amount {total_amount}"), "amount differs");
                }
                // Each refund we sent (its id is the out_request_no) against Alipay's record.
                for r in refund::list(pool, p.id).await? {
                    if !matches!(r.status, RefundStatus::Succeeded | RefundStatus::Failed) {
                        continue;
                    }
                    let done = match alipay
                        .refund_query(&trade, &r.id.simple().to_string())
                        .await
                    {
                        Ok(done) => done,
                        Err(GatewayError::Rejected(e)) => {
                            disagree(format!("refund {} unknown", r.id), &e);
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    if done != (r.status == RefundStatus::Succeeded) {
                        disagree(
                            format!(
                                "refund {} {}",
                                r.id,
                                if done { "succeeded" } else { "not succeeded" }
                            ),
                            &format!("refund {} is {} here", r.id, r.status),
                        );
                    }
                }
            }
        }
    }
    found.extend(from_events(pool, since).await?);
    Ok((ids.len(), found))
}

/// What Stripe's events recorded about payments created since `since`: refunds made outside
/// evisa-pay, refund totals our refunds do not explain, and disputes.
async fn from_events(pool: &PgPool, since: DateTime<Utc>) -> anyhow::Result<Vec<Disagreement>> {
    let mut found = Vec::new();
    let outside: Vec<(uuid::Uuid, String, String, i64, String, String, String)> = sqlx::query_as(
        "SELECT p.id, p.provider, p.status, r.amount_minor, r.currency, r.status,
                coalesce(r.gateway_reference, '')
           FROM refunds r JOIN payments p ON p.id = r.payment_id
          WHERE r.origin = 'gateway' AND p.created_at >= $1 ORDER BY r.id",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    for (payment, provider, ours, amount, currency, status, reference) in outside {
        found.push(Disagreement {
            payment_id: payment.to_string(),
            provider,
            ours,
            gateway: format!("refund {reference} of {amount} {currency} is {status}"),
            detail: "refunded outside evisa-pay (recorded from the gateway's events)".into(),
        });
    }
    let unexplained: Vec<(uuid::Uuid, String, String, i64, i64, String)> = sqlx::query_as(
        "SELECT p.id, p.provider, p.status, p.gateway_refunded_minor,
                (SELECT coalesce(sum(amount_minor), 0) FROM refunds r
                  WHERE r.payment_id = p.id
                    AND r.status IN ('pending', 'succeeded'))::bigint,
                p.currency
           FROM payments p
          WHERE p.created_at >= $1 AND p.gateway_refunded_minor IS NOT NULL
            AND p.gateway_refunded_minor > (SELECT coalesce(sum(amount_minor), 0) FROM refunds r
                                             WHERE r.payment_id = p.id
                                               AND r.status IN ('pending', 'succeeded'))
          ORDER BY p.id",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    for (payment, provider, ours, reported, explained, currency) in unexplained {
        found.push(Disagreement {
            payment_id: payment.to_string(),
            provider,
            ours,
            gateway: format!("charge refunded {reported} {currency} in all"),
            detail: format!(
                "our refunds (succeeded or pending) explain {explained} {currency}; {} {currency} is unexplained",
                reported - explained
            ),
        });
    }
    for d in crate::dispute::of_payments_since(pool, since).await? {
        let Some(p) = store::get(pool, d.payment_id).await? else {
            continue;
        };
        let detail = match d.outcome.as_deref() {
            None => "disputed: the application is on hold until the dispute closes".to_string(),
            Some("lost") => format!(
                "dispute lost: {} {} taken back by the card holder's bank",
                d.amount.amount_minor(),
                d.amount.currency()
            ),
            Some("won") => "dispute won: the money stays".to_string(),
            Some(other) => format!("dispute closed ({other})"),
        };
        found.push(Disagreement {
            payment_id: p.id.to_string(),
            provider: p.provider.to_string(),
            ours: p.status.to_string(),
            gateway: format!(
                "dispute {} of {} {} ({}) is {}",
                d.gateway_reference,
                d.amount.amount_minor(),
                d.amount.currency(),
                d.reason,
                d.status
            ),
            detail,
        });
    }
    Ok(found)
}
