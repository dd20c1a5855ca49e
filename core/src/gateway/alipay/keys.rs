//! RSA keys as Alipay hands them out: our app's private key (PKCS#1 or PKCS#8) that signs
//! requests, and Alipay's public key that verifies answers and notifies.

use std::sync::Arc;

use base64::Engine;
use ring::{
    rand::SystemRandom,
    signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, UnparsedPublicKey},
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A key that could not be read. Never echoes the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("is not base64 (with or without PEM armour)")]
    NotBase64,
    #[error("is not an RSA private key in PKCS#1 or PKCS#8 form")]
    NotPrivateKey,
    #[error("is not an RSA public key (SubjectPublicKeyInfo or PKCS#1)")]
    NotPublicKey,
}

/// The DER inside optional PEM armour, or bare base64 as Alipay hands keys out.
fn der_from_text(text: &str) -> Result<Vec<u8>, KeyError> {
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    B64.decode(body.trim()).map_err(|_| KeyError::NotBase64)
}

/// The merchant's (our app's) RSA private key, which signs requests.
#[derive(Clone)]
pub struct AppPrivateKey(Arc<RsaKeyPair>);

impl std::fmt::Debug for AppPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppPrivateKey(***)")
    }
}

impl AppPrivateKey {
    /// Accepts PKCS#8 or PKCS#1, PEM or bare base64.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let der = der_from_text(text)?;
        RsaKeyPair::from_pkcs8(&der)
            .or_else(|_| RsaKeyPair::from_der(&der))
            .map(|k| AppPrivateKey(Arc::new(k)))
            .map_err(|_| KeyError::NotPrivateKey)
    }

    /// RSA2 signature of `message`, base64.
    pub fn sign(&self, message: &str) -> String {
        let mut sig = vec![0u8; self.0.public().modulus_len()];
        self.0
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message.as_bytes(),
                &mut sig,
            )
            .expect("RSA signing with a valid key cannot fail");
        B64.encode(sig)
    }
}

/// An RSA public key that verifies RSA2 signatures (Alipay's, or a merchant's in the sandbox).
#[derive(Clone)]
pub struct RsaPublicKey(Arc<Vec<u8>>);

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaPublicKey")
    }
}

/// Reads one DER element: (tag, contents, rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The PKCS#1 RSAPublicKey inside a SubjectPublicKeyInfo, or the input if it already is one.
fn rsa_public_key_der(der: &[u8]) -> Option<Vec<u8>> {
    let (tag, seq, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (first_tag, first, rest) = der_element(seq)?;
    match first_tag {
        // SPKI: SEQUENCE { AlgorithmIdentifier SEQUENCE, BIT STRING { RSAPublicKey } }
        0x30 => {
            let (bit_tag, bits, _) = der_element(rest)?;
            let (&unused, key) = bits.split_first()?;
            (bit_tag == 0x03 && unused == 0 && first.len() > 2).then(|| key.to_vec())
        }
        // PKCS#1: SEQUENCE { modulus INTEGER, exponent INTEGER } and nothing else.
        0x02 => {
            let (exp_tag, _, after) = der_element(rest)?;
            (exp_tag == 0x02 && after.is_empty() && first.len() >= 256).then(|| der.to_vec())
        }
        _ => None,
    }
}

impl RsaPublicKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let der = der_from_text(text)?;
        let key = rsa_public_key_der(&der).ok_or(KeyError::NotPublicKey)?;
        // A real key has a modulus of at least 2048 bits.
        if key.len() < 256 {
            return Err(KeyError::NotPublicKey);
        }
        Ok(RsaPublicKey(Arc::new(key)))
    }

    /// Whether `signature` (base64) is a valid RSA2 signature of `message`.
    pub fn verify(&self, message: &str, signature: &str) -> bool {
        let Ok(sig) = B64.decode(signature.trim()) else {
            return false;
        };
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, self.0.as_slice())
            .verify(message.as_bytes(), &sig)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: &str = include_str!("../../../../sandbox/keys/merchant_dev_private.pem");
    const PRIVATE_PKCS1: &str =
        include_str!("../../../../sandbox/keys/merchant_dev_private_pkcs1.pem");
    const PUBLIC: &str = include_str!("../../../../sandbox/keys/merchant_dev_public.pem");
    const OTHER_PUBLIC: &str = include_str!("../../../../sandbox/keys/alipay_sandbox_public.pem");

    fn bare(pem: &str) -> String {
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    #[test]
    fn keys_parse_in_every_form_alipay_hands_out() {
        let pkcs8 = AppPrivateKey::parse(PRIVATE).unwrap();
        let pkcs1 = AppPrivateKey::parse(PRIVATE_PKCS1).unwrap();
        AppPrivateKey::parse(&bare(PRIVATE)).unwrap();
        AppPrivateKey::parse(&bare(PRIVATE_PKCS1)).unwrap();
        let public = RsaPublicKey::parse(PUBLIC).unwrap();
        let public_bare = RsaPublicKey::parse(&bare(PUBLIC)).unwrap();
        // PKCS#1 v1.5 signatures are deterministic: both encodings of one key sign alike.
        assert_eq!(pkcs8.sign("a=1&b=2"), pkcs1.sign("a=1&b=2"));
        assert!(public.verify("a=1&b=2", &pkcs8.sign("a=1&b=2")));
        assert!(public_bare.verify("a=1&b=2", &pkcs1.sign("a=1&b=2")));
        assert!(!public.verify("a=1&b=3", &pkcs8.sign("a=1&b=2")));
        assert!(
            !RsaPublicKey::parse(OTHER_PUBLIC)
                .unwrap()
                .verify("a=1&b=2", &pkcs8.sign("a=1&b=2"))
        );
        assert_eq!(
            AppPrivateKey::parse("not a key!").unwrap_err(),
            KeyError::NotBase64
        );
        assert_eq!(
            AppPrivateKey::parse("AAAA").unwrap_err(),
            KeyError::NotPrivateKey
        );
        assert_eq!(
            RsaPublicKey::parse("AAAA").unwrap_err(),
            KeyError::NotPublicKey
        );
        assert_eq!(
            RsaPublicKey::parse(PRIVATE).unwrap_err(),
            KeyError::NotPublicKey
        );
    }
}
