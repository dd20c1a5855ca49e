//! `POST /v1/applications/{id}/checkout` and `POST /v1/checkout`: the portal opens a session of
//! the hosted checkout page for one of the applicant's applications, or for a group of them paid
//! together, and sends the applicant to its single-use link.

use evisa_core::{
    checkout::{self, CreateSessionError, LinkToken, Locale},
    ids::{ApplicationId, CheckoutSessionId},
};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Header, Path},
    payload::Json,
};

use super::{Tag, payments::field_problem};
use crate::{
    auth::BearerAuth,
    body::{JsonBody, ServerSetFields},
    idempotent::{self, KeyHeader},
    problem::{ApiError, ApiResult},
    state::AppState,
};

pub struct CheckoutApi;

/// The checkout page's language (`locale`); without it, the browser's `Accept-Language`
/// decides (English when it names neither). The applicant can switch on the page.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[oai(rename = "CheckoutLocale")]
pub enum LocaleWire {
    #[oai(rename = "en")]
    #[serde(rename = "en")]
    En,
    #[oai(rename = "zh-CN")]
    #[serde(rename = "zh-CN")]
    ZhCn,
}

/// What the checkout page is opened with.
#[derive(Object, serde::Deserialize, Default)]
#[oai(rename = "CheckoutRequest")]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequestBody {
    /// Where the page sends the applicant when they are done, on one of the allowed origins
    /// (`EVISA_RETURN_URL_ORIGINS`). The page adds nothing to it: ask the API for the outcome.
    #[oai(validator(max_length = 2048), skip_serializing_if_is_none)]
    pub return_url: Option<String>,
    // No doc comment here: it would wrap the enum's reference in an `allOf`, which generated
    // clients cannot take; the enum's own description says it.
    #[oai(skip_serializing_if_is_none)]
    pub locale: Option<LocaleWire>,
}

/// What the checkout page for a group is opened with.
#[derive(Object, serde::Deserialize)]
#[oai(rename = "GroupCheckoutRequest")]
#[serde(deny_unknown_fields)]
pub struct GroupCheckoutRequestBody {
    /// 2 to `EVISA_GROUP_MAX` (default 50) of my submitted applications, each once: the page
    /// takes one payment of the sum of their fees.
    pub application_ids: Vec<uuid::Uuid>,
    /// As for one application's checkout.
    #[oai(validator(max_length = 2048), skip_serializing_if_is_none)]
    pub return_url: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub locale: Option<LocaleWire>,
}

impl ServerSetFields for GroupCheckoutRequestBody {
    const SERVER_SET: &'static [(&'static str, &'static str)] =
        <CheckoutRequestBody as ServerSetFields>::SERVER_SET;
}

impl ServerSetFields for CheckoutRequestBody {
    const SERVER_SET: &'static [(&'static str, &'static str)] = &[
        ("amount", "the fee is the one fixed at submission"),
        (
            "expires_at",
            "the link is valid until the application's payment deadline",
        ),
    ];
}

/// A checkout link.
#[derive(Object, Debug, Clone)]
#[oai(rename = "Checkout")]
pub struct CheckoutView {
    /// The single-use link of the hosted checkout page. Its first visit binds it to that
    /// browser; a later visit from any other is refused.
    pub url: String,
    /// Until when the link can be used: the application's payment deadline.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// What a request's answer is saved as (for replays): never the link's token, which is derived
/// again from the session id.
#[derive(Object, Debug, Clone)]
#[oai(rename = "CheckoutSessionSaved")]
struct Opened {
    session_id: uuid::Uuid,
    expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(ApiResponse)]
pub enum CheckoutCreated {
    /// The link was made. A retry with the same `Idempotency-Key` and body gets the same link.
    #[oai(status = 201)]
    Created(Json<CheckoutView>),
}

/// The link of a session: `{EVISA_PUBLIC_BASE_URL}checkout/{token}`.
pub fn link(state: &AppState, session: CheckoutSessionId) -> Result<String, ApiError> {
    let token = LinkToken::of(&state.config.receipt_key, session);
    Ok(state
        .config
        .public_base_url
        .join(&format!("checkout/{}", token.expose()))
        .map_err(ApiError::internal)?
        .to_string())
}

#[OpenApi(tag = "Tag::Payments")]
impl CheckoutApi {
    /// Open the hosted checkout page for an application.
    ///
    /// Answers a single-use, unguessable link to evisa-pay's own payment page for one of my
    /// submitted applications (a paid one shows as paid), valid until its payment deadline.
    /// Send the applicant there; when they are done the page sends them to `return_url` with
    /// nothing added: ask `GET /v1/applications/{id}` (or listen to notifications) for the
    /// outcome. Requires an `Idempotency-Key`.
    #[oai(
        path = "/v1/applications/:id/checkout",
        method = "post",
        operation_id = "createCheckout"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
        /// A unique key per checkout link (a UUID), 1 to 255 visible ASCII characters.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<KeyHeader>,
        body: JsonBody<CheckoutRequestBody>,
    ) -> ApiResult<CheckoutCreated> {
        let JsonBody(request, raw) = body;
        let path = format!("/v1/applications/{}/checkout", id.0);
        open(
            &auth,
            &state,
            idempotency_key.0.as_str(),
            &path,
            &raw,
            &[ApplicationId::from_uuid(id.0)],
            request.return_url,
            request.locale,
        )
        .await
    }

    /// Open the hosted checkout page for a group of applications.
    ///
    /// Like `POST /v1/applications/{id}/checkout`, for 2 to `EVISA_GROUP_MAX` of my submitted
    /// applications paid together: the page takes one payment (card or Alipay) of the sum of
    /// their fees, as `POST /v1/payments` does. The link is valid until the earliest of their
    /// payment deadlines. Refused naming the member (`/application_ids/{i}`): not mine 404, not
    /// submitted 409.
    #[oai(
        path = "/v1/checkout",
        method = "post",
        operation_id = "createGroupCheckout"
    )]
    async fn create_group(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// A unique key per checkout link (a UUID), 1 to 255 visible ASCII characters.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<KeyHeader>,
        body: JsonBody<GroupCheckoutRequestBody>,
    ) -> ApiResult<CheckoutCreated> {
        let JsonBody(request, raw) = body;
        let max = state.config.payments.group_max;
        if !(2..=max).contains(&request.application_ids.len()) {
            return Err(ApiError::invalid(vec![field_problem(
                "application_ids",
                &format!("must name 2 to {max} applications"),
            )]));
        }
        let applications: Vec<ApplicationId> = request
            .application_ids
            .iter()
            .map(|a| ApplicationId::from_uuid(*a))
            .collect();
        open(
            &auth,
            &state,
            idempotency_key.0.as_str(),
            "/v1/checkout",
            &raw,
            &applications,
            request.return_url,
            request.locale,
        )
        .await
    }
}

fn session_error(e: CreateSessionError) -> ApiError {
    match e {
        CreateSessionError::ApplicationNotFound => ApiError::not_found("application"),
        CreateSessionError::NotPayable(status) => ApiError::conflict(
            "not-payable",
            format!("the application is {status}; only a submitted application can be paid"),
        ),
        CreateSessionError::Repeated => ApiError::invalid(vec![field_problem(
            "application_ids",
            "names an application twice",
        )]),
        CreateSessionError::Member {
            index,
            application,
            refusal,
        } => {
            let member = vec![crate::problem::FieldProblem {
                field: "application_ids".into(),
                pointer: Some(format!("/application_ids/{index}")),
                detail: refusal.to_string(),
            }];
            match *refusal {
                CreateSessionError::ApplicationNotFound => ApiError::NotFound(Json(
                    crate::problem::Problem::new(
                        poem::http::StatusCode::NOT_FOUND,
                        "not-found",
                        "Not found",
                        format!("application {application} not found"),
                    )
                    .with_errors(member),
                )),
                CreateSessionError::NotPayable(status) => ApiError::conflict_with(
                    "not-payable",
                    format!(
                        "application {application} is {status}; only submitted applications can be paid"
                    ),
                    member,
                ),
                CreateSessionError::Repeated => ApiError::invalid(member),
                other => session_error(other),
            }
        }
        CreateSessionError::Database(e) => e.into(),
    }
}

/// Opens a session for `applications` once per `Idempotency-Key`: the one path of both routes.
#[allow(clippy::too_many_arguments)]
async fn open(
    auth: &BearerAuth,
    state: &AppState,
    idempotency_key: &str,
    path: &str,
    raw: &serde_json::Value,
    applications: &[ApplicationId],
    return_url: Option<String>,
    locale: Option<LocaleWire>,
) -> ApiResult<CheckoutCreated> {
    let me = auth.applicant()?;
    let return_url = return_url
        .as_deref()
        .map(|u| state.config.return_url_origins.check(u))
        .transpose()
        .map_err(|e| ApiError::invalid(vec![field_problem("return_url", &e.to_string())]))?;
    // Without a locale, the page negotiates with the browser on each visit.
    let locale = locale.map(|l| match l {
        LocaleWire::En => Locale::En,
        LocaleWire::ZhCn => Locale::ZhCn,
    });
    let deadline_after = chrono::Duration::from_std(state.config.payments.application_expiry)
        .map_err(ApiError::internal)?;
    let opened = idempotent::once(
        &state.db,
        me.user_id,
        Some(idempotency_key),
        path,
        raw,
        201,
        async |tx| {
            let session = checkout::create(
                tx,
                &state.config.receipt_key,
                me.user_id,
                applications,
                return_url.as_ref().map(url::Url::as_str),
                locale,
                deadline_after,
            )
            .await
            .map_err(session_error)?;
            Ok(Opened {
                session_id: session.id.as_uuid(),
                expires_at: session.expires_at,
            })
        },
    )
    .await?;
    let url = link(state, CheckoutSessionId::from_uuid(opened.session_id))?;
    tracing::info!(checkout_session = %opened.session_id, applications = applications.len(), "checkout link made");
    Ok(CheckoutCreated::Created(Json(CheckoutView {
        url,
        expires_at: opened.expires_at,
    })))
}
