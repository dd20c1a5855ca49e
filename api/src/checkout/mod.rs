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

use askama::Template;
use evisa_core::{
    application,
    checkout::{self, BindOutcome, BrowserSecret, CheckoutSession, LinkToken, Locale},
    ids::CheckoutSessionId,
    payment::store as payments,
};
use poem::{
    IntoResponse, Request, Response, Route, handler,
    http::StatusCode,
    web::{Data, Path, Redirect},
};

use crate::state::AppState;
use pages::{Frame, MessagePage, PayPage, State};
use security::CardMode;

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
        if security::browser(req).is_some_and(|b| session.is_browser(&b)) {
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
    match security::browser(req) {
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

/// The page of a visit's current state; `error` is shown in the error summary.
pub(crate) async fn show(
    state: &AppState,
    req: &Request,
    v: &Visit,
    error: Option<(StatusCode, String)>,
) -> Response {
    let application = match application::store::get_for_owner(
        &state.db,
        &state.config.data_keys,
        v.session.applicant_id,
        v.session.application(),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let application = match pay::with_group_fee(state, &v.session, application).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let list =
        match payments::list_for_application(&state.db, v.session.applicant_id, application.id)
            .await
        {
            Ok(l) => l,
            Err(e) => return unavailable(e),
        };
    let nonce = security::nonce();
    let path = page_path(v.session.id);
    let frame = Frame::new(v.locale, nonce.clone(), &path);
    let m = frame.m;
    let return_url = v
        .session
        .return_url
        .as_deref()
        .and_then(|u| state.config.return_url_origins.check(u).ok())
        .map(|u| u.to_string());
    match State::of(&v.session, &application, &list, chrono::Utc::now()) {
        State::Paid { payment } => {
            let mut page = MessagePage::new(frame, m.paid_heading, m.paid_text);
            if let Some(p) = payment {
                page.receipt_code =
                    Some(evisa_core::receipt::code(&state.config.receipt_key, p.id));
                page.receipt_link = Some(format!("{path}/receipt"));
            }
            page.return_url = return_url;
            render(state, StatusCode::OK, &nonce, &page)
        }
        State::Expired => {
            let mut page = MessagePage::new(frame, m.expired_heading, m.expired_text);
            page.return_url = return_url;
            render(state, StatusCode::GONE, &nonce, &page)
        }
        State::NotPayable => {
            let mut page = MessagePage::new(frame, m.not_payable_heading, m.not_payable_text);
            page.return_url = return_url;
            render(state, StatusCode::CONFLICT, &nonce, &page)
        }
        State::Waiting { payment } => {
            let mut page = MessagePage::new(frame, m.waiting_heading, m.waiting_text);
            page.continue_link = pages::cashier_url(payment)
                .map(|u| (u, m.alipay_continue.to_string()))
                .or_else(|| Some((path.clone(), m.refresh.to_string())));
            page.follow = Some(format!("{path}/payments/{}/events", payment.id));
            page.page_url = path;
            render(state, StatusCode::OK, &nonce, &page)
        }
        State::Pay { last_failure } => {
            let Some(fee) = application.fee.as_ref() else {
                return message(state, req, Some(&v.session), StatusCode::CONFLICT, |m| {
                    (m.not_payable_heading, m.not_payable_text)
                });
            };
            let amount = pages::money(fee.amount, v.locale);
            let cny = pages::cny_price(&application).filter(|_| state.alipay.is_some());
            let status = error.as_ref().map_or(StatusCode::OK, |e| e.0);
            let error = error
                .map(|e| e.1)
                .or_else(|| last_failure.map(|p| m.decline(p.failure_code.as_deref()).to_string()));
            let mode = CardMode::of(state);
            let publishable = state.config.stripe.publishable_key.clone();
            let config = serde_json::json!({
                "lang": v.locale.tag(),
                "csrf": v.browser.csrf_token(),
                "card_url": format!("{path}/card"),
                "page_url": path,
                "events_base": format!("{path}/payments/"),
                "reference": application.id.to_string(),
                "amount": amount,
                "amount_minor": fee.amount.amount_minor(),
                "currency": fee.amount.currency().code().to_ascii_lowercase(),
                "expires_at": v.session.expires_at.to_rfc3339(),
                "publishable_key": publishable,
                "tokenizer": match &mode {
                    CardMode::Sandbox(url) => serde_json::Value::from(url.as_str().trim_end_matches('/')),
                    CardMode::StripeJs => serde_json::Value::Null,
                },
                "strings": pages::script_strings(m),
            });
            let page = PayPage {
                lang: frame.lang,
                m,
                nonce: frame.nonce,
                stylesheet: frame.stylesheet,
                script: frame.script,
                languages: frame.languages,
                error,
                reference: application.id.to_string(),
                visa_type: pages::visa_type(m, application.visa_type),
                speed: pages::speed(m, application.processing_speed),
                fee: amount.clone(),
                fee_cny: cny
                    .filter(|c| c.currency() != fee.amount.currency())
                    .map(|c| pages::money(c, v.locale)),
                expires_at: pages::moment(v.session.expires_at, v.locale),
                expires_at_iso: v.session.expires_at.to_rfc3339(),
                card_offered: publishable.is_some(),
                stripe_js: matches!(mode, CardMode::StripeJs),
                config_json: config.to_string(),
                pay_label: pages::with_amount(m.pay_now, &amount),
                alipay_button: cny
                    .map(|c| pages::with_amount(m.alipay_button, &pages::money(c, v.locale))),
                alipay_text: cny
                    .map(|c| pages::with_amount(m.alipay_text, &pages::money(c, v.locale)))
                    .unwrap_or_default(),
                alipay_action: format!("{}/alipay", page_path(v.session.id)),
                alipay_attempt: uuid::Uuid::now_v7().to_string(),
                csrf: v.browser.csrf_token(),
            };
            render(state, status, &nonce, &page)
        }
    }
}
