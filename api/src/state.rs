//! What every request handler can reach.

use std::sync::Arc;

use evisa_core::{
    auth::TokenAuthority,
    config::Config,
    payment::{Announced, STATUS_CHANNEL},
    ratelimit::RateLimiter,
};
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio::sync::broadcast;

/// Shared state of the API process.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub db: PgPool,
    pub redis: ConnectionManager,
    pub limiter: RateLimiter,
    pub tokens: TokenAuthority,
    /// Every committed payment status change, from any process (via Postgres NOTIFY), with the
    /// payment as it now is; `None` after the listener lost its connection, when changes may
    /// have been missed: subscribers re-read what they follow.
    pub status_changes: broadcast::Sender<Option<Arc<Announced>>>,
    /// `None` when Alipay is not configured.
    pub alipay: Option<evisa_core::gateway::alipay::AlipayClient>,
    /// Alipay notifies refused (bad signature, foreign app, mismatched amount...), for operators.
    pub alipay_notifies_refused: std::sync::atomic::AtomicU64,
    /// Argon2 runs at once (each takes ~19 MiB and a core for tens of ms): a flood of logins
    /// queues here instead of exhausting memory and CPU.
    pub password_hashing: crate::hashing::HashingPool,
    /// Event streams open in this process.
    pub event_streams: Arc<crate::streams::EventStreams>,
    /// Stores webhooks that change nothing, many to a statement under load.
    pub settled: evisa_core::inbox::SettledWriter,
    /// Set when the process is stopping: `/readyz` answers 503 so load balancers move traffic
    /// away while requests are still served.
    pub draining: std::sync::atomic::AtomicBool,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Runs Argon2 work (`f`) on a hashing thread ([`crate::hashing::HashingPool`]).
    pub async fn hash_bounded<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, crate::problem::ApiError> {
        self.password_hashing
            .run(std::time::Duration::from_secs(5), f)
            .await
    }

    pub fn new(config: Config, db: PgPool, redis: ConnectionManager) -> Self {
        let limiter = RateLimiter::new(redis.clone(), &config.redis_prefix);
        let tokens = TokenAuthority::new(config.jwt.clone());
        let (status_changes, _) = broadcast::channel(1024);
        let alipay = evisa_core::gateway::alipay::client_for(&config);
        tokio::spawn(listen_for_status_changes(
            db.clone(),
            status_changes.clone(),
        ));
        let settled = evisa_core::inbox::SettledWriter::batched(db.clone());
        AppState(Arc::new(Inner {
            config,
            settled,
            db,
            redis,
            limiter,
            tokens,
            status_changes,
            alipay,
            alipay_notifies_refused: std::sync::atomic::AtomicU64::new(0),
            password_hashing: crate::hashing::HashingPool::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            event_streams: Arc::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
        }))
    }
}

/// Relays Postgres notifications of payment status changes to this process's subscribers,
/// reconnecting when the connection drops. Ends when the state is dropped.
async fn listen_for_status_changes(
    db: sqlx::PgPool,
    tx: broadcast::Sender<Option<Arc<Announced>>>,
) {
    let mut reconnected = false;
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&db).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "status listener cannot connect; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(STATUS_CHANNEL).await {
            tracing::warn!(error = %e, "status listener cannot LISTEN; retrying");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        if reconnected {
            let _ = tx.send(None);
        }
        reconnected = true;
        loop {
            match listener.try_recv().await {
                // sqlx re-established the connection by itself: what was sent meanwhile is lost.
                Ok(None) => {
                    tracing::warn!("status listener reconnected; followers re-read");
                    let _ = tx.send(None);
                }
                Ok(Some(n)) => {
                    if let Some(change) = Announced::parse(n.payload()) {
                        // No subscribers is fine.
                        let _ = tx.send(Some(Arc::new(change)));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "status listener lost its connection; reconnecting");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    break;
                }
            }
            if db.is_closed() {
                return;
            }
        }
        if db.is_closed() {
            return;
        }
    }
}
