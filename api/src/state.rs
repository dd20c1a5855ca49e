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
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, db: PgPool, redis: ConnectionManager) -> Self {
        let limiter = RateLimiter::new(redis.clone(), &config.redis_prefix);
        let tokens = TokenAuthority::new(config.jwt.clone());
        AppState(Arc::new(Inner {
            config,
            db,
            redis,
            limiter,
            tokens,
        }))
    }
}
