//! The database as the binary's subcommands find it: migrated, and signed in to as a role that
//! cannot rewrite the event logs.

use anyhow::Context;
use evisa_core::db;

/// `serve` and `work` run as a role that cannot rewrite history: not the owner of the event logs,
/// nor anyone who may update, delete or truncate them.
pub async fn ensure_service_role(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    if let Some(user) = db::log_tamper_power(pool).await? {
        anyhow::bail!(
            "DATABASE_URL signs in as `{user}`, which can alter, delete or truncate the event logs; \
             run serve and work as a login that is a member of {} only (README: Database roles)",
            db::SERVICE_ROLE
        );
    }
    Ok(())
}

/// `dev` runs the API and workers the way a deployment must, as a member of the service role
/// (the login `evisa_dev`, made here), so that the service itself cannot rewrite the logs. When
/// the local Postgres does not let that login in without a password, it says so and goes on as
/// the owner.
pub async fn service_pool(owner: &sqlx::PgPool, url: &str) -> anyhow::Result<sqlx::PgPool> {
    const LOGIN: &str = "evisa_dev";
    db::ensure_service_login(owner, LOGIN).await?;
    let service_url = db::as_login(url, LOGIN).context("DATABASE_URL")?;
    match db::connect(&service_url, 20).await {
        Ok(pool) => Ok(pool),
        Err(e) => {
            tracing::warn!(error = %e, "cannot sign in as {LOGIN} (a member of {}); the service runs as the database owner", db::SERVICE_ROLE);
            db::connect(url, 20).await.context("DATABASE_URL")
        }
    }
}

/// `serve` refuses to run against a schema older than the binary: run `evisa migrate` first.
pub async fn ensure_migrated(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let latest = db::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .unwrap_or(None);
    if applied.unwrap_or(0) < latest {
        anyhow::bail!("the database schema is behind this binary; run `evisa migrate` first");
    }
    Ok(())
}

/// Our migrations (the job queue's tables among them).
pub async fn migrate_all(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    db::migrate(pool).await.context("applying migrations")?;
    Ok(())
}
