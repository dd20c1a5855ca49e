//! Receipts for succeeded payments, each with a verification code signed by the service
//! (HMAC-SHA256), so that anyone can check a receipt is genuine at `GET /v1/receipts/{code}` —
//! an answer to fake visa sites — without learning anything personal.
//!
//! A payment's receipt is the payer's: the total, and for a group payment the list of
//! applications it paid (their references and shares, nothing personal). Each application also
//! has its own receipt of its share.
//!
//! A payer's code is `EVP-` and base32 (no padding) of the payment id's 16 bytes followed by the
//! first 10 bytes of HMAC-SHA256(key, "receipt:" + payment id). An application's code is `EVA-`
//! and base32 of the payment id's and the application id's 16 bytes each, then the first 10
//! bytes of HMAC-SHA256(key, "receipt:" + payment id + ":" + application id).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::{
    ids::{ApplicationId, PaymentId, UserId},
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
    // Only the spelling `base32` writes: fewer than 5 bits left over, all zero. Otherwise a code
    // would have several spellings (a changed last letter touching only padding bits).
    (bits < 5 && buffer & ((1 << bits) - 1) == 0).then_some(out)
}

fn mac(key: &Secret<Vec<u8>>, subject: &str) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.expose());
    ring::hmac::sign(&key, format!("receipt:{subject}").as_bytes())
}

/// Constant-time comparison of a truncated MAC.
fn mac_matches(expected: &ring::hmac::Tag, given: &[u8]) -> bool {
    given.len() == MAC_BYTES
        && expected.as_ref()[..MAC_BYTES]
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The verification code of a payment's (the payer's) receipt.
pub fn code(key: &Secret<Vec<u8>>, payment: PaymentId) -> String {
    let mut bytes = payment.as_uuid().as_bytes().to_vec();
    bytes.extend_from_slice(&mac(key, &payment.to_string()).as_ref()[..MAC_BYTES]);
    format!("EVP-{}", base32(&bytes))
}

/// The verification code of an application's receipt of its share of a payment.
pub fn share_code(key: &Secret<Vec<u8>>, payment: PaymentId, application: ApplicationId) -> String {
    let mut bytes = payment.as_uuid().as_bytes().to_vec();
    bytes.extend_from_slice(application.as_uuid().as_bytes());
    let subject = format!("{payment}:{application}");
    bytes.extend_from_slice(&mac(key, &subject).as_ref()[..MAC_BYTES]);
    format!("EVA-{}", base32(&bytes))
}

/// What a genuine code was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The payer's receipt of a payment.
    Payment(PaymentId),
    /// An application's receipt of its share of a payment.
    Share(PaymentId, ApplicationId),
}

/// The payment a genuine payer's code was issued for; `None` for anything altered or made up.
pub fn verify(key: &Secret<Vec<u8>>, code: &str) -> Option<PaymentId> {
    match verify_any(key, code)? {
        Subject::Payment(p) => Some(p),
        Subject::Share(..) => None,
    }
}

/// What a genuine code (a payer's or an application's) was issued for; `None` for anything
/// altered or made up.
pub fn verify_any(key: &Secret<Vec<u8>>, code: &str) -> Option<Subject> {
    let code = code.trim();
    if let Some(text) = code.strip_prefix("EVP-") {
        let bytes = unbase32(text)?;
        if bytes.len() != 16 + MAC_BYTES {
            return None;
        }
        let payment = PaymentId::from_uuid(uuid::Uuid::from_slice(&bytes[..16]).ok()?);
        return mac_matches(&mac(key, &payment.to_string()), &bytes[16..])
            .then_some(Subject::Payment(payment));
    }
    let bytes = unbase32(code.strip_prefix("EVA-")?)?;
    if bytes.len() != 32 + MAC_BYTES {
        return None;
    }
    let payment = PaymentId::from_uuid(uuid::Uuid::from_slice(&bytes[..16]).ok()?);
    let application = ApplicationId::from_uuid(uuid::Uuid::from_slice(&bytes[16..32]).ok()?);
    let subject = format!("{payment}:{application}");
    mac_matches(&mac(key, &subject), &bytes[32..]).then_some(Subject::Share(payment, application))
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

/// One application a receipt covers, and its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub application_id: ApplicationId,
    pub amount: Money,
    pub refunded_amount: i64,
}

/// A receipt: the payer's (of the whole payment) or one application's (of its share).
#[derive(Debug, Clone)]
pub struct Receipt {
    pub payment_id: PaymentId,
    /// The application of an application's receipt; the first application of a payer's.
    pub application_id: ApplicationId,
    /// `Some` for an application's receipt of its share.
    pub share_of: Option<ApplicationId>,
    /// The whole payment, or the application's share.
    pub amount: Money,
    /// How it was paid; an application's receipt names the method only, nothing of the payer.
    pub method: Method,
    pub paid_at: DateTime<Utc>,
    pub refunded_amount: i64,
    pub refunds: Vec<Refund>,
    /// Every application the payment paid (only the one, on an application's receipt).
    pub lines: Vec<Line>,
    pub code: String,
}

/// The payer's receipt of a succeeded payment; `None` for any other.
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
        share_of: None,
        amount: payment.amount,
        method,
        paid_at: paid_at.unwrap_or(payment.updated_at),
        refunded_amount: payment.refunded_amount,
        refunds: refund::list(pool, payment.id).await?,
        lines: payment
            .allocations
            .iter()
            .map(|a| Line {
                application_id: a.application_id,
                amount: a.amount,
                refunded_amount: a.refunded,
            })
            .collect(),
        code: code(key, payment.id),
    }))
}

/// An application's receipt of its share of a succeeded payment; `None` when the payment did
/// not succeed or does not pay the application.
pub async fn for_share(
    pool: &PgPool,
    key: &Secret<Vec<u8>>,
    payment: &Payment,
    application: ApplicationId,
) -> Result<Option<Receipt>, sqlx::Error> {
    let Some(share) = payment
        .allocations
        .iter()
        .find(|a| a.application_id == application)
    else {
        return Ok(None);
    };
    let Some(whole) = for_payment(pool, key, payment).await? else {
        return Ok(None);
    };
    let method = match whole.method {
        Method::Card { .. } => Method::Card {
            brand: None,
            last4: None,
        },
        Method::Alipay { .. } => Method::Alipay { trade_no: None },
    };
    Ok(Some(Receipt {
        application_id: application,
        share_of: Some(application),
        amount: share.amount,
        method,
        refunded_amount: share.refunded,
        refunds: whole
            .refunds
            .into_iter()
            .filter(|r| r.application_id == Some(application))
            .collect(),
        lines: vec![Line {
            application_id: application,
            amount: share.amount,
            refunded_amount: share.refunded,
        }],
        code: share_code(key, payment.id, application),
        ..whole
    }))
}

/// The receipt of the applicant's application: its share of the payment that paid it, if one
/// did (`None` otherwise, or when the application is not the applicant's).
pub async fn for_application(
    pool: &PgPool,
    key: &Secret<Vec<u8>>,
    owner: UserId,
    application: ApplicationId,
) -> Result<Option<Receipt>, sqlx::Error> {
    let paid_by: Option<PaymentId> = sqlx::query_scalar(
        "SELECT al.payment_id FROM payment_allocations al JOIN applications a ON a.id = al.application_id
          WHERE al.application_id = $1 AND a.applicant_id = $2 AND al.payment_state = 'succeeded'",
    )
    .bind(application)
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    match paid_by {
        Some(id) => match payments::get(pool, id).await? {
            Some(p) => for_share(pool, key, &p, application).await,
            None => Ok(None),
        },
        None => Ok(None),
    }
}

/// The receipt a code proves genuine, if any: the payer's or an application's.
pub async fn by_code(
    pool: &PgPool,
    key: &Secret<Vec<u8>>,
    code_text: &str,
) -> Result<Option<Receipt>, sqlx::Error> {
    let Some(subject) = verify_any(key, code_text) else {
        return Ok(None);
    };
    let (Subject::Payment(id) | Subject::Share(id, _)) = subject;
    let Some(p) = payments::get(pool, id).await? else {
        return Ok(None);
    };
    match subject {
        Subject::Payment(_) => for_payment(pool, key, &p).await,
        Subject::Share(_, application) => for_share(pool, key, &p, application).await,
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

    #[test]
    fn a_code_has_one_spelling() {
        let key = Secret::new(b"receipt-key".to_vec());
        let good = code(&key, PaymentId::new());
        assert!(verify(&key, &good).is_some());
        // 26 bytes are 42 letters with 2 padding bits in the last: flipping those alone, or
        // adding a letter, must not verify.
        let last = good.as_bytes()[good.len() - 1];
        let value = ALPHABET.iter().position(|&a| a == last).unwrap();
        for padding in 1..4 {
            let other = ALPHABET[(value & !3) | ((value & 3) ^ padding)] as char;
            let respelled = format!("{}{other}", &good[..good.len() - 1]);
            assert_eq!(verify(&key, &respelled), None, "{respelled}");
        }
        assert_eq!(verify(&key, &format!("{good}A")), None);
    }

    #[test]
    fn share_codes_name_their_application_and_are_not_payer_codes() {
        let key = Secret::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let (payment, a, b) = (PaymentId::new(), ApplicationId::new(), ApplicationId::new());
        let ca = share_code(&key, payment, a);
        assert!(ca.starts_with("EVA-"));
        assert_eq!(verify_any(&key, &ca), Some(Subject::Share(payment, a)));
        assert_ne!(ca, share_code(&key, payment, b));
        assert_eq!(verify(&key, &ca), None, "not a payer's code");
        assert_eq!(
            verify_any(&key, &code(&key, payment)),
            Some(Subject::Payment(payment))
        );
        // Another application's id under this MAC is refused.
        let mut bytes = unbase32(ca.strip_prefix("EVA-").unwrap()).unwrap();
        bytes[16..32].copy_from_slice(b.as_uuid().as_bytes());
        assert_eq!(verify_any(&key, &format!("EVA-{}", base32(&bytes))), None);
    }
}
