//! The domain of evisa-pay: what a visa application, a fee and a payment are, the rules that move
//! them between states, and the storage and crypto they need. Knows nothing of HTTP; adds jobs
//! (`evisa-jobs`) in its own transactions but never runs them.

pub mod application;
pub mod audit;
pub mod auth;
pub mod checkout;
pub mod config;
pub mod country;
pub mod crypto;
pub mod db;
pub mod dispute;
pub mod fees;
pub mod gateway;
pub mod idempotency;
/// Typed ids live in a crate of their own, below this one, so that the job kinds
/// (`evisa-jobs`) can carry them.
pub use evisa_ids as ids;
pub mod inbox;
pub mod metrics;
pub mod money;
pub mod notify;
pub mod payment;
pub mod person;
pub mod ratelimit;
pub mod receipt;
pub mod reconciliation;
pub mod reconciliation_reports;
pub mod refund;
pub mod return_url;
pub mod secret;
pub mod signals;
pub mod users;
pub mod visa;

pub use country::CountryCode;
pub use money::{Currency, Money};
pub use secret::Secret;
