//! Simulated payment gateways for test mode: fake money, real wire protocols.
//!
//! [`stripe`] speaks Stripe's API (the parts evisa-pay calls) so that the official `async-stripe`
//! client works against it unchanged; [`alipay`] speaks Alipay's OpenAPI v2 with RSA2 signatures.
//! Both deliver signed callbacks with retries and inject the faults that tests need to prove
//! exactly-once charging.

// Stripe objects are large `json!` literals.
#![recursion_limit = "256"]

pub mod alipay;
pub mod stripe;

pub use alipay::{AlipayFaults, AlipaySandbox, AlipaySandboxConfig};
pub use stripe::{StripeSandbox, StripeSandboxConfig};

/// Both gateways on one listener.
pub fn routes(stripe: &StripeSandbox, alipay: &AlipaySandbox) -> impl poem::Endpoint + 'static {
    use poem::EndpointExt;
    alipay
        .add_routes(stripe.add_routes(poem::Route::new()))
        .data(stripe.clone())
        .data(alipay.clone())
}

/// The Alipay sandbox with the test-mode keys, serving the dev app id.
pub fn dev_alipay(notify_minute: std::time::Duration) -> AlipaySandbox {
    use evisa_core::gateway::alipay::{AppPrivateKey, RsaPublicKey};
    AlipaySandbox::new(AlipaySandboxConfig {
        app_id: test_keys::APP_ID.into(),
        seller_id: test_keys::SELLER_ID.into(),
        merchant_public_key: RsaPublicKey::parse(test_keys::MERCHANT_DEV_PUBLIC)
            .expect("test key parses"),
        sandbox_private_key: AppPrivateKey::parse(test_keys::ALIPAY_SANDBOX_PRIVATE)
            .expect("test key parses"),
        notify_minute,
    })
}

/// Test-mode keys (see `sandbox/keys/README.md`): never for a real Alipay app.
pub mod test_keys {
    pub const ALIPAY_SANDBOX_PRIVATE: &str = include_str!("../keys/alipay_sandbox_private.pem");
    pub const ALIPAY_SANDBOX_PUBLIC: &str = include_str!("../keys/alipay_sandbox_public.pem");
    pub const MERCHANT_DEV_PRIVATE: &str = include_str!("../keys/merchant_dev_private.pem");
    pub const MERCHANT_DEV_PUBLIC: &str = include_str!("../keys/merchant_dev_public.pem");
    /// The app id the sandbox serves in dev.
    pub const APP_ID: &str = "2021000000000001";
    /// The merchant account the sandbox's notifies name.
    pub const SELLER_ID: &str = "2088000000000009";
}
