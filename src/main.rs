//! `evisa`: the one binary. With no subcommand it runs `dev`.

mod audit;
mod bench;
mod metrics;

use std::{io::BufRead, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use evisa_core::{
    auth,
    config::{Config, LogFormat, Profile, Source},
    crypto::DataKeys,
    db, fees,
    gateway::stripe::StripeGateway,
    person::Email,
    users::{self, Role},
};
use evisa_sandbox::{StripeSandbox, StripeSandboxConfig};

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
        command: BenchCommand,
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
    /// Disable an account: it can no longer sign in, and every token it holds stops working.
    Disable {
        #[arg(long)]
        email: String,
    },
    /// Change an account's role (applicant, officer or admin); its tokens stop working.
    SetRole {
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Card payments end to end (sandbox gateway): payments/s and POST→succeeded latency.
    Payments {
        /// The service's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        /// Payments offered per second (open loop); 0 for closed loop at --concurrency.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Payers in closed-loop mode.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
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

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new random key entry for EVISA_DATA_KEYS (`id:base64`).
    Generate {
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Re-seal every personal field under the current (first) key of EVISA_DATA_KEYS, in
    /// batches, beside the running service; resumable. Prints counts per key id.
    Rotate {
        /// Applications per transaction.
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
}

fn main() -> ExitCode {
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
            migrate_all(&owner).await?;
            fees::seed_demo_schedule(&owner)
                .await
                .context("seeding the demo fee schedule")?;
            let pool = service_pool(&owner, &url).await?;
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
            ensure_migrated(&pool).await?;
            ensure_service_role(&pool).await?;
            metrics::start(config.metrics_addr, pool.clone(), false).await;
            serve(config, pool, Shutdown::on_signals()).await?;
        }
        Command::Work => {
            let config = load_deployed_config(file)?;
            init_logging(config.log_format);
            let pool = db::connect(config.database_url.expose(), 20)
                .await
                .context("cannot reach Postgres (DATABASE_URL)")?;
            ensure_migrated(&pool).await?;
            ensure_service_role(&pool).await?;
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
        Command::Bench {
            command:
                BenchCommand::Payments {
                    base,
                    rate,
                    seconds,
                    concurrency,
                },
        } => {
            bench::run(bench::Bench {
                base,
                rate,
                seconds,
                concurrency,
            })
            .await?;
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
            migrate_all(&pool).await?;
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

/// The database of the CLI's one-off commands: DATABASE_URL, or dev's database.
async fn connect_from_env(max_connections: u32) -> anyhow::Result<sqlx::PgPool> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/evisa".into());
    db::connect(&url, max_connections)
        .await
        .context("cannot reach Postgres (DATABASE_URL)")
}

/// `evisa keys rotate`: needs DATABASE_URL and the key ring with the new key first.
async fn rotate_keys(batch: i64) -> anyhow::Result<()> {
    let spec = match (
        std::env::var("EVISA_DATA_KEYS"),
        std::env::var("EVISA_DATA_KEYS_FILE"),
    ) {
        (Ok(v), _) => v,
        (_, Ok(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading EVISA_DATA_KEYS_FILE {path}"))?,
        _ => anyhow::bail!(
            "EVISA_DATA_KEYS (or EVISA_DATA_KEYS_FILE) is required: the new key first, then the old ones"
        ),
    };
    let keys = DataKeys::parse(spec.trim()).map_err(|e| anyhow::anyhow!("EVISA_DATA_KEYS: {e}"))?;
    let pool = connect_from_env(2).await?;
    let report = evisa_core::application::rekey::rotate(&pool, &keys, batch).await?;
    for (old, n) in &report.resealed {
        println!(
            "re-sealed {n} values from key {old} to {}",
            keys.current_key_id()
        );
    }
    println!("{} applications re-sealed", report.applications);
    let secrets = evisa_core::notify::endpoints::reseal(&pool, &keys).await?;
    println!("{secrets} notification endpoint secrets re-sealed");
    let now = evisa_core::application::rekey::values_per_key(&pool).await?;
    for (id, n) in &now {
        println!("key {id}: {n} values");
    }
    if now.keys().all(|id| id == keys.current_key_id()) {
        println!(
            "every value is under {}: the other keys can be dropped from EVISA_DATA_KEYS",
            keys.current_key_id()
        );
    } else {
        println!(
            "some values are under other keys still (written meanwhile by a process that does not have the new key first?): run again"
        );
    }
    Ok(())
}

/// `evisa user ...`: staff accounts, straight against the database.
async fn user_command(command: UserCommand) -> anyhow::Result<()> {
    let connect = || connect_from_env(2);
    let email_arg = |email: &str| Email::parse(email).map_err(|e| anyhow::anyhow!("--email {e}"));
    match command {
        UserCommand::Create {
            email,
            role,
            password_stdin,
        } => {
            let email = email_arg(&email)?;
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
            let pool = connect().await?;
            let hash = auth::hash_password(&password);
            let id = users::create(&pool, &email, &hash, role).await?;
            println!("created {role} {id}");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Disable { email } => {
            let email = email_arg(&email)?;
            if !users::disable(&connect().await?, &email).await? {
                anyhow::bail!("no account with that email");
            }
            println!("disabled; every token of this account is revoked");
        }
        UserCommand::SetRole { email, role } => {
            let email = email_arg(&email)?;
            let role: Role = role.parse().map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            if !users::set_role(&connect().await?, &email, role).await? {
                anyhow::bail!("no account with that email");
            }
            println!("role set to {role}; every token of this account is revoked");
        }
    }
    Ok(())
}

/// `serve` and `work` run as a role that cannot rewrite history: not the owner of the event logs,
/// nor anyone who may update, delete or truncate them.
async fn ensure_service_role(pool: &sqlx::PgPool) -> anyhow::Result<()> {
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
async fn service_pool(owner: &sqlx::PgPool, url: &str) -> anyhow::Result<sqlx::PgPool> {
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

/// Our migrations, then the job queue's own schema.
async fn migrate_all(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    db::migrate(pool).await.context("applying migrations")?;
    evisa_worker::setup(pool)
        .await
        .context("setting up the job queue schema")?;
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
    )?)
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

/// A stop signal (SIGTERM or Ctrl-C) that any number of tasks can wait for.
#[derive(Clone)]
struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    fn on_signals() -> Shutdown {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal().await;
            tracing::info!("shutting down: finishing requests and jobs in flight");
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    /// Resolves `drain` after this one, with `/readyz` saying 503 meanwhile: a load balancer
    /// stops sending before connections close, so no request is cut off.
    fn after_drain(&self, state: evisa_api::AppState, drain: Duration) -> Shutdown {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let signalled = self.wait();
        tokio::spawn(async move {
            signalled.await;
            if !drain.is_zero() {
                state
                    .draining
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(seconds = drain.as_secs(), "draining: /readyz answers 503");
                tokio::time::sleep(drain).await;
            }
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

async fn signal() {
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
}
