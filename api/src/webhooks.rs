//! Gateway callbacks and the browser's return from a gateway. Not part of the OpenAPI document:
//! the gateways define these contracts.
//!
//! `POST /v1/webhooks/stripe`: verify the `Stripe-Signature` over the raw body (every configured
//! secret, 300 s tolerance), store the event in the inbox (unique by event id) and apply it in
//! one transaction (`evisa_core::inbox::ingest_stripe`), then answer 200. Every verified event
//! is stored and acknowledged: processed, ignored (a type we do not act on, or nothing of ours)
//! or quarantined for a person — never an error that makes Stripe retry forever. A duplicate is
//! acknowledged and skipped; anything unverifiable is 400 and nothing is stored.

use evisa_core::inbox::{self, Disposition, Ingested, StripeIngest};
use evisa_core::{
    gateway::{
        alipay as alipay_v2,
        stripe::{StripeEvent, verify_signature},
    },
    metrics,
    payment::{PaymentStatus, Provider, store as payment_store},
    ratelimit,
};
use poem::{IntoResponse, Request, Response, handler, http::StatusCode, web::Data};
use serde::Deserialize;

use crate::{
    limits::{WhenRedisIsDown, client_ip, limit},
    problem::ApiError,
    state::AppState,
};

fn received() -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .content_type("application/json")
        .body(r#"{"received":true}"#)
}

#[handler]
pub async fn stripe(req: &Request, body: poem::Body, state: Data<&AppState>) -> Response {
    metrics::callback_received("stripe");
    // Stripe retries a 429 later, so a flood from one address waits instead of crowding out
    // everything else; a Redis outage lets callbacks through (each is verified anyway).
    if let Err(e) = limit(
        &state,
        &format!("callbacks:ip:{}", client_ip(req)),
        state.config.limits.callback(),
        WhenRedisIsDown::Allow,
    )
    .await
    {
        metrics::callback_refused("stripe", "rate_limited");
        return e.into_response();
    }
    let bytes = match body
        .into_bytes_limit(state.config.max_body_bytes.max(256 * 1024))
        .await
    {
        Ok(b) => b,
        Err(_) => {
            metrics::callback_refused("stripe", "too_large");
            return ApiError::from_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "webhook body too large".into(),
                vec![],
            )
            .into_response();
        }
    };
    let header = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = verify_signature(header, &bytes, &state.config.stripe.webhook_secrets, now) {
        tracing::warn!(error = %e, "stripe webhook refused");
        metrics::callback_refused("stripe", "signature");
        return ApiError::bad_request(format!("webhook not accepted: {e}"), vec![]).into_response();
    }
    // Parsed once: the document is stored as received; the event's id and type route it.
    let parsed = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|payload| Some((StripeEvent::deserialize(&payload).ok()?, payload)));
    let Some((event, payload)) = parsed else {
        metrics::callback_refused("stripe", "not_an_event");
        return ApiError::bad_request("webhook body is not a Stripe event", vec![]).into_response();
    };
    match inbox::ingest_stripe(
        &state.db,
        &state.settled,
        &event.id,
        &event.kind,
        &payload,
        state.config.jobs.max_attempts,
    )
    .await
    {
        Ok(StripeIngest {
            ingested: Ingested::Duplicate,
            ..
        }) => {
            metrics::callback_duplicate("stripe");
            tracing::info!(event_id = %event.id, "stripe webhook duplicate; acknowledged")
        }
        Ok(StripeIngest {
            failed,
            disposition,
            ..
        }) => {
            let outcome = match disposition {
                Disposition::Processed => "processed",
                Disposition::Ignored(_) | Disposition::Unmatched(_) => "ignored",
                Disposition::Quarantined(_) => "quarantined",
            };
            tracing::info!(event_id = %event.id, kind = %event.kind, outcome, "stripe webhook stored");
            if let Some((applications, applicant)) = failed {
                ratelimit::count_failed_payment(
                    &state.limiter,
                    &state.config.limits,
                    &applications,
                    applicant,
                )
                .await;
            }
        }
        // Not acknowledged, so Stripe retries it later.
        Err(e) => {
            metrics::callback_refused("stripe", "storage_unavailable");
            return ApiError::from(e).into_response();
        }
    }
    received()
}

/// `POST /v1/webhooks/alipay`: Alipay's async notify (a form). Verified with Alipay's public key
/// (RSA2 over every field but `sign` and `sign_type`), checked against our record (`app_id`,
/// `out_trade_no`, `total_amount`), stored in the inbox unique by `notify_id` with its processing
/// enqueued, and only then answered with the bare body `success`. Anything else is answered
/// `fail`, so Alipay retries, and is counted and logged.
#[handler]
pub async fn alipay(req: &Request, body: poem::Body, state: Data<&AppState>) -> Response {
    metrics::callback_received("alipay");
    if let Err(e) = limit(
        &state,
        &format!("callbacks:ip:{}", client_ip(req)),
        state.config.limits.callback(),
        WhenRedisIsDown::Allow,
    )
    .await
    {
        // Alipay retries anything but `success`; the problem's status and Retry-After stay.
        metrics::callback_refused("alipay", "rate_limited");
        return e.into_response();
    }
    // `kind` labels the metric (a closed set); `reason` is the detail for the log.
    let refuse = |kind: &'static str, reason: &str| {
        metrics::callback_refused("alipay", kind);
        let n = state
            .alipay_notifies_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        tracing::warn!(reason, refused_total = n, "alipay notify refused");
        Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .content_type("text/plain")
            .body("fail")
    };
    let Some(client) = state.alipay.as_ref() else {
        return refuse("not_configured", "Alipay is not configured");
    };
    let Ok(bytes) = body.into_bytes_limit(64 * 1024).await else {
        return refuse("unreadable", "unreadable body");
    };
    // From here on only the verified form is read: the fields that were signed, each once.
    let notify = match client.verify_notify(&bytes) {
        Ok(n) => n,
        Err(e) => return refuse("signature", &e.to_string()),
    };
    let Some(payment_id) = notify.payment_id() else {
        return refuse("unknown_payment", "out_trade_no is not one of ours");
    };
    let payment = match payment_store::get(&state.db, payment_id).await {
        Ok(Some(p)) if p.provider == Provider::Alipay => p,
        Ok(_) => return refuse("unknown_payment", "out_trade_no is not one of ours"),
        Err(e) => {
            tracing::error!(error = %e, "alipay notify not stored");
            return refuse("storage_unavailable", "storage unavailable");
        }
    };
    if alipay_v2::parse_cny(notify.get("total_amount")) != Some(payment.amount) {
        return refuse("amount_mismatch", "total_amount does not match the payment");
    }
    let payload = notify.to_json();
    match inbox::ingest(
        &state.db,
        "alipay",
        notify.notify_id(),
        notify.get("trade_status"),
        &payload,
        state.config.jobs.max_attempts,
    )
    .await
    {
        Ok(ingested) => {
            let stored = ingested != Ingested::Duplicate;
            if !stored {
                metrics::callback_duplicate("alipay");
            }
            tracing::info!(payment_id = %payment.id, stored, "alipay notify accepted");
            Response::builder()
                .content_type("text/plain")
                .body("success")
        }
        Err(e) => {
            tracing::error!(error = %e, "alipay notify not stored");
            refuse("storage_unavailable", "storage unavailable")
        }
    }
}

/// `GET /v1/payments/{id}/return`: where Alipay sends the payer's browser back. It never changes
/// a payment — query parameters are ignored, since anyone can forge them — and it shows the
/// payment's status as we know it, or sends the browser on to the portal's `return_url`.
#[handler]
pub async fn payment_return(
    poem::web::Path(id): poem::web::Path<String>,
    state: Data<&AppState>,
) -> Response {
    let payment = match id.parse::<evisa_core::ids::PaymentId>() {
        Ok(id) => payment_store::get(&state.db, id).await,
        Err(_) => Ok(None),
    };
    let payment = match payment {
        Ok(Some(p)) => p,
        Ok(None) => return ApiError::not_found("payment").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Our own checkout page shows the status as we know it; nothing is added to its address.
    if let Some(own) = payment.return_url.as_deref().filter(|u| {
        state
            .config
            .public_base_url
            .join("checkout/s/")
            .is_ok_and(|page| u.starts_with(page.as_str()))
    }) {
        return poem::web::Redirect::see_other(own).into_response();
    }
    // Checked again on the way out: a row written before the origins were narrowed must not
    // turn our domain into an open redirect either.
    if let Some(target) = payment
        .return_url
        .as_deref()
        .and_then(|u| state.config.return_url_origins.check(u).ok())
    {
        let mut target = target;
        target
            .query_pairs_mut()
            .append_pair("payment_id", &payment.id.to_string())
            .append_pair("status", payment.status.as_str());
        return poem::web::Redirect::see_other(target.as_str()).into_response();
    }
    let message = match payment.status {
        PaymentStatus::Succeeded => "Your payment was received. Thank you.",
        PaymentStatus::Failed | PaymentStatus::Cancelled | PaymentStatus::Expired => {
            "This payment did not go through. You can try again from the portal."
        }
        _ => {
            "We are waiting for confirmation from Alipay. This page does not update by itself; check your application in the portal."
        }
    };
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Payment status</title></head>\
         <body><h1>Payment status: <span id=\"status\">{}</span></h1><p>{message}</p></body></html>",
        payment.status
    );
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .header("content-security-policy", "default-src 'none'")
        .body(page)
}
