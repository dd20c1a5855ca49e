//! Reconciliation reports (admins): started here, run by a worker's job, read here later — the
//! gateway calls never happen inside a request.

use evisa_core::{
    reconciliation::Disagreement,
    reconciliation_reports::{self as reports, StoredReport},
};
use evisa_jobs::{ReconcileReport, enqueue};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi, param::Path, payload::Json, types::Example,
};

use super::Tag;
use crate::{
    auth::BearerAuth,
    body::{JsonBody, ServerSetFields},
    problem::{ApiError, ApiResult},
    state::AppState,
};

pub struct ReconciliationApi;

/// A report to run.
#[derive(Object, serde::Deserialize)]
#[oai(rename = "ReconciliationRequest", example)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationRequestBody {
    /// Compare every payment created on or after this day (UTC).
    pub since: chrono::NaiveDate,
}

impl Example for ReconciliationRequestBody {
    fn example() -> Self {
        ReconciliationRequestBody {
            since: chrono::NaiveDate::from_ymd_opt(2026, 11, 1).expect("a date"),
        }
    }
}

impl ServerSetFields for ReconciliationRequestBody {}

/// Where a report is.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename = "ReconciliationStatus", rename_all = "snake_case")]
pub enum ReportStatusWire {
    /// A worker is comparing payments with their gateways.
    Running,
    Done,
    /// It could not finish (see `error`); start another.
    Failed,
}

/// One disagreement between our records and a gateway's.
#[derive(Object)]
#[oai(rename = "Disagreement")]
pub struct DisagreementView {
    pub payment_id: String,
    pub provider: String,
    /// What we recorded.
    pub ours: String,
    /// What the gateway says.
    pub gateway: String,
    pub detail: String,
}

/// A reconciliation report.
#[derive(Object)]
#[oai(rename = "Reconciliation")]
pub struct ReconciliationView {
    pub id: uuid::Uuid,
    pub status: ReportStatusWire,
    pub since: chrono::NaiveDate,
    /// Payments compared with their gateway (once done).
    #[oai(skip_serializing_if_is_none)]
    pub checked: Option<u64>,
    /// Every disagreement (once done); empty when all is well.
    pub disagreements: Vec<DisagreementView>,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[oai(skip_serializing_if_is_none)]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<StoredReport> for ReconciliationView {
    fn from(r: StoredReport) -> Self {
        let found: Vec<Disagreement> = r
            .disagreements
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        ReconciliationView {
            id: r.id,
            status: match r.status.as_str() {
                "done" => ReportStatusWire::Done,
                "failed" => ReportStatusWire::Failed,
                _ => ReportStatusWire::Running,
            },
            since: r.since,
            checked: r.checked.map(|n| n.max(0) as u64),
            disagreements: found
                .into_iter()
                .map(|d| DisagreementView {
                    payment_id: d.payment_id,
                    provider: d.provider,
                    ours: d.ours,
                    gateway: d.gateway,
                    detail: d.detail,
                })
                .collect(),
            error: r.error,
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

#[derive(ApiResponse)]
pub enum ReportStarted {
    /// The report is running; read it at `GET /v1/admin/reconciliation-reports/{id}`.
    #[oai(status = 202)]
    Accepted(Json<ReconciliationView>),
}

#[OpenApi(tag = "Tag::Admin")]
impl ReconciliationApi {
    /// Start a reconciliation report (admins).
    ///
    /// A worker compares every payment created since `since` with its gateway (payment statuses
    /// and amounts, refunds); read the result with `GET /v1/admin/reconciliation-reports/{id}`.
    #[oai(
        path = "/v1/admin/reconciliation-reports",
        method = "post",
        operation_id = "startReconciliation"
    )]
    async fn start(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        body: JsonBody<ReconciliationRequestBody>,
    ) -> ApiResult<ReportStarted> {
        let me = auth.admin()?;
        let mut tx = state.db.begin().await?;
        let report = reports::start(&mut tx, me.user_id, body.0.since).await?;
        enqueue(
            &mut tx,
            &ReconcileReport {
                report_id: report.id,
            },
            state.config.jobs.max_attempts,
        )
        .await
        .map_err(ApiError::from)?;
        tx.commit().await?;
        Ok(ReportStarted::Accepted(Json(report.into())))
    }

    /// Read a reconciliation report (admins).
    #[oai(
        path = "/v1/admin/reconciliation-reports/:id",
        method = "get",
        operation_id = "getReconciliation"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<ReconciliationView>> {
        auth.admin()?;
        let report = reports::get(&state.db, id.0)
            .await?
            .ok_or_else(|| ApiError::not_found("reconciliation report"))?;
        Ok(Json(report.into()))
    }
}
