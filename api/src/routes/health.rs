//! Liveness and readiness probes.

use std::time::Duration;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, payload::Json};

use super::Tag;
use crate::{
    problem::{ApiError, ApiResult, FieldProblem},
    state::AppState,
};

pub struct HealthApi;

/// The process is up.
#[derive(Object)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Every dependency answered.
#[derive(Object)]
pub struct Readiness {
    /// Always `ready`.
    pub status: String,
    pub postgres: String,
    pub redis: String,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[OpenApi(tag = "Tag::Health")]
impl HealthApi {
    /// Liveness: the process answers HTTP.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> ApiResult<Json<Health>> {
        Ok(Json(Health {
            status: "ok".into(),
        }))
    }

    /// Readiness: Postgres and Redis both answer within two seconds.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&AppState>) -> ApiResult<Json<Readiness>> {
        let pg = tokio::time::timeout(
            PROBE_TIMEOUT,
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.db),
        )
        .await;
        let mut redis = state.redis.clone();
        let rd = tokio::time::timeout(
            PROBE_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut redis),
        )
        .await;
        let mut down = Vec::new();
        if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
            down.push(FieldProblem {
                field: "process".into(),
                pointer: None,
                detail: "is stopping".into(),
            });
        }
        if !matches!(pg, Ok(Ok(1))) {
            down.push(FieldProblem {
                field: "postgres".into(),
                pointer: None,
                detail: "did not answer".into(),
            });
        }
        if !matches!(rd, Ok(Ok(ref pong)) if pong == "PONG") {
            down.push(FieldProblem {
                field: "redis".into(),
                pointer: None,
                detail: "did not answer".into(),
            });
        }
        if !down.is_empty() {
            let names: Vec<_> = down.iter().map(|d| d.field.clone()).collect();
            tracing::warn!(down = ?names, "not ready");
            let ApiError::Unavailable(mut problem, retry) =
                ApiError::unavailable(format!("not ready: {} unavailable", names.join(", ")))
            else {
                unreachable!("unavailable() builds Unavailable")
            };
            problem.0.errors = down;
            return Err(ApiError::Unavailable(problem, retry));
        }
        Ok(Json(Readiness {
            status: "ready".into(),
            postgres: "ok".into(),
            redis: "ok".into(),
        }))
    }
}
