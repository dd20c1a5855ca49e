//! RFC 9457 problem details: the one error shape of the API, and the mapping of every failure
//! (ours, poem's, poem-openapi's) into it.

use poem::{Response, http::StatusCode};
use poem_openapi::{ApiResponse, Object, payload::Json, types::Example};

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field that was wrong.
#[derive(Object, Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldProblem {
    /// The field or parameter, by name (`passport_number`, `limit`).
    pub field: String,
    /// JSON Pointer to the field in the request body, when it was in the body.
    #[oai(skip_serializing_if_is_none)]
    pub pointer: Option<String>,
    /// What is wrong with it and what is expected.
    pub detail: String,
}

/// An RFC 9457 problem: what went wrong, machine-readable by `type` and readable by people.
#[derive(Object, Debug, Clone, serde::Serialize)]
#[oai(example)]
pub struct Problem {
    /// A URI reference naming the kind of problem; stable, safe to switch on.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this case.
    pub detail: String,
    /// The fields that were wrong, when the problem is about input.
    #[oai(default, skip_serializing_if_is_empty)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
}

impl Example for Problem {
    fn example() -> Self {
        Problem {
            kind: "/problems/validation".into(),
            title: "Invalid input".into(),
            status: 422,
            detail: "1 field is invalid".into(),
            errors: vec![FieldProblem {
                field: "passport_number".into(),
                pointer: Some("/passport_number".into()),
                detail: "must be 6 to 9 letters or digits".into(),
            }],
        }
    }
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("/problems/{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldProblem>) -> Self {
        self.errors = errors;
        self
    }
}

/// Every error status the API answers with, each as problem+json.
#[derive(ApiResponse, Debug)]
pub enum ApiError {
    /// The request could not be read: malformed JSON, a missing or malformed parameter.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid access token: sign in and send `Authorization: Bearer <token>`.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// The token is valid but its role may not do this.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// No such resource, or not yours.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// This path does not take this method.
    #[oai(status = 405, content_type = "application/problem+json")]
    MethodNotAllowed(Json<Problem>),
    /// The resource's state does not allow this now (e.g. editing a submitted application).
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The request body is larger than allowed.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The request body is not `application/json`.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// The body is well-formed JSON but breaks a rule; `errors` names each field.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>),
    /// Too many requests; retry after the number of seconds in `Retry-After`.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// Something failed on our side; nothing was half-written.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// A service we depend on is unavailable; try again shortly.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        let code = match self {
            ApiError::BadRequest(p)
            | ApiError::Unauthorized(p, _)
            | ApiError::Forbidden(p)
            | ApiError::NotFound(p)
            | ApiError::MethodNotAllowed(p)
            | ApiError::Conflict(p)
            | ApiError::PayloadTooLarge(p)
            | ApiError::UnsupportedMediaType(p)
            | ApiError::Unprocessable(p)
            | ApiError::TooManyRequests(p, _)
            | ApiError::Internal(p)
            | ApiError::Unavailable(p, _) => p.0.status,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn bad_request(detail: impl Into<String>, errors: Vec<FieldProblem>) -> Self {
        ApiError::BadRequest(Json(
            Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Bad request",
                detail,
            )
            .with_errors(errors),
        ))
    }

    pub fn bad_param(name: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self::bad_request(
            format!("parameter `{name}`: {detail}"),
            vec![FieldProblem {
                field: name.into(),
                pointer: None,
                detail,
            }],
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        ApiError::Unauthorized(
            Json(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                detail,
            )),
            "Bearer".into(),
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::Forbidden(Json(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            detail,
        )))
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(Json(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("{what} not found"),
        )))
    }

    pub fn conflict(slug: &str, detail: impl Into<String>) -> Self {
        ApiError::Conflict(Json(Problem::new(
            StatusCode::CONFLICT,
            slug,
            "Conflict with the current state",
            detail,
        )))
    }

    /// A conflict with the resource's state, naming the fields that cause it.
    pub fn conflict_with(slug: &str, detail: impl Into<String>, errors: Vec<FieldProblem>) -> Self {
        ApiError::Conflict(Json(
            Problem::new(
                StatusCode::CONFLICT,
                slug,
                "Conflict with the current state",
                detail,
            )
            .with_errors(errors),
        ))
    }

    /// Input that breaks rules, one entry per field.
    pub fn invalid(errors: Vec<FieldProblem>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("`{}` {}", one.field, one.detail),
            many => format!("{} fields are invalid", many.len()),
        };
        ApiError::Unprocessable(Json(
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid input",
                detail,
            )
            .with_errors(errors),
        ))
    }

    /// A rule about the request as a whole (not one field) is broken.
    pub fn rule(slug: &str, detail: impl Into<String>, errors: Vec<FieldProblem>) -> Self {
        ApiError::Unprocessable(Json(
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                slug,
                "Request breaks a rule",
                detail,
            )
            .with_errors(errors),
        ))
    }

    pub fn too_many(retry_after_secs: u64) -> Self {
        ApiError::TooManyRequests(
            Json(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                format!("too many attempts; try again in {retry_after_secs} s"),
            )),
            retry_after_secs,
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        ApiError::Unavailable(
            Json(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                detail,
            )),
            5,
        )
    }

    /// An unexpected failure. The cause is logged here (it may name tables, never personal
    /// data); the client sees only that it happened.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        ApiError::Internal(Json(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request failed on our side and changed nothing; it is safe to retry",
        )))
    }

    /// A problem+json response for any status, for errors raised outside our handlers.
    pub fn from_status(status: StatusCode, detail: String, errors: Vec<FieldProblem>) -> Self {
        match status {
            StatusCode::BAD_REQUEST => Self::bad_request(detail, errors),
            StatusCode::UNAUTHORIZED => Self::unauthorized(detail),
            StatusCode::FORBIDDEN => Self::forbidden(detail),
            StatusCode::NOT_FOUND => {
                ApiError::NotFound(Json(Problem::new(status, "not-found", "Not found", detail)))
            }
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(Json(Problem::new(
                status,
                "method-not-allowed",
                "Method not allowed",
                detail,
            ))),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(Json(Problem::new(
                status,
                "payload-too-large",
                "Payload too large",
                detail,
            ))),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError::UnsupportedMediaType(Json(Problem::new(
                    status,
                    "unsupported-media-type",
                    "Unsupported media type",
                    detail,
                )))
            }
            StatusCode::UNPROCESSABLE_ENTITY => Self::invalid(errors),
            StatusCode::CONFLICT => Self::conflict("conflict", detail),
            StatusCode::SERVICE_UNAVAILABLE => Self::unavailable(detail),
            s if s.is_client_error() => ApiError::BadRequest(Json(Problem::new(
                s,
                "bad-request",
                s.canonical_reason().unwrap_or("Client error"),
                detail,
            ))),
            _ => Self::internal(detail),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if evisa_core::db::is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            return ApiError::unavailable("the database is briefly unavailable; try again shortly");
        }
        ApiError::internal(e)
    }
}

/// Turns any error that escaped a handler into problem+json: poem's routing errors (404, 405),
/// poem-openapi's parameter and authorization errors, body-size and media-type errors. Errors our
/// handlers raised are problem+json already and pass through unchanged.
pub async fn into_problem(err: poem::Error) -> Response {
    use poem::IntoResponse;
    use poem_openapi::error::{AuthorizationError, ContentTypeError, ParseParamError};

    let status = err.status();
    if let Some(e) = err.downcast_ref::<ParseParamError>() {
        return ApiError::bad_param(e.name, e.reason.clone()).into_response();
    }
    if err.is::<AuthorizationError>() {
        return ApiError::unauthorized("a valid bearer token is required").into_response();
    }
    if let Some(e) = err.downcast_ref::<ContentTypeError>() {
        let detail = match e {
            ContentTypeError::NotSupported { content_type } => {
                format!("content type `{content_type}` is not supported; send application/json")
            }
            ContentTypeError::ExpectContentType => {
                "a Content-Type header is required; send application/json".to_string()
            }
        };
        return ApiError::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail, vec![])
            .into_response();
    }
    let message = err.to_string();
    let response = err.into_response();
    let is_problem = response
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    if is_problem {
        return response;
    }
    let detail = match status {
        StatusCode::NOT_FOUND => "no such resource".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "this path does not take this method".to_string(),
        s if s.is_server_error() => message,
        _ => message,
    };
    ApiError::from_status(status, detail, vec![]).into_response()
}

/// poem-openapi names path parameters `param0`, `param1`, ... in its errors. Put the spec's name
/// (`id`) back, found by matching the request path against the spec's path templates.
pub async fn name_path_params<E: poem::Endpoint>(
    ep: std::sync::Arc<E>,
    req: poem::Request,
) -> poem::Result<Response> {
    use poem::IntoResponse;
    use poem_openapi::error::ParsePathError;

    let path = req.uri().path().to_string();
    match ep.call(req).await {
        Ok(r) => Ok(r.into_response()),
        Err(e) => match e.downcast_ref::<ParsePathError>() {
            Some(p) => {
                let index = p
                    .name
                    .strip_prefix("param")
                    .and_then(|n| n.parse::<usize>().ok());
                let name = index
                    .and_then(|i| spec_param_name(&path, i))
                    .unwrap_or_else(|| p.name.to_string());
                Ok(ApiError::bad_param(&name, p.reason.clone()).into_response())
            }
            None => Err(e),
        },
    }
}

/// The name of the `index`-th `{param}` of the spec path template that `path` matches.
fn spec_param_name(path: &str, index: usize) -> Option<String> {
    static TEMPLATES: std::sync::OnceLock<Vec<Vec<String>>> = std::sync::OnceLock::new();
    let templates = TEMPLATES.get_or_init(|| {
        let spec: serde_json::Value =
            serde_json::from_str(&crate::spec_json()).expect("the spec is JSON");
        spec["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .keys()
                    .map(|k| k.split('/').map(str::to_string).collect())
                    .collect()
            })
            .unwrap_or_default()
    });
    let segments: Vec<&str> = path.split('/').collect();
    templates
        .iter()
        .filter(|t| t.len() == segments.len())
        .find(|t| {
            t.iter()
                .zip(&segments)
                .all(|(t, s)| t.starts_with('{') || t == s)
        })
        .and_then(|t| {
            t.iter()
                .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
                .nth(index)
                .map(str::to_string)
        })
}
