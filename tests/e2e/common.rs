//! `spawn_app()`: the API on a random port over its own fresh database, for end-to-end tests.

use std::time::{Duration, Instant};

use evisa_core::{
    auth,
    config::{Config, Profile, Source},
    crypto::DataKeys,
    db, fees,
    gateway::stripe::StripeGateway,
    person::Email,
    users::{self, Role},
};
use evisa_sandbox::{AlipaySandbox, StripeSandbox, StripeSandboxConfig, test_keys};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;

/// The server under test, its Stripe sandbox, and a client for both.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: PgPool,
    pub sandbox: StripeSandbox,
    pub alipay: AlipaySandbox,
    pub sandbox_url: String,
    /// The configuration the app runs with, to start workers (in process or as `evisa work`).
    pub env: Vec<(String, String)>,
    /// The Stripe sandbox's secret key: fresh per test, as `serve` and `work` demand.
    pub stripe_key: String,
    /// The webhook signing secrets the API accepts: the previous one (still accepted during a
    /// rotation) and the current one the sandbox signs with. Fresh per test.
    pub webhook_secrets: [String; 2],
    stop_workers: tokio::sync::watch::Sender<bool>,
    /// Dropped with the app, taking the database with it.
    database: TestDatabase,
}

/// A database made for one test and dropped when the test ends (also when it fails).
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

/// The server part of `DATABASE_URL` (defaults to the local trust-auth Postgres).
/// A loopback port free at the moment of asking, for a process a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn server_url() -> String {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    match url.rfind('/') {
        Some(i) if url[..i].contains("://") && i > url.find("://").unwrap() + 2 => {
            url[..i].to_string()
        }
        _ => url,
    }
}

impl TestDatabase {
    /// Takes charge of dropping a database something else creates.
    pub fn adopt(name: String, url: String) -> TestDatabase {
        TestDatabase {
            name,
            url,
            admin_url: format!("{}/postgres", server_url()),
        }
    }

    pub async fn create(prefix: &str) -> TestDatabase {
        let server = server_url();
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        let url = format!("{server}/{name}");
        let admin_url = format!("{server}/postgres");
        db::create_if_missing(&url)
            .await
            .expect("test database can be created");
        TestDatabase {
            name,
            url,
            admin_url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; do the async clean-up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(pool) = db::connect(&admin, 1).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                }
            });
        })
        .join();
    }
}

/// Starts the API with the dev profile over a fresh, migrated and seeded database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create("evisa_test").await;
    let pool = db::connect(&database.url, 10).await.unwrap();
    db::migrate(&pool).await.unwrap();
    fees::seed_demo_schedule(&pool).await.unwrap();
    db::ensure_service_login(&pool, SERVICE_LOGIN)
        .await
        .unwrap();

    let sandbox_acceptor = bind().await;
    let sandbox_url = format!("http://{}", local_addr(&sandbox_acceptor));
    let api_acceptor = bind().await;
    let base = format!("http://{}", local_addr(&api_acceptor));

    let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
    // Fresh secrets, so that `evisa work` started from `env` passes the deployment gate.
    let stripe_key = format!("sk_test_{}", fresh());
    let webhook_secrets = [format!("whsec_{}", fresh()), format!("whsec_{}", fresh())];
    let webhook_list = webhook_secrets.join(",");
    let (jwt, receipt, data_keys) = (fresh(), fresh(), DataKeys::generate_entry("test"));
    let alipay_gateway = format!("{sandbox_url}/gateway.do");
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut env: Vec<(String, String)> = [
        ("DATABASE_URL", database.url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("EVISA_REDIS_PREFIX", prefix.as_str()),
        ("EVISA_LOGIN_ATTEMPTS_PER_MINUTE", "1000"),
        // Tests that are not about limits never meet one; tests/e2e/limits.rs sets its own.
        ("EVISA_REGISTRATIONS_PER_HOUR", "1000000"),
        ("EVISA_PAYMENTS_PER_MINUTE", "1000000"),
        ("EVISA_REFUNDS_PER_MINUTE", "1000000"),
        ("EVISA_CALLBACKS_PER_MINUTE", "1000000"),
        ("EVISA_FAILED_PAYMENTS_PER_APPLICATION", "1000"),
        ("EVISA_FAILED_PAYMENTS_PER_APPLICANT", "1000"),
        // One officer refunds alone unless a test is about four eyes (tests/e2e/refunds.rs sets
        // this to "" for the default: every full refund waits for a second staff member).
        ("EVISA_REFUND_APPROVAL_ABOVE", "1000000000"),
        ("EVISA_MAX_BODY_BYTES", "8192"),
        ("EVISA_PUBLIC_BASE_URL", base.as_str()),
        ("EVISA_RETURN_URL_ORIGINS", "https://portal.example"),
        ("EVISA_JWT_SECRET", jwt.as_str()),
        ("EVISA_DATA_KEYS", data_keys.as_str()),
        ("EVISA_RECEIPT_KEY", receipt.as_str()),
        ("STRIPE_SECRET_KEY", stripe_key.as_str()),
        ("STRIPE_API_BASE", sandbox_url.as_str()),
        ("STRIPE_WEBHOOK_SECRETS", webhook_list.as_str()),
        ("EVISA_JOB_POLL_MS", "50"),
        ("EVISA_JOB_ORPHAN_TIMEOUT_SECONDS", "3"),
        ("EVISA_SWEEP_INTERVAL_SECONDS", "1"),
        ("EVISA_RECONCILE_AFTER_SECONDS", "2"),
        // Notification endpoints in tests listen on loopback; retries a second apart.
        ("EVISA_NOTIFY_ALLOW_HOSTS", "127.0.0.1"),
        ("EVISA_NOTIFY_RETRY_SCHEDULE", "1,1,1,1,1"),
        ("EVISA_NOTIFY_POLL_MS", "50"),
        ("ALIPAY_APP_ID", test_keys::APP_ID),
        ("ALIPAY_SELLER_ID", test_keys::SELLER_ID),
        ("ALIPAY_GATEWAY_URL", alipay_gateway.as_str()),
        ("ALIPAY_APP_PRIVATE_KEY", test_keys::MERCHANT_DEV_PRIVATE),
        ("ALIPAY_PUBLIC_KEY", test_keys::ALIPAY_SANDBOX_PUBLIC),
        ("EVISA_ALIPAY_POLL_SECONDS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    let config = load(&env);
    let redis = redis::aio::ConnectionManager::new(redis::Client::open(redis_url).unwrap())
        .await
        .expect("Redis must be running for the tests");

    let sandbox = StripeSandbox::new(StripeSandboxConfig {
        secret_key: stripe_key.clone(),
        webhook_url: Some(format!("{base}/v1/webhooks/stripe")),
        webhook_secret: webhook_secrets[1].clone(),
        public_url: sandbox_url.clone(),
        webhook_retry_base: std::time::Duration::from_millis(100),
        webhook_max_attempts: 5,
        webhook_latency: std::time::Duration::from_millis(20),
        enabled_events: vec!["*".into()],
    });
    // Alipay's notify retry "minute" is 20 ms here.
    let alipay = evisa_sandbox::dev_alipay(std::time::Duration::from_millis(20));
    tokio::spawn(
        poem::Server::new_with_acceptor(sandbox_acceptor)
            .run(evisa_sandbox::routes(&sandbox, &alipay)),
    );
    let limits = config.connections.clone();
    let app = evisa_api::app(evisa_api::AppState::new(config, pool.clone(), redis));
    tokio::spawn(
        poem::Server::new_with_acceptor(api_acceptor.with_limits(&limits))
            .idle_timeout(limits.idle_timeout)
            .run(app),
    );
    let (stop_workers, _) = tokio::sync::watch::channel(false);

    TestApp {
        base,
        http: reqwest::Client::new(),
        db: pool,
        sandbox,
        alipay,
        sandbox_url,
        env,
        stripe_key,
        webhook_secrets,
        stop_workers,
        database,
    }
}

/// 32 random bytes as URL-safe letters and digits.
fn fresh() -> String {
    DataKeys::generate_entry("x")[2..].replace(['+', '/', '='], "")
}

impl TestApp {
    /// Starts a reconciliation report as `admin` and waits until a worker has finished it.
    pub async fn reconciliation_report(&self, admin: &str, since: &str) -> Value {
        let started = self
            .post(
                "/v1/admin/reconciliation-reports",
                Some(admin),
                &json!({"since": since}),
            )
            .await;
        assert_eq!(started.status, 202, "{}", started.body);
        assert_eq!(started.body["status"], "running");
        let id = started.body["id"].as_str().unwrap().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let r = self
                .get(
                    &format!("/v1/admin/reconciliation-reports/{id}"),
                    Some(admin),
                )
                .await;
            if r.body["status"] != "running" {
                return r.body;
            }
            assert!(std::time::Instant::now() < deadline, "report still running");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The login tests run `evisa work` processes as: a member of the service role, which cannot
/// rewrite the event logs (`work` refuses to run as anything more).
pub const SERVICE_LOGIN: &str = "evisa_test_service";

impl TestApp {
    /// The environment for `evisa work` as a process of its own, signed in as [`SERVICE_LOGIN`].
    /// The sandbox's Alipay keys and app id are published in this repository, so a deployed
    /// worker refuses them: workers started this way serve card payments only.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        let service = db::as_login(self.database_url(), SERVICE_LOGIN).unwrap();
        self.env
            .iter()
            .filter(|(k, _)| !k.starts_with("ALIPAY_"))
            .map(|(k, v)| {
                let v = if k == "DATABASE_URL" {
                    service.clone()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }
}

fn load(env: &[(String, String)]) -> Config {
    Config::load(
        Profile::Production,
        &Source::from_pairs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )
    .unwrap()
}

async fn bind() -> evisa_api::listener::NoDelay {
    evisa_api::listener::NoDelay::bind("127.0.0.1:0")
        .await
        .unwrap()
}

fn local_addr(acceptor: &impl poem::listener::Acceptor) -> std::net::SocketAddr {
    *poem::listener::Acceptor::local_addr(acceptor)
        .remove(0)
        .as_socket_addr()
        .unwrap()
}

/// A response's status, content type and JSON body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts an RFC 9457 problem with this status and returns its body.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        assert_eq!(
            self.content_type, "application/problem+json",
            "{}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        for key in ["type", "title", "detail"] {
            assert!(
                self.body[key].is_string(),
                "problem lacks `{key}`: {}",
                self.body
            );
        }
        &self.body
    }

    /// The fields named in a problem's `errors`.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["field"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl TestApp {
    /// The URL of this app's own database.
    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            content_type,
            headers,
            body,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.send(
            self.http
                .patch(self.url(path))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    /// Registers a new applicant and signs in; returns the access token.
    pub async fn applicant(&self) -> String {
        let email = format!("applicant-{}@example.org", uuid::Uuid::now_v7().simple());
        let creds = json!({"email": email, "password": "correct horse battery staple"});
        let r = self.post("/v1/auth/register", None, &creds).await;
        assert_eq!(r.status, 201, "{}", r.body);
        self.login(&creds).await
    }

    pub async fn login(&self, creds: &Value) -> String {
        let r = self.post("/v1/auth/login", None, creds).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["access_token"].as_str().unwrap().to_string()
    }

    /// Creates a staff account directly in the database (as `evisa user create` does) and
    /// signs in.
    pub async fn staff(&self, role: Role) -> String {
        let email = format!("{role}-{}@example.org", uuid::Uuid::now_v7().simple());
        let password = "officer password 123";
        users::create(
            &self.db,
            &Email::parse(&email).unwrap(),
            &auth::hash_password(password),
            role,
        )
        .await
        .unwrap();
        self.login(&json!({"email": email, "password": password}))
            .await
    }

    /// Creates a draft with `fields` and returns its id.
    pub async fn draft(&self, token: &str, fields: &Value) -> String {
        let r = self.post("/v1/applications", Some(token), fields).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    pub async fn submit(&self, token: &str, id: &str) -> Answer {
        self.post(
            &format!("/v1/applications/{id}/submit"),
            Some(token),
            &Value::Null,
        )
        .await
    }
}

/// A complete application for a national of `nationality`.
pub fn complete_fields(nationality: &str, visa_type: &str, speed: &str) -> Value {
    let arrival = chrono::Utc::now().date_naive() + chrono::Days::new(30);
    json!({
        "full_name": "Ann Lee",
        "passport_number": "X1234567",
        "date_of_birth": "1990-05-17",
        "nationality": nationality,
        "visa_type": visa_type,
        "processing_speed": speed,
        "intended_arrival_date": arrival.to_string(),
    })
}

impl TestApp {
    /// The configuration the app runs with.
    pub fn config(&self) -> Config {
        load(&self.env)
    }

    /// Starts the background workers in this process (stopped when the app is dropped).
    pub fn start_worker(&self) {
        let config = self.config();
        let gateway = StripeGateway::new(
            config.stripe.secret_key.as_ref().unwrap(),
            config.stripe.api_base.as_ref(),
            config.payments.gateway_timeout,
        )
        .unwrap();
        let pool = self.db.clone();
        let mut stop = self.stop_workers.subscribe();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let config = std::sync::Arc::new(config);
            let render = evisa_api::notify_objects::renderer(pool.clone(), config.clone());
            if let Err(e) = evisa_worker::run(config, pool, gateway, render, shutdown).await {
                eprintln!("worker stopped: {e:#}");
            }
        });
    }

    /// Stops the workers started by [`TestApp::start_worker`], for good: jobs enqueued from
    /// now on stay in the queue (so that a test can drive what they would have done itself).
    pub async fn stop_worker(&self) {
        let _ = self.stop_workers.send(true);
        // Jobs already picked up finish; none is fetched after this.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    /// A submitted application (FR tourist standard: 4000 USD) of a new applicant.
    pub async fn submitted_application(&self) -> (String, String) {
        let token = self.applicant().await;
        let id = self
            .draft(&token, &complete_fields("FR", "tourist", "standard"))
            .await;
        let r = self.submit(&token, &id).await;
        assert_eq!(r.body["status"], "submitted", "{}", r.body);
        (token, id)
    }

    /// A Chinese national's application paid with Alipay in the sandbox cashier (360.00 CNY):
    /// (token, application id, payment id), once the payment succeeded.
    pub async fn paid_by_alipay(&self) -> (String, String, String) {
        let token = self.applicant().await;
        let application = self
            .draft(&token, &complete_fields("CN", "tourist", "standard"))
            .await;
        self.submit(&token, &application).await;
        let r = self
            .send(
                self.http
                    .post(self.url(&format!("/v1/applications/{application}/payments")))
                    .bearer_auth(&token)
                    .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                    .json(&json!({"provider": "alipay"})),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        let payment = r.body["id"].as_str().unwrap().to_string();
        // The buyer's browser opens the cashier, and the buyer presses Pay.
        self.http
            .get(r.body["next_action"]["redirect_url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        let trade = evisa_core::gateway::alipay::out_trade_no(payment.parse().unwrap());
        self.http
            .post(format!(
                "{}/sandbox/alipay/cashier/{trade}/pay",
                self.sandbox_url
            ))
            .send()
            .await
            .unwrap();
        self.wait_for_payment(&token, &payment, "succeeded", 10)
            .await;
        (token, application, payment)
    }

    /// A new applicant's submitted application and a card payment of it (`pm_card_visa`),
    /// accepted: (token, payment id). Nothing charges it unless a worker runs.
    pub async fn card_payment(&self) -> (String, String) {
        let (token, application) = self.submitted_application().await;
        let key = uuid::Uuid::now_v7().to_string();
        let r = self.pay(&token, &application, "pm_card_visa", &key).await;
        assert_eq!(r.status, 202, "{}", r.body);
        (token, r.body["id"].as_str().unwrap().to_string())
    }

    /// `evisa work` in a process of its own, configured like this app (kill it when done).
    pub fn worker_process(&self) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_evisa"))
            .arg("work")
            .envs(self.worker_env())
            .env("EVISA_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Reads a payment's event stream until it ends (30 s at most): each status with when it
    /// arrived.
    pub async fn follow(&self, token: &str, payment: &str) -> Vec<(String, Instant)> {
        let resp = self
            .http
            .get(self.url(&format!("/v1/payments/{payment}/events")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        let mut body = resp.bytes_stream();
        let (mut seen, mut pending) = (Vec::new(), String::new());
        let read = async {
            while let Some(chunk) = body.next().await {
                pending.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    if let Some(data) = line.trim_end().strip_prefix("data: ") {
                        let status = serde_json::from_str::<Value>(data).unwrap()["status"]
                            .as_str()
                            .unwrap()
                            .to_string();
                        seen.push((status, Instant::now()));
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the stream ends after the final status");
        seen
    }

    /// `POST /v1/applications/{id}/payments` with a card.
    pub async fn pay(&self, token: &str, application: &str, method: &str, key: &str) -> Answer {
        self.send(
            self.http
                .post(self.url(&format!("/v1/applications/{application}/payments")))
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(&json!({"provider": "stripe", "payment_method": method})),
        )
        .await
    }

    /// Polls a payment until it has `status` (or panics after `secs`).
    pub async fn wait_for_payment(
        &self,
        token: &str,
        payment: &str,
        status: &str,
        secs: u64,
    ) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let r = self
                .get(&format!("/v1/payments/{payment}"), Some(token))
                .await;
            if r.body["status"] == status {
                return r.body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "payment {payment} did not become {status} within {secs} s; it is {}",
                r.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Charges the sandbox made for one of our payments.
    pub fn charges_for(&self, payment: &str) -> usize {
        self.sandbox
            .charges()
            .iter()
            .filter(|c| c.metadata.get("payment_id").map(String::as_str) == Some(payment))
            .count()
    }

    /// The gateway reference (PaymentIntent id) stored for a payment.
    pub async fn intent_of(&self, payment: &str) -> String {
        sqlx::query_scalar("SELECT gateway_reference FROM payments WHERE id = $1::uuid")
            .bind(payment)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Posts to one of the sandbox's control endpoints.
    pub async fn sandbox_post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.sandbox_url))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The payment's history: (event, to_status) in order.
    pub async fn payment_history(&self, payment: &str) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT event, to_status FROM payment_events WHERE payment_id = $1::uuid ORDER BY id",
        )
        .bind(payment)
        .fetch_all(&self.db)
        .await
        .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop_workers.send(true);
    }
}
