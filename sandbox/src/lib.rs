//! Simulated payment gateways for test mode: fake money, real wire protocols.
//!
//! [`stripe`] speaks Stripe's API (the parts evisa-pay calls) so that the official `async-stripe`
//! client works against it unchanged, signs and delivers webhooks with retries, and injects the
//! faults that tests need to prove exactly-once charging.

pub mod stripe;

pub use stripe::{StripeSandbox, StripeSandboxConfig};
