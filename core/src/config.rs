//! Configuration from environment variables (a file may add to them), validated once at start-up.
//!
//! Every problem names its variable. `dev` needs no variables at all on a machine whose Postgres
//! and Redis listen on their standard local ports; `serve` and `work` insist on real secrets.

use std::{collections::HashMap, fmt, net::SocketAddr, path::Path, time::Duration};

use crate::{
    crypto::DataKeys,
    gateway::alipay::{AppPrivateKey, RsaPublicKey},
    secret::Secret,
};

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
    /// `dev` with no Stripe settings: the built-in sandbox plays Stripe.
    pub uses_sandbox: bool,
}

/// The dev sandbox's credentials. Test mode only; published on purpose.
pub const SANDBOX_STRIPE_KEY: &str = "sk_test_evisa_sandbox";
pub const SANDBOX_WEBHOOK_SECRET: &str = "whsec_evisa_dev_sandbox";

/// Alipay settings. Alipay is offered when all four are set (in `dev`, the built-in sandbox
/// supplies them); keys are parsed at start-up, so a bad key stops the process.
#[derive(Debug, Clone)]
pub struct AlipaySettings {
    pub app_id: Option<String>,
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
            && self.gateway_url.is_some()
            && self.app_private_key.is_some()
            && self.public_key.is_some()
    }
}

/// The dev sandbox's Alipay credentials (test mode only; see `sandbox/keys/README.md`).
pub const SANDBOX_ALIPAY_APP_ID: &str = "2021000000000001";
const SANDBOX_MERCHANT_PRIVATE_KEY: &str =
    include_str!("../../sandbox/keys/merchant_dev_private.pem");
const SANDBOX_ALIPAY_PUBLIC_KEY: &str =
    include_str!("../../sandbox/keys/alipay_sandbox_public.pem");

/// Everything the service needs to start.
#[derive(Debug)]
pub struct Config {
    pub profile: Profile,
    pub database_url: Secret<String>,
    pub redis_url: Secret<String>,
    pub redis_prefix: String,
    pub http_addr: SocketAddr,
    pub public_base_url: url::Url,
    pub jwt: JwtSettings,
    pub data_keys: DataKeys,
    /// Signs receipts' verification codes.
    pub receipt_key: Secret<Vec<u8>>,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    /// Login attempts allowed per minute, per client address and per account.
    pub login_attempts_per_minute: u32,
    pub stripe: StripeSettings,
    pub alipay: AlipaySettings,
    pub payments: PaymentSettings,
    pub jobs: JobSettings,
    /// Where `dev` and `evisa sandbox` serve the gateway sandbox.
    pub sandbox_addr: SocketAddr,
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
}

/// The background job layer.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Jobs run at once per worker process.
    pub concurrency: usize,
    /// A killed worker's jobs are taken over after this long without its heartbeat.
    pub orphan_timeout: Duration,
    /// Fallback poll interval (new jobs also wake workers through LISTEN/NOTIFY).
    pub poll_interval: Duration,
    /// Attempts before a job is dead (listed by `evisa jobs dead`).
    pub max_attempts: usize,
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

/// The dev profile's data key. Published on purpose: dev data is not secret, but it must stay
/// readable across restarts of `evisa dev`.
const DEV_DATA_KEYS: &str = "dev:ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=";

/// Where variables come from: the process environment over an optional `KEY=VALUE` file.
pub struct Source {
    values: HashMap<String, String>,
}

impl Source {
    /// The process environment, over `EVISA_CONFIG_FILE` (or `file`) when given.
    pub fn from_env(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut values = HashMap::new();
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("EVISA_CONFIG_FILE").map(Into::into));
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError(vec![ConfigProblem {
                    var: "EVISA_CONFIG_FILE",
                    problem: format!("cannot read {}: {e}", path.display()),
                }])
            })?;
            values.extend(parse_env_file(&text).map_err(|problem| {
                ConfigError(vec![ConfigProblem {
                    var: "EVISA_CONFIG_FILE",
                    problem,
                }])
            })?);
        }
        values.extend(std::env::vars());
        Ok(Self { values })
    }

    /// Explicit values only (tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn get(&self, var: &str) -> Option<&str> {
        self.values
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }
}

fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {} is not KEY=VALUE", n + 1))?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

/// Collects problems while reading variables.
struct Reader<'a> {
    src: &'a Source,
    problems: Vec<ConfigProblem>,
}

impl Reader<'_> {
    fn problem(&mut self, var: &'static str, problem: impl Into<String>) {
        self.problems.push(ConfigProblem {
            var,
            problem: problem.into(),
        });
    }

    /// A value, or a secret read from the file named by `{var}_FILE`.
    fn secret(&mut self, var: &'static str, file_var: &'static str) -> Option<String> {
        match (self.src.get(var), self.src.get(file_var)) {
            (Some(_), Some(_)) => {
                self.problem(var, format!("set either {var} or {file_var}, not both"));
                None
            }
            (Some(v), None) => Some(v.to_string()),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                Ok(_) => {
                    self.problem(file_var, format!("{path} is empty"));
                    None
                }
                Err(e) => {
                    self.problem(file_var, format!("cannot read {path}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    fn parsed<T>(
        &mut self,
        var: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match self.src.get(var) {
            None => default,
            Some(raw) => parse(raw).unwrap_or_else(|p| {
                self.problem(var, p);
                default
            }),
        }
    }

    fn url(&mut self, var: &'static str) -> Option<url::Url> {
        let raw = self.src.get(var)?;
        match url::Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                self.problem(var, "must be an absolute http(s) URL");
                None
            }
        }
    }
}

impl Config {
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

        let jwt_secret = match r.secret("EVISA_JWT_SECRET", "EVISA_JWT_SECRET_FILE") {
            Some(s) if s.len() >= 32 => s.into_bytes(),
            Some(_) => {
                r.problem("EVISA_JWT_SECRET", "must be at least 32 bytes");
                Vec::new()
            }
            // Dev tokens die with the process; that is fine for a developer and avoids a
            // well-known signing key.
            None if dev => {
                let entry = DataKeys::generate_entry("jwt");
                entry.into_bytes()
            }
            None => {
                r.problem(
                    "EVISA_JWT_SECRET",
                    "is required (or EVISA_JWT_SECRET_FILE), at least 32 bytes",
                );
                Vec::new()
            }
        };
        let jwt = JwtSettings {
            secret: Secret::new(jwt_secret),
            issuer: r.parsed("EVISA_JWT_ISSUER", "evisa-pay".into(), |v| Ok(v.into())),
            audience: r.parsed("EVISA_JWT_AUDIENCE", "evisa-pay-api".into(), |v| {
                Ok(v.into())
            }),
            ttl: r.parsed(
                "EVISA_JWT_TTL_SECONDS",
                Duration::from_secs(900),
                |v| match v.parse::<u64>() {
                    Ok(s) if (60..=86_400).contains(&s) => Ok(Duration::from_secs(s)),
                    _ => Err("must be a number of seconds from 60 to 86400".into()),
                },
            ),
        };

        let data_keys_spec = match r.secret("EVISA_DATA_KEYS", "EVISA_DATA_KEYS_FILE") {
            Some(s) => Some(s),
            None if dev => Some(DEV_DATA_KEYS.to_string()),
            None => {
                r.problem(
                    "EVISA_DATA_KEYS",
                    "is required (or EVISA_DATA_KEYS_FILE): `id:base64 32-byte key`, current first; `evisa keys generate` makes one",
                );
                None
            }
        };
        let data_keys = data_keys_spec.and_then(|s| match DataKeys::parse(&s) {
            Ok(k) => Some(k),
            Err(e) => {
                r.problem("EVISA_DATA_KEYS", e.to_string());
                None
            }
        });

        let receipt_key = match r.secret("EVISA_RECEIPT_KEY", "EVISA_RECEIPT_KEY_FILE") {
            Some(k) if k.len() >= 32 => k.into_bytes(),
            Some(_) => {
                r.problem("EVISA_RECEIPT_KEY", "must be at least 32 bytes");
                Vec::new()
            }
            // Stable across dev restarts so that dev receipts keep verifying; published on purpose.
            None if dev => b"evisa-dev-receipt-key-not-for-production".to_vec(),
            None => {
                r.problem(
                    "EVISA_RECEIPT_KEY",
                    "is required (or EVISA_RECEIPT_KEY_FILE), at least 32 bytes",
                );
                Vec::new()
            }
        };

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
        let login_attempts_per_minute = r.parsed("EVISA_LOGIN_ATTEMPTS_PER_MINUTE", 10, |v| {
            match v.parse::<u32>() {
                Ok(n) if (1..=10_000).contains(&n) => Ok(n),
                _ => Err("must be a number from 1 to 10000".into()),
            }
        });

        let stripe_secret = r.secret("STRIPE_SECRET_KEY", "STRIPE_SECRET_KEY_FILE");
        if let Some(k) = &stripe_secret
            && !(k.starts_with("sk_test_") || k.starts_with("sk_live_") || k.starts_with("rk_"))
        {
            r.problem(
                "STRIPE_SECRET_KEY",
                "must be a Stripe secret key (sk_test_..., sk_live_... or rk_...)",
            );
        }
        let webhook_secrets: Vec<_> = src
            .get("STRIPE_WEBHOOK_SECRETS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if webhook_secrets
            .iter()
            .any(|s: &String| !s.starts_with("whsec_"))
        {
            r.problem(
                "STRIPE_WEBHOOK_SECRETS",
                "must be comma-separated webhook signing secrets, each starting with whsec_",
            );
        }
        let sandbox_addr = r.parsed(
            "EVISA_SANDBOX_ADDR",
            SocketAddr::from(([127, 0, 0, 1], 12111)),
            |v| {
                v.parse()
                    .map_err(|_| "must be an address and port such as 127.0.0.1:12111".to_string())
            },
        );
        let api_base = r.url("STRIPE_API_BASE");
        let uses_sandbox = dev && stripe_secret.is_none() && api_base.is_none();
        if !dev && stripe_secret.is_none() {
            r.problem(
                "STRIPE_SECRET_KEY",
                "is required (or STRIPE_SECRET_KEY_FILE)",
            );
        }
        if !dev && webhook_secrets.is_empty() {
            r.problem(
                "STRIPE_WEBHOOK_SECRETS",
                "is required: the whsec_... signing secrets, comma-separated",
            );
        }
        let stripe = StripeSettings {
            secret_key: stripe_secret
                .or_else(|| uses_sandbox.then(|| SANDBOX_STRIPE_KEY.to_string()))
                .map(Secret::new),
            api_base: api_base.or_else(|| {
                uses_sandbox.then(|| {
                    url::Url::parse(&format!("http://{sandbox_addr}/")).expect("valid URL")
                })
            }),
            webhook_secrets: if webhook_secrets.is_empty() && dev {
                vec![Secret::new(SANDBOX_WEBHOOK_SECRET.to_string())]
            } else {
                webhook_secrets.into_iter().map(Secret::new).collect()
            },
            uses_sandbox,
        };

        let app_id = src.get("ALIPAY_APP_ID").map(str::to_string);
        if let Some(id) = &app_id
            && !(id.len() >= 8 && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit()))
        {
            r.problem("ALIPAY_APP_ID", "must be Alipay's numeric app id");
        }
        let gateway_url = r.url("ALIPAY_GATEWAY_URL");
        let private_text = r.secret("ALIPAY_APP_PRIVATE_KEY", "ALIPAY_APP_PRIVATE_KEY_FILE");
        let public_text = r.secret("ALIPAY_PUBLIC_KEY", "ALIPAY_PUBLIC_KEY_FILE");
        let any_alipay = app_id.is_some()
            || gateway_url.is_some()
            || private_text.is_some()
            || public_text.is_some();
        let alipay_sandbox = dev && !any_alipay;
        if any_alipay {
            for (var, missing) in [
                ("ALIPAY_APP_ID", app_id.is_none()),
                ("ALIPAY_GATEWAY_URL", gateway_url.is_none()),
                ("ALIPAY_APP_PRIVATE_KEY", private_text.is_none()),
                ("ALIPAY_PUBLIC_KEY", public_text.is_none()),
            ] {
                if missing {
                    r.problem(var, "is required when any ALIPAY_* variable is set");
                }
            }
        }
        let private_text = private_text
            .or_else(|| alipay_sandbox.then(|| SANDBOX_MERCHANT_PRIVATE_KEY.to_string()));
        let public_text =
            public_text.or_else(|| alipay_sandbox.then(|| SANDBOX_ALIPAY_PUBLIC_KEY.to_string()));
        let app_private_key = private_text.and_then(|t| match AppPrivateKey::parse(&t) {
            Ok(k) => Some(k),
            Err(e) => {
                r.problem("ALIPAY_APP_PRIVATE_KEY", e.to_string());
                None
            }
        });
        let public_key = public_text.and_then(|t| match RsaPublicKey::parse(&t) {
            Ok(k) => Some(k),
            Err(e) => {
                r.problem("ALIPAY_PUBLIC_KEY", e.to_string());
                None
            }
        });
        let alipay = AlipaySettings {
            app_id: app_id.or_else(|| alipay_sandbox.then(|| SANDBOX_ALIPAY_APP_ID.to_string())),
            gateway_url: gateway_url.or_else(|| {
                alipay_sandbox.then(|| {
                    url::Url::parse(&format!("http://{sandbox_addr}/gateway.do"))
                        .expect("valid URL")
                })
            }),
            app_private_key,
            public_key,
            uses_sandbox: alipay_sandbox,
            poll_first: r.parsed(
                "EVISA_ALIPAY_POLL_SECONDS",
                Duration::from_secs(5),
                |v| match v.parse::<u64>() {
                    Ok(n) if (1..=600).contains(&n) => Ok(Duration::from_secs(n)),
                    _ => Err("must be a number of seconds from 1 to 600".into()),
                },
            ),
        };

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
        };
        let jobs = JobSettings {
            concurrency: r.parsed("EVISA_WORKER_CONCURRENCY", 8, |v| {
                match v.parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => Ok(n),
                    _ => Err("must be a number from 1 to 256".into()),
                }
            }),
            orphan_timeout: seconds(&mut r, "EVISA_JOB_ORPHAN_TIMEOUT_SECONDS", 30, 3, 3_600),
            poll_interval: r.parsed("EVISA_JOB_POLL_MS", Duration::from_millis(50), |v| match v
                .parse::<u64>()
            {
                Ok(n) if (10..=60_000).contains(&n) => Ok(Duration::from_millis(n)),
                _ => Err("must be a number of milliseconds from 10 to 60000".into()),
            }),
            max_attempts: r.parsed("EVISA_JOB_MAX_ATTEMPTS", 12, |v| match v.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => Ok(n),
                _ => Err("must be a number from 1 to 100".into()),
            }),
        };
        match (r.problems.is_empty(), data_keys) {
            (true, Some(data_keys)) => Ok(Config {
                profile,
                database_url: Secret::new(database_url),
                redis_url: Secret::new(redis_url),
                redis_prefix,
                http_addr,
                public_base_url,
                jwt,
                data_keys,
                receipt_key: Secret::new(receipt_key),
                log_format,
                max_body_bytes,
                login_attempts_per_minute,
                stripe,
                alipay,
                payments,
                jobs,
                sandbox_addr,
            }),
            _ => Err(ConfigError(r.problems)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(err: ConfigError) -> Vec<&'static str> {
        err.0.into_iter().map(|p| p.var).collect()
    }

    #[test]
    fn dev_needs_nothing() {
        let c = Config::load(Profile::Dev, &Source::from_pairs([])).unwrap();
        assert_eq!(
            c.database_url.expose(),
            "postgres://postgres@127.0.0.1:5432/evisa"
        );
        assert_eq!(c.public_base_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn production_names_every_missing_variable() {
        let err = Config::load(Profile::Production, &Source::from_pairs([])).unwrap_err();
        assert_eq!(
            vars(err),
            [
                "DATABASE_URL",
                "REDIS_URL",
                "EVISA_PUBLIC_BASE_URL",
                "EVISA_JWT_SECRET",
                "EVISA_DATA_KEYS",
                "EVISA_RECEIPT_KEY",
                "STRIPE_SECRET_KEY",
                "STRIPE_WEBHOOK_SECRETS"
            ]
        );
    }

    #[test]
    fn malformed_values_are_named() {
        let src = Source::from_pairs([
            ("DATABASE_URL", "mysql://x"),
            ("EVISA_HTTP_ADDR", "localhost"),
            ("EVISA_JWT_SECRET", "short"),
            ("EVISA_DATA_KEYS", "k1:AAAA"),
            ("STRIPE_SECRET_KEY", "pk_test_123"),
            ("STRIPE_WEBHOOK_SECRETS", "whsec_a, nope"),
            ("ALIPAY_GATEWAY_URL", "not a url"),
        ]);
        let err = Config::load(Profile::Dev, &src).unwrap_err();
        let text = err.to_string();
        assert_eq!(
            vars(err),
            [
                "DATABASE_URL",
                "EVISA_HTTP_ADDR",
                "EVISA_JWT_SECRET",
                "EVISA_DATA_KEYS",
                "STRIPE_SECRET_KEY",
                "STRIPE_WEBHOOK_SECRETS",
                "ALIPAY_GATEWAY_URL"
            ]
        );
        assert!(!text.contains("short"), "secrets are not echoed: {text}");
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let src = Source::from_pairs([
            (
                "EVISA_JWT_SECRET",
                "0123456789abcdef0123456789abcdef-secret",
            ),
            ("STRIPE_SECRET_KEY", "sk_test_supersecret"),
            ("DATABASE_URL", "postgres://u:hunter2@db/evisa"),
        ]);
        let c = Config::load(Profile::Dev, &src).unwrap();
        let debug = format!("{c:?}");
        for secret in ["0123456789abcdef", "supersecret", "hunter2"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }

    #[test]
    fn env_file_lines() {
        let parsed = parse_env_file("# c\nA=1\n B = \"two\" \n\n").unwrap();
        assert_eq!(
            parsed,
            [("A".into(), "1".into()), ("B".into(), "two".into())]
        );
        assert!(parse_env_file("nope").is_err());
    }
}
