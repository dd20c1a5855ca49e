//! `spawn_app()`: the API on a random port over its own fresh database, for end-to-end tests.

use evisa_core::{
    auth,
    config::{Config, Profile, Source},
    db, fees,
    person::Email,
    users::{self, Role},
};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The server under test and a client for it.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: PgPool,
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
    let pool = db::connect(&database.url, 5).await.unwrap();
    db::migrate(&pool).await.unwrap();
    evisa_worker::setup(&pool).await.unwrap();
    fees::seed_demo_schedule(&pool).await.unwrap();

    let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut pairs = vec![
        ("DATABASE_URL", database.url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("EVISA_REDIS_PREFIX", prefix.as_str()),
        ("EVISA_LOGIN_ATTEMPTS_PER_MINUTE", "1000"),
        ("EVISA_MAX_BODY_BYTES", "8192"),
    ];
    pairs.extend_from_slice(extra);
    let config = Config::load(Profile::Dev, &Source::from_pairs(pairs)).unwrap();
    let redis = redis::aio::ConnectionManager::new(redis::Client::open(redis_url).unwrap())
        .await
        .expect("Redis must be running for the tests");

    let acceptor =
        poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind("127.0.0.1:0"))
            .await
            .unwrap();
    let addr = poem::listener::Acceptor::local_addr(&acceptor)
        .remove(0)
        .as_socket_addr()
        .copied()
        .unwrap();
    let app = evisa_api::app(evisa_api::AppState::new(config, pool.clone(), redis));
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));

    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        db: pool,
        database,
    }
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
