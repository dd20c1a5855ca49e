//! `evisa`: the one binary. With no subcommand it runs `dev`.

use std::{io::BufRead, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use evisa_core::{
    auth,
    config::{Config, LogFormat, Profile, Source},
    crypto::DataKeys,
    db, fees,
    person::Email,
    users::{self, Role},
};

#[derive(Parser)]
#[command(
    name = "evisa",
    version,
    about = "Payment back end for electronic-visa portals"
)]
struct Cli {
    /// A KEY=VALUE file read before the environment (the environment wins).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process for development: creates the database if missing, applies
    /// migrations, seeds the demo fee schedule, and serves the API. Needs no configuration when
    /// Postgres and Redis listen on their standard local ports.
    Dev,
    /// Serve the HTTP API (production configuration required).
    Serve,
    /// Run the background workers.
    Work,
    /// Run the simulated payment gateways on their own port.
    Sandbox,
    /// Apply database migrations.
    Migrate {
        /// Also load the demo fee schedule (idempotent).
        #[arg(long)]
        seed_demo_fees: bool,
    },
    /// Print the OpenAPI document.
    Spec,
    /// Manage staff accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Field-encryption keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. The password is read from standard input with --password-stdin;
    /// otherwise a random one is generated and printed once.
    Create {
        #[arg(long)]
        email: String,
        /// applicant, officer or admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new random key entry for EVISA_DATA_KEYS (`id:base64`).
    Generate {
        #[arg(long, default_value = "k1")]
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("evisa: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(profile: Profile, file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let source = Source::from_env(file)?;
    Ok(Config::load(profile, &source)?)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVISA_LOG")
        .unwrap_or_else(|_| "info,sqlx=warn,poem=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let file = cli.config.as_deref();
    match cli.command.unwrap_or(Command::Dev) {
        Command::Dev => {
            let config = load_config(Profile::Dev, file)?;
            init_logging(config.log_format);
            let url = config.database_url.expose().clone();
            if db::create_if_missing(&url)
                .await
                .context("cannot reach Postgres (DATABASE_URL)")?
            {
                tracing::info!("created the database");
            }
            let pool = db::connect(&url, 10).await.context("DATABASE_URL")?;
            db::migrate(&pool).await.context("applying migrations")?;
            fees::seed_demo_schedule(&pool)
                .await
                .context("seeding the demo fee schedule")?;
            tracing::info!(
                "dev: the worker and the gateway sandbox are not part of this version yet; serving the API only"
            );
            serve(config, pool).await?;
        }
        Command::Serve => {
            let config = load_config(Profile::Production, file)?;
            init_logging(config.log_format);
            let pool = db::connect(config.database_url.expose(), 20)
                .await
                .context("cannot reach Postgres (DATABASE_URL)")?;
            ensure_migrated(&pool).await?;
            serve(config, pool).await?;
        }
        Command::Work | Command::Sandbox => {
            eprintln!(
                "evisa: this version has no background jobs and no gateway sandbox yet; \
                 `work` and `sandbox` arrive with card and Alipay payments"
            );
            return Ok(ExitCode::from(2));
        }
        Command::Migrate { seed_demo_fees } => {
            let config = load_config(Profile::Production, file).or_else(|e| {
                // Migrating needs only the database; do not demand every other secret.
                let url = std::env::var("DATABASE_URL").map_err(|_| e)?;
                Config::load(
                    Profile::Dev,
                    &Source::from_pairs([("DATABASE_URL", url.as_str())]),
                )
                .map_err(anyhow::Error::from)
            })?;
            init_logging(config.log_format);
            let pool = db::connect(config.database_url.expose(), 2)
                .await
                .context("cannot reach Postgres (DATABASE_URL)")?;
            db::migrate(&pool).await.context("applying migrations")?;
            println!("migrations applied");
            if seed_demo_fees {
                fees::seed_demo_schedule(&pool).await?;
                println!("demo fee schedule loaded");
            }
        }
        Command::Spec => println!("{}", evisa_api::spec_json()),
        Command::User {
            command:
                UserCommand::Create {
                    email,
                    role,
                    password_stdin,
                },
        } => {
            let email = Email::parse(&email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
            let role: Role = role.parse().map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_string(), false)
            } else {
                let entry = DataKeys::generate_entry("p");
                (entry[2..].trim_end_matches('=').to_string(), true)
            };
            auth::check_password_policy(&password).map_err(|e| anyhow::anyhow!("password {e}"))?;
            let url = std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/evisa".into());
            let pool = db::connect(&url, 2)
                .await
                .context("cannot reach Postgres (DATABASE_URL)")?;
            let hash = auth::hash_password(&password);
            let id = users::create(&pool, &email, &hash, role).await?;
            println!("created {role} {id}");
            if generated {
                println!("password: {password}");
            }
        }
        Command::Keys {
            command: KeysCommand::Generate { id },
        } => println!("{}", DataKeys::generate_entry(&id)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `serve` refuses to run against a schema older than the binary: run `evisa migrate` first.
async fn ensure_migrated(pool: &sqlx::PgPool) -> anyhow::Result<()> {
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

async fn serve(config: Config, pool: sqlx::PgPool) -> anyhow::Result<()> {
    let client = redis::Client::open(config.redis_url.expose().as_str()).context("REDIS_URL")?;
    let redis = tokio::time::timeout(
        Duration::from_secs(5),
        redis::aio::ConnectionManager::new(client),
    )
    .await
    .map_err(|_| anyhow::anyhow!("Redis did not answer within 5 s (REDIS_URL)"))?
    .context("cannot reach Redis (REDIS_URL)")?;
    let addr = config.http_addr;
    let base = config.public_base_url.clone();
    let app = evisa_api::app(evisa_api::AppState::new(config, pool, redis));
    tracing::info!(%addr, docs = %base.join("docs").map(|u| u.to_string()).unwrap_or_default(), "API listening");
    poem::Server::new(poem::listener::TcpListener::bind(addr))
        .run_with_graceful_shutdown(app, shutdown_signal(), Some(Duration::from_secs(20)))
        .await
        .with_context(|| format!("serving on {addr} (EVISA_HTTP_ADDR)"))?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing requests in flight");
}
