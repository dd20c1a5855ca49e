//! The HTTP API of evisa-pay: a thin poem + poem-openapi adapter over `evisa-core`.
//!
//! Request → [`middleware`] (request id, size limit, security headers, logging) → an operation in
//! [`routes`] (wire types parsed into domain types) → `evisa_core` → a JSON view or a
//! problem+json error from [`problem`].

// `ApiError` carries a whole problem document; errors are the cold path, so boxing it would only
// add noise to every handler.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod body;
pub mod checkout;
pub mod hashing;
pub mod idempotent;
pub mod limits;
pub mod listener;
pub mod middleware;
pub mod notify_objects;
pub mod problem;
pub mod routes;
pub mod spec;
pub mod state;
pub mod streams;
pub mod webhooks;

use poem::{Endpoint, EndpointExt, Route, http::Method};
use poem_openapi::OpenApiService;

pub use state::AppState;

/// The whole API as one OpenAPI service. It holds no state, so the spec can be printed without
/// a database.
pub fn openapi() -> OpenApiService<routes::Api, ()> {
    OpenApiService::new(routes::api(), "evisa-pay", env!("CARGO_PKG_VERSION"))
        .description(include_str!("../api-description.md"))
        .license(poem_openapi::LicenseObject::new("Apache-2.0"))
}

/// The OpenAPI document, as committed in `openapi/openapi.json` and served at `/openapi.json`:
/// poem-openapi's, finished by [`spec::finish`].
pub fn spec_json() -> String {
    serde_json::to_string_pretty(&spec_value()).expect("a JSON value serializes")
}

fn spec_value() -> serde_json::Value {
    let mut doc = serde_json::from_str(&openapi().spec()).expect("poem-openapi emits JSON");
    spec::finish(&mut doc);
    doc
}

/// Routes outside the OpenAPI service, for `Allow` on a 405.
const OTHER_ROUTES: &[(&str, &[Method])] = &[
    ("/openapi.json", &[Method::GET]),
    ("/v1/webhooks/stripe", &[Method::POST]),
    ("/v1/webhooks/alipay", &[Method::POST]),
    ("/v1/payments/{id}/return", &[Method::GET]),
];

/// The HTTP application: the API, `/openapi.json`, `/docs`, wrapped in the middleware stack.
pub fn app(state: AppState) -> impl Endpoint {
    let service = openapi();
    let doc = spec_value();
    let spec = spec_json();
    // The Swagger UI page embeds the document; it shows the finished one.
    let docs_html = service.swagger_ui_html().replace(&service.spec(), &spec);
    let other_routes: Vec<_> = OTHER_ROUTES
        .iter()
        .chain(checkout::ROUTES)
        .copied()
        .collect();
    let allow = spec::AllowTable::new(&doc, &other_routes);
    let max_body = state.config.max_body_bytes;
    Route::new()
        .nest("/", service.around(problem::name_path_params))
        .at(
            "/openapi.json",
            poem::get(poem::endpoint::make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            })),
        )
        .at("/v1/webhooks/stripe", poem::post(webhooks::stripe))
        .at("/v1/webhooks/alipay", poem::post(webhooks::alipay))
        .at(
            "/v1/payments/:id/return",
            poem::get(webhooks::payment_return),
        )
        .nest("/checkout", checkout::routes())
        .nest(
            "/docs",
            Route::new().at(
                "/",
                poem::get(poem::endpoint::make_sync(move |_| {
                    poem::web::Html(docs_html.clone())
                })),
            ),
        )
        .catch_all_error(problem::into_problem)
        .with(poem::middleware::CatchPanic::new().with_handler(|_| {
            // The panic message may hold anything; it is not echoed or logged.
            problem::ApiError::internal("a request handler panicked")
        }))
        .with(middleware::BodySizeLimit(max_body))
        .with(middleware::AllowOn405(std::sync::Arc::new(allow)))
        .with(middleware::SecurityHeaders)
        .data(state)
        .with(middleware::RequestContext)
}
