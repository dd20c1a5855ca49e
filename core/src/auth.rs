//! Passwords (Argon2id) and access tokens (HS256 JWTs with issuer, audience and expiry enforced).

use std::time::{SystemTime, UNIX_EPOCH};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::{config::JwtSettings, ids::UserId, users::Role};

/// Hashes a password with Argon2id (m=19456 KiB, t=2, p=1) and a fresh random salt. CPU-heavy:
/// call it from a blocking thread.
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("Argon2 with default parameters accepts any password")
        .to_string()
}

/// Whether `password` matches `hash`. CPU-heavy: call it from a blocking thread.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a random password, verified against when an email is unknown so that a failed login
/// takes as long whether or not the account exists.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&crate::crypto::DataKeys::generate_entry("decoy")))
}

/// Why a password is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be 12 to 128 characters")]
pub struct WeakPassword;

/// Length is what matters (NIST SP 800-63B): 12 to 128 characters, anything allowed.
pub fn check_password_policy(password: &str) -> Result<(), WeakPassword> {
    let n = password.chars().count();
    if (12..=128).contains(&n) {
        Ok(())
    } else {
        Err(WeakPassword)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
    role: String,
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
    /// The account's token version when issued; a token of an older version is revoked.
    ver: i64,
}

/// Who a request speaks for: the token's account, with its role as stored now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub role: Role,
}

/// What a correctly signed, unexpired token claims; still to be checked against the account
/// ([`crate::users::standing`]), which may have been disabled, demoted or had its tokens revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims {
    pub user_id: UserId,
    pub token_version: i64,
}

impl TokenClaims {
    /// The principal, if the account still stands behind this token.
    pub fn principal(self, standing: Option<crate::users::Standing>) -> Option<Principal> {
        let s = standing?;
        (!s.disabled && s.token_version == self.token_version).then_some(Principal {
            user_id: self.user_id,
            role: s.role,
        })
    }
}

/// An issued access token.
pub struct AccessToken {
    pub token: String,
    pub expires_in: u64,
}

/// Issues and checks access tokens. The algorithm is pinned to HS256.
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    settings: JwtSettings,
}

impl TokenAuthority {
    pub fn new(settings: JwtSettings) -> Self {
        let secret = settings.secret.expose();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            settings,
        }
    }

    pub fn issue(&self, user_id: UserId, role: Role, token_version: i64) -> AccessToken {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let ttl = self.settings.ttl.as_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            role: role.as_str().to_string(),
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            iat: now,
            exp: now + ttl,
            ver: token_version,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail");
        AccessToken {
            token,
            expires_in: ttl,
        }
    }

    /// The claims of a valid token; `None` for anything expired, forged, for another audience
    /// or issuer, or signed with another algorithm.
    pub fn verify(&self, token: &str) -> Option<TokenClaims> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        Some(TokenClaims {
            user_id: data.claims.sub.parse().ok()?,
            token_version: data.claims.ver,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::secret::Secret;

    fn settings(issuer: &str, audience: &str) -> JwtSettings {
        JwtSettings {
            secret: Secret::new(b"0123456789abcdef0123456789abcdef".to_vec()),
            issuer: issuer.into(),
            audience: audience.into(),
            ttl: Duration::from_secs(900),
        }
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_issuer_and_audience() {
        let authority = TokenAuthority::new(settings("evisa-pay", "api"));
        let user = UserId::new();
        let t = authority.issue(user, Role::Officer, 3);
        assert_eq!(t.expires_in, 900);
        let claims = authority.verify(&t.token).unwrap();
        assert_eq!(
            claims,
            TokenClaims {
                user_id: user,
                token_version: 3
            }
        );
        let standing = |role, token_version, disabled| {
            Some(crate::users::Standing {
                role,
                token_version,
                disabled,
            })
        };
        // The role is the account's now, not the token's.
        assert_eq!(
            claims.principal(standing(Role::Applicant, 3, false)),
            Some(Principal {
                user_id: user,
                role: Role::Applicant
            })
        );
        assert_eq!(claims.principal(standing(Role::Officer, 4, false)), None);
        assert_eq!(claims.principal(standing(Role::Officer, 3, true)), None);
        assert_eq!(claims.principal(None), None);
        assert!(
            TokenAuthority::new(settings("other", "api"))
                .verify(&t.token)
                .is_none()
        );
        assert!(
            TokenAuthority::new(settings("evisa-pay", "other"))
                .verify(&t.token)
                .is_none()
        );
        let mut tampered = t.token.clone();
        tampered.pop();
        assert!(authority.verify(&tampered).is_none());
    }

    #[test]
    fn unsigned_and_expired_tokens_are_refused() {
        let authority = TokenAuthority::new(settings("evisa-pay", "api"));
        // alg=none with the same claims.
        let header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
        let claims = base64_url(&format!(
            r#"{{"sub":"{}","role":"admin","iss":"evisa-pay","aud":"api","iat":1,"exp":99999999999}}"#,
            UserId::new()
        ));
        assert!(authority.verify(&format!("{header}.{claims}.")).is_none());

        let expired = Claims {
            sub: UserId::new().to_string(),
            role: "admin".into(),
            iss: "evisa-pay".into(),
            aud: "api".into(),
            iat: 1,
            exp: 2,
            ver: 0,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(authority.verify(&token).is_none());
    }

    fn base64_url(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong horse battery", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(check_password_policy("short").is_err());
        assert!(check_password_policy("twelve chars").is_ok());
    }
}
