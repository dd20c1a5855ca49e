//! `GET /metrics` in the Prometheus text format, on its own address (`EVISA_METRICS_ADDR`,
//! default 127.0.0.1:9464) and never on the public API port. What is counted, and under which
//! names, is in `evisa_core::metrics`; this installs the recorder and serves it.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use poem::{
    EndpointExt, Response, Route, get, handler, http::StatusCode, listener::Listener, web::Data,
};

/// What a scrape samples besides the recorded counters.
#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    pool: sqlx::PgPool,
    /// Whether this process samples the job queues (`work` and `dev`; the API does not need to).
    queues: bool,
}

/// Installs the recorder and serves it on `addr` until the process ends. A port already in use
/// is logged and skipped: payments matter more than their figures.
pub async fn start(addr: Option<SocketAddr>, pool: sqlx::PgPool, queues: bool) {
    let Some(addr) = addr else {
        tracing::info!("metrics off (EVISA_METRICS_ADDR=off)");
        return;
    };
    let handle = match PrometheusBuilder::new()
        .set_buckets(evisa_core::metrics::BUCKETS)
        .and_then(|b| b.install_recorder())
    {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "metrics recorder not installed");
            return;
        }
    };
    let acceptor = match poem::listener::TcpListener::bind(addr)
        .into_acceptor()
        .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(%addr, error = %e, "metrics not served: cannot bind EVISA_METRICS_ADDR");
            return;
        }
    };
    let app = Route::new().at("/metrics", get(metrics)).data(Scrape {
        handle,
        pool,
        queues,
    });
    tracing::info!(%addr, "metrics listening");
    tokio::spawn(async move {
        if let Err(e) = poem::Server::new_with_acceptor(acceptor).run(app).await {
            tracing::error!(%addr, error = %e, "metrics server stopped");
        }
    });
}

#[handler]
async fn metrics(scrape: Data<&Scrape>) -> Response {
    evisa_core::metrics::db_pool(&scrape.pool);
    if scrape.queues
        && let Err(e) = evisa_worker::observed::sample_queues(&scrape.pool).await
    {
        tracing::warn!(error = %e, "job queue gauges not sampled");
    }
    scrape.handle.run_upkeep();
    Response::builder()
        .status(StatusCode::OK)
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(scrape.handle.render())
}
