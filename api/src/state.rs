//! What every request handler can reach.

use std::sync::Arc;

use evisa_core::{auth::TokenAuthority, config::Config, ratelimit::RateLimiter};
use redis::aio::ConnectionManager;
use sqlx::PgPool;

/// Shared state of the API process.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub db: PgPool,
    pub redis: ConnectionManager,
    pub limiter: RateLimiter,
    pub tokens: TokenAuthority,
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
        let alipay = evisa_core::gateway::alipay::client_for(&config);
        // Payment changes and job wake-ups this process commits go to the other processes, and
        // theirs come here.
        evisa_core::signals::connect(
            redis.clone(),
            config.redis_url.expose(),
            &config.redis_prefix,
        );
        let settled = evisa_core::inbox::SettledWriter::batched(db.clone());
        AppState(Arc::new(Inner {
            config,
            settled,
            db,
            redis,
            limiter,
            tokens,
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
