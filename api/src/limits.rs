//! Rate limits at the edge: one helper per way a limit can behave when Redis is down.
//!
//! - Sign-ins, password changes, registrations and refunds **fail closed** (503): unlimited
//!   guessing or unlimited refunds while Redis is down is worse than a short outage of them.
//! - Payments and gateway callbacks **fail open**: applicants keep paying and no gateway callback is
//!   refused (each is signature-checked anyway); the outage is logged.

use evisa_core::ratelimit::{Decision, Quota, Take};
use poem::Request;

use crate::{problem::ApiError, state::AppState};

/// What a limit does when its counter cannot be reached.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WhenRedisIsDown {
    /// 503: the operation waits for the limiter.
    Refuse,
    /// Let the request through, and log it.
    Allow,
}

/// Counts one request against `bucket`; 429 with `Retry-After` when over `quota`.
pub async fn limit(
    state: &AppState,
    bucket: &str,
    quota: Quota,
    down: WhenRedisIsDown,
) -> Result<(), ApiError> {
    answer(state.limiter.check(bucket, quota).await, down, bucket)
}

/// One request against several limits that behave alike when Redis is down, in one round trip:
/// each bucket counts it or is only asked ([`Take`]), in order; 429 from the first over its quota.
pub async fn admit(
    state: &AppState,
    buckets: &[(&str, Quota, Take)],
    down: WhenRedisIsDown,
) -> Result<(), ApiError> {
    let decision = state.limiter.admit(buckets).await;
    let refusing = match &decision {
        Ok((at, _)) => buckets.get(*at).map_or("", |b| b.0),
        Err(_) => "",
    };
    answer(decision.map(|(_, d)| d), down, refusing)
}

/// The limit a bucket belongs to, for metrics: its kind, never the address or id in it.
fn limit_name(bucket: &str) -> &'static str {
    let mut parts = bucket.split(':');
    match (parts.next(), parts.next()) {
        (Some("register"), _) => "registrations_per_ip",
        (Some("login"), Some("ip")) => "sign_ins_per_ip",
        (Some("login"), Some("account")) => "sign_ins_per_account",
        (Some("payments"), _) => "payments_per_ip",
        (Some("failed"), Some("application")) => "failed_payments_per_application",
        (Some("failed"), Some("applicant")) => "failed_payments_per_applicant",
        (Some("refunds"), _) => "refunds_per_ip",
        (Some("callbacks"), _) => "callbacks_per_ip",
        _ => "other",
    }
}

fn answer(
    decision: redis::RedisResult<Decision>,
    down: WhenRedisIsDown,
    bucket: &str,
) -> Result<(), ApiError> {
    match decision {
        Ok(Decision::Allowed) => Ok(()),
        Ok(Decision::Limited { retry_after }) => {
            evisa_core::metrics::rate_limited(limit_name(bucket));
            Err(ApiError::too_many(retry_after.as_secs_f64().ceil() as u64))
        }
        Err(e) if down == WhenRedisIsDown::Allow => {
            tracing::warn!(error = %e, "rate limiter unavailable; request allowed");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "rate limiter unavailable; request refused");
            Err(ApiError::unavailable(
                "this operation is briefly unavailable; try again shortly",
            ))
        }
    }
}

/// The address the request came from, as a bucket name.
pub fn client_ip(req: &Request) -> String {
    req.remote_addr()
        .as_socket_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}
