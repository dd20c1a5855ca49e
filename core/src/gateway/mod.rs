//! Clients of the payment gateways, and the translation of what they say into payment events.

pub mod alipay;
pub mod stripe;
pub mod stripe_event;
pub mod stripe_webhook;

use crate::payment::{GatewayFacts, PaymentEvent};

/// What a gateway said about a payment, as an event for [`crate::payment::apply`].
#[derive(Debug, Clone)]
pub struct Report {
    pub event: PaymentEvent,
    pub facts: GatewayFacts,
}

/// A gateway call that did not give an answer about the payment.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Network failure, timeout, 429 or 5xx: retry later with the same idempotency key. The
    /// gateway may or may not have acted.
    #[error("gateway unavailable: {0}")]
    Transient(String),
    /// The gateway refused the request itself (not the payment): retrying will not help.
    #[error("gateway refused the request: {0}")]
    Rejected(String),
}
