//! The hosted checkout page's sessions: a single-use link the portal sends the applicant to,
//! bound to the first browser that opens it. The page pays through the same use cases as the
//! API (`payment::start`); this module only knows who may look at which applications.
//!
//! The link's token is derived from the session id with a key (so a retried `POST .../checkout`
//! can answer the same link without the token ever being stored) and only its SHA-256 is kept;
//! the browser's cookie is random and only its SHA-256 is kept too. The CSRF token of the page's
//! forms is a hash of the cookie: it proves the request came from a page that browser was given.

mod store;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ring::{
    digest,
    rand::{SecureRandom, SystemRandom},
};

pub use store::{BindOutcome, CreateSessionError, bind, create, find_by_token, get};

use crate::{
    ids::{ApplicationId, CheckoutSessionId, UserId},
    secret::Secret,
};

/// A language the checkout page speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Locale {
    En,
    ZhCn,
}

impl Locale {
    /// Every locale, in the order the page's language switch lists them.
    pub const ALL: [Locale; 2] = [Locale::En, Locale::ZhCn];

    /// The BCP 47 tag, as in the `lang` attribute.
    pub fn tag(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::ZhCn => "zh-CN",
        }
    }

    /// A supported locale from a BCP 47 tag: `zh`, `zh-CN`, `zh-Hans`, `zh-Hans-CN` mean
    /// Simplified Chinese, `en` and `en-*` English; anything else is `None`.
    pub fn parse(tag: &str) -> Option<Locale> {
        let lower = tag.trim().to_ascii_lowercase();
        let mut parts = lower.split(['-', '_']);
        match parts.next()? {
            "en" => Some(Locale::En),
            "zh" => {
                let rest: Vec<&str> = parts.collect();
                // Traditional Chinese (zh-TW, zh-HK, zh-Hant) is not offered; English is a better
                // fallback than the other script.
                if rest
                    .iter()
                    .any(|p| matches!(*p, "hant" | "tw" | "hk" | "mo"))
                {
                    None
                } else {
                    Some(Locale::ZhCn)
                }
            }
            _ => None,
        }
    }

    /// The first supported language of an `Accept-Language` header, by its q-values.
    pub fn negotiate(accept_language: &str) -> Option<Locale> {
        let mut offers: Vec<(f32, usize, Locale)> = accept_language
            .split(',')
            .enumerate()
            .filter_map(|(i, item)| {
                let mut parts = item.split(';');
                let tag = parts.next()?;
                let q = parts
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
                (q > 0.0).then_some(())?;
                Some((q, i, Locale::parse(tag)?))
            })
            .collect();
        offers.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        offers.first().map(|o| o.2)
    }
}

/// A checkout session as stored.
#[derive(Clone)]
pub struct CheckoutSession {
    pub id: CheckoutSessionId,
    pub applicant_id: UserId,
    /// The applications it pays: one, or a group paid together (in id order).
    pub application_ids: Vec<ApplicationId>,
    /// Where the page sends the applicant when they are done: checked against the allowed
    /// origins when it was given, and again before any redirect.
    pub return_url: Option<String>,
    /// The language the portal asked for; `None`: the browser's `Accept-Language` decides.
    pub locale: Option<Locale>,
    pub expires_at: DateTime<Utc>,
    pub bound: bool,
    browser_hash: Option<Vec<u8>>,
}

impl std::fmt::Debug for CheckoutSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckoutSession")
            .field("id", &self.id)
            .field("applicant_id", &self.applicant_id)
            .field("application_ids", &self.application_ids)
            .field("bound", &self.bound)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl CheckoutSession {
    /// Whether the session's time is up.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// Whether `cookie` is the browser this session was bound to.
    pub fn is_browser(&self, cookie: &BrowserSecret) -> bool {
        self.browser_hash
            .as_deref()
            .is_some_and(|stored| same_bytes(stored, &sha256(cookie.0.expose())))
    }

    /// The first application the page pays (the only one, unless it pays a group).
    pub fn application(&self) -> ApplicationId {
        self.application_ids[0]
    }
}

/// The secret part of a checkout link (`/checkout/{token}`).
pub struct LinkToken(Secret<String>);

impl LinkToken {
    /// The token of `session`'s link. Derived, never stored: HMAC-SHA256 under a key derived
    /// from the service's receipt key (domain-separated from receipts' codes).
    pub fn of(key: &Secret<Vec<u8>>, session: CheckoutSessionId) -> LinkToken {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.expose());
        let tag = ring::hmac::sign(&key, format!("checkout-link:{session}").as_bytes());
        LinkToken(Secret::new(URL_SAFE_NO_PAD.encode(tag.as_ref())))
    }

    /// A token as it came in a URL; `None` when it cannot be one of ours.
    pub fn parse(raw: &str) -> Option<LinkToken> {
        (raw.len() == 43
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| LinkToken(Secret::new(raw.to_string())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    fn hash(&self) -> Vec<u8> {
        sha256(self.0.expose().as_bytes())
    }
}

/// The value of the cookie that binds a session to one browser.
pub struct BrowserSecret(Secret<Vec<u8>>);

impl BrowserSecret {
    /// A fresh, random one (256 bits).
    pub fn generate() -> BrowserSecret {
        let mut bytes = vec![0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random source works");
        BrowserSecret(Secret::new(bytes))
    }

    /// The cookie's text.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.expose())
    }

    /// A cookie's text; `None` when it cannot be one of ours.
    pub fn decode(text: &str) -> Option<BrowserSecret> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        (bytes.len() == 32).then(|| BrowserSecret(Secret::new(bytes)))
    }

    /// The CSRF token of the pages this browser is given: a hash of its cookie, which a page on
    /// another site can neither read nor compute.
    pub fn csrf_token(&self) -> String {
        let mut input = b"checkout-csrf:".to_vec();
        input.extend_from_slice(self.0.expose());
        URL_SAFE_NO_PAD.encode(sha256(&input))
    }

    /// Whether `presented` is this browser's CSRF token (in constant time).
    pub fn accepts_csrf(&self, presented: &str) -> bool {
        same_bytes(self.csrf_token().as_bytes(), presented.as_bytes())
    }

    fn hash(&self) -> Vec<u8> {
        sha256(self.0.expose())
    }
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, bytes).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_are_parsed_and_negotiated() {
        assert_eq!(Locale::parse("zh-CN"), Some(Locale::ZhCn));
        assert_eq!(Locale::parse("zh-Hans-CN"), Some(Locale::ZhCn));
        assert_eq!(Locale::parse("zh_cn"), Some(Locale::ZhCn));
        assert_eq!(Locale::parse("zh-TW"), None);
        assert_eq!(Locale::parse("en-GB"), Some(Locale::En));
        assert_eq!(Locale::parse("pt-PT"), None);
        assert_eq!(
            Locale::negotiate("pt-PT,pt;q=0.9,zh-CN;q=0.8,en;q=0.7"),
            Some(Locale::ZhCn)
        );
        assert_eq!(Locale::negotiate("en;q=0.5, zh;q=0.9"), Some(Locale::ZhCn));
        assert_eq!(Locale::negotiate("zh;q=0, en"), Some(Locale::En));
        assert_eq!(Locale::negotiate("fr"), None);
    }

    #[test]
    fn link_tokens_are_derived_per_session_and_keyed() {
        let key = Secret::new(vec![7u8; 32]);
        let other = Secret::new(vec![8u8; 32]);
        let (a, b) = (CheckoutSessionId::new(), CheckoutSessionId::new());
        let token = LinkToken::of(&key, a);
        assert_eq!(token.expose(), LinkToken::of(&key, a).expose());
        assert_ne!(token.expose(), LinkToken::of(&key, b).expose());
        assert_ne!(token.expose(), LinkToken::of(&other, a).expose());
        assert!(LinkToken::parse(token.expose()).is_some());
        assert!(LinkToken::parse("short").is_none());
        assert!(LinkToken::parse(&"a".repeat(42).replace('a', "<")).is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_one_browser() {
        let (a, b) = (BrowserSecret::generate(), BrowserSecret::generate());
        assert!(a.accepts_csrf(&a.csrf_token()));
        assert!(!a.accepts_csrf(&b.csrf_token()));
        assert!(!a.accepts_csrf(""));
        let again = BrowserSecret::decode(&a.encode()).unwrap();
        assert!(again.accepts_csrf(&a.csrf_token()));
        assert!(BrowserSecret::decode("not base64!").is_none());
    }
}
