//! Configuration from environment variables (a file may add to them), validated once at start-up.
//!
//! Every problem names its variable. `dev` needs no variables at all on a machine whose Postgres
//! and Redis listen on their standard local ports; `serve` and `work` insist on real secrets.

use std::{fmt, net::SocketAddr, time::Duration};

use crate::{
    crypto::DataKeys,
    gateway::alipay::{AppPrivateKey, RsaPublicKey},
    return_url::ReturnUrlOrigins,
    secret::Secret,
};

mod gateways;
mod limits;
mod notify;
pub mod published;
mod secrets;
mod source;

pub use gateways::{
    SANDBOX_ALIPAY_APP_ID, SANDBOX_ALIPAY_SELLER_ID, SANDBOX_PUBLISHABLE_KEY, SANDBOX_STRIPE_KEY,
    SANDBOX_WEBHOOK_SECRET,
};
pub use limits::{ConnectionLimits, LimitSettings};
pub use notify::NotifySettings;
use source::Reader;
pub use source::Source;
#[cfg(test)]
use source::parse_env_file;

/// How strict the defaults are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// One process on a developer's machine: local services, generated or well-known dev secrets.
    Dev,
    /// A deployment: every secret must be given.
    Production,
}

/// Output format of the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Signing settings for access tokens.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub secret: Secret<Vec<u8>>,
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
}

/// Stripe settings. Used by card payments; validated now so a bad value fails start-up.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub secret_key: Option<Secret<String>>,
    pub api_base: Option<url::Url>,
    pub webhook_secrets: Vec<Secret<String>>,
    /// The publishable key (`pk_...`, `STRIPE_PUBLISHABLE_KEY`) the checkout page's browser
    /// side tokenises cards with; without one the page offers no card payments.
    pub publishable_key: Option<String>,
    /// `dev` with no Stripe settings: the built-in sandbox plays Stripe.
    pub uses_sandbox: bool,
}

/// Alipay settings. Alipay is offered when all four are set (in `dev`, the built-in sandbox
/// supplies them); keys are parsed at start-up, so a bad key stops the process.
#[derive(Debug, Clone)]
pub struct AlipaySettings {
    pub app_id: Option<String>,
    /// Our merchant account (`2088` and 12 digits); a notify for another seller is refused.
    pub seller_id: Option<String>,
    pub gateway_url: Option<url::Url>,
    pub app_private_key: Option<AppPrivateKey>,
    pub public_key: Option<RsaPublicKey>,
    /// `dev` with no Alipay settings: the built-in sandbox plays Alipay.
    pub uses_sandbox: bool,
    /// First poll of a trade after the redirect; later polls back off up to the deadline.
    pub poll_first: Duration,
}

impl AlipaySettings {
    /// Whether Alipay payments can be offered.
    pub fn enabled(&self) -> bool {
        self.app_id.is_some()
            && self.seller_id.is_some()
            && self.gateway_url.is_some()
            && self.app_private_key.is_some()
            && self.public_key.is_some()
    }
}

/// Everything the service needs to start.
#[derive(Debug)]
pub struct Config {
    pub profile: Profile,
    pub database_url: Secret<String>,
    pub redis_url: Secret<String>,
    pub redis_prefix: String,
    pub http_addr: SocketAddr,
    /// After SIGTERM, how long `serve` keeps serving while `/readyz` says 503 (so a load
    /// balancer takes it out first), before it finishes what is in flight and stops.
    pub shutdown_drain: std::time::Duration,
    /// Where `/metrics` is served (Prometheus text format); `None` when turned `off`.
    pub metrics_addr: Option<SocketAddr>,
    pub public_base_url: url::Url,
    /// Where a payer's browser may be sent back to.
    pub return_url_origins: ReturnUrlOrigins,
    pub jwt: JwtSettings,
    pub data_keys: DataKeys,
    /// Signs receipts' verification codes.
    pub receipt_key: Secret<Vec<u8>>,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    /// Rate limits and attempt limits.
    pub limits: LimitSettings,
    /// Bounds on connections and event streams.
    pub connections: ConnectionLimits,
    pub stripe: StripeSettings,
    pub alipay: AlipaySettings,
    pub payments: PaymentSettings,
    pub jobs: JobSettings,
    /// Where `dev` and `evisa sandbox` serve the gateway sandbox.
    pub sandbox_addr: SocketAddr,
    /// How browsers reach the sandbox (its 3-D Secure pages); `http://<sandbox_addr>` by default.
    pub sandbox_public_url: url::Url,
    /// Signed checkpoints of the event logs.
    pub audit: AuditSettings,
    /// Signed notifications to portals' back offices.
    pub notify: NotifySettings,
}

/// Periodic signed checkpoints of the event logs, written by the sweeper when both the key and
/// the directory are set.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Ed25519 PKCS#8, base64 (`evisa audit keygen`).
    pub signing_key: Option<Secret<String>>,
    pub checkpoint_dir: Option<std::path::PathBuf>,
    pub checkpoint_interval: Duration,
}

/// Timing of payments.
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// An unpaid attempt is abandoned (asked at the gateway, cancelled, `expired`) after this.
    pub expiry: Duration,
    /// An attempt open for this long without news is checked with the gateway.
    pub reconcile_after: Duration,
    /// How often reconciliation and expiry run.
    pub sweep_interval: Duration,
    /// Per-call timeout of gateway requests.
    pub gateway_timeout: Duration,
    /// A submitted application still unpaid after this (and with no payment in flight) expires.
    pub application_expiry: Duration,
    /// Whether rejecting an application refunds its fee (most e-visa systems: no).
    pub refund_on_rejection: bool,
    /// Which officers' refunds wait for a second staff member's approval.
    pub refund_approval: crate::refund::ApprovalPolicy,
    /// The most applications one group payment may pay (`EVISA_GROUP_MAX`, 2 to 500).
    pub group_max: usize,
}

/// The background job layer.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Jobs run at once per worker process.
    pub concurrency: usize,
    /// Jobs a worker claims per fetch: fetching and acknowledging in batches is what lets the
    /// queue go near Postgres's commit rate. Above the concurrency, claimed jobs wait behind the
    /// running ones: the default is the default concurrency.
    pub batch_size: usize,
    /// Calls to each gateway in flight at once per process (`EVISA_GATEWAY_CALLS`): jobs beyond
    /// it wait their turn, so that a large concurrency never becomes a burst at the gateway.
    pub gateway_calls: usize,
    /// A killed worker's jobs are taken over after this long without its heartbeat.
    pub orphan_timeout: Duration,
    /// Fallback poll interval (new jobs also wake workers through LISTEN/NOTIFY).
    pub poll_interval: Duration,
    /// Attempts before a job is dead (listed by `evisa jobs dead`), for every kind; `None`: each
    /// kind's own (`evisa_jobs::Job::MAX_ATTEMPTS`).
    pub max_attempts: Option<usize>,
}

/// One variable that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub var: &'static str,
    pub problem: String,
}

/// All the problems found, so an operator can fix them in one go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for p in &self.0 {
            writeln!(f, "  {}: {}", p.var, p.problem)?;
        }
        Ok(())
    }
}

impl Config {
    /// `serve` and `work`: the production profile, and no secret that is published in this
    /// repository or guessable ([`published`]). Every problem of both kinds is reported at once.
    pub fn load_deployed(src: &Source) -> Result<Config, ConfigError> {
        let gate = published::check(src);
        match Config::load(Profile::Production, src) {
            Ok(config) if gate.is_empty() => Ok(config),
            Ok(_) => Err(ConfigError(gate)),
            Err(ConfigError(mut problems)) => {
                let gate: Vec<_> = gate
                    .into_iter()
                    .filter(|g| !problems.iter().any(|p| p.var == g.var))
                    .collect();
                problems.extend(gate);
                Err(ConfigError(problems))
            }
        }
    }

    /// Reads and validates every setting for `profile`.
    pub fn load(profile: Profile, src: &Source) -> Result<Config, ConfigError> {
        let mut r = Reader {
            src,
            problems: Vec::new(),
        };
        let dev = profile == Profile::Dev;

        let database_url = match src.get("DATABASE_URL") {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                u.to_string()
            }
            Some(_) => {
                r.problem("DATABASE_URL", "must be a postgres:// URL");
                String::new()
            }
            None if dev => "postgres://postgres@127.0.0.1:5432/evisa".to_string(),
            None => {
                r.problem("DATABASE_URL", "is required");
                String::new()
            }
        };
        let redis_url = match src.get("REDIS_URL") {
            Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => u.to_string(),
            Some(_) => {
                r.problem("REDIS_URL", "must be a redis:// or rediss:// URL");
                String::new()
            }
            None if dev => "redis://127.0.0.1:6379".to_string(),
            None => {
                r.problem("REDIS_URL", "is required");
                String::new()
            }
        };
        let redis_prefix = r.parsed("EVISA_REDIS_PREFIX", "evisa".to_string(), |v| {
            if v.len() <= 64 && !v.contains(char::is_whitespace) {
                Ok(v.to_string())
            } else {
                Err("must be at most 64 characters without spaces".into())
            }
        });
        let http_addr = r.parsed(
            "EVISA_HTTP_ADDR",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            |v| {
                v.parse()
                    .map_err(|_| "must be an address and port such as 0.0.0.0:8080".to_string())
            },
        );
        let shutdown_drain = r.parsed(
            "EVISA_SHUTDOWN_DRAIN_SECONDS",
            std::time::Duration::from_secs(if dev { 0 } else { 5 }),
            |v| match v.parse::<u64>() {
                Ok(n) if n <= 120 => Ok(std::time::Duration::from_secs(n)),
                _ => Err("must be a number of seconds from 0 to 120".into()),
            },
        );
        let metrics_addr = r.parsed(
            "EVISA_METRICS_ADDR",
            Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            |v| match v {
                "off" => Ok(None),
                v => v.parse().map(Some).map_err(|_| {
                    "must be an address and port such as 127.0.0.1:9464, or off".to_string()
                }),
            },
        );
        let public_base_url = match r.url("EVISA_PUBLIC_BASE_URL") {
            Some(u) => u,
            None if dev || src.get("EVISA_PUBLIC_BASE_URL").is_some() => {
                url::Url::parse(&format!("http://{http_addr}/"))
                    .expect("a socket address is a valid host")
            }
            None => {
                r.problem(
                    "EVISA_PUBLIC_BASE_URL",
                    "is required (the address applicants and gateways reach us at)",
                );
                url::Url::parse("http://invalid/").expect("valid")
            }
        };
        let return_url_origins = r.parsed(
            "EVISA_RETURN_URL_ORIGINS",
            ReturnUrlOrigins::of(&public_base_url, dev),
            |v| ReturnUrlOrigins::parse(v, false),
        );

        let (jwt, data_keys, receipt_key) = secrets::load(&mut r, dev);

        let log_format = r.parsed(
            "EVISA_LOG_FORMAT",
            if dev {
                LogFormat::Text
            } else {
                LogFormat::Json
            },
            |v| match v {
                "json" => Ok(LogFormat::Json),
                "text" => Ok(LogFormat::Text),
                _ => Err("must be `json` or `text`".into()),
            },
        );
        let max_body_bytes = r.parsed("EVISA_MAX_BODY_BYTES", 64 * 1024, |v| {
            match v.parse::<usize>() {
                Ok(n) if (1024..=10 * 1024 * 1024).contains(&n) => Ok(n),
                _ => Err("must be a number of bytes from 1024 to 10485760".into()),
            }
        });
        let limits = limits::load(&mut r);
        let connections = limits::load_connections(&mut r);

        let (stripe, alipay, sandbox_addr) = gateways::load(&mut r, dev);
        let sandbox_public_url = r.url("EVISA_SANDBOX_PUBLIC_URL").unwrap_or_else(|| {
            url::Url::parse(&format!("http://{sandbox_addr}"))
                .expect("a socket address is a valid host")
        });

        let seconds = |r: &mut Reader, var: &'static str, default: u64, min: u64, max: u64| {
            r.parsed(var, Duration::from_secs(default), |v| {
                match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(Duration::from_secs(n)),
                    _ => Err(format!("must be a number of seconds from {min} to {max}")),
                }
            })
        };
        let payments = PaymentSettings {
            expiry: seconds(
                &mut r,
                "EVISA_PAYMENT_EXPIRY_SECONDS",
                90 * 60,
                2,
                7 * 86_400,
            ),
            reconcile_after: seconds(&mut r, "EVISA_RECONCILE_AFTER_SECONDS", 600, 1, 86_400),
            sweep_interval: seconds(&mut r, "EVISA_SWEEP_INTERVAL_SECONDS", 30, 1, 3_600),
            gateway_timeout: seconds(&mut r, "EVISA_GATEWAY_TIMEOUT_SECONDS", 10, 1, 120),
            application_expiry: seconds(
                &mut r,
                "EVISA_APPLICATION_EXPIRY_SECONDS",
                7 * 86_400,
                2,
                365 * 86_400,
            ),
            refund_on_rejection: r.parsed("EVISA_REFUND_ON_REJECTION", false, |v| match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err("must be `true` or `false`".into()),
            }),
            refund_approval: r.parsed(
                "EVISA_REFUND_APPROVAL_ABOVE",
                crate::refund::ApprovalPolicy::FullRefunds,
                |v| match v.parse::<i64>() {
                    Ok(n) if n >= 0 => Ok(crate::refund::ApprovalPolicy::Above(n)),
                    _ => Err("must be a number of minor units, 0 or more".into()),
                },
            ),
            group_max: r.parsed("EVISA_GROUP_MAX", 50, |v| match v.parse::<usize>() {
                Ok(n) if (2..=500).contains(&n) => Ok(n),
                _ => Err("must be a number from 2 to 500".into()),
            }),
        };
        let jobs = JobSettings {
            concurrency: r.parsed("EVISA_WORKER_CONCURRENCY", 1000, |v| {
                match v.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => Ok(n),
                    _ => Err("must be a number from 1 to 1000".into()),
                }
            }),
            batch_size: r.parsed("EVISA_JOB_BATCH", 1000, |v| match v.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(n),
                _ => Err("must be a number from 1 to 1000".into()),
            }),
            gateway_calls: r.parsed(
                "EVISA_GATEWAY_CALLS",
                crate::gateway::DEFAULT_CALLS_IN_FLIGHT,
                |v| match v.parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => Ok(n),
                    _ => Err("must be a number from 1 to 256".into()),
                },
            ),
            orphan_timeout: seconds(&mut r, "EVISA_JOB_ORPHAN_TIMEOUT_SECONDS", 30, 3, 3_600),
            poll_interval: r.parsed("EVISA_JOB_POLL_MS", Duration::from_millis(500), |v| match v
                .parse::<u64>()
            {
                Ok(n) if (10..=60_000).contains(&n) => Ok(Duration::from_millis(n)),
                _ => Err("must be a number of milliseconds from 10 to 60000".into()),
            }),
            max_attempts: r.parsed("EVISA_JOB_MAX_ATTEMPTS", None, |v| {
                match v.parse::<usize>() {
                    Ok(n) if (1..=100).contains(&n) => Ok(Some(n)),
                    _ => Err("must be a number from 1 to 100".into()),
                }
            }),
        };
        let notify = notify::load(&mut r, dev);
        let audit = AuditSettings {
            signing_key: r
                .secret("EVISA_AUDIT_SIGNING_KEY", "EVISA_AUDIT_SIGNING_KEY_FILE")
                .map(Secret::new),
            checkpoint_dir: src.get("EVISA_AUDIT_CHECKPOINT_DIR").map(Into::into),
            checkpoint_interval: seconds(
                &mut r,
                "EVISA_AUDIT_CHECKPOINT_SECONDS",
                3600,
                1,
                7 * 86_400,
            ),
        };
        match (r.problems.is_empty(), data_keys) {
            (true, Some(data_keys)) => Ok(Config {
                profile,
                database_url: Secret::new(database_url),
                redis_url: Secret::new(redis_url),
                redis_prefix,
                http_addr,
                metrics_addr,
                shutdown_drain,
                public_base_url,
                return_url_origins,
                jwt,
                data_keys,
                receipt_key,
                log_format,
                max_body_bytes,
                limits,
                connections,
                stripe,
                alipay,
                payments,
                jobs,
                sandbox_addr,
                sandbox_public_url,
                audit,
                notify,
            }),
            _ => Err(ConfigError(r.problems)),
        }
    }
}

#[cfg(test)]
mod tests;
