//! The deployment gate: `serve` and `work` refuse any secret that anyone who has read this
//! repository knows (dev defaults, the sandbox's credentials, examples in compose, `.env.example`
//! and the README) and any secret with too little entropy to resist guessing.
//!
//! A value counts as published when it appears anywhere in one of the published texts below, so
//! a new example added to them is refused without touching this list. Problems name the variable,
//! never the value.

use super::{
    ConfigProblem,
    gateways::{
        SANDBOX_ALIPAY_APP_ID, SANDBOX_ALIPAY_PUBLIC_KEY, SANDBOX_MERCHANT_PRIVATE_KEY,
        SANDBOX_STRIPE_KEY, SANDBOX_WEBHOOK_SECRET,
    },
    secrets::{DEV_DATA_KEYS, DEV_RECEIPT_KEY},
    source::{Reader, Source},
};

/// Every text of the repository that shows secret values to its readers.
const PUBLISHED_TEXTS: &[&str] = &[
    include_str!("../../../compose.yaml"),
    include_str!("../../../.env.example"),
    include_str!("../../../README.md"),
    include_str!("../../../sandbox/keys/README.md"),
    include_str!("../../../sandbox/keys/alipay_sandbox_private.pem"),
    include_str!("../../../sandbox/keys/alipay_sandbox_public.pem"),
    include_str!("../../../sandbox/keys/merchant_dev_private.pem"),
    include_str!("../../../sandbox/keys/merchant_dev_private_pkcs1.pem"),
    include_str!("../../../sandbox/keys/merchant_dev_public.pem"),
    SANDBOX_STRIPE_KEY,
    SANDBOX_WEBHOOK_SECRET,
    SANDBOX_ALIPAY_APP_ID,
    SANDBOX_MERCHANT_PRIVATE_KEY,
    SANDBOX_ALIPAY_PUBLIC_KEY,
    DEV_DATA_KEYS,
    DEV_RECEIPT_KEY,
];

/// Fewer estimated bits than this is guessable. 32 random bytes (`openssl rand -base64 32`,
/// `evisa keys generate`) estimate at about 150.
pub const MIN_SECRET_BITS: f64 = 128.0;

/// Whether `value` appears in a published text. Key material is compared without whitespace or
/// PEM armour, so a published key is recognised however it is wrapped.
pub fn is_published(value: &str) -> bool {
    let value = value.trim();
    if value.is_empty() {
        return false;
    }
    let bare = key_body(value);
    PUBLISHED_TEXTS.iter().any(|text| {
        text.contains(value) || (bare.len() >= 64 && key_body(text).contains(bare.as_str()))
    })
}

/// The base64 body of a PEM (or bare base64) key: armour lines and whitespace removed.
fn key_body(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect()
}

/// Bits of entropy estimated from the frequencies of the bytes of `secret` (length times the
/// Shannon entropy of its byte distribution). It overestimates phrases, which is why published
/// phrases are refused by name as well.
pub fn estimated_bits(secret: &[u8]) -> f64 {
    if secret.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in secret {
        counts[usize::from(b)] += 1;
    }
    let n = secret.len() as f64;
    let per_byte: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    per_byte * n
}

/// What a deployment must not run with, by variable. Run over the raw values, after
/// [`super::Config::load`] has checked their shape.
pub(super) fn check(src: &Source) -> Vec<ConfigProblem> {
    let mut r = Reader {
        src,
        problems: Vec::new(),
    };
    let published = "is a value published in the evisa-pay repository (a dev default, the sandbox's, or an example); generate your own";
    let guessable =
        "has too little entropy: use at least 32 random bytes, e.g. `openssl rand -base64 32`";

    for (var, file_var) in [
        ("EVISA_JWT_SECRET", "EVISA_JWT_SECRET_FILE"),
        ("EVISA_RECEIPT_KEY", "EVISA_RECEIPT_KEY_FILE"),
    ] {
        if let Some(v) = r.secret(var, file_var) {
            if is_published(&v) {
                r.problem(var, published);
            } else if estimated_bits(v.as_bytes()) < MIN_SECRET_BITS {
                r.problem(var, guessable);
            }
        }
    }

    if let Some(spec) = r.secret("EVISA_DATA_KEYS", "EVISA_DATA_KEYS_FILE") {
        let entries: Vec<&str> = spec.split(',').map(str::trim).collect();
        if entries
            .iter()
            .any(|e| is_published(e) || is_published(key_of(e)))
        {
            r.problem("EVISA_DATA_KEYS", published);
        } else if entries.iter().any(|e| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(key_of(e))
                .is_ok_and(|k| estimated_bits(&k) < MIN_SECRET_BITS)
        }) {
            r.problem("EVISA_DATA_KEYS", guessable);
        }
    }

    if let Some(key) = r.secret("STRIPE_SECRET_KEY", "STRIPE_SECRET_KEY_FILE") {
        if is_published(&key) {
            r.problem("STRIPE_SECRET_KEY", published);
        } else if estimated_bits(after_prefix(&key).as_bytes()) < MIN_SECRET_BITS {
            r.problem(
                "STRIPE_SECRET_KEY",
                "is not a key Stripe issues (too little entropy)",
            );
        }
    }
    if let Some(list) = src.get("STRIPE_WEBHOOK_SECRETS") {
        let secrets: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if secrets.iter().any(|s| is_published(s)) {
            r.problem("STRIPE_WEBHOOK_SECRETS", published);
        } else if secrets
            .iter()
            .any(|s| estimated_bits(after_prefix(s).as_bytes()) < MIN_SECRET_BITS)
        {
            r.problem(
                "STRIPE_WEBHOOK_SECRETS",
                "holds a secret Stripe would not issue (too little entropy)",
            );
        }
    }

    if src
        .get("ALIPAY_APP_ID")
        .is_some_and(|id| id == SANDBOX_ALIPAY_APP_ID)
    {
        r.problem("ALIPAY_APP_ID", "is the sandbox's app id");
    }
    for (var, file_var) in [
        ("ALIPAY_APP_PRIVATE_KEY", "ALIPAY_APP_PRIVATE_KEY_FILE"),
        ("ALIPAY_PUBLIC_KEY", "ALIPAY_PUBLIC_KEY_FILE"),
    ] {
        if r.secret(var, file_var).is_some_and(|k| is_published(&k)) {
            r.problem(
                var,
                "is one of the sandbox's published test keys; anyone could sign as it",
            );
        }
    }
    r.problems
}

/// `id:base64` → `base64`.
fn key_of(entry: &str) -> &str {
    entry.split_once(':').map_or(entry, |(_, k)| k)
}

/// A Stripe secret without its `whsec_`, `sk_live_`, … prefix, which carries no entropy.
fn after_prefix(secret: &str) -> &str {
    for prefix in ["whsec_", "sk_live_", "sk_test_", "rk_live_", "rk_test_"] {
        if let Some(rest) = secret.strip_prefix(prefix) {
            return rest;
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DataKeys;

    fn random_b64() -> String {
        DataKeys::generate_entry("x")[2..].to_string()
    }

    fn good() -> Vec<(String, String)> {
        let webhook = format!("whsec_{}", random_b64().replace(['+', '/', '='], ""));
        let stripe = format!("sk_live_{}", random_b64().replace(['+', '/', '='], ""));
        vec![
            ("EVISA_JWT_SECRET".into(), random_b64()),
            ("EVISA_RECEIPT_KEY".into(), random_b64()),
            ("EVISA_DATA_KEYS".into(), DataKeys::generate_entry("k1")),
            ("STRIPE_SECRET_KEY".into(), stripe),
            ("STRIPE_WEBHOOK_SECRETS".into(), webhook),
        ]
    }

    fn problems_with(overrides: &[(&str, &str)]) -> Vec<&'static str> {
        let mut pairs = good();
        for (k, v) in overrides {
            pairs.retain(|(key, _)| key != k);
            pairs.push((k.to_string(), v.to_string()));
        }
        let src = Source::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        check(&src).into_iter().map(|p| p.var).collect()
    }

    #[test]
    fn fresh_random_secrets_pass() {
        for _ in 0..200 {
            assert_eq!(problems_with(&[]), Vec::<&str>::new());
        }
    }

    #[test]
    fn every_dev_default_and_sandbox_credential_is_refused() {
        assert_eq!(
            problems_with(&[
                ("EVISA_DATA_KEYS", DEV_DATA_KEYS),
                ("EVISA_RECEIPT_KEY", DEV_RECEIPT_KEY),
                ("STRIPE_SECRET_KEY", SANDBOX_STRIPE_KEY),
                ("STRIPE_WEBHOOK_SECRETS", SANDBOX_WEBHOOK_SECRET),
                ("ALIPAY_APP_ID", SANDBOX_ALIPAY_APP_ID),
                ("ALIPAY_APP_PRIVATE_KEY", SANDBOX_MERCHANT_PRIVATE_KEY),
                ("ALIPAY_PUBLIC_KEY", SANDBOX_ALIPAY_PUBLIC_KEY),
            ]),
            [
                "EVISA_RECEIPT_KEY",
                "EVISA_DATA_KEYS",
                "STRIPE_SECRET_KEY",
                "STRIPE_WEBHOOK_SECRETS",
                "ALIPAY_APP_ID",
                "ALIPAY_APP_PRIVATE_KEY",
                "ALIPAY_PUBLIC_KEY"
            ]
        );
    }

    #[test]
    fn a_published_key_is_recognised_however_it_is_wrapped() {
        let bare: String = key_body(include_str!(
            "../../../sandbox/keys/merchant_dev_private_pkcs1.pem"
        ));
        assert!(is_published(&bare));
        let rewrapped = bare
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(is_published(&rewrapped));
        assert!(!is_published(&random_b64()));
    }

    #[test]
    fn a_published_key_among_several_is_refused() {
        let fresh = DataKeys::generate_entry("k2");
        let spec = format!("{fresh},{DEV_DATA_KEYS}");
        assert_eq!(
            problems_with(&[("EVISA_DATA_KEYS", &spec)]),
            ["EVISA_DATA_KEYS"]
        );
    }

    #[test]
    fn guessable_secrets_are_refused() {
        assert_eq!(
            problems_with(&[
                (
                    "EVISA_JWT_SECRET",
                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                ),
                ("EVISA_RECEIPT_KEY", "abcdefabcdefabcdefabcdefabcdefab"),
                // 32 bytes, but only two distinct ones.
                (
                    "EVISA_DATA_KEYS",
                    "k1:QUJBQkFCQUJBQkFCQUJBQkFCQUJBQkFCQUJBQkFCQUI="
                ),
                ("STRIPE_WEBHOOK_SECRETS", "whsec_test_current"),
                ("STRIPE_SECRET_KEY", "sk_live_123456"),
            ]),
            [
                "EVISA_JWT_SECRET",
                "EVISA_RECEIPT_KEY",
                "EVISA_DATA_KEYS",
                "STRIPE_SECRET_KEY",
                "STRIPE_WEBHOOK_SECRETS"
            ]
        );
    }

    #[test]
    fn problems_never_carry_the_value() {
        let src = Source::from_pairs([("EVISA_JWT_SECRET", SANDBOX_WEBHOOK_SECRET)]);
        let text = super::super::ConfigError(check(&src)).to_string();
        assert!(text.contains("EVISA_JWT_SECRET"), "{text}");
        assert!(!text.contains(SANDBOX_WEBHOOK_SECRET), "{text}");
    }
}
