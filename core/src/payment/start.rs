//! Starting a payment, in the caller's transaction: the row with its first event, and the work
//! that moves it on — a charge job for a card, a signed cashier URL and a first status poll for
//! Alipay. Nothing reaches a gateway before the transaction commits.

use sqlx::PgConnection;

use super::{
    GatewayFacts, Payment, PaymentEvent, Provider,
    apply::{ApplyError, apply_in},
    store::{self, CreatePaymentError, NewPayment},
};
use crate::{
    application::Actor,
    gateway::alipay::{self, AlipayClient, Channel},
    ids::{ApplicationId, UserId},
    money::Currency,
};
use evisa_jobs::{ChargeCard, PollAlipay, enqueue_after, enqueue_then_wake};

/// What every new payment is given.
pub struct Terms {
    /// How long the applicant has to pay.
    pub expires_in: chrono::Duration,
    /// Attempts of each job the payment enqueues (`EVISA_JOB_MAX_ATTEMPTS`; `None`: each kind's own).
    pub max_attempts: Option<usize>,
}

/// Why an Alipay payment could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartAlipayError {
    #[error(transparent)]
    Create(#[from] CreatePaymentError),
    #[error("the payment could not take its first step: {0}")]
    Apply(#[from] ApplyError),
    #[error("the return address could not be built: {0}")]
    ReturnUrl(#[from] url::ParseError),
}

impl From<sqlx::Error> for StartAlipayError {
    fn from(e: sqlx::Error) -> Self {
        StartAlipayError::Create(CreatePaymentError::Database(e))
    }
}

/// A card payment of one application or a group (`applications`) with a Stripe payment method
/// (a `pm_...` id made in the browser): created, and its one charge enqueued. Once the
/// transaction has committed, the caller wakes the charge queue: `signals::wake_workers(ChargeCard::QUEUE)`.
pub async fn card(
    tx: &mut PgConnection,
    applicant: UserId,
    applications: &[ApplicationId],
    payment_method: &str,
    terms: &Terms,
) -> Result<Payment, CreatePaymentError> {
    let payment = store::create(
        tx,
        &NewPayment {
            applicant,
            applications,
            provider: Provider::Stripe,
            currency: None,
            payment_method: Some(payment_method),
            return_url: None,
            expires_in: terms.expires_in,
        },
    )
    .await?;
    // Its workers are woken once the caller has committed (`signals::wake_workers(ChargeCard::QUEUE)`).
    enqueue_then_wake(
        tx,
        &ChargeCard {
            payment_id: payment.id,
        },
        terms.max_attempts,
    )
    .await?;
    Ok(payment)
}

/// An Alipay payment in CNY of one application or a group (`applications`): created
/// `requires_action` with the signed URL of Alipay's cashier,
/// and its first status poll enqueued (never later than its deadline). The buyer comes back
/// to `{public_base_url}/v1/payments/{id}/return`, which asks Alipay rather than trusting the
/// browser.
#[allow(clippy::too_many_arguments)]
pub async fn alipay(
    tx: &mut PgConnection,
    client: &AlipayClient,
    applicant: UserId,
    applications: &[ApplicationId],
    channel: Channel,
    return_url: Option<&url::Url>,
    public_base_url: &url::Url,
    first_poll: std::time::Duration,
    terms: &Terms,
) -> Result<Payment, StartAlipayError> {
    let payment = store::create(
        tx,
        &NewPayment {
            applicant,
            applications,
            provider: Provider::Alipay,
            currency: Some(Currency::parse("CNY").expect("CNY is ISO 4217")),
            payment_method: None,
            return_url: return_url.map(url::Url::as_str),
            expires_in: terms.expires_in,
        },
    )
    .await?;
    let back = public_base_url.join(&format!("v1/payments/{}/return", payment.id))?;
    let subject = match payment.allocations.len() {
        1 => format!("Visa application fee {}", payment.application_id),
        n => format!("Visa application fees of {n} applications"),
    };
    let url = client.pay_url(
        channel,
        &alipay::out_trade_no(payment.id),
        payment.amount,
        &subject,
        payment.expires_at,
        back.as_str(),
    );
    let facts = GatewayFacts {
        next_action: Some(AlipayClient::next_action(&url)),
        ..GatewayFacts::default()
    };
    apply_in(
        tx,
        payment.id,
        PaymentEvent::GatewayRequiresAction,
        &facts,
        Actor::System,
        "alipay redirect",
    )
    .await?;
    let deadline = terms.expires_in.to_std().unwrap_or_default();
    enqueue_after(
        tx,
        &PollAlipay {
            payment_id: payment.id,
            round: 0,
        },
        first_poll.min(deadline),
        terms.max_attempts,
    )
    .await?;
    // Read back with the status and next action just applied.
    Ok(store::get(&mut *tx, payment.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?)
}
