//! Paying the fees of a family or group with one charge: `POST /v1/payments` with the
//! applications' ids. The use case is `payment::start` (one payment, one allocation per
//! application); this is the HTTP edge and its refusals.

use evisa_core::{ids::ApplicationId, payment::CreatePaymentError};
use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Header, payload::Json};

use super::{
    ChannelWire, PaymentAccepted, PaymentRequestBody, PaymentView, ProviderWire, admit_attempt,
    create_error, field_problem, start_payment,
};
use crate::{
    auth::BearerAuth,
    body::{JsonBody, ServerSetFields},
    idempotent::{self, KeyHeader},
    problem::{ApiError, ApiResult, FieldProblem, Problem},
    routes::Tag,
    state::AppState,
};

pub struct GroupPaymentsApi;

/// A request to pay the fees of several of my applications with one charge. The amount is never
/// sent: it is the sum of the fees fixed on the applications at submission. `channel` (Alipay
/// only) chooses the cashier the buyer sees (default `page`).
#[derive(Object, serde::Deserialize)]
#[oai(rename = "GroupPaymentRequest")]
#[serde(deny_unknown_fields)]
pub struct GroupPaymentRequestBody {
    /// 2 to `EVISA_GROUP_MAX` (default 50) of my submitted, unpaid applications, each once.
    pub application_ids: Vec<uuid::Uuid>,
    // No doc comments on the enums' fields: they would wrap the references in an `allOf`, which
    // generated clients cannot take; the enums' own descriptions say it.
    pub provider: ProviderWire,
    /// Card payments: a PaymentMethod id from Stripe.js (or a test method such as
    /// `pm_card_visa`). The card holder need not be one of the applicants.
    #[oai(skip_serializing_if_is_none)]
    pub payment_method: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub channel: Option<ChannelWire>,
    /// Alipay only: where to send the payer's browser afterwards (one of the portal's origins).
    #[oai(skip_serializing_if_is_none)]
    pub return_url: Option<String>,
}

impl ServerSetFields for GroupPaymentRequestBody {
    const SERVER_SET: &'static [(&'static str, &'static str)] =
        <PaymentRequestBody as ServerSetFields>::SERVER_SET;
}

impl GroupPaymentRequestBody {
    /// The applications, if there are 2 to `max` of them.
    fn applications(&self, max: usize) -> Result<Vec<ApplicationId>, ApiError> {
        if !(2..=max).contains(&self.application_ids.len()) {
            return Err(ApiError::invalid(vec![field_problem(
                "application_ids",
                &format!("must name 2 to {max} applications"),
            )]));
        }
        Ok(self
            .application_ids
            .iter()
            .map(|a| ApplicationId::from_uuid(*a))
            .collect())
    }
}

/// The answer to a member of a group that cannot be paid: 404 for an application that is not
/// the caller's, 409 for one with a payment in flight, 422 for everything else; each names the
/// member (`/application_ids/{index}`).
pub(crate) fn member_error(
    index: usize,
    application: ApplicationId,
    refusal: CreatePaymentError,
) -> ApiError {
    let member = |detail: String| {
        vec![FieldProblem {
            field: "application_ids".into(),
            pointer: Some(format!("/application_ids/{index}")),
            detail,
        }]
    };
    match refusal {
        CreatePaymentError::ApplicationNotFound => ApiError::NotFound(Json(
            Problem::new(
                poem::http::StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                format!("application {application} not found"),
            )
            .with_errors(member("no such application of yours".into())),
        )),
        CreatePaymentError::AlreadyInProgress(payment) => ApiError::conflict_with(
            "payment-in-progress",
            format!("application {application} has payment {payment} in progress"),
            member(format!("has payment {payment} in progress")),
        ),
        CreatePaymentError::NotPayable(status) => ApiError::rule(
            "not-payable",
            format!(
                "application {application} is {status}; only submitted applications can be paid"
            ),
            member(format!("is {status}, not submitted")),
        ),
        CreatePaymentError::AlreadyPaid => ApiError::rule(
            "already-paid",
            format!("the fee of application {application} has already been paid"),
            member("is already paid".into()),
        ),
        CreatePaymentError::FeeExempt => ApiError::rule(
            "fee-exempt",
            format!("application {application} is exempt from the fee"),
            member("is exempt from the fee".into()),
        ),
        CreatePaymentError::NoPriceInCurrency(c) => ApiError::rule(
            "provider-not-offered",
            format!(
                "this payment method is not offered for application {application} (no price in {c})"
            ),
            member(format!("has no price in {c}")),
        ),
        CreatePaymentError::MixedCurrencies(a, b) => ApiError::rule(
            "mixed-currencies",
            format!("the applications' fees are in different currencies ({a} and {b})"),
            member(format!("its fee is in {b}, the group's in {a}")),
        ),
        CreatePaymentError::Repeated(_) => ApiError::invalid(member("is named twice".into())),
        other => create_error(other),
    }
}

#[OpenApi(tag = "Tag::Payments")]
impl GroupPaymentsApi {
    /// Pay the fees of several applications with one charge.
    ///
    /// A family or group pays together: 2 to `EVISA_GROUP_MAX` (default 50) of my submitted,
    /// unpaid applications whose fees share a currency for the provider, by card or Alipay,
    /// answered like `POST /v1/applications/{id}/payments` (202 at once; the same
    /// `Idempotency-Key` rules). The amount is the sum of their fees; `allocations` says each
    /// application's share. On success every application becomes `paid` in one transaction, or
    /// none does. Refused naming the member (`/application_ids/{i}`): another applicant's or an
    /// unknown application 404; one with a payment in flight 409; mixed currencies, one not
    /// submitted, already paid or fee-exempt 422. While the payment is in flight none of its
    /// applications can expire, change or be paid separately.
    #[oai(
        path = "/v1/payments",
        method = "post",
        operation_id = "createGroupPayment"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        req: &poem::Request,
        state: Data<&AppState>,
        /// A unique key per payment attempt (a UUID), 1 to 255 visible ASCII characters.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<KeyHeader>,
        body: JsonBody<GroupPaymentRequestBody>,
    ) -> ApiResult<PaymentAccepted> {
        let me = auth.applicant()?;
        let JsonBody(request, raw) = body;
        let applications = request.applications(state.config.payments.group_max)?;
        admit_attempt(&state, req, me.user_id, &applications).await?;
        let view = idempotent::once(
            &state.db,
            me.user_id,
            Some(idempotency_key.0.as_str()),
            "/v1/payments",
            &raw,
            202,
            async |tx| {
                let method = PaymentRequestBody {
                    provider: request.provider,
                    payment_method: request.payment_method,
                    channel: request.channel,
                    return_url: request.return_url,
                }
                .into_method(&state.config.return_url_origins)?;
                let payment = start_payment(&state, tx, me.user_id, &applications, method).await?;
                Ok(PaymentView::from(payment))
            },
        )
        .await?;
        if let Ok(provider) = view.provider.parse() {
            super::accepted(provider);
        }
        tracing::info!(payment_id = %view.id, applications = view.allocations.len(), "group payment accepted");
        Ok(PaymentAccepted::Accepted(Json(view)))
    }
}
