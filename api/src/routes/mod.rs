//! The operations of the API, one module per area. Each parses wire types into domain types,
//! calls `evisa_core`, and answers with a view or an [`ApiError`](crate::problem::ApiError).

mod admin;
mod applications;
mod auth;
pub mod checkout;
mod country;
mod decision;
mod disputes;
mod fees;
mod health;
mod notifications;
mod payment_request;
pub mod payments;
mod receipts;
mod reconciliation;
pub mod refunds;
pub mod views;

use poem_openapi::Tags;

/// Groups of operations in the spec.
#[derive(Tags)]
pub enum Tag {
    /// Registering and signing in.
    Auth,
    /// The fee schedule.
    Fees,
    /// An applicant's own visa applications.
    Applications,
    /// Paying an application's fee and following the payment.
    Payments,
    /// Officers' and admins' operations.
    Admin,
    /// Liveness and readiness.
    Health,
}

pub type Api = (
    health::HealthApi,
    auth::AuthApi,
    auth::PasswordApi,
    fees::FeesApi,
    applications::ApplicationsApi,
    payments::PaymentsApi,
    payments::group::GroupPaymentsApi,
    checkout::CheckoutApi,
    admin::AdminApi,
    refunds::RefundsApi,
    disputes::DisputesApi,
    reconciliation::ReconciliationApi,
    receipts::ReceiptsApi,
    notifications::NotificationsApi,
);

pub fn api() -> Api {
    (
        health::HealthApi,
        auth::AuthApi,
        auth::PasswordApi,
        fees::FeesApi,
        applications::ApplicationsApi,
        payments::PaymentsApi,
        payments::group::GroupPaymentsApi,
        checkout::CheckoutApi,
        admin::AdminApi,
        refunds::RefundsApi,
        disputes::DisputesApi,
        reconciliation::ReconciliationApi,
        receipts::ReceiptsApi,
        notifications::NotificationsApi,
    )
}
