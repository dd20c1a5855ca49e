//! Payment attempts: their status machine, their storage, and [`apply`] — the one place where
//! what a gateway says about a payment changes our records.

mod status;
pub mod store;

pub mod apply;
pub use apply::{Applied, GatewayFacts, apply, apply_in};
pub use status::{PaymentEvent, PaymentRefusal, PaymentStatus};
pub use store::{CreatePaymentError, NextAction, Payment, Provider};

/// The Postgres channel on which every committed status change is announced as
/// `<payment id>:<status>`, so that every API process can push it to event-stream subscribers.
pub const STATUS_CHANNEL: &str = "payment_status";
