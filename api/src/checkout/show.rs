//! What a session's page shows in each state of its application and payments.

use evisa_core::{
    application::{self, Application},
    ids::ApplicationId,
    money::Money,
    payment::{NextAction, Payment, Provider, store as payments},
};
use poem::{Request, Response, http::StatusCode};

use super::{
    Visit, message, page_path,
    pages::{self, Frame, MessagePage, PayPage, State},
    render,
    security::{self, CardMode},
    unavailable,
};
use crate::state::AppState;

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
    let (application, members) =
        match super::pay::with_group_fee(state, &v.session, application).await {
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
        // A card payment waiting for the bank's check (the page was reloaded, or the browser
        // came back): the pay page again, whose script reopens the check.
        State::Waiting { payment } if awaits_card_authentication(payment) => pay_page(
            state,
            req,
            v,
            frame,
            (&application, &members),
            None,
            Some(payment),
        ),
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
            let error = error.or_else(|| {
                last_failure.map(|p| (StatusCode::OK, m.decline(p.failure_code.as_deref()).into()))
            });
            pay_page(state, req, v, frame, (&application, &members), error, None)
        }
    }
}

/// A Stripe payment whose bank asked for 3-D Secure and has not answered yet.
fn awaits_card_authentication(payment: &Payment) -> bool {
    payment.provider == Provider::Stripe
        && matches!(payment.next_action, Some(NextAction::UseStripeSdk { .. }))
}

/// The page that takes a payment; `resume` is a card payment whose 3-D Secure check the script
/// reopens (and follows) instead of offering the form.
fn pay_page(
    state: &AppState,
    req: &Request,
    v: &Visit,
    frame: Frame,
    (application, members): (&Application, &[(ApplicationId, Money)]),
    error: Option<(StatusCode, String)>,
    resume: Option<&Payment>,
) -> Response {
    let Some(fee) = application.fee.as_ref() else {
        return message(state, req, Some(&v.session), StatusCode::CONFLICT, |m| {
            (m.not_payable_heading, m.not_payable_text)
        });
    };
    let m = frame.m;
    let path = page_path(v.session.id);
    let nonce = frame.nonce.clone();
    let amount = pages::money(fee.amount, v.locale);
    let cny = pages::cny_price(application).filter(|_| state.alipay.is_some());
    let (status, error) = match error {
        Some((status, text)) => (status, Some(text)),
        None => (StatusCode::OK, None),
    };
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
        "resume": resume.map(|p| p.id.to_string()),
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
        members: members
            .iter()
            .map(|(id, fee)| pages::Member {
                reference: id.to_string(),
                fee: pages::money(*fee, v.locale),
            })
            .collect(),
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
        // While a card payment is being authenticated, nothing else is offered.
        alipay_button: cny
            .filter(|_| resume.is_none())
            .map(|c| pages::with_amount(m.alipay_button, &pages::money(c, v.locale))),
        alipay_text: cny
            .map(|c| pages::with_amount(m.alipay_text, &pages::money(c, v.locale)))
            .unwrap_or_default(),
        alipay_action: format!("{path}/alipay"),
        alipay_attempt: uuid::Uuid::now_v7().to_string(),
        csrf: v.browser.csrf_token(),
    };
    render(state, status, &nonce, &page)
}
