//! End-to-end tests: the real API over real Postgres and Redis, driven over HTTP.

mod common;

mod admin;
mod alipay;
mod alipay_refunds;
mod announcements;
mod applications;
mod audit;
mod charge_starts;
mod checkout;
mod cli;
mod connections;
mod contract;
mod expiry;
mod fees;
mod group;
mod group_checkout;
mod group_limits;
mod group_refunds;
mod jobs;
mod keys;
mod limits;
mod logs;
mod metrics;
mod notifications;
mod payments;
mod published_secrets;
mod refunds;
mod stripe_events;
mod stripe_fidelity;
mod stripe_sandbox_events;
mod tokens;
