//! Payment attempts: their status machine, their storage, and [`apply`] — the one place where
//! what a gateway says about a payment changes our records.

pub mod announcements;
mod create;
mod status;
pub mod store;

pub mod apply;
mod charge_start;
pub mod start;
pub use apply::{Applied, CardDetails, GatewayFacts, apply, apply_in};
pub use charge_start::start_charges;
pub use status::{PaymentEvent, PaymentRefusal, PaymentStatus};
pub use store::{Allocation, Announced, CreatePaymentError, NextAction, Payment, Provider};
