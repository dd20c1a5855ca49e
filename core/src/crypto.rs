//! Field encryption for personal data at rest: AES-256-GCM (ring) with a key ring.
//!
//! A sealed value is `key_id_len (1 byte) | key_id | nonce (12 bytes) | ciphertext+tag`. The key id
//! travels with the ciphertext so old data stays readable after a new key becomes current. The
//! associated data binds each value to its row and column, so a ciphertext copied into another
//! row or field does not open.

use std::collections::HashMap;

use base64::Engine;
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyRingError {
    #[error("expected `id:base64key` entries separated by commas, got an entry without `:`")]
    MissingColon,
    #[error("key id `{0}` must be 1 to 32 letters, digits, `-` or `_`")]
    BadId(String),
    #[error("key `{0}` is not valid base64")]
    BadBase64(String),
    #[error("key `{0}` must be 32 bytes (256 bits) after base64 decoding")]
    BadLength(String),
    #[error("key id `{0}` appears twice")]
    Duplicate(String),
    #[error("no keys given")]
    Empty,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed with key `{0}`, which is not in the key ring")]
    UnknownKey(String),
    #[error("sealed value failed authentication (wrong key, row or field, or tampered)")]
    Tampered,
}

/// The field-encryption keys. The first key seals new data; all of them open old data.
pub struct DataKeys {
    current: String,
    keys: HashMap<String, LessSafeKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("current", &self.current)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl DataKeys {
    /// Parses `EVISA_DATA_KEYS`: `id:base64(32 bytes)[,id:base64...]`, current key first.
    pub fn parse(spec: &str) -> Result<Self, KeyRingError> {
        let mut keys = HashMap::new();
        let mut current = None;
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, b64) = entry.split_once(':').ok_or(KeyRingError::MissingColon)?;
            if id.is_empty()
                || id.len() > 32
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(KeyRingError::BadId(id.to_string()));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| KeyRingError::BadBase64(id.to_string()))?;
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| KeyRingError::BadLength(id.to_string()))?;
            if keys
                .insert(id.to_string(), LessSafeKey::new(unbound))
                .is_some()
            {
                return Err(KeyRingError::Duplicate(id.to_string()));
            }
            current.get_or_insert_with(|| id.to_string());
        }
        Ok(Self {
            current: current.ok_or(KeyRingError::Empty)?,
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// A fresh random key in `EVISA_DATA_KEYS` form, for `evisa keys generate`.
    pub fn generate_entry(id: &str) -> String {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the system random source works");
        format!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }

    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Encrypts `plaintext` with the current key, bound to `context` (e.g. `applications.full_name:<id>`).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let key = &self.keys[&self.current];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random source works");
        let mut buf = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buf,
        )
        .expect("AES-GCM sealing cannot fail for in-memory sizes");
        let id = self.current.as_bytes();
        let mut out = Vec::with_capacity(1 + id.len() + NONCE_LEN + buf.len());
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out
    }

    /// Decrypts a value sealed by [`DataKeys::seal`] under the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&id_len, rest) = sealed.split_first().ok_or(OpenError::Malformed)?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let id = std::str::from_utf8(id).map_err(|_| OpenError::Malformed)?;
        let key = self
            .keys
            .get(id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_string()))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let mut buf = ciphertext.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| OpenError::Tampered)?;
        Ok(plain.to_vec())
    }

    /// The id of the key that sealed `sealed`, to find values that need re-sealing after rotation.
    pub fn key_id_of(sealed: &[u8]) -> Option<&str> {
        let (&len, rest) = sealed.split_first()?;
        std::str::from_utf8(rest.get(..usize::from(len))?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> DataKeys {
        DataKeys::parse(spec).unwrap()
    }

    #[test]
    fn seal_and_open_round_trip_with_rotation() {
        let old = DataKeys::generate_entry("k1");
        let new = DataKeys::generate_entry("k2");
        let before = ring(&old);
        let sealed = before.seal("applications.full_name:1", "Ann Lee".as_bytes());
        assert_eq!(DataKeys::key_id_of(&sealed), Some("k1"));

        let after = ring(&format!("{new},{old}"));
        assert_eq!(after.current_key_id(), "k2");
        assert_eq!(
            after.open("applications.full_name:1", &sealed).unwrap(),
            b"Ann Lee"
        );
        let resealed = after.seal("applications.full_name:1", b"Ann Lee");
        assert_eq!(DataKeys::key_id_of(&resealed), Some("k2"));
    }

    #[test]
    fn context_binds_the_value_to_its_row_and_field() {
        let keys = ring(&DataKeys::generate_entry("k1"));
        let sealed = keys.seal("applications.full_name:1", b"Ann Lee");
        assert_eq!(
            keys.open("applications.full_name:2", &sealed),
            Err(OpenError::Tampered)
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            keys.open("applications.full_name:1", &flipped),
            Err(OpenError::Tampered)
        );
        let other = ring(&DataKeys::generate_entry("k9"));
        assert_eq!(
            other.open("applications.full_name:1", &sealed),
            Err(OpenError::UnknownKey("k1".into()))
        );
        assert_eq!(keys.open("x", &[3, b'a']), Err(OpenError::Malformed));
    }

    #[test]
    fn bad_key_specs_are_explained() {
        assert_eq!(DataKeys::parse("").unwrap_err(), KeyRingError::Empty);
        assert_eq!(
            DataKeys::parse("abc").unwrap_err(),
            KeyRingError::MissingColon
        );
        assert_eq!(
            DataKeys::parse("k1:!!!").unwrap_err(),
            KeyRingError::BadBase64("k1".into())
        );
        assert_eq!(
            DataKeys::parse("k1:AAAA").unwrap_err(),
            KeyRingError::BadLength("k1".into())
        );
        let k = DataKeys::generate_entry("k1");
        assert_eq!(
            DataKeys::parse(&format!("{k},{k}")).unwrap_err(),
            KeyRingError::Duplicate("k1".into())
        );
        assert!(!format!("{:?}", ring(&k)).contains(k.split(':').nth(1).unwrap()));
    }
}
