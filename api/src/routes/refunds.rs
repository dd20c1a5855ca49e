//! Officers refund succeeded payments, in full or in parts, never more than was paid.

use evisa_core::{
    ids::{ApplicationId, PaymentId},
    payment::store as payments,
    refund::{self, ApprovalError, Refund, RefundError, RefundStatus},
};
use evisa_jobs::{RefundPayment, enqueue};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path},
    payload::Json,
    types::Example,
};

use super::{Tag, admin::HistoryEntryView, payments::PaymentView};
use crate::{
    auth::BearerAuth,
    body::{JsonBody, ServerSetFields},
    idempotent::{self, KeyHeader},
    limits::{WhenRedisIsDown, client_ip, limit},
    problem::{ApiError, ApiResult, FieldProblem},
    state::AppState,
};

pub struct RefundsApi;

/// A refund an officer asks for.
#[derive(Object, serde::Deserialize)]
#[oai(rename = "RefundRequest", example)]
#[serde(deny_unknown_fields)]
pub struct RefundRequestBody {
    /// For a group payment (required): the application whose share is refunded. A refund never
    /// exceeds what remains of that application's share. May be omitted for a payment of one
    /// application.
    #[oai(skip_serializing_if_is_none)]
    pub application_id: Option<uuid::Uuid>,
    /// Minor units of the payment's currency; everything that remains (of the share) when
    /// omitted.
    #[oai(validator(minimum(value = "1")), skip_serializing_if_is_none)]
    pub amount: Option<i64>,
    /// Why (kept with the refund and in the payment's history).
    #[oai(validator(min_length = 1, max_length = 1000))]
    pub reason: String,
}

impl Example for RefundRequestBody {
    fn example() -> Self {
        RefundRequestBody {
            application_id: None,
            amount: Some(1000),
            reason: "Fee charged twice by the bank; partial goodwill refund.".into(),
        }
    }
}

impl ServerSetFields for RefundRequestBody {
    const SERVER_SET: &'static [(&'static str, &'static str)] =
        &[("currency", "refunds are in the payment's currency")];
}

/// A refund of (part of) a payment.
#[derive(Object, Debug, Clone)]
#[oai(rename = "Refund")]
pub struct RefundView {
    pub id: uuid::Uuid,
    pub payment_id: uuid::Uuid,
    /// The application whose share of the payment it gives back; absent only for a refund of a
    /// group payment made at the gateway outside evisa-pay.
    #[oai(skip_serializing_if_is_none)]
    pub application_id: Option<uuid::Uuid>,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    pub reason: String,
    /// `pending_approval` (waits for a second staff member), `pending`, `succeeded`, `failed`
    /// or `declined`.
    pub status: String,
    #[oai(skip_serializing_if_is_none)]
    pub failure_message: Option<String>,
    /// `evisa` (asked for here) or `gateway` (made outside evisa-pay, e.g. in the Stripe
    /// dashboard, and recorded from the gateway's events).
    pub origin: String,
    /// The gateway's id of the refund (a Stripe `re_...`), once known.
    #[oai(skip_serializing_if_is_none)]
    pub gateway_reference: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<Refund> for RefundView {
    fn from(r: Refund) -> Self {
        RefundView {
            id: r.id,
            payment_id: r.payment_id.as_uuid(),
            application_id: r.application_id.map(|a| a.as_uuid()),
            amount: r.amount.amount_minor(),
            currency: r.amount.currency().code().to_string(),
            reason: r.reason,
            status: r.status.as_str().to_string(),
            failure_message: r.failure_message,
            origin: r.origin.as_str().to_string(),
            gateway_reference: r.gateway_reference,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(ApiResponse)]
pub enum RefundAccepted {
    /// The refund is `pending` (a job carries it out at the gateway) or `pending_approval`.
    #[oai(status = 202)]
    Accepted(Json<RefundView>),
}

fn refund_error(e: RefundError) -> ApiError {
    match e {
        RefundError::PaymentNotFound => ApiError::not_found("payment"),
        RefundError::NotRefundable(status) => ApiError::conflict(
            "not-refundable",
            format!("only succeeded payments can be refunded; this one is {status}"),
        ),
        RefundError::Disputed(dispute) => ApiError::conflict(
            "payment-disputed",
            format!(
                "the payment is disputed (dispute {dispute}); no refund until the dispute is closed"
            ),
        ),
        RefundError::NothingLeft => {
            ApiError::conflict("fully-refunded", "the payment has been refunded in full")
        }
        RefundError::TooMuch { remaining } => ApiError::rule(
            "refund-exceeds-remainder",
            format!(
                "at most {} ({} minor units) can still be refunded",
                remaining,
                remaining.amount_minor()
            ),
            vec![FieldProblem {
                field: "amount".into(),
                pointer: Some("/amount".into()),
                detail: format!("must be at most {}", remaining.amount_minor()),
            }],
        ),
        RefundError::ApplicationRequired => ApiError::invalid(vec![FieldProblem {
            field: "application_id".into(),
            pointer: Some("/application_id".into()),
            detail: "is required for a group payment: the application whose share to refund".into(),
        }]),
        RefundError::NotAllocated(a) => ApiError::invalid(vec![FieldProblem {
            field: "application_id".into(),
            pointer: Some("/application_id".into()),
            detail: format!("the payment does not pay application {a}"),
        }]),
        RefundError::Database(e) => e.into(),
    }
}

/// The second staff member's decision, and the gateway work it starts, in one transaction.
async fn decide(
    auth: &BearerAuth,
    state: &AppState,
    id: uuid::Uuid,
    approve: bool,
) -> Result<RefundView, ApiError> {
    let me = auth.staff()?;
    let mut tx = state.db.begin().await?;
    let refund = refund::decide(&mut tx, id, approve, auth.actor(), me.user_id)
        .await
        .map_err(|e| match e {
            ApprovalError::NotFound => ApiError::not_found("refund"),
            ApprovalError::NotAwaitingApproval(status) => ApiError::conflict(
                "refund-not-awaiting-approval",
                format!("only a refund waiting for approval can be approved or declined; this one is {status}"),
            ),
            ApprovalError::SameStaffMember => ApiError::forbidden(
                "a different staff member must approve or decline a refund than the one who asked for it",
            ),
            ApprovalError::Database(e) => e.into(),
        })?;
    if refund.status == RefundStatus::Pending {
        enqueue(
            &mut tx,
            &RefundPayment {
                refund_id: refund.id,
            },
            state.config.jobs.max_attempts,
        )
        .await
        .map_err(ApiError::from)?;
    }
    tx.commit().await?;
    tracing::info!(refund_id = %refund.id, approve, "refund decided");
    Ok(refund.into())
}

#[OpenApi(tag = "Tag::Admin")]
impl RefundsApi {
    /// Get any payment (officers).
    #[oai(
        path = "/v1/admin/payments/:id",
        method = "get",
        operation_id = "adminGetPayment"
    )]
    async fn payment(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<PaymentView>> {
        auth.staff()?;
        let p = payments::get(&state.db, PaymentId::from_uuid(id.0))
            .await?
            .ok_or_else(|| ApiError::not_found("payment"))?;
        Ok(Json(p.into()))
    }

    /// Refund a payment (officers).
    ///
    /// In full (no `amount`) or in part, any number of times, never beyond what was paid: what
    /// is pending or waits for approval counts as refunded. Requires an `Idempotency-Key`. A
    /// refund above `EVISA_REFUND_APPROVAL_ABOVE` (by default: a refund of the whole payment) is
    /// `pending_approval` until a different staff member approves or declines it; otherwise it
    /// is `pending` until the gateway confirms it.
    #[oai(
        path = "/v1/admin/payments/:id/refunds",
        method = "post",
        operation_id = "refundPayment"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        req: &poem::Request,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
        /// A unique key per refund (a UUID), 1 to 255 visible ASCII characters.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<KeyHeader>,
        body: JsonBody<RefundRequestBody>,
    ) -> ApiResult<RefundAccepted> {
        let me = auth.staff()?;
        limit(
            &state,
            &format!("refunds:ip:{}", client_ip(req)),
            state.config.limits.refund(),
            WhenRedisIsDown::Refuse,
        )
        .await?;
        let path = format!("/v1/admin/payments/{}/refunds", id.0);
        let raw = body.1.clone();
        let view = idempotent::once(
            &state.db,
            me.user_id,
            Some(idempotency_key.0.as_str()),
            &path,
            &raw,
            202,
            async |tx| {
                let request = body.0;
                let reason = request.reason.trim();
                let mut errors = Vec::new();
                if reason.is_empty() || reason.chars().count() > 1000 {
                    errors.push(FieldProblem {
                        field: "reason".into(),
                        pointer: Some("/reason".into()),
                        detail: "must be 1 to 1000 characters".into(),
                    });
                }
                if request.amount.is_some_and(|a| a < 1) {
                    errors.push(FieldProblem {
                        field: "amount".into(),
                        pointer: Some("/amount".into()),
                        detail: "must be a positive number of minor units".into(),
                    });
                }
                if !errors.is_empty() {
                    return Err(ApiError::invalid(errors));
                }
                let (refund, _) = refund::request(
                    &mut *tx,
                    PaymentId::from_uuid(id.0),
                    request.application_id.map(ApplicationId::from_uuid),
                    request.amount,
                    reason,
                    auth.actor(),
                    me.user_id,
                    state.config.payments.refund_approval,
                )
                .await
                .map_err(refund_error)?;
                if refund.status == RefundStatus::Pending {
                    enqueue(
                        &mut *tx,
                        &RefundPayment {
                            refund_id: refund.id,
                        },
                        state.config.jobs.max_attempts,
                    )
                    .await
                    .map_err(ApiError::from)?;
                }
                Ok(RefundView::from(refund))
            },
        )
        .await?;
        tracing::info!(refund_id = %view.id, payment_id = %view.payment_id, "refund requested");
        Ok(RefundAccepted::Accepted(Json(view)))
    }

    /// Approve a refund that waits for a second staff member.
    ///
    /// Only a staff member other than the one who asked for it may; the refund becomes `pending`
    /// and is carried out at the gateway.
    #[oai(
        path = "/v1/admin/refunds/:id/approve",
        method = "post",
        operation_id = "approveRefund"
    )]
    async fn approve(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<RefundView>> {
        decide(&auth, &state, id.0, true).await.map(Json)
    }

    /// Decline a refund that waits for a second staff member.
    ///
    /// Only a staff member other than the one who asked for it may; nothing is refunded and the
    /// amount can be refunded again later.
    #[oai(
        path = "/v1/admin/refunds/:id/decline",
        method = "post",
        operation_id = "declineRefund"
    )]
    async fn decline(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<RefundView>> {
        decide(&auth, &state, id.0, false).await.map(Json)
    }

    /// A payment's history (officers): every change, who or what caused it, oldest first.
    #[oai(
        path = "/v1/admin/payments/:id/history",
        method = "get",
        operation_id = "adminPaymentHistory"
    )]
    async fn history(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<Vec<HistoryEntryView>>> {
        auth.staff()?;
        let id = PaymentId::from_uuid(id.0);
        payments::get(&state.db, id)
            .await?
            .ok_or_else(|| ApiError::not_found("payment"))?;
        let entries = payments::history(&state.db, id).await?;
        Ok(Json(entries.into_iter().map(Into::into).collect()))
    }

    /// List a payment's refunds, oldest first (officers).
    #[oai(
        path = "/v1/admin/payments/:id/refunds",
        method = "get",
        operation_id = "listRefunds"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<Vec<RefundView>>> {
        auth.staff()?;
        let id = PaymentId::from_uuid(id.0);
        payments::get(&state.db, id)
            .await?
            .ok_or_else(|| ApiError::not_found("payment"))?;
        Ok(Json(
            refund::list(&state.db, id)
                .await?
                .into_iter()
                .map(Into::into)
                .collect(),
        ))
    }
}
