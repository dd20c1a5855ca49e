//! The middleware around every request: a request id on every log line, body-size limits,
//! security headers, and `Allow` on every 405.

use std::time::Instant;

use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response, Result,
    http::{HeaderValue, StatusCode, header},
};
use tracing::Instrument;

use crate::{body::BodyLimit, problem::ApiError};

/// Gives each request an id (the client's `X-Request-Id` when it is short and plain, else a new
/// UUID), runs the request inside a tracing span carrying it, logs the outcome, and returns the
/// id in the response. Only method, path and status are logged: no query strings, no bodies.
pub struct RequestContext;

impl<E: Endpoint> Middleware<E> for RequestContext {
    type Output = RequestContextEndpoint<E>;
    fn transform(&self, ep: E) -> Self::Output {
        RequestContextEndpoint(ep)
    }
}

pub struct RequestContextEndpoint<E>(E);

/// The route template a response answered for (`/v1/payments/{id}`), set by [`AllowOn405`]
/// which knows the document's paths; paths under no template share the label `unmatched`, so
/// probes of random URLs add no metric series.
#[derive(Clone)]
pub struct RouteTemplate(pub String);

/// The path as logged: a checkout link's token opens a session, so it is never written down.
fn loggable_path(path: &str) -> &str {
    match path.strip_prefix("/checkout/") {
        Some(rest) if !rest.contains('/') && !rest.is_empty() => "/checkout/{token}",
        _ => path,
    }
}

fn acceptable_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl<E: Endpoint> Endpoint for RequestContextEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| acceptable_request_id(v))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let span = tracing::info_span!(
            "request",
            request_id = %request_id,
            method = %req.method(),
            path = %loggable_path(req.uri().path()),
        );
        let started = Instant::now();
        let method = req.method().to_string();
        async move {
            let mut resp = match self.0.call(req).await {
                Ok(r) => r.into_response(),
                Err(e) => crate::problem::into_problem(e).await,
            };
            let status = resp.status().as_u16();
            let seconds = started.elapsed().as_secs_f64();
            let route = resp
                .data::<RouteTemplate>()
                .map_or_else(|| "unmatched".to_string(), |t| t.0.clone());
            evisa_core::metrics::http_request(route, method, status, seconds);
            let ms = seconds * 1000.0;
            if status >= 500 {
                tracing::error!(status, ms, "request finished");
            } else {
                tracing::info!(status, ms, "request finished");
            }
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            Ok(resp)
        }
        .instrument(span)
        .await
    }
}

/// Refuses bodies whose declared length is over the limit before reading them, and tells body
/// extractors the limit so that undeclared (chunked) bodies are cut off at it too.
pub struct BodySizeLimit(pub usize);

impl<E: Endpoint> Middleware<E> for BodySizeLimit {
    type Output = BodySizeLimitEndpoint<E>;
    fn transform(&self, ep: E) -> Self::Output {
        BodySizeLimitEndpoint(ep, self.0)
    }
}

pub struct BodySizeLimitEndpoint<E>(E, usize);

impl<E: Endpoint> Endpoint for BodySizeLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Response> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.1 as u64) {
            return Ok(ApiError::from_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {} bytes", self.1),
                vec![],
            )
            .into_response());
        }
        req.extensions_mut().insert(BodyLimit(self.1));
        self.0.call(req).await.map(IntoResponse::into_response)
    }
}

/// Headers that keep browsers from sniffing, framing or caching API answers.
pub struct SecurityHeaders;

impl<E: Endpoint> Middleware<E> for SecurityHeaders {
    type Output = SecurityHeadersEndpoint<E>;
    fn transform(&self, ep: E) -> Self::Output {
        SecurityHeadersEndpoint(ep)
    }
}

pub struct SecurityHeadersEndpoint<E>(E);

impl<E: Endpoint> Endpoint for SecurityHeadersEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        // The docs page runs the bundled Swagger UI's inline scripts; everything else is data.
        let is_docs = req.uri().path().starts_with("/docs");
        let mut resp = self.0.call(req).await?.into_response();
        let h = resp.headers_mut();
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        h.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
        // The checkout page sets its own policy (with a nonce) and its assets their own cache
        // lifetime; everything else gets these.
        if !is_docs {
            if !h.contains_key("content-security-policy") {
                h.insert(
                    "content-security-policy",
                    HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
                );
            }
            if !h.contains_key(header::CACHE_CONTROL) {
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
        }
        Ok(resp)
    }
}

/// Adds `Allow` (the methods the path answers, from the OpenAPI document) to every 405, and
/// tags every response with its [`RouteTemplate`].
pub struct AllowOn405(pub std::sync::Arc<crate::spec::AllowTable>);

impl<E: Endpoint> Middleware<E> for AllowOn405 {
    type Output = AllowOn405Endpoint<E>;
    fn transform(&self, ep: E) -> Self::Output {
        AllowOn405Endpoint(ep, self.0.clone())
    }
}

pub struct AllowOn405Endpoint<E>(E, std::sync::Arc<crate::spec::AllowTable>);

impl<E: Endpoint> Endpoint for AllowOn405Endpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let path = req.uri().path().to_string();
        let mut resp = self.0.call(req).await?.into_response();
        if let Some(template) = self.1.template(&path) {
            resp.set_data(RouteTemplate(template));
        }
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED
            && let Some(v) = self
                .1
                .allow(&path)
                .and_then(|a| HeaderValue::from_str(a).ok())
        {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkout_link_tokens_are_not_logged() {
        assert_eq!(loggable_path("/checkout/abcDEF123_-"), "/checkout/{token}");
        assert_eq!(loggable_path("/checkout/s/0190-id"), "/checkout/s/0190-id");
        assert_eq!(loggable_path("/v1/payments"), "/v1/payments");
    }
}
