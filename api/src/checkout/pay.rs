//! What the checkout page does: start a card payment (the script sends the gateway's `pm_...`
//! token, never a card number), start an Alipay payment (a plain form: it works without
//! JavaScript), follow a payment's event stream, and show the receipt. Every POST carries the
//! page's CSRF token and an idempotency key per attempt.

use evisa_core::{
    gateway::alipay::Channel,
    ids::PaymentId,
    payment::{NextAction, Payment, PaymentStatus, store as payments},
    receipt as receipts,
};
use futures_util::StreamExt;
use poem::{
    IntoResponse, Request, Response, handler,
    http::StatusCode,
    web::{
        Data, Form, Path, Redirect,
        sse::{Event, SSE},
    },
};

use super::{Visit, messages, pages, show, visit};
use crate::{
    idempotent,
    problem::ApiError,
    routes::payments::{
        Method, PaymentView, accepted, admit_attempt, follow, start_payment,
        wire::is_payment_method_id,
    },
    state::AppState,
};

/// The answer to a refused POST of the script: problem+json, as the API answers.
fn problem(e: ApiError) -> Response {
    e.into_response()
}

fn csrf_refused() -> ApiError {
    ApiError::forbidden(
        "the request did not come from this checkout page (CSRF token missing or wrong)",
    )
}

/// The card request of the page's script.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CardRequest {
    payment_method: String,
}

/// `POST /checkout/s/{id}/card` (JSON, `X-CSRF-Token`, `Idempotency-Key`): pay by card with a
/// payment method the browser made at the gateway. 202 with the payment.
#[handler]
pub async fn card(
    req: &Request,
    Path(id): Path<String>,
    state: Data<&AppState>,
    body: poem::Body,
) -> Response {
    let state = *state;
    let v = match visit(state, req, &id).await {
        Ok(v) => v,
        Err(_) => {
            return problem(ApiError::forbidden(
                "this checkout session is not open in this browser",
            ));
        }
    };
    let csrf = req
        .headers()
        .get("x-csrf-token")
        .and_then(|h| h.to_str().ok());
    if !csrf.is_some_and(|t| v.browser.accepts_csrf(t)) {
        return problem(csrf_refused());
    }
    let Some(key) = req
        .headers()
        .get("idempotency-key")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
    else {
        return problem(ApiError::bad_param(
            "Idempotency-Key",
            "is required: one key per payment attempt",
        ));
    };
    let bytes = match body.into_bytes_limit(4096).await {
        Ok(b) => b,
        Err(_) => return problem(ApiError::bad_request("the body is too large", vec![])),
    };
    let raw: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return problem(ApiError::bad_request(
                format!("the body is not JSON: {e}"),
                vec![],
            ));
        }
    };
    let request: CardRequest = match serde_json::from_value(raw.clone()) {
        Ok(r) => r,
        Err(e) => {
            return problem(ApiError::invalid(vec![
                crate::routes::payments::field_problem("payment_method", &e.to_string()),
            ]));
        }
    };
    if !is_payment_method_id(&request.payment_method) {
        return problem(ApiError::invalid(vec![
            crate::routes::payments::field_problem(
                "payment_method",
                "must be a Stripe PaymentMethod id (pm_...)",
            ),
        ]));
    }
    if let Err(e) = admit_attempt(
        state,
        req,
        v.session.applicant_id,
        &v.session.application_ids,
    )
    .await
    {
        return problem(e);
    }
    let path = format!("/checkout/s/{}/card", v.session.id);
    let answer = idempotent::once(
        &state.db,
        v.session.applicant_id,
        Some(&key),
        &path,
        &raw,
        202,
        async |tx| {
            let method = Method::Card {
                payment_method: request.payment_method,
            };
            let p = start_payment(
                state,
                tx,
                v.session.applicant_id,
                &v.session.application_ids,
                method,
            )
            .await?;
            Ok(PaymentView::from(p))
        },
    )
    .await;
    match answer {
        Ok(view) => {
            accepted(evisa_core::payment::Provider::Stripe);
            tracing::info!(payment_id = %view.id, checkout_session = %v.session.id, "checkout card payment accepted");
            Response::builder()
                .status(StatusCode::ACCEPTED)
                .content_type("application/json")
                .header("cache-control", "no-store")
                .body(serde_json::json!({"id": view.id}).to_string())
        }
        Err(e) => problem(e),
    }
}

/// The Alipay form.
#[derive(serde::Deserialize)]
pub struct AlipayForm {
    csrf_token: String,
    attempt: String,
}

/// Phones get Alipay's mobile cashier (`wap.pay`), everything else the desktop one.
fn channel_for(req: &Request) -> Channel {
    let ua = req
        .headers()
        .get("user-agent")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if ["Mobile", "Android", "iPhone", "iPad"]
        .iter()
        .any(|w| ua.contains(w))
    {
        Channel::Wap
    } else {
        Channel::Page
    }
}

/// `POST /checkout/s/{id}/alipay` (a form): start an Alipay payment and go to the cashier.
/// The form's `attempt` is its idempotency key, so a second press goes to the same trade.
#[handler]
pub async fn alipay(
    req: &Request,
    Path(id): Path<String>,
    state: Data<&AppState>,
    form: Option<Form<AlipayForm>>,
) -> Response {
    let state = *state;
    let v = match visit(state, req, &id).await {
        Ok(v) => v,
        Err(page) => return page,
    };
    let Some(Form(form)) = form.filter(|f| v.browser.accepts_csrf(&f.csrf_token)) else {
        let m = messages::of(v.locale);
        return show(
            state,
            req,
            &v,
            Some((StatusCode::FORBIDDEN, m.error_form.into())),
        )
        .await;
    };
    let m = messages::of(v.locale);
    if let Err(e) = admit_attempt(
        state,
        req,
        v.session.applicant_id,
        &v.session.application_ids,
    )
    .await
    {
        return show(
            state,
            req,
            &v,
            Some((e.status(), m.too_many_attempts.into())),
        )
        .await;
    }
    let back = match state
        .config
        .public_base_url
        .join(super::page_path(v.session.id).trim_start_matches('/'))
    {
        Ok(u) => u,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let channel = channel_for(req);
    let path = format!("/checkout/s/{}/alipay", v.session.id);
    let raw = serde_json::json!({ "channel": format!("{channel:?}") });
    let answer = idempotent::once(
        &state.db,
        v.session.applicant_id,
        Some(&form.attempt),
        &path,
        &raw,
        202,
        async |tx| {
            let method = Method::Alipay {
                channel,
                return_url: Some(back),
            };
            let p = start_payment(
                state,
                tx,
                v.session.applicant_id,
                &v.session.application_ids,
                method,
            )
            .await?;
            Ok(PaymentView::from(p))
        },
    )
    .await;
    match answer {
        Ok(view) => {
            accepted(evisa_core::payment::Provider::Alipay);
            let cashier = payments::get(&state.db, PaymentId::from_uuid(view.id))
                .await
                .ok()
                .flatten()
                .as_ref()
                .and_then(pages::cashier_url);
            match cashier {
                Some(url) => Redirect::see_other(url).into_response(),
                None => Redirect::see_other(super::page_path(v.session.id)).into_response(),
            }
        }
        Err(e) => {
            let text = if e.status() == StatusCode::CONFLICT {
                m.error_in_progress
            } else if e.status() == StatusCode::TOO_MANY_REQUESTS {
                m.too_many_attempts
            } else {
                m.error_network
            };
            show(state, req, &v, Some((e.status(), text.into()))).await
        }
    }
}

/// What the page's script is told of each status change.
fn event_of(p: &Payment, m: &messages::Messages) -> Event {
    let client_secret = match &p.next_action {
        Some(NextAction::UseStripeSdk { client_secret }) => Some(client_secret.clone()),
        _ => None,
    };
    let body = serde_json::json!({
        "id": p.id.to_string(),
        "status": p.status.as_str(),
        "failure_code": p.failure_code,
        "message": (p.status == PaymentStatus::Failed).then(|| m.decline(p.failure_code.as_deref())),
        "client_secret": client_secret,
        "final": p.status.is_terminal(),
    });
    Event::message(body.to_string()).event_type("payment")
}

/// `GET /checkout/s/{id}/payments/{payment}/events`: the payment's event stream, for the page.
#[handler]
pub async fn events(
    req: &Request,
    Path((id, payment)): Path<(String, String)>,
    state: Data<&AppState>,
) -> Response {
    let state = *state;
    let v: Visit = match visit(state, req, &id).await {
        Ok(v) => v,
        Err(page) => return page,
    };
    let Ok(payment) = payment.parse::<PaymentId>() else {
        return ApiError::not_found("payment").into_response();
    };
    // Only a payment of this session's applications.
    match payments::get_for_owner(&state.db, v.session.applicant_id, payment).await {
        Ok(Some(p)) if v.session.application_ids.contains(&p.application_id) => {}
        Ok(_) => return ApiError::not_found("payment").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    }
    let m = messages::of(v.locale);
    match follow(state, v.session.applicant_id, payment).await {
        Ok(stream) => SSE::new(stream.map(move |p| event_of(&p, m)))
            .keep_alive(std::time::Duration::from_secs(15))
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /checkout/s/{id}/receipt`: the receipt of the session's paid application.
#[handler]
pub async fn receipt(req: &Request, Path(id): Path<String>, state: Data<&AppState>) -> Response {
    let state = *state;
    let v = match visit(state, req, &id).await {
        Ok(v) => v,
        Err(page) => return page,
    };
    let list = match payments::list_for_application(
        &state.db,
        v.session.applicant_id,
        v.session.application(),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(paid) = list.iter().find(|p| p.status == PaymentStatus::Succeeded) else {
        return super::message(state, req, Some(&v.session), StatusCode::NOT_FOUND, |m| {
            (m.waiting_heading, m.waiting_text)
        });
    };
    let r = match receipts::for_payment(&state.db, &state.config.receipt_key, paid).await {
        Ok(Some(r)) => r,
        Ok(None) => return ApiError::not_found("receipt").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let nonce = super::security::nonce();
    let path = super::page_path(v.session.id);
    let frame = pages::Frame::new(v.locale, nonce.clone(), &format!("{path}/receipt"));
    let m = frame.m;
    let method = match &r.method {
        receipts::Method::Card { brand, last4 } => pages::card_words(
            m,
            brand.as_deref().unwrap_or_default(),
            last4.as_deref().unwrap_or_default(),
        ),
        receipts::Method::Alipay { .. } => m.paid_with_alipay.to_string(),
    };
    let refunded = (r.refunded_amount > 0)
        .then(|| evisa_core::money::Money::new(r.refunded_amount, r.amount.currency()).ok())
        .flatten()
        .map(|a| pages::money(a, v.locale));
    let page = pages::ReceiptPage {
        lang: frame.lang,
        m,
        stylesheet: frame.stylesheet,
        languages: frame.languages,
        payment_reference: r.payment_id.to_string(),
        reference: r.application_id.to_string(),
        amount: pages::money(r.amount, v.locale),
        method,
        paid_at: pages::moment(r.paid_at, v.locale),
        refunded,
        code: r.code.clone(),
        back: path,
    };
    super::render(state, StatusCode::OK, &nonce, &page)
}

/// The application the page shows for `session`: for a group, the first application with the
/// fee of the whole group (the sum of the members' fees, in each currency all of them can be
/// paid in), which is what the page's payment charges; and for a group, every member's id and
/// fee, the first one's included (empty for one application).
pub(crate) async fn with_group_fee(
    state: &AppState,
    session: &evisa_core::checkout::CheckoutSession,
    mut first: evisa_core::application::Application,
) -> Result<GroupView, evisa_core::application::ApplicationError> {
    use evisa_core::money::Money;
    let Some(mut total) = first.fee.clone() else {
        return Ok((first, Vec::new()));
    };
    let mut members = Vec::new();
    if session.application_ids.len() > 1 {
        members.push((first.id, total.amount));
    }
    for &id in session.application_ids.iter().filter(|a| **a != first.id) {
        let member = evisa_core::application::store::get_for_owner(
            &state.db,
            &state.config.data_keys,
            session.applicant_id,
            id,
        )
        .await?;
        let Some(fee) = member.fee else {
            return Ok((first, members));
        };
        members.push((member.id, fee.amount));
        let add = |a: Money, b: Money| {
            (a.currency() == b.currency())
                .then(|| Money::new(a.amount_minor() + b.amount_minor(), a.currency()).ok())
                .flatten()
        };
        total.options = total
            .options
            .iter()
            .filter_map(|o| fee.options.iter().find_map(|m| add(*o, *m)))
            .collect();
        match add(total.amount, fee.amount) {
            Some(sum) => total.amount = sum,
            // Mixed currencies: the page's payment is refused, and says so.
            None => return Ok((first, members)),
        }
    }
    first.fee = Some(total);
    Ok((first, members))
}

/// The application a page shows, and a group's members with their fees.
pub(crate) type GroupView = (
    evisa_core::application::Application,
    Vec<(evisa_core::ids::ApplicationId, evisa_core::money::Money)>,
);
