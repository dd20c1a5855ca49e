//! Gateway callbacks. Not part of the OpenAPI document: the gateways define these contracts.
//!
//! `POST /v1/webhooks/stripe`: verify the `Stripe-Signature` over the raw body (every configured
//! secret, 300 s tolerance), store the event in the inbox (unique by event id) and enqueue its
//! processing in one transaction, then answer 200. A duplicate is acknowledged and skipped; an
//! event type we do not act on is acknowledged and ignored; anything unverifiable is 400 and
//! nothing is stored.

use evisa_core::gateway::stripe::{StripeEvent, verify_signature};
use evisa_worker::{ProcessGatewayEvent, enqueue};
use poem::{IntoResponse, Request, Response, handler, http::StatusCode, web::Data};

use crate::{problem::ApiError, state::AppState};

/// The Stripe events that say something about a payment.
const HANDLED: &[&str] = &[
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_intent.requires_action",
    "payment_intent.processing",
];

fn received() -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .content_type("application/json")
        .body(r#"{"received":true}"#)
}

#[handler]
pub async fn stripe(req: &Request, body: poem::Body, state: Data<&AppState>) -> Response {
    let bytes = match body
        .into_bytes_limit(state.config.max_body_bytes.max(256 * 1024))
        .await
    {
        Ok(b) => b,
        Err(_) => {
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
        return ApiError::bad_request(format!("webhook not accepted: {e}"), vec![]).into_response();
    }
    let event: StripeEvent = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(_) => {
            return ApiError::bad_request("webhook body is not a Stripe event", vec![])
                .into_response();
        }
    };
    if !HANDLED.contains(&event.kind.as_str()) {
        tracing::info!(event_id = %event.id, kind = %event.kind, "stripe webhook ignored: not a type we act on");
        return received();
    }
    match store(&state, &event, &bytes).await {
        Ok(true) => {
            tracing::info!(event_id = %event.id, kind = %event.kind, "stripe webhook stored")
        }
        Ok(false) => tracing::info!(event_id = %event.id, "stripe webhook duplicate; acknowledged"),
        // Not acknowledged, so Stripe retries it later.
        Err(e) => return ApiError::internal(e).into_response(),
    }
    received()
}

/// Stores the event and enqueues its processing in one transaction; `false` for a duplicate.
async fn store(state: &AppState, event: &StripeEvent, raw: &[u8]) -> anyhow::Result<bool> {
    let payload: serde_json::Value = serde_json::from_slice(raw)?;
    let mut tx = state.db.begin().await?;
    let inserted: Option<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO gateway_inbox (id, provider, event_id, event_type, payload)
         VALUES ($1, 'stripe', $2, $3, $4)
         ON CONFLICT (provider, event_id) DO NOTHING RETURNING id",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(&event.id)
    .bind(&event.kind)
    .bind(&payload)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(inbox_id) = inserted else {
        return Ok(false);
    };
    enqueue(
        &mut tx,
        &ProcessGatewayEvent { inbox_id },
        state.config.jobs.max_attempts,
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
