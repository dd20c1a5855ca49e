//! The service's own secrets: the token signing key, the field-encryption keys and the receipt key.

use std::time::Duration;

use super::{JwtSettings, source::Reader};
use crate::{crypto::DataKeys, secret::Secret};

/// The dev profile's data key. Published on purpose: dev data is not secret, but it must stay
/// readable across restarts of `evisa dev`.
pub(super) const DEV_DATA_KEYS: &str = "dev:ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=";

/// The dev profile's receipt key: stable across dev restarts so that dev receipts keep verifying;
/// published on purpose.
pub(super) const DEV_RECEIPT_KEY: &str = "evisa-dev-receipt-key-not-for-production";

/// Reads the signing, encryption and receipt keys. `dev` falls back to a per-process token key
/// and the published dev keys; everything else must give them.
pub(super) fn load(r: &mut Reader, dev: bool) -> (JwtSettings, Option<DataKeys>, Secret<Vec<u8>>) {
    let jwt_secret = match r.secret("EVISA_JWT_SECRET", "EVISA_JWT_SECRET_FILE") {
        Some(s) if s.len() >= 32 => s.into_bytes(),
        Some(_) => {
            r.problem("EVISA_JWT_SECRET", "must be at least 32 bytes");
            Vec::new()
        }
        // Dev tokens die with the process; that is fine for a developer and avoids a
        // well-known signing key.
        None if dev => {
            let entry = DataKeys::generate_entry("jwt");
            entry.into_bytes()
        }
        None => {
            r.problem(
                "EVISA_JWT_SECRET",
                "is required (or EVISA_JWT_SECRET_FILE), at least 32 bytes",
            );
            Vec::new()
        }
    };
    let jwt = JwtSettings {
        secret: Secret::new(jwt_secret),
        issuer: r.parsed("EVISA_JWT_ISSUER", "evisa-pay".into(), |v| Ok(v.into())),
        audience: r.parsed("EVISA_JWT_AUDIENCE", "evisa-pay-api".into(), |v| {
            Ok(v.into())
        }),
        ttl: r.parsed(
            "EVISA_JWT_TTL_SECONDS",
            Duration::from_secs(900),
            |v| match v.parse::<u64>() {
                Ok(s) if (60..=86_400).contains(&s) => Ok(Duration::from_secs(s)),
                _ => Err("must be a number of seconds from 60 to 86400".into()),
            },
        ),
    };

    let data_keys_spec = match r.secret("EVISA_DATA_KEYS", "EVISA_DATA_KEYS_FILE") {
        Some(s) => Some(s),
        None if dev => Some(DEV_DATA_KEYS.to_string()),
        None => {
            r.problem(
                "EVISA_DATA_KEYS",
                "is required (or EVISA_DATA_KEYS_FILE): `id:base64 32-byte key`, current first; `evisa keys generate` makes one",
            );
            None
        }
    };
    let data_keys = data_keys_spec.and_then(|s| match DataKeys::parse(&s) {
        Ok(k) => Some(k),
        Err(e) => {
            r.problem("EVISA_DATA_KEYS", e.to_string());
            None
        }
    });

    let receipt_key = match r.secret("EVISA_RECEIPT_KEY", "EVISA_RECEIPT_KEY_FILE") {
        Some(k) if k.len() >= 32 => k.into_bytes(),
        Some(_) => {
            r.problem("EVISA_RECEIPT_KEY", "must be at least 32 bytes");
            Vec::new()
        }
        // Stable across dev restarts so that dev receipts keep verifying; published on purpose.
        None if dev => DEV_RECEIPT_KEY.as_bytes().to_vec(),
        None => {
            r.problem(
                "EVISA_RECEIPT_KEY",
                "is required (or EVISA_RECEIPT_KEY_FILE), at least 32 bytes",
            );
            Vec::new()
        }
    };

    (jwt, data_keys, Secret::new(receipt_key))
}
