//! `evisa`: the one binary. With no subcommand it runs `dev`.

mod audit;
mod bench;
mod database;
mod metrics;
mod operator;
mod shutdown;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use evisa_core::{
    config::{Config, LogFormat, Profile, Source},
    crypto::DataKeys,
    db, fees,
    gateway::stripe::StripeGateway,
};
use evisa_sandbox::{StripeSandbox, StripeSandboxConfig};
use operator::{KeysCommand, UserCommand, connect_from_env, rotate_keys, user_command};
use shutdown::Shutdown;

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
    /// migrations, seeds the demo fee schedule, and runs the API, the workers and the gateway
    /// sandbox. Needs no configuration when Postgres and Redis listen on their standard ports.
    Dev,
    /// Serve the HTTP API (production configuration required).
    Serve,
    /// Run the background workers (charging, gateway callbacks, reconciliation, expiry).
    Work,
    /// Run the simulated Stripe and Alipay gateways on EVISA_SANDBOX_ADDR (test mode).
    Sandbox,
    /// Apply database migrations.
    Migrate {
        /// Also load the demo fee schedule (idempotent).
        #[arg(long)]
        seed_demo_fees: bool,
        /// Also make (or update) this login for `serve` and `work`: a member of the service role
        /// only, with the password in EVISA_SERVICE_DB_PASSWORD.
        #[arg(long, value_name = "NAME")]
        service_login: Option<String>,
    },
    /// Print the OpenAPI document.
    Spec,
    /// Load a running service and print throughput and latency figures.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// List every disagreement between our records and the gateways' for payments created since
    /// DATE (exit status 1 when there is any).
    Reconcile {
        /// YYYY-MM-DD (UTC).
        #[arg(long)]
        since: chrono::NaiveDate,
    },
    /// The tamper-evident event logs.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Background jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Signed notifications to portals' back offices.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
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
enum NotifyCommand {
    /// Send an event again, now, to every endpoint it went to (with a fresh retry schedule).
    Redeliver { event_id: uuid::Uuid },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs that exhausted their attempts.
    Dead,
    /// Put a dead job back in its queue with fresh attempts.
    Retry { id: String },
}

/// mimalloc rather than glibc's malloc: under load, glibc's malloc and free took about 29% of
/// the service's CPU (perf, closed-loop card payments). Large blocks (Argon2's 19 MiB per
/// password hash) get segments of their own, returned to the system when freed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's options for this service: freed memory goes back to the system at once, and
/// arenas are committed as they are used rather than up front. By default mimalloc keeps freed
/// pages a while and commits its first arena whole; with a few concurrent sign-ins (19 MiB
/// each) on a busy service that raised the peak resident memory in `scripts/bench.sh` from
/// 147 to 175 MB. mimalloc reads its options from the environment when it starts, before
/// `main`, and its first arena is made then: so the process sets them (unless the operator
/// did) and runs itself again, once, with the same arguments and the same pid.
#[cfg(unix)]
fn tune_allocator() {
    use std::os::unix::process::CommandExt;
    const OPTIONS: [(&str, &str); 2] = [
        ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
        ("MIMALLOC_PURGE_DELAY", "0"),
    ];
    if OPTIONS.iter().all(|(k, _)| std::env::var_os(k).is_some()) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut again = std::process::Command::new(exe);
    again.args(std::env::args_os().skip(1));
    for (k, v) in OPTIONS {
        if std::env::var_os(k).is_none() {
            again.env(k, v);
        }
    }
    // Only returns if the exec failed: then run on with mimalloc's defaults.
    let error = again.exec();
    eprintln!("evisa: could not restart with the allocator's options ({error}); running on");
}

#[cfg(not(unix))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    // One TLS crypto provider for every client (Stripe, Postgres), chosen before any is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
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

/// `serve` and `work`: production settings with no published or guessable secret.
fn load_deployed_config(file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let source = Source::from_env(file)?;
    Ok(Config::load_deployed(&source)?)
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
            let owner = db::connect(&url, 2).await.context("DATABASE_URL")?;
            database::migrate_all(&owner).await?;
            fees::seed_demo_schedule(&owner)
                .await
                .context("seeding the demo fee schedule")?;
            let pool = database::service_pool(&owner, &url).await?;
            owner.close().await;
            metrics::start(config.metrics_addr, pool.clone(), true).await;
            let shutdown = Shutdown::on_signals();
            if config.stripe.uses_sandbox || config.alipay.uses_sandbox {
                let sandbox = start_sandbox(&config, shutdown.clone()).await?;
                tracing::info!(url = %sandbox, "gateway sandbox (Stripe and Alipay) listening");
            }
            let gateway = stripe_gateway(&config)?;
            let worker = {
                let (config, pool, stop) = (
                    std::sync::Arc::new(load_config(Profile::Dev, file)?),
                    pool.clone(),
                    shutdown.clone(),
                );
                let render = evisa_api::notify_objects::renderer(pool.clone(), config.clone());
                tokio::spawn(async move {
                    evisa_worker::run(config, pool, gateway, render, stop.wait()).await
                })
            };
            serve(config, pool, shutdown).await?;
            worker.await??;
        }
        Command::Serve => {
            let config = load_deployed_config(file)?;
            init_logging(config.log_format);
            let pool = db::connect(config.database_url.expose(), 20)
                .await
                .context("cannot reach Postgres (DATABASE_URL)")?;
            database::ensure_migrated(&pool).await?;
            database::ensure_service_role(&pool).await?;
            metrics::start(config.metrics_addr, pool.clone(), false).await;
            serve(config, pool, Shutdown::on_signals()).await?;
        }
        Command::Work => {
            let config = load_deployed_config(file)?;
            init_logging(config.log_format);
            let pool = db::connect(config.database_url.expose(), 20)
                .await
                .context("cannot reach Postgres (DATABASE_URL)")?;
            database::ensure_migrated(&pool).await?;
            database::ensure_service_role(&pool).await?;
            metrics::start(config.metrics_addr, pool.clone(), true).await;
            let gateway = stripe_gateway(&config)?;
            tracing::info!(concurrency = config.jobs.concurrency, "workers starting");
            let config = std::sync::Arc::new(config);
            let render = evisa_api::notify_objects::renderer(pool.clone(), config.clone());
            evisa_worker::run(config, pool, gateway, render, Shutdown::on_signals().wait()).await?;
            tracing::info!("workers stopped");
        }
        Command::Sandbox => {
            let config = load_config(Profile::Dev, file)?;
            init_logging(config.log_format);
            let shutdown = Shutdown::on_signals();
            let url = start_sandbox(&config, shutdown.clone()).await?;
            tracing::info!(%url, "gateway sandbox (Stripe and Alipay) listening");
            shutdown.wait().await;
        }
        Command::Bench { command } => {
            // The job bench reads the job settings as `evisa work` would, with dev defaults for
            // the secrets it never uses.
            bench::run(command, load_config(Profile::Dev, file)?).await?;
        }
        Command::Reconcile { since } => {
            let config = load_config(Profile::Production, file)?;
            let pool = db::connect(config.database_url.expose(), 4)
                .await
                .context("cannot reach Postgres (DATABASE_URL)")?;
            let stripe = stripe_gateway(&config)?;
            let alipay = evisa_core::gateway::alipay::client_for(&config);
            let since = since
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc();
            let (checked, found) =
                evisa_core::reconciliation::report(&pool, &stripe, alipay.as_ref(), since).await?;
            for d in &found {
                println!("{}", serde_json::to_string(d)?);
            }
            eprintln!(
                "reconcile: {checked} payments checked, {} disagreements",
                found.len()
            );
            if !found.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Audit { command } => return audit::run(command).await,
        Command::Notify {
            command: NotifyCommand::Redeliver { event_id },
        } => {
            let pool = connect_from_env(2).await?;
            match evisa_core::notify::delivery::redeliver(&pool, event_id).await? {
                0 => anyhow::bail!("no delivery of event {event_id} to a live endpoint"),
                n => println!("event {event_id}: {n} deliveries queued again"),
            }
        }
        Command::Jobs { command } => {
            let pool = connect_from_env(2).await?;
            match command {
                JobsCommand::Dead => {
                    for job in evisa_worker::dead::list(&pool).await? {
                        println!("{}", serde_json::to_string(&job)?);
                    }
                }
                JobsCommand::Retry { id } => {
                    if evisa_worker::dead::retry(&pool, &id).await? {
                        println!("job {id} queued again");
                    } else {
                        anyhow::bail!("no dead job with id {id}");
                    }
                }
            }
        }
        Command::Migrate {
            seed_demo_fees,
            service_login,
        } => {
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
            database::migrate_all(&pool).await?;
            println!("migrations applied");
            if seed_demo_fees {
                fees::seed_demo_schedule(&pool).await?;
                println!("demo fee schedule loaded");
            }
            if let Some(login) = service_login {
                let password = std::env::var("EVISA_SERVICE_DB_PASSWORD")
                    .ok()
                    .filter(|p| p.len() >= 16)
                    .context("EVISA_SERVICE_DB_PASSWORD is required with --service-login (16 characters or more)")?;
                db::set_service_login(&pool, &login, &password)
                    .await
                    .map_err(|e| anyhow::anyhow!("--service-login: {e}"))?;
                println!("login {login} is a member of {}", db::SERVICE_ROLE);
            }
        }
        Command::Spec => println!("{}", evisa_api::spec_json()),
        Command::User { command } => user_command(command).await?,
        Command::Keys {
            command: KeysCommand::Generate { id },
        } => println!("{}", DataKeys::generate_entry(&id)),
        Command::Keys {
            command: KeysCommand::Rotate { batch },
        } => rotate_keys(batch.max(1)).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config, pool: sqlx::PgPool, shutdown: Shutdown) -> anyhow::Result<()> {
    let redis = tokio::time::timeout(
        Duration::from_secs(5),
        evisa_core::ratelimit::connect(config.redis_url.expose()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("Redis did not answer within 5 s (REDIS_URL)"))?
    .context("cannot reach Redis (REDIS_URL)")?;
    let addr = config.http_addr;
    let base = config.public_base_url.clone();
    let limits = config.connections.clone();
    let drain = config.shutdown_drain;
    let state = evisa_api::AppState::new(config, pool, redis);
    let shutdown = shutdown.after_drain(state.clone(), drain);
    let app = evisa_api::app(state);
    let acceptor = evisa_api::listener::NoDelay::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (EVISA_HTTP_ADDR)"))?
        .with_limits(&limits);
    tracing::info!(%addr, docs = %base.join("docs").map(|u| u.to_string()).unwrap_or_default(), "API listening");
    poem::Server::new_with_acceptor(acceptor)
        .idle_timeout(limits.idle_timeout)
        .run_with_graceful_shutdown(app, shutdown.wait(), Some(Duration::from_secs(20)))
        .await
        .with_context(|| format!("serving on {addr} (EVISA_HTTP_ADDR)"))?;
    tracing::info!("stopped");
    Ok(())
}

fn stripe_gateway(config: &Config) -> anyhow::Result<StripeGateway> {
    let key = config
        .stripe
        .secret_key
        .as_ref()
        .context("STRIPE_SECRET_KEY is required")?;
    Ok(StripeGateway::new(
        key,
        config.stripe.api_base.as_ref(),
        config.payments.gateway_timeout,
    )?
    .with_calls_in_flight(config.jobs.gateway_calls))
}

/// Serves the gateway sandbox (Stripe and Alipay) on `EVISA_SANDBOX_ADDR`, delivering webhooks and
/// notifies to this service.
async fn start_sandbox(config: &Config, shutdown: Shutdown) -> anyhow::Result<String> {
    let addr = config.sandbox_addr;
    let public_url = config
        .sandbox_public_url
        .as_str()
        .trim_end_matches('/')
        .to_string();
    let sandbox = StripeSandbox::new(StripeSandboxConfig {
        secret_key: config
            .stripe
            .secret_key
            .as_ref()
            .map(|k| k.expose().clone())
            .unwrap_or_else(|| evisa_core::config::SANDBOX_STRIPE_KEY.into()),
        webhook_url: Some(
            config
                .public_base_url
                .join("v1/webhooks/stripe")?
                .to_string(),
        ),
        webhook_secret: config
            .stripe
            .webhook_secrets
            .first()
            .map(|s| s.expose().clone())
            .unwrap_or_else(|| evisa_core::config::SANDBOX_WEBHOOK_SECRET.into()),
        public_url: public_url.clone(),
        webhook_retry_base: Duration::from_secs(1),
        webhook_max_attempts: 8,
        webhook_latency: Duration::from_millis(100),
        // As an operator subscribes a real endpoint: only to the types the service acts on.
        enabled_events: evisa_core::gateway::stripe_event::ACTED_ON
            .iter()
            .map(|t| t.to_string())
            .collect(),
    });
    let acceptor = evisa_api::listener::NoDelay::bind(addr)
        .await
        .with_context(|| format!("binding the sandbox to {addr} (EVISA_SANDBOX_ADDR)"))?;
    // Alipay retries notifies after 4, 10, 10, 60... minutes; in the sandbox a "minute" is a second.
    let alipay = evisa_sandbox::dev_alipay(Duration::from_secs(1));
    tokio::spawn(
        poem::Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            evisa_sandbox::routes(&sandbox, &alipay),
            shutdown.wait(),
            Some(Duration::from_secs(5)),
        ),
    );
    Ok(public_url)
}
