//! Attack: keep using a token after the account behind it lost its powers — demoted, disabled,
//! or after its password was changed (say, because the token was stolen).

use std::process::Command;

use serde_json::json;

use crate::common::{TestApp, spawn_app};

const BIN: &str = env!("CARGO_BIN_EXE_evisa");

/// A staff account made with `evisa user create`; returns (email, token).
async fn staff_account(app: &TestApp, role: &str) -> (String, String) {
    use std::io::Write;
    let email = format!("{role}-{}@example.gov", uuid::Uuid::now_v7().simple());
    let mut child = Command::new(BIN)
        .args([
            "user",
            "create",
            "--email",
            &email,
            "--role",
            role,
            "--password-stdin",
        ])
        .env("DATABASE_URL", app.database_url())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "staff password 12345").unwrap();
    assert!(child.wait().unwrap().success());
    let token = app
        .login(&json!({"email": email, "password": "staff password 12345"}))
        .await;
    (email, token)
}

fn user_cli(app: &TestApp, args: &[&str]) {
    let out = Command::new(BIN)
        .arg("user")
        .args(args)
        .env("DATABASE_URL", app.database_url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_demoted_officer_loses_staff_routes_at_once() {
    let app = spawn_app().await;
    let (email, token) = staff_account(&app, "officer").await;
    assert_eq!(
        app.get("/v1/admin/applications", Some(&token)).await.status,
        200
    );

    user_cli(
        &app,
        &["set-role", "--email", &email, "--role", "applicant"],
    );
    let r = app.get("/v1/admin/applications", Some(&token)).await;
    r.problem(401);
    // Signing in again gives an applicant's powers only.
    let fresh = app
        .login(&json!({"email": email, "password": "staff password 12345"}))
        .await;
    app.get("/v1/admin/applications", Some(&fresh))
        .await
        .problem(403);
}

#[tokio::test]
async fn a_demotion_written_straight_to_the_database_takes_effect_without_revocation() {
    // The role is read from the account on every request, not from the token.
    let app = spawn_app().await;
    let (email, token) = staff_account(&app, "admin").await;
    assert_eq!(
        app.get("/v1/admin/applications", Some(&token)).await.status,
        200
    );
    sqlx::query("UPDATE users SET role = 'applicant' WHERE email = $1")
        .bind(&email)
        .execute(&app.db)
        .await
        .unwrap();
    app.get("/v1/admin/applications", Some(&token))
        .await
        .problem(403);
}

#[tokio::test]
async fn a_disabled_account_is_locked_out_and_its_tokens_die() {
    let app = spawn_app().await;
    let (email, token) = staff_account(&app, "officer").await;
    user_cli(&app, &["disable", "--email", &email]);
    app.get("/v1/admin/applications", Some(&token))
        .await
        .problem(401);
    let r = app
        .post(
            "/v1/auth/login",
            None,
            &json!({"email": email, "password": "staff password 12345"}),
        )
        .await;
    r.problem(401);
}

#[tokio::test]
async fn a_password_change_revokes_every_earlier_token() {
    let app = spawn_app().await;
    let email = format!("ann-{}@example.org", uuid::Uuid::now_v7().simple());
    let creds = json!({"email": email, "password": "correct horse battery staple"});
    assert_eq!(
        app.post("/v1/auth/register", None, &creds).await.status,
        201
    );
    let laptop = app.login(&creds).await;
    let stolen = app.login(&creds).await;
    assert_eq!(app.get("/v1/applications", Some(&stolen)).await.status, 200);

    // The current password is required.
    let wrong = app
        .post(
            "/v1/auth/password",
            Some(&laptop),
            &json!({"current_password": "not my password at all", "new_password": "a brand new passphrase"}),
        )
        .await;
    wrong.problem(422);
    assert_eq!(wrong.fields(), ["current_password"]);
    assert_eq!(app.get("/v1/applications", Some(&stolen)).await.status, 200);

    let changed = app
        .post(
            "/v1/auth/password",
            Some(&laptop),
            &json!({"current_password": "correct horse battery staple", "new_password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let renewed = changed.body["access_token"].as_str().unwrap().to_string();

    for old in [&laptop, &stolen] {
        app.get("/v1/applications", Some(old)).await.problem(401);
    }
    assert_eq!(
        app.get("/v1/applications", Some(&renewed)).await.status,
        200
    );
    app.post("/v1/auth/login", None, &creds).await.problem(401);
    let again = app
        .login(&json!({"email": email, "password": "a brand new passphrase"}))
        .await;
    assert_eq!(app.get("/v1/applications", Some(&again)).await.status, 200);
}
