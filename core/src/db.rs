//! The Postgres pool, creating the database when missing (dev), and migrations.

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The schema migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool to `url`. Connections are checked lazily so a process can start while Postgres comes up;
/// `/readyz` tells when it is reachable.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.application_name("evisa"))
        .await
}

/// Creates the database named in `url` if it does not exist yet.
pub async fn create_if_missing(url: &str) -> Result<bool, sqlx::Error> {
    if sqlx::Postgres::database_exists(url).await? {
        return Ok(false);
    }
    sqlx::Postgres::create_database(url).await?;
    Ok(true)
}

/// Applies every migration not yet applied.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
