//! Clients of the payment gateways, and the translation of what they say into payment events.

pub mod alipay;
pub mod stripe;
pub mod stripe_event;
pub mod stripe_webhook;

use std::{future::Future, sync::Arc};

use tokio::sync::Semaphore;

use crate::payment::{GatewayFacts, PaymentEvent};

/// Calls a gateway client makes at once unless told otherwise (`EVISA_GATEWAY_CALLS`).
pub const DEFAULT_CALLS_IN_FLIGHT: usize = 16;

/// How many calls one gateway client has in flight at once; the rest wait their turn. Jobs run
/// many at a time (a batch is claimed per fetch), and this is what keeps that from becoming a
/// burst at the gateway.
#[derive(Clone, Debug)]
pub struct CallSlots(Arc<Semaphore>);

impl CallSlots {
    pub fn new(calls: usize) -> Self {
        Self(Arc::new(Semaphore::new(calls.max(1))))
    }

    /// Makes one call once a slot is free, and meters it (the wait is not counted in the call's
    /// duration).
    pub(crate) async fn call<T>(
        &self,
        gateway: &'static str,
        operation: &'static str,
        call: impl Future<Output = Result<T, GatewayError>>,
    ) -> Result<T, GatewayError> {
        let _slot = self
            .0
            .acquire()
            .await
            .expect("the semaphore is never closed");
        crate::metrics::gateway_call(gateway, operation, call).await
    }
}

impl Default for CallSlots {
    fn default() -> Self {
        Self::new(DEFAULT_CALLS_IN_FLIGHT)
    }
}

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
