//! Disputes (chargebacks) for officers and admins: recorded from Stripe's `charge.dispute.*`
//! events; while one is open its application takes no decision and its payment no refund.

use evisa_core::{dispute, ids::PaymentId, payment::store as payments};
use poem::web::Data;
use poem_openapi::{
    Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::{Tag, applications::default_limit};
use crate::{
    auth::BearerAuth,
    body::{JsonBody, ServerSetFields},
    problem::{ApiError, ApiResult, FieldProblem},
    state::AppState,
};

pub struct DisputesApi;

/// A dispute (chargeback) of a card payment.
#[derive(Object, Debug, Clone)]
#[oai(rename = "Dispute")]
pub struct DisputeView {
    pub id: uuid::Uuid,
    /// Stripe's dispute id (`dp_...`).
    pub gateway_reference: String,
    pub payment_id: uuid::Uuid,
    /// The application on hold while the dispute is open.
    pub application_id: uuid::Uuid,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    /// The card holder's bank's reason (`fraudulent`, `product_not_received`, `general`, ...).
    pub reason: String,
    /// Stripe's status as last reported (`needs_response`, `under_review`, `won`, `lost`, ...).
    pub status: String,
    /// True until the dispute closes at the gateway: the payment takes no refund meanwhile.
    pub open: bool,
    /// True until an officer resolves the dispute: the application takes no decision meanwhile
    /// (also after the gateway's outcome, which someone must look at).
    pub on_hold: bool,
    /// `won` (the money stays), `lost` (the card holder's bank took the amount back) or
    /// `warning_closed` (an inquiry that ended there); absent while open.
    #[oai(skip_serializing_if_is_none)]
    pub outcome: Option<String>,
    pub opened_at: chrono::DateTime<chrono::Utc>,
    #[oai(skip_serializing_if_is_none)]
    pub closed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When an officer resolved it, who, and their note.
    #[oai(skip_serializing_if_is_none)]
    pub resolved_at: Option<chrono::DateTime<chrono::Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub resolved_by: Option<uuid::Uuid>,
    #[oai(skip_serializing_if_is_none)]
    pub resolution: Option<String>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<dispute::Dispute> for DisputeView {
    fn from(d: dispute::Dispute) -> Self {
        DisputeView {
            id: d.id,
            gateway_reference: d.gateway_reference,
            payment_id: d.payment_id.as_uuid(),
            application_id: d.application_id.as_uuid(),
            amount: d.amount.amount_minor(),
            currency: d.amount.currency().code().to_string(),
            reason: d.reason,
            status: d.status,
            open: d.closed_at.is_none(),
            on_hold: d.resolved_at.is_none(),
            outcome: d.outcome,
            opened_at: d.opened_at,
            closed_at: d.closed_at,
            resolved_at: d.resolved_at,
            resolved_by: d.resolved_by.map(|u| u.as_uuid()),
            resolution: d.resolution,
            updated_at: d.updated_at,
        }
    }
}

/// Which disputes to list.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename = "DisputeState", rename_all = "snake_case")]
pub enum DisputeStateWire {
    Open,
    Closed,
}

/// An officer's resolution of a dispute.
#[derive(Object, Debug, Clone, serde::Deserialize)]
#[oai(rename = "DisputeResolution")]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// What was decided about the case and why (1 to 1000 characters).
    #[oai(validator(min_length = 1, max_length = 1000))]
    pub resolution: String,
}

impl ServerSetFields for ResolveBody {}

/// One page of disputes, newest first.
#[derive(Object)]
#[oai(rename = "DisputePage")]
pub struct DisputePage {
    pub items: Vec<DisputeView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

#[OpenApi(tag = "Tag::Admin")]
impl DisputesApi {
    /// List disputes, newest first (officers).
    #[oai(
        path = "/v1/admin/disputes",
        method = "get",
        operation_id = "adminListDisputes"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// Only open, or only closed, disputes.
        #[oai(name = "state")]
        state_filter: Query<Option<DisputeStateWire>>,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<uuid::Uuid>>,
    ) -> ApiResult<Json<DisputePage>> {
        auth.staff()?;
        let open = state_filter.0.map(|s| s == DisputeStateWire::Open);
        let mut items = dispute::list(&state.db, open, cursor.0, limit.0 + 1).await?;
        let more = items.len() > limit.0 as usize;
        items.truncate(limit.0 as usize);
        let next_cursor = more
            .then(|| items.last().map(|d| d.id.to_string()))
            .flatten();
        Ok(Json(DisputePage {
            items: items.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }

    /// List a payment's disputes, oldest first (officers).
    #[oai(
        path = "/v1/admin/payments/:id/disputes",
        method = "get",
        operation_id = "adminListPaymentDisputes"
    )]
    async fn for_payment(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<Vec<DisputeView>>> {
        auth.staff()?;
        let id = PaymentId::from_uuid(id.0);
        payments::get(&state.db, id)
            .await?
            .ok_or_else(|| ApiError::not_found("payment"))?;
        Ok(Json(
            dispute::for_payment(&state.db, id)
                .await?
                .into_iter()
                .map(Into::into)
                .collect(),
        ))
    }

    /// Resolve a dispute (officers): the hold on its application ends.
    ///
    /// An application whose payment is disputed takes no decision until an officer resolves the
    /// dispute, whatever the gateway's outcome (a lost dispute means the fee was taken back).
    /// The payment still takes no refund while the gateway has the dispute open. 409 when it
    /// was already resolved.
    #[oai(
        path = "/v1/admin/disputes/:id/resolve",
        method = "post",
        operation_id = "adminResolveDispute"
    )]
    async fn resolve(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
        body: JsonBody<ResolveBody>,
    ) -> ApiResult<Json<DisputeView>> {
        let me = auth.staff()?;
        let note = body.0.resolution.trim();
        if note.is_empty() || note.chars().count() > 1000 {
            return Err(ApiError::invalid(vec![FieldProblem {
                field: "resolution".into(),
                pointer: Some("/resolution".into()),
                detail: "must be 1 to 1000 characters".into(),
            }]));
        }
        match dispute::resolve(&state.db, id.0, me.user_id, auth.actor(), note).await {
            Ok(d) => Ok(Json(d.into())),
            Err(dispute::ResolveError::NotFound) => Err(ApiError::not_found("dispute")),
            Err(dispute::ResolveError::AlreadyResolved) => Err(ApiError::conflict(
                "dispute-resolved",
                "this dispute was already resolved",
            )),
            Err(dispute::ResolveError::Database(e)) => Err(e.into()),
        }
    }
}
