//! Officers' and admins' view of applications, and their decisions.

use chrono::{DateTime, Utc};
use evisa_core::{
    CountryCode,
    application::{AdminFilter, Decision, store},
    ids::{ApplicationId, PaymentId},
    refund::{self, RefundError},
};
use evisa_jobs::{RefundPayment, enqueue};
use poem::web::Data;
use poem_openapi::{
    Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::{
    Tag,
    applications::{application_error, default_limit, parse_cursor},
    country::CountryWire,
    views::{ApplicationPage, ApplicationView, StatusWire, VisaTypeWire},
};
use crate::{
    auth::BearerAuth,
    body::{JsonBody, ServerSetFields},
    problem::{ApiError, ApiResult, FieldProblem},
    state::AppState,
};

pub struct AdminApi;

/// What the officer decides.
#[derive(Enum, Clone, Copy, Debug, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// paid → processing
    BeginProcessing,
    /// processing → approved
    Approve,
    /// processing → rejected (a reason is required)
    Reject,
}

/// An officer's decision on an application. Parsed flat (so that errors name `decision` or
/// `reason`); declared as the `DecisionRequest` schema of [`super::decision`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub decision: DecisionKind,
    /// Why the application is rejected; required for `reject`, refused otherwise.
    pub reason: Option<String>,
}

impl ServerSetFields for DecisionBody {}

/// One change in an application's or a payment's history.
#[derive(Object)]
#[oai(rename = "HistoryEntry")]
pub struct HistoryEntryView {
    /// What happened (`submit`, `fee_waived`, `approve`, ...).
    pub event: String,
    #[oai(skip_serializing_if_is_none)]
    pub from_status: Option<String>,
    pub to_status: String,
    /// `applicant`, `officer`, `admin`, `system` or `gateway`.
    pub actor: String,
    #[oai(skip_serializing_if_is_none)]
    pub actor_id: Option<uuid::Uuid>,
    /// What caused it (a fee rule, a gateway event id, a job id).
    #[oai(skip_serializing_if_is_none)]
    pub cause: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

impl From<store::HistoryEntry> for HistoryEntryView {
    fn from(e: store::HistoryEntry) -> Self {
        HistoryEntryView {
            event: e.event,
            from_status: e.from_status,
            to_status: e.to_status,
            actor: e.actor_kind,
            actor_id: e.actor_id.map(|a| a.as_uuid()),
            cause: e.cause,
            occurred_at: e.occurred_at,
        }
    }
}

impl DecisionBody {
    fn into_decision(self) -> Result<Decision, ApiError> {
        let reason = self
            .reason
            .map(|r| (r.trim().to_string(), r.chars().count()));
        let reason_problem = |detail: &str| {
            ApiError::invalid(vec![FieldProblem {
                field: "reason".into(),
                pointer: Some("/reason".into()),
                detail: detail.into(),
            }])
        };
        match (self.decision, reason) {
            // The length is that of the reason as sent (the spec's `maxLength`).
            (DecisionKind::Reject, Some((r, sent)))
                if !r.is_empty() && (1..=1000).contains(&sent) =>
            {
                Ok(Decision::Reject { reason: r })
            }
            (DecisionKind::Reject, _) => Err(reason_problem(
                "is required to reject (1 to 1000 characters, not all blank)",
            )),
            (_, Some(_)) => Err(reason_problem("only a rejection takes a reason")),
            (DecisionKind::BeginProcessing, None) => Ok(Decision::BeginProcessing),
            (DecisionKind::Approve, None) => Ok(Decision::Approve),
        }
    }
}

#[OpenApi(tag = "Tag::Admin")]
impl AdminApi {
    /// List all applications (officers).
    #[oai(
        path = "/v1/admin/applications",
        method = "get",
        operation_id = "adminListApplications"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        status: Query<Option<StatusWire>>,
        visa_type: Query<Option<VisaTypeWire>>,
        /// Nationality.
        nationality: Query<Option<CountryWire>>,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<uuid::Uuid>>,
    ) -> ApiResult<Json<ApplicationPage>> {
        auth.staff()?;
        let filter = AdminFilter {
            status: status.0.map(Into::into),
            visa_type: visa_type.0.map(Into::into),
            nationality: nationality
                .0
                .map(|n| CountryCode::parse(&n.0))
                .transpose()
                .map_err(|e| ApiError::bad_param("nationality", e.to_string()))?,
        };
        let cursor = parse_cursor(cursor.0);
        let page = store::list_all(&state.db, &state.config.data_keys, &filter, cursor, limit.0)
            .await
            .map_err(application_error)?;
        Ok(Json(page.into()))
    }

    /// Get any application (officers).
    #[oai(
        path = "/v1/admin/applications/:id",
        method = "get",
        operation_id = "adminGetApplication"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<ApplicationView>> {
        auth.staff()?;
        let app = store::get(
            &state.db,
            &state.config.data_keys,
            ApplicationId::from_uuid(id.0),
        )
        .await
        .map_err(application_error)?;
        Ok(Json(app.into()))
    }

    /// Decide an application (officers).
    ///
    /// `begin_processing` takes a paid application into processing; `approve` and `reject`
    /// decide it. Any other order is 409. When the service refunds fees on rejection
    /// (`EVISA_REFUND_ON_REJECTION`), a rejection starts a full refund of the fee (of this
    /// application's share only, when a group payment paid it).
    #[oai(
        path = "/v1/admin/applications/:id/decision",
        method = "post",
        operation_id = "decideApplication"
    )]
    async fn decide(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
        body: JsonBody<DecisionBody>,
    ) -> ApiResult<Json<ApplicationView>> {
        let me = auth.staff()?;
        let decision = body.0.into_decision()?;
        let id = ApplicationId::from_uuid(id.0);
        let mut tx = state.db.begin().await?;
        let app = store::decide(
            &mut tx,
            &state.config.data_keys,
            auth.actor(),
            id,
            &decision,
        )
        .await
        .map_err(application_error)?;
        // The configured policy may give the fee back on rejection.
        if let (Decision::Reject { reason }, true) =
            (&decision, state.config.payments.refund_on_rejection)
        {
            // The payment that paid it, single or group: only this application's share is
            // given back.
            let paid_by: Option<uuid::Uuid> = sqlx::query_scalar(
                "SELECT payment_id FROM payment_allocations
                  WHERE application_id = $1 AND payment_state = 'succeeded'",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(payment) = paid_by {
                let reason = format!("application rejected: {reason}");
                // The operator's policy refunds, not one officer's discretion: no second approval.
                match refund::request(
                    &mut tx,
                    PaymentId::from_uuid(payment),
                    Some(id),
                    None,
                    &reason,
                    auth.actor(),
                    me.user_id,
                    refund::ApprovalPolicy::Above(i64::MAX),
                )
                .await
                {
                    Ok((r, _)) => enqueue(
                        &mut tx,
                        &RefundPayment { refund_id: r.id },
                        state.config.jobs.max_attempts,
                    )
                    .await
                    .map_err(ApiError::from)?,
                    // Already refunded by hand: nothing left to give back.
                    Err(RefundError::NothingLeft) => {}
                    Err(e) => return Err(ApiError::internal(e)),
                }
            }
        }
        tx.commit().await?;
        tracing::info!(application_id = %app.id, status = %app.status, "application decided");
        Ok(Json(app.into()))
    }

    /// An application's history (officers).
    #[oai(
        path = "/v1/admin/applications/:id/history",
        method = "get",
        operation_id = "adminApplicationHistory"
    )]
    async fn history(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<Vec<HistoryEntryView>>> {
        auth.staff()?;
        let id = ApplicationId::from_uuid(id.0);
        // 404 for an unknown id rather than an empty history.
        store::get(&state.db, &state.config.data_keys, id)
            .await
            .map_err(application_error)?;
        let entries = store::history(&state.db, id).await?;
        Ok(Json(entries.into_iter().map(Into::into).collect()))
    }
}
