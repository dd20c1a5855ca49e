//! The wire types of payments: the request body (parsed once into a [`Method`]) and the views.

use evisa_core::{
    gateway::alipay::Channel,
    payment::{NextAction, Payment, PaymentStatus},
    return_url::ReturnUrlOrigins,
};
use poem_openapi::{Enum, Object, Union};

use crate::{
    body::ServerSetFields,
    problem::{ApiError, FieldProblem},
};

/// The gateway to pay through.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[oai(rename = "PaymentProvider", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ProviderWire {
    /// Card payments through Stripe.
    Stripe,
    /// Alipay (in CNY, where the fee schedule prices the application in CNY).
    Alipay,
}

/// Alipay only: which cashier the buyer sees (default `page`).
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[oai(rename = "AlipayChannel", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ChannelWire {
    /// Desktop browsers (`alipay.trade.page.pay`).
    Page,
    /// Mobile browsers (`alipay.trade.wap.pay`).
    Wap,
}

/// A request to pay an application's fee. The amount is never sent: it is the fee fixed on the
/// application at submission. Its schema (a `oneOf` on `provider`) is in `payment_request.rs`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequestBody {
    pub provider: ProviderWire,
    pub payment_method: Option<String>,
    pub channel: Option<ChannelWire>,
    pub return_url: Option<String>,
}

/// The checked parts of a payment request.
pub(crate) enum Method {
    Card {
        payment_method: String,
    },
    Alipay {
        channel: Channel,
        return_url: Option<url::Url>,
    },
}

pub(crate) fn field_problem(field: &str, detail: &str) -> FieldProblem {
    FieldProblem {
        field: field.into(),
        pointer: Some(format!("/{field}")),
        detail: detail.into(),
    }
}

impl PaymentRequestBody {
    pub(super) fn into_method(self, origins: &ReturnUrlOrigins) -> Result<Method, ApiError> {
        match self.provider {
            ProviderWire::Stripe => {
                let mut errors = Vec::new();
                if self.channel.is_some() {
                    errors.push(field_problem("channel", "is for Alipay only"));
                }
                if self.return_url.is_some() {
                    errors.push(field_problem("return_url", "is for Alipay only"));
                }
                match self.payment_method {
                    Some(pm) if errors.is_empty() && is_payment_method_id(&pm) => {
                        Ok(Method::Card { payment_method: pm })
                    }
                    Some(_) if errors.is_empty() => Err(ApiError::invalid(vec![field_problem(
                        "payment_method",
                        "must be a Stripe PaymentMethod id (pm_ and 1 to 250 letters, digits or _)",
                    )])),
                    None => {
                        errors.insert(
                            0,
                            field_problem("payment_method", "is required for card payments"),
                        );
                        Err(ApiError::invalid(errors))
                    }
                    Some(_) => Err(ApiError::invalid(errors)),
                }
            }
            ProviderWire::Alipay => {
                if self.payment_method.is_some() {
                    return Err(ApiError::invalid(vec![field_problem(
                        "payment_method",
                        "is for card payments only",
                    )]));
                }
                let return_url = self
                    .return_url
                    .map(|u| {
                        origins.check(&u).map_err(|e| {
                            ApiError::invalid(vec![field_problem("return_url", &e.to_string())])
                        })
                    })
                    .transpose()?;
                let channel = match self.channel.unwrap_or(ChannelWire::Page) {
                    ChannelWire::Page => Channel::Page,
                    ChannelWire::Wap => Channel::Wap,
                };
                Ok(Method::Alipay {
                    channel,
                    return_url,
                })
            }
        }
    }
}

/// A Stripe PaymentMethod id as the schema declares it (`^pm_[A-Za-z0-9_]{1,250}$`). It ends up
/// in a Stripe URL path, so nothing else may pass.
pub(crate) fn is_payment_method_id(pm: &str) -> bool {
    pm.strip_prefix("pm_").is_some_and(|rest| {
        (1..=250).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

const AMOUNT_IS_SERVER_SET: &str =
    "the amount charged is the fee fixed on the application at submission";

impl ServerSetFields for PaymentRequestBody {
    const SERVER_SET: &'static [(&'static str, &'static str)] = &[
        ("amount", AMOUNT_IS_SERVER_SET),
        ("currency", AMOUNT_IS_SERVER_SET),
        ("fee", AMOUNT_IS_SERVER_SET),
    ];
}

/// Where a payment is.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename = "PaymentStatus", rename_all = "snake_case")]
pub enum PaymentStatusWire {
    Created,
    Processing,
    RequiresAction,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
}

impl From<PaymentStatus> for PaymentStatusWire {
    fn from(s: PaymentStatus) -> Self {
        match s {
            PaymentStatus::Created => Self::Created,
            PaymentStatus::Processing => Self::Processing,
            PaymentStatus::RequiresAction => Self::RequiresAction,
            PaymentStatus::Succeeded => Self::Succeeded,
            PaymentStatus::Failed => Self::Failed,
            PaymentStatus::Cancelled => Self::Cancelled,
            PaymentStatus::Expired => Self::Expired,
        }
    }
}

/// Finish 3-D Secure with Stripe.js (`stripe.handleNextAction({clientSecret})`).
#[derive(Object, Debug, Clone)]
pub struct UseStripeSdk {
    pub client_secret: String,
}

/// Send the payer to this URL.
#[derive(Object, Debug, Clone)]
pub struct Redirect {
    pub redirect_url: String,
}

/// What the payer must do next.
#[derive(Union, Debug, Clone)]
#[oai(discriminator_name = "type", rename_all = "snake_case")]
pub enum NextActionView {
    UseStripeSdk(UseStripeSdk),
    Redirect(Redirect),
}

/// The share of a payment that pays one application's fee.
#[derive(Object, Debug, Clone)]
#[oai(rename = "PaymentAllocation")]
pub struct AllocationView {
    pub application_id: uuid::Uuid,
    /// The application's fee, in minor units of the payment's currency.
    pub amount: i64,
    /// What succeeded refunds of this share gave back, in minor units.
    pub refunded_amount: i64,
}

/// One attempt to pay the fee of an application, or of a group of applications with one charge.
#[derive(Object, Debug, Clone)]
#[oai(rename = "Payment")]
pub struct PaymentView {
    pub id: uuid::Uuid,
    /// The first application it pays (the only one, unless it is a group payment).
    pub application_id: uuid::Uuid,
    /// Every application it pays and its share; the shares add up to `amount`.
    pub allocations: Vec<AllocationView>,
    /// `stripe` or `alipay`.
    pub provider: String,
    pub status: PaymentStatusWire,
    /// Integer minor units of `currency`.
    pub amount: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// What succeeded refunds gave back, in minor units of `currency`.
    pub refunded_amount: i64,
    #[oai(skip_serializing_if_is_none)]
    pub next_action: Option<NextActionView>,
    /// The gateway's reason, when `failed` (e.g. `generic_decline`, `insufficient_funds`).
    #[oai(skip_serializing_if_is_none)]
    pub failure_code: Option<String>,
    /// What the applicant can do about the failure.
    #[oai(skip_serializing_if_is_none)]
    pub failure_message: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<Payment> for PaymentView {
    fn from(p: Payment) -> Self {
        PaymentView {
            id: p.id.as_uuid(),
            application_id: p.application_id.as_uuid(),
            allocations: p
                .allocations
                .iter()
                .map(|a| AllocationView {
                    application_id: a.application_id.as_uuid(),
                    amount: a.amount.amount_minor(),
                    refunded_amount: a.refunded,
                })
                .collect(),
            provider: p.provider.as_str().to_string(),
            status: p.status.into(),
            amount: p.amount.amount_minor(),
            currency: p.amount.currency().code().to_string(),
            refunded_amount: p.refunded_amount,
            next_action: p.next_action.map(|n| match n {
                NextAction::UseStripeSdk { client_secret } => {
                    NextActionView::UseStripeSdk(UseStripeSdk { client_secret })
                }
                NextAction::Redirect { redirect_url } => {
                    NextActionView::Redirect(Redirect { redirect_url })
                }
            }),
            failure_code: p.failure_code,
            failure_message: p.failure_message,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}
