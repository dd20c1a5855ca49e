//! The checkout page's protections: a Content-Security-Policy with a fresh nonce per response,
//! no caching, the cookie that binds a session to one browser, and the CSRF check.

use base64::{Engine, engine::general_purpose::STANDARD};
use evisa_core::{checkout::BrowserSecret, ids::CheckoutSessionId};
use poem::{
    Request, Response,
    http::{StatusCode, header},
};
use ring::rand::{SecureRandom, SystemRandom};

use crate::state::AppState;

/// The cookies that bind a session to the browser that first opened its link are named
/// `evisa_checkout_<session id>`, on the whole checkout path, so that a browser may hold several
/// sessions and is recognised both on the session's pages and when it opens the link again.
pub const COOKIE_PREFIX: &str = "evisa_checkout_";
/// The language the applicant chose with the page's switch.
pub const LANG_COOKIE: &str = "evisa_checkout_lang";

/// A fresh nonce for one response's scripts (128 bits).
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    STANDARD.encode(bytes)
}

/// How the page's script reaches the card tokeniser.
pub enum CardMode {
    /// Stripe itself: Stripe.js from `https://js.stripe.com` and its Payment Element.
    StripeJs,
    /// A Stripe sandbox at this origin (test mode): the page's script tokenises against it the
    /// way Stripe.js talks to Stripe.
    Sandbox(url::Url),
}

impl CardMode {
    pub fn of(state: &AppState) -> CardMode {
        if state.config.stripe.api_base.is_some() {
            CardMode::Sandbox(state.config.sandbox_public_url.clone())
        } else {
            CardMode::StripeJs
        }
    }

    /// The origin the browser talks to for cards.
    fn origins(&self) -> (String, String) {
        match self {
            CardMode::StripeJs => (
                "https://api.stripe.com https://m.stripe.network".into(),
                "https://js.stripe.com https://hooks.stripe.com".into(),
            ),
            CardMode::Sandbox(url) => {
                let origin = url.origin().ascii_serialization();
                (origin.clone(), origin)
            }
        }
    }
}

/// The policy of a page: scripts only with this response's nonce (and Stripe.js in
/// production), styles and images from us, connections to us and the card tokeniser, frames
/// only from the card gateway (3-D Secure), forms to us and to Alipay's gateway (the Alipay
/// button's answer redirects there), never framed.
pub fn content_security_policy(state: &AppState, nonce: &str) -> String {
    let mode = CardMode::of(state);
    let (connect, frame) = mode.origins();
    let script = match mode {
        CardMode::StripeJs => format!("'nonce-{nonce}' https://js.stripe.com"),
        CardMode::Sandbox(_) => format!("'nonce-{nonce}'"),
    };
    let alipay = state
        .config
        .alipay
        .gateway_url
        .as_ref()
        .map(|u| format!(" {}", u.origin().ascii_serialization()))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src {script}; style-src 'self'; img-src 'self'; \
         connect-src 'self' {connect}; frame-src {frame}; form-action 'self'{alipay}; \
         base-uri 'none'; frame-ancestors 'none'"
    )
}

/// An HTML page: its own policy, never cached, never sent to another site as a referrer.
pub fn page(state: &AppState, status: StatusCode, nonce: &str, html: String) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .header(
            "content-security-policy",
            content_security_policy(state, nonce),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .header("referrer-policy", "no-referrer")
        .body(html)
}

/// The name of the cookie binding `session`.
pub fn binding_cookie_name(session: CheckoutSessionId) -> String {
    format!("{COOKIE_PREFIX}{}", session.as_uuid().simple())
}

/// The `Set-Cookie` value binding `session` to this browser until it expires: HttpOnly (no
/// script reads it), Secure (never over plain http, localhost apart), SameSite=Lax (sent when
/// Alipay's cashier or the bank's page sends the browser back, never with another site's POST).
pub fn binding_cookie(session: CheckoutSessionId, secret: &BrowserSecret, max_age: i64) -> String {
    format!(
        "{}={}; Path=/checkout; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
        binding_cookie_name(session),
        secret.encode(),
        max_age.max(0)
    )
}

/// The language cookie of the switch, for a year, on the whole checkout.
pub fn language_cookie(tag: &str) -> String {
    format!("{LANG_COOKIE}={tag}; Path=/checkout; Max-Age=31536000; Secure; SameSite=Lax")
}

/// A cookie of the request.
pub fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The browser's binding cookie for `session`, when it sent one that can be ours.
pub fn browser(req: &Request, session: CheckoutSessionId) -> Option<BrowserSecret> {
    cookie(req, &binding_cookie_name(session)).and_then(BrowserSecret::decode)
}
