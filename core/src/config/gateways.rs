//! Stripe and Alipay settings, and the built-in sandbox's published test credentials.

use std::{net::SocketAddr, time::Duration};

use super::{AlipaySettings, StripeSettings, source::Reader};
use crate::{
    gateway::alipay::{AppPrivateKey, RsaPublicKey},
    secret::Secret,
};

/// The dev sandbox's credentials. Test mode only; published on purpose.
pub const SANDBOX_STRIPE_KEY: &str = "sk_test_evisa_sandbox";
/// The publishable twin of [`SANDBOX_STRIPE_KEY`], which browsers tokenise cards with.
pub const SANDBOX_PUBLISHABLE_KEY: &str = "pk_test_evisa_sandbox";
pub const SANDBOX_WEBHOOK_SECRET: &str = "whsec_evisa_dev_sandbox";

/// The dev sandbox's Alipay credentials (test mode only; see `sandbox/keys/README.md`).
pub const SANDBOX_ALIPAY_APP_ID: &str = "2021000000000001";
/// The merchant account the sandbox says it paid.
pub const SANDBOX_ALIPAY_SELLER_ID: &str = "2088000000000009";
pub(super) const SANDBOX_MERCHANT_PRIVATE_KEY: &str =
    include_str!("../../../sandbox/keys/merchant_dev_private.pem");
pub(super) const SANDBOX_ALIPAY_PUBLIC_KEY: &str =
    include_str!("../../../sandbox/keys/alipay_sandbox_public.pem");

/// Reads both gateways' settings and where the sandbox listens. In `dev`, a gateway with no
/// settings at all is played by the built-in sandbox.
pub(super) fn load(r: &mut Reader, dev: bool) -> (StripeSettings, AlipaySettings, SocketAddr) {
    let src = r.src;
    let stripe_secret = r.secret("STRIPE_SECRET_KEY", "STRIPE_SECRET_KEY_FILE");
    if let Some(k) = &stripe_secret
        && !(k.starts_with("sk_test_") || k.starts_with("sk_live_") || k.starts_with("rk_"))
    {
        r.problem(
            "STRIPE_SECRET_KEY",
            "must be a Stripe secret key (sk_test_..., sk_live_... or rk_...)",
        );
    }
    let webhook_secrets: Vec<_> = src
        .get("STRIPE_WEBHOOK_SECRETS")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if webhook_secrets
        .iter()
        .any(|s: &String| !s.starts_with("whsec_"))
    {
        r.problem(
            "STRIPE_WEBHOOK_SECRETS",
            "must be comma-separated webhook signing secrets, each starting with whsec_",
        );
    }
    let sandbox_addr = r.parsed(
        "EVISA_SANDBOX_ADDR",
        SocketAddr::from(([127, 0, 0, 1], 12111)),
        |v| {
            v.parse()
                .map_err(|_| "must be an address and port such as 127.0.0.1:12111".to_string())
        },
    );
    let api_base = r.url("STRIPE_API_BASE");
    let publishable_key = src.get("STRIPE_PUBLISHABLE_KEY").map(str::to_string);
    if let Some(k) = &publishable_key
        && !((k.starts_with("pk_test_") || k.starts_with("pk_live_"))
            && k.len() <= 255
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        r.problem(
            "STRIPE_PUBLISHABLE_KEY",
            "must be a Stripe publishable key (pk_test_... or pk_live_...)",
        );
    }
    let uses_sandbox = dev && stripe_secret.is_none() && api_base.is_none();
    if !dev && stripe_secret.is_none() {
        r.problem(
            "STRIPE_SECRET_KEY",
            "is required (or STRIPE_SECRET_KEY_FILE)",
        );
    }
    if !dev && webhook_secrets.is_empty() {
        r.problem(
            "STRIPE_WEBHOOK_SECRETS",
            "is required: the whsec_... signing secrets, comma-separated",
        );
    }
    let stripe = StripeSettings {
        secret_key: stripe_secret
            .or_else(|| uses_sandbox.then(|| SANDBOX_STRIPE_KEY.to_string()))
            .map(Secret::new),
        api_base: api_base.or_else(|| {
            uses_sandbox
                .then(|| url::Url::parse(&format!("http://{sandbox_addr}/")).expect("valid URL"))
        }),
        webhook_secrets: if webhook_secrets.is_empty() && dev {
            vec![Secret::new(SANDBOX_WEBHOOK_SECRET.to_string())]
        } else {
            webhook_secrets.into_iter().map(Secret::new).collect()
        },
        // The sandbox's publishable key is its secret key's twin, as at Stripe.
        publishable_key: publishable_key
            .or_else(|| uses_sandbox.then(|| SANDBOX_PUBLISHABLE_KEY.to_string())),
        uses_sandbox,
    };

    let app_id = src.get("ALIPAY_APP_ID").map(str::to_string);
    if let Some(id) = &app_id
        && !(id.len() >= 8 && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit()))
    {
        r.problem("ALIPAY_APP_ID", "must be Alipay's numeric app id");
    }
    let seller_id = src.get("ALIPAY_SELLER_ID").map(str::to_string);
    if let Some(id) = &seller_id
        && !(id.len() == 16 && id.starts_with("2088") && id.bytes().all(|b| b.is_ascii_digit()))
    {
        r.problem(
            "ALIPAY_SELLER_ID",
            "must be the merchant's Alipay account id (2088 and 12 digits)",
        );
    }
    let gateway_url = r.url("ALIPAY_GATEWAY_URL");
    let private_text = r.secret("ALIPAY_APP_PRIVATE_KEY", "ALIPAY_APP_PRIVATE_KEY_FILE");
    let public_text = r.secret("ALIPAY_PUBLIC_KEY", "ALIPAY_PUBLIC_KEY_FILE");
    let any_alipay = app_id.is_some()
        || seller_id.is_some()
        || gateway_url.is_some()
        || private_text.is_some()
        || public_text.is_some();
    let alipay_sandbox = dev && !any_alipay;
    if any_alipay {
        for (var, missing) in [
            ("ALIPAY_APP_ID", app_id.is_none()),
            ("ALIPAY_SELLER_ID", seller_id.is_none()),
            ("ALIPAY_GATEWAY_URL", gateway_url.is_none()),
            ("ALIPAY_APP_PRIVATE_KEY", private_text.is_none()),
            ("ALIPAY_PUBLIC_KEY", public_text.is_none()),
        ] {
            if missing {
                r.problem(var, "is required when any ALIPAY_* variable is set");
            }
        }
    }
    let private_text =
        private_text.or_else(|| alipay_sandbox.then(|| SANDBOX_MERCHANT_PRIVATE_KEY.to_string()));
    let public_text =
        public_text.or_else(|| alipay_sandbox.then(|| SANDBOX_ALIPAY_PUBLIC_KEY.to_string()));
    let app_private_key = private_text.and_then(|t| match AppPrivateKey::parse(&t) {
        Ok(k) => Some(k),
        Err(e) => {
            r.problem("ALIPAY_APP_PRIVATE_KEY", e.to_string());
            None
        }
    });
    let public_key = public_text.and_then(|t| match RsaPublicKey::parse(&t) {
        Ok(k) => Some(k),
        Err(e) => {
            r.problem("ALIPAY_PUBLIC_KEY", e.to_string());
            None
        }
    });
    let alipay = AlipaySettings {
        app_id: app_id.or_else(|| alipay_sandbox.then(|| SANDBOX_ALIPAY_APP_ID.to_string())),
        seller_id: seller_id
            .or_else(|| alipay_sandbox.then(|| SANDBOX_ALIPAY_SELLER_ID.to_string())),
        gateway_url: gateway_url.or_else(|| {
            alipay_sandbox.then(|| {
                url::Url::parse(&format!("http://{sandbox_addr}/gateway.do")).expect("valid URL")
            })
        }),
        app_private_key,
        public_key,
        uses_sandbox: alipay_sandbox,
        poll_first: r.parsed(
            "EVISA_ALIPAY_POLL_SECONDS",
            Duration::from_secs(5),
            |v| match v.parse::<u64>() {
                Ok(n) if (1..=600).contains(&n) => Ok(Duration::from_secs(n)),
                _ => Err("must be a number of seconds from 1 to 600".into()),
            },
        ),
    };

    (stripe, alipay, sandbox_addr)
}
