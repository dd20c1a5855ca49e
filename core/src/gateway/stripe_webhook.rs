//! Stripe's webhooks as they arrive: the `Stripe-Signature` check (HMAC-SHA256 over
//! `"{t}.{body}"`, any of the secrets of a rotation, within a tolerance) and the envelope of an
//! event. What an event means is `stripe_event`'s.

use crate::secret::Secret;

/// How long a webhook's timestamp may be from our clock.
pub const WEBHOOK_TOLERANCE_SECS: i64 = 300;

/// Why a webhook was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing or malformed Stripe-Signature header")]
    Malformed,
    #[error("the signature matches none of our webhook secrets")]
    NoMatch,
    #[error("the signature's timestamp is more than {WEBHOOK_TOLERANCE_SECS} s from now")]
    Stale,
}

/// Checks a `Stripe-Signature` header (`t=...,v1=...[,v1=...]`) over the raw body against every
/// configured secret (several during rotation), in constant time, within the tolerance.
pub fn verify_signature(
    header: &str,
    body: &[u8],
    secrets: &[Secret<String>],
    now: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match k {
            "t" => timestamp = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => signatures.push(hex_decode(v).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let matched = secrets.iter().any(|secret| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes());
        signatures
            .iter()
            .any(|sig| ring::hmac::verify(&key, &signed, sig).is_ok())
    });
    if !matched {
        return Err(SignatureError::NoMatch);
    }
    if (now - timestamp).abs() > WEBHOOK_TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A Stripe event as delivered to our webhook: what we need to store and route it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StripeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: StripeEventData,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct StripeEventData {
    pub object: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &str) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = ring::hmac::sign(&key, format!("{t}.{body}").as_bytes());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("t={t},v1={hex}")
    }

    #[test]
    fn signatures_are_checked_against_every_secret_within_tolerance() {
        let secrets = vec![
            Secret::new("whsec_old".to_string()),
            Secret::new("whsec_new".to_string()),
        ];
        let body = r#"{"id":"evt_1"}"#;
        let now = 1_700_000_000;
        assert_eq!(
            verify_signature(
                &sign("whsec_new", now, body),
                body.as_bytes(),
                &secrets,
                now
            ),
            Ok(())
        );
        assert_eq!(
            verify_signature(
                &sign("whsec_old", now - 299, body),
                body.as_bytes(),
                &secrets,
                now
            ),
            Ok(())
        );
        assert_eq!(
            verify_signature(
                &sign("whsec_other", now, body),
                body.as_bytes(),
                &secrets,
                now
            ),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify_signature(
                &sign("whsec_new", now - 301, body),
                body.as_bytes(),
                &secrets,
                now
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(
                &sign("whsec_new", now, body),
                br#"{"id":"evt_2"}"#,
                &secrets,
                now
            ),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify_signature("garbage", body.as_bytes(), &secrets, now),
            Err(SignatureError::Malformed)
        );
        // A second v1 (e.g. during Stripe's own rotation) is accepted when either matches.
        let two = format!("{},v1={}", sign("whsec_new", now, body), "00".repeat(32));
        assert_eq!(
            verify_signature(&two, body.as_bytes(), &secrets, now),
            Ok(())
        );
    }
}
