//! The Postgres pool, creating the database when missing (dev), and migrations.

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The schema migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool to `url`, connected once at start-up (a process that cannot reach Postgres at all stops
/// with a clear error). While Postgres is away later, waiting for a connection gives up after 2 s,
/// so requests get a prompt 503 instead of hanging; the pool reconnects by itself.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options.application_name("evisa"))
        .await
}

/// Whether `e` says the database cannot be reached right now (down, restarting, out of
/// connections) rather than that the request was wrong: worth a 503 and a retry, not a 500.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // Connection exceptions, shutdown of the server, too many connections.
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
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

/// The role `serve` and `work` run as (made by the migrations): it appends to the event logs but
/// can neither change, delete nor truncate them, nor alter any table.
pub const SERVICE_ROLE: &str = "evisa_service";

/// Whether the pool's login could alter, delete or truncate the event logs (a superuser, the
/// tables' owner or a member of it, or a role granted those rights): `serve` and `work` refuse to
/// run as one. Names the login when it could.
pub async fn log_tamper_power(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    let (user, powerful): (String, bool) = sqlx::query_as(
        "SELECT current_user::text,
                (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
             OR pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'payment_events'::regclass), 'USAGE')
             OR pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'application_events'::regclass), 'USAGE')
             OR has_table_privilege('payment_events', 'UPDATE, DELETE, TRUNCATE')
             OR has_table_privilege('application_events', 'UPDATE, DELETE, TRUNCATE')",
    )
    .fetch_one(pool)
    .await?;
    Ok(powerful.then_some(user))
}

/// Makes `login` (a role that can sign in with no password over the local trust setup) a member
/// of [`SERVICE_ROLE`], creating it when missing. For `dev` and tests, which then run the service
/// the way a deployment must.
pub async fn ensure_service_login(pool: &PgPool, login: &str) -> Result<(), sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
            .bind(login)
            .fetch_one(pool)
            .await?;
    if !exists {
        // Roles belong to the cluster: another database's set-up may be making it right now.
        let create = format!("CREATE ROLE \"{login}\" LOGIN IN ROLE {SERVICE_ROLE}");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(create)).execute(pool).await {
            let taken = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42710" || c == "23505");
            if !taken {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// `url` with its user replaced by `login` (and no password).
pub fn as_login(url: &str, login: &str) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    u.set_username(login).ok()?;
    u.set_password(None).ok()?;
    Some(u.to_string())
}

/// Makes `login` a password login that is a member of [`SERVICE_ROLE`] (and of nothing else it
/// was not already), creating it or resetting its password: what `evisa migrate
/// --service-login` does for deployments such as compose.
pub async fn set_service_login(pool: &PgPool, login: &str, password: &str) -> Result<(), String> {
    if login.is_empty()
        || login.len() > 63
        || !login
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("a login is 1 to 63 lower-case letters, digits or _".into());
    }
    let quoted = password.replace('\'', "''");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
            .bind(login)
            .fetch_one(pool)
            .await
            .map_err(|e| e.to_string())?;
    let sql = if exists {
        format!("ALTER ROLE \"{login}\" LOGIN PASSWORD '{quoted}'")
    } else {
        format!("CREATE ROLE \"{login}\" LOGIN PASSWORD '{quoted}'")
    };
    // DDL takes no bind parameters; the login is checked above and the password quoted.
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT {SERVICE_ROLE} TO \"{login}\""
    )))
    .execute(pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}
