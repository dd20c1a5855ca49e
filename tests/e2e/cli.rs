//! The binary as an operator meets it: `evisa` with no arguments serves a ready API on a machine
//! where only Postgres and Redis run; bad configuration stops it, naming the variable.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{TestDatabase, free_port, server_url, spawn_app};

const BIN: &str = env!("CARGO_BIN_EXE_evisa");

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_readme_run_command_serves_a_ready_api_and_creates_the_database() {
    // A name that does not exist yet: `dev` must create it.
    let name = format!("evisa_cli_{}", uuid::Uuid::now_v7().simple());
    let url = format!("{}/{name}", server_url());
    let port = free_port();
    let child = Command::new(BIN)
        .env("DATABASE_URL", &url)
        .env("EVISA_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("EVISA_REDIS_PREFIX", format!("cli-{name}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    // Dropped (with the database) when the test ends.
    let _db = TestDatabase::adopt(name, url);

    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        match client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => break true,
            _ if Instant::now() > deadline => break false,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert!(ready, "/readyz did not answer 200 within 60 s");
    let quote = client
        .get(format!(
            "http://127.0.0.1:{port}/v1/fees/quote?visa_type=tourist&nationality=US&speed=standard"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(quote.status(), 200, "the demo schedule is seeded");
}

#[test]
fn serve_without_configuration_stops_naming_each_variable() {
    let out = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "EVISA_PUBLIC_BASE_URL",
        "EVISA_JWT_SECRET",
        "EVISA_DATA_KEYS",
    ] {
        assert!(stderr.contains(var), "{var} not named in: {stderr}");
    }
}

#[test]
fn a_malformed_value_stops_dev_naming_the_variable() {
    let out = Command::new(BIN)
        .arg("dev")
        .env("EVISA_HTTP_ADDR", "not-an-address")
        .env("STRIPE_SECRET_KEY", "pk_live_publishable")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("EVISA_HTTP_ADDR"), "{stderr}");
    assert!(stderr.contains("STRIPE_SECRET_KEY"), "{stderr}");
    assert!(
        !stderr.contains("pk_live_publishable"),
        "values are not echoed: {stderr}"
    );
}

#[test]
fn spec_prints_the_committed_document() {
    let out = Command::new(BIN).arg("spec").output().unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        committed.trim_end()
    );
}

#[tokio::test]
async fn user_create_makes_an_officer_who_can_sign_in() {
    use std::io::Write;

    let app = spawn_app().await;
    let mut child = Command::new(BIN)
        .args([
            "user",
            "create",
            "--email",
            "Officer.One@Example.gov",
            "--role",
            "officer",
            "--password-stdin",
        ])
        .env("DATABASE_URL", app.database_url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long officer password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("created officer "));

    let token = app
        .login(&serde_json::json!({"email": "officer.one@example.gov", "password": "a long officer password"}))
        .await;
    assert_eq!(
        app.get("/v1/admin/applications", Some(&token)).await.status,
        200
    );

    // A bad role is refused before anything is written.
    let out = Command::new(BIN)
        .args([
            "user",
            "create",
            "--email",
            "x@example.gov",
            "--role",
            "superuser",
        ])
        .env("DATABASE_URL", app.database_url())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--role"));
}

#[test]
fn a_bad_alipay_key_stops_start_up_naming_the_variable() {
    let key_file = std::env::temp_dir().join(format!("alipay-public-{}.pem", uuid::Uuid::now_v7()));
    std::fs::write(&key_file, evisa_sandbox::test_keys::ALIPAY_SANDBOX_PUBLIC).unwrap();
    let out = Command::new(BIN)
        .arg("dev")
        .env("ALIPAY_APP_ID", "2021000000000001")
        .env("ALIPAY_SELLER_ID", "2088000000000009")
        .env("ALIPAY_GATEWAY_URL", "http://127.0.0.1:1/gateway.do")
        .env("ALIPAY_APP_PRIVATE_KEY", "bm90IGEga2V5IGF0IGFsbA==")
        .env("ALIPAY_PUBLIC_KEY_FILE", &key_file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&key_file);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ALIPAY_APP_PRIVATE_KEY: is not an RSA private key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("ALIPAY_PUBLIC_KEY"),
        "the public key file was fine: {stderr}"
    );
    assert!(
        !stderr.contains("bm90IGEga2V5"),
        "keys are not echoed: {stderr}"
    );
}
