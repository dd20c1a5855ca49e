//! Receipts for succeeded payments, each with a verification code signed by the service
//! (HMAC-SHA256), so that anyone can check a receipt is genuine at `GET /v1/receipts/{code}` —
//! an answer to fake visa sites — without learning anything personal.
//!
//! A code is `EVP-` and base32 (no padding) of the payment id's 16 bytes followed by the first
//! 10 bytes of HMAC-SHA256(key, "receipt:" + payment id).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::{
    ids::{ApplicationId, PaymentId},
    money::Money,
    payment::{Payment, PaymentStatus, Provider, store as payments},
    refund::{self, Refund},
    secret::Secret,
};

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const MAC_BYTES: usize = 10;

fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn unbase32(text: &str) -> Option<Vec<u8>> {
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

fn mac(key: &Secret<Vec<u8>>, payment: PaymentId) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.expose());
    ring::hmac::sign(&key, format!("receipt:{payment}").as_bytes())
}

/// The verification code of a payment's receipt.
pub fn code(key: &Secret<Vec<u8>>, payment: PaymentId) -> String {
    let mut bytes = payment.as_uuid().as_bytes().to_vec();
    bytes.extend_from_slice(&mac(key, payment).as_ref()[..MAC_BYTES]);
    format!("EVP-{}", base32(&bytes))
}

/// The payment a genuine code was issued for; `None` for anything altered or made up.
pub fn verify(key: &Secret<Vec<u8>>, code: &str) -> Option<PaymentId> {
    let bytes = unbase32(code.trim().strip_prefix("EVP-")?)?;
    if bytes.len() != 16 + MAC_BYTES {
        return None;
    }
    let payment = PaymentId::from_uuid(uuid::Uuid::from_slice(&bytes[..16]).ok()?);
    let expected = mac(key, payment);
    // Constant-time comparison of the truncated MAC.
    let difference = expected.as_ref()[..MAC_BYTES]
        .iter()
        .zip(&bytes[16..])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (difference == 0).then_some(payment)
}

/// How the fee was paid, as printed on a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Card {
        brand: Option<String>,
        last4: Option<String>,
    },
    Alipay {
        trade_no: Option<String>,
    },
}

/// A receipt.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub payment_id: PaymentId,
    pub application_id: ApplicationId,
    pub amount: Money,
    pub method: Method,
    pub paid_at: DateTime<Utc>,
    pub refunded_amount: i64,
    pub refunds: Vec<Refund>,
    pub code: String,
}

/// The receipt of a succeeded payment; `None` for any other.
pub async fn for_payment(
    pool: &PgPool,
    key: &Secret<Vec<u8>>,
    payment: &Payment,
) -> Result<Option<Receipt>, sqlx::Error> {
    if payment.status != PaymentStatus::Succeeded {
        return Ok(None);
    }
    let (brand, last4, paid_at): (Option<String>, Option<String>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT p.card_brand, p.card_last4,
                (SELECT max(occurred_at) FROM payment_events e WHERE e.payment_id = p.id AND e.to_status = 'succeeded'
                   AND e.from_status <> 'succeeded')
           FROM payments p WHERE p.id = $1",
    )
    .bind(payment.id)
    .fetch_one(pool)
    .await?;
    let method = match payment.provider {
        Provider::Stripe => Method::Card { brand, last4 },
        Provider::Alipay => Method::Alipay {
            trade_no: payment.gateway_reference.clone(),
        },
    };
    Ok(Some(Receipt {
        payment_id: payment.id,
        application_id: payment.application_id,
        amount: payment.amount,
        method,
        paid_at: paid_at.unwrap_or(payment.updated_at),
        refunded_amount: payment.refunded_amount,
        refunds: refund::list(pool, payment.id).await?,
        code: code(key, payment.id),
    }))
}

/// The receipt a code proves genuine, if any.
pub async fn by_code(
    pool: &PgPool,
    key: &Secret<Vec<u8>>,
    code_text: &str,
) -> Result<Option<Receipt>, sqlx::Error> {
    let Some(id) = verify(key, code_text) else {
        return Ok(None);
    };
    match payments::get(pool, id).await? {
        Some(p) => for_payment(pool, key, &p).await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_verify_and_alterations_do_not() {
        let key = Secret::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let id = PaymentId::new();
        let c = code(&key, id);
        assert!(c.starts_with("EVP-"));
        assert_eq!(verify(&key, &c), Some(id));
        // Any changed character, another key, or a made-up code fails.
        let mut chars: Vec<char> = c.chars().collect();
        let last = chars.len() - 2;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        assert_eq!(verify(&key, &chars.into_iter().collect::<String>()), None);
        assert_eq!(
            verify(
                &Secret::new(b"another key another key another!".to_vec()),
                &c
            ),
            None
        );
        assert_eq!(verify(&key, "EVP-AAAA"), None);
        assert_eq!(verify(&key, "nonsense"), None);
        assert_eq!(unbase32(&base32(b"hello world")).unwrap(), b"hello world");
    }
}
