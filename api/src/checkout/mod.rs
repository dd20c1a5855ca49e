//! The hosted checkout page (`/checkout/...`): server-rendered pages in English and Simplified
//! Chinese, one stylesheet and one small script. It pays through the same use cases as the API
//! (`routes::payments::start_payment`, i.e. `payment::start`) and follows the payment's event
//! stream; the card number never reaches us (the browser tokenises it with the gateway).
//!
//! `GET /checkout/{token}` is the single-use link: its first visit binds the session to the
//! browser with a cookie and sends it on to `GET /checkout/s/{id}`, the page itself; any other
//! browser is told the link was used.

mod assets;
mod format;
mod messages;
mod pages;
mod pay;
mod security;
mod show;

use askama::Template;
use evisa_core::{
    checkout::{self, BindOutcome, BrowserSecret, CheckoutSession, LinkToken, Locale},
    ids::CheckoutSessionId,
};
use poem::{
    IntoResponse, Request, Response, Route, handler,
    http::StatusCode,
    web::{Data, Path, Redirect},
};

use crate::state::AppState;
use pages::{Frame, MessagePage};
pub(crate) use show::show;

/// Routes outside the OpenAPI document, for `Allow` on a 405.
pub const ROUTES: &[(&str, &[poem::http::Method])] = {
    use poem::http::Method;
    &[
        ("/checkout/{token}", &[Method::GET]),
        ("/checkout/s/{id}", &[Method::GET]),
        ("/checkout/s/{id}/card", &[Method::POST]),
        ("/checkout/s/{id}/alipay", &[Method::POST]),
        ("/checkout/s/{id}/receipt", &[Method::GET]),
        ("/checkout/s/{id}/payments/{payment}/events", &[Method::GET]),
        ("/checkout/assets/{name}", &[Method::GET]),
    ]
};

/// Everything under `/checkout`.
pub fn routes() -> Route {
    Route::new()
        .at("/assets/:name", poem::get(assets::serve))
        .at("/s/:id", poem::get(session_page))
        .at("/s/:id/card", poem::post(pay::card))
        .at("/s/:id/alipay", poem::post(pay::alipay))
        .at("/s/:id/receipt", poem::get(pay::receipt))
        .at("/s/:id/payments/:payment/events", poem::get(pay::events))
        .at("/:token", poem::get(open_link))
}

/// The page's language: the switch (`?lang=`, then its cookie), then what the portal asked
/// for, then the browser's `Accept-Language`, then English.
pub(crate) fn locale(req: &Request, session: Option<&CheckoutSession>) -> Locale {
    let query = req.uri().query().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "lang")
        .and_then(|(_, v)| Locale::parse(&v))
        .or_else(|| security::cookie(req, security::LANG_COOKIE).and_then(Locale::parse))
        .or_else(|| session.and_then(|s| s.locale))
        .or_else(|| {
            req.headers()
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .and_then(Locale::negotiate)
        })
        .unwrap_or(Locale::En)
}

/// The path of a session's page.
pub(crate) fn page_path(id: CheckoutSessionId) -> String {
    format!("/checkout/s/{id}")
}

/// A page that says one thing, with its status.
pub(crate) fn message(
    state: &AppState,
    req: &Request,
    session: Option<&CheckoutSession>,
    status: StatusCode,
    pick: impl FnOnce(&messages::Messages) -> (&'static str, &'static str),
) -> Response {
    let locale = locale(req, session);
    let nonce = security::nonce();
    let frame = Frame::new(locale, nonce.clone(), req.uri().path());
    let (heading, text) = pick(frame.m);
    render(
        state,
        status,
        &nonce,
        &MessagePage::new(frame, heading, text),
    )
}

pub(crate) fn render(
    state: &AppState,
    status: StatusCode,
    nonce: &str,
    page: &impl Template,
) -> Response {
    match page.render() {
        Ok(html) => security::page(state, status, nonce, html),
        Err(e) => {
            tracing::error!(error = %e, "checkout page not rendered");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "checkout storage unavailable");
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header("retry-after", "5")
        .content_type("text/plain; charset=utf-8")
        .body("The service is unavailable for a moment. Try again shortly.")
}

/// `GET /checkout/{token}`: the link's first visit binds the session to this browser.
#[handler]
async fn open_link(req: &Request, Path(token): Path<String>, state: Data<&AppState>) -> Response {
    let state = *state;
    let Some(token) = LinkToken::parse(&token) else {
        return message(state, req, None, StatusCode::NOT_FOUND, |m| {
            (m.not_found_heading, m.not_found_text)
        });
    };
    let session = match checkout::find_by_token(&state.db, &token).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return message(state, req, None, StatusCode::NOT_FOUND, |m| {
                (m.not_found_heading, m.not_found_text)
            });
        }
        Err(e) => return unavailable(e),
    };
    let onwards = match req.uri().query() {
        Some(q) if q.starts_with("lang=") => format!("{}?{q}", page_path(session.id)),
        _ => page_path(session.id),
    };
    if session.bound {
        // The same browser coming back (a reload of the link) goes on to its page.
        if security::browser(req, session.id).is_some_and(|b| session.is_browser(&b)) {
            return Redirect::see_other(onwards).into_response();
        }
        tracing::info!(checkout_session = %session.id, "used checkout link refused");
        return message(state, req, Some(&session), StatusCode::FORBIDDEN, |m| {
            (m.used_heading, m.used_text)
        });
    }
    if session.expired(chrono::Utc::now()) {
        return message(state, req, Some(&session), StatusCode::GONE, |m| {
            (m.expired_heading, m.expired_text)
        });
    }
    let secret = BrowserSecret::generate();
    match checkout::bind(&state.db, session.id, &secret).await {
        Ok(BindOutcome::Bound) => {
            let max_age = (session.expires_at - chrono::Utc::now()).num_seconds();
            let mut resp = Redirect::see_other(onwards).into_response();
            resp.headers_mut().append(
                "set-cookie",
                security::binding_cookie(session.id, &secret, max_age)
                    .parse()
                    .expect("a cookie is a header value"),
            );
            resp.headers_mut()
                .insert("cache-control", "no-store".parse().expect("header value"));
            resp
        }
        Ok(BindOutcome::AlreadyBound) => {
            message(state, req, Some(&session), StatusCode::FORBIDDEN, |m| {
                (m.used_heading, m.used_text)
            })
        }
        Err(e) => unavailable(e),
    }
}

/// A session visited by the browser it is bound to.
pub(crate) struct Visit {
    pub session: CheckoutSession,
    pub browser: BrowserSecret,
    pub locale: Locale,
}

/// The session `id` if this request comes from its browser; otherwise the page to answer.
pub(crate) async fn visit(state: &AppState, req: &Request, id: &str) -> Result<Visit, Response> {
    let not_found = || {
        message(state, req, None, StatusCode::NOT_FOUND, |m| {
            (m.not_found_heading, m.not_found_text)
        })
    };
    let Ok(id) = id.parse::<CheckoutSessionId>() else {
        return Err(not_found());
    };
    let session = match checkout::get(&state.db, id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(unavailable(e)),
    };
    match security::browser(req, session.id) {
        Some(browser) if session.is_browser(&browser) => Ok(Visit {
            locale: locale(req, Some(&session)),
            session,
            browser,
        }),
        _ => Err(message(
            state,
            req,
            Some(&session),
            StatusCode::FORBIDDEN,
            |m| (m.used_heading, m.used_text),
        )),
    }
}

/// `GET /checkout/s/{id}`: the page, in whatever state the payment is.
#[handler]
async fn session_page(req: &Request, Path(id): Path<String>, state: Data<&AppState>) -> Response {
    let state = *state;
    let v = match visit(state, req, &id).await {
        Ok(v) => v,
        Err(page) => return page,
    };
    let mut resp = show(state, req, &v, None).await;
    if let Some(tag) = url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "lang")
        .and_then(|(_, v)| Locale::parse(&v))
        .map(Locale::tag)
        && let Ok(cookie) = security::language_cookie(tag).parse()
    {
        resp.headers_mut().append("set-cookie", cookie);
    }
    resp
}
