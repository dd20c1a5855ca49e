//! The event logs are hash-chained: altering a row by SQL makes `evisa audit verify` name it.

use evisa_core::users::Role;

use crate::common::spawn_app;

fn audit(url: &str) -> (bool, String) {
    audit_with(url, &["verify"], &[])
}

/// Runs `sqls` in one transaction as the database's owner, binding `payment` where a statement
/// takes `$1`: what someone with the owner's login could do.
async fn tamper(app: &crate::common::TestApp, payment: &str, sqls: &[&str]) {
    let mut tx = app.db.begin().await.unwrap();
    for sql in sqls {
        let q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
        let q = if sql.contains("$1") {
            q.bind(payment)
        } else {
            q
        };
        q.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn altering_one_event_breaks_the_chain_at_that_row() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_visa",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 10)
        .await;
    let history = app
        .get(
            &format!("/v1/admin/payments/{payment}/history"),
            Some(&officer),
        )
        .await;
    let events: Vec<&str> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events[..3],
        ["created", "charge_started", "gateway_says_succeeded"]
    );

    let (ok, out) = audit(app.database_url());
    assert!(ok, "{out}");
    assert!(out.contains("every chain holds"), "{out}");

    // Someone with database access rewrites history: the payment "failed" instead.
    let target: i64 = sqlx::query_scalar(
        "SELECT id FROM payment_events WHERE payment_id = $1::uuid AND to_status = 'succeeded' ORDER BY id LIMIT 1",
    )
    .bind(&payment)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("ALTER TABLE payment_events DISABLE TRIGGER payment_events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE payment_events SET to_status = 'failed' WHERE id = $1")
        .bind(target)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE payment_events ENABLE TRIGGER payment_events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let (ok, out) = audit(app.database_url());
    assert!(!ok, "a broken chain must fail: {out}");
    assert!(
        out.contains(&format!("payment_events row {target} (of {payment})")),
        "{out}"
    );
    assert!(out.contains("contents do not match"), "{out}");

    // Without disabling the guard, the log cannot be changed at all.
    let refused = sqlx::query("DELETE FROM application_events")
        .execute(&app.db)
        .await;
    assert!(refused.is_err());
}

/// Runs `evisa reconcile` off the test's runtime thread, which also serves the sandbox it calls.
async fn reconcile(app: &crate::common::TestApp) -> (bool, String) {
    let env = app.env.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_evisa"))
            .args(["reconcile", "--since", "2026-01-01"])
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_reconciliation_report_is_empty_until_a_record_is_changed_behind_our_back() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let admin = app.staff(Role::Admin).await;
    // A few scenarios: paid, declined, 3-D Secure pending, paid and partly refunded.
    let key = || uuid::Uuid::now_v7().to_string();
    let (t1, a1) = app.submitted_application().await;
    let paid = app.pay(&t1, &a1, "pm_card_visa", &key()).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (t2, a2) = app.submitted_application().await;
    let declined = app
        .pay(&t2, &a2, "pm_card_chargeDeclined", &key())
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (t3, a3) = app.submitted_application().await;
    let pending = app
        .pay(&t3, &a3, "pm_card_authenticationRequired", &key())
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    // ...and an Alipay payment, paid in the cashier.
    app.paid_by_alipay().await;
    app.wait_for_payment(&t1, &paid, "succeeded", 10).await;
    app.wait_for_payment(&t2, &declined, "failed", 10).await;
    app.wait_for_payment(&t3, &pending, "requires_action", 10)
        .await;
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/admin/payments/{paid}/refunds")))
                .bearer_auth(&officer)
                .header("idempotency-key", key())
                .json(&serde_json::json!({"amount": 1000, "reason": "partial"})),
        )
        .await;
    assert_eq!(r.status, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app
        .get(&format!("/v1/payments/{paid}"), Some(&t1))
        .await
        .body["refunded_amount"]
        != 1000
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let (clean, out) = reconcile(&app).await;
    assert!(clean, "{out}");
    assert!(out.contains("4 payments checked, 0 disagreements"), "{out}");
    let report = app.reconciliation_report(&admin, "2026-01-01").await;
    assert_eq!(report["status"], "done", "{report}");
    assert_eq!(report["checked"], 4);
    assert_eq!(report["disagreements"], serde_json::json!([]));

    // Behind the service's back, the paid payment is marked failed.
    sqlx::query("UPDATE payments SET status = 'failed' WHERE id = $1::uuid")
        .bind(&paid)
        .execute(&app.db)
        .await
        .unwrap();
    let (clean, out) = reconcile(&app).await;
    assert!(!clean, "{out}");
    assert!(out.contains(&paid), "{out}");
    assert!(out.contains("status differs"), "{out}");
    assert!(out.contains("1 disagreements"), "{out}");
    let report = app.reconciliation_report(&admin, "2026-01-01").await;
    assert_eq!(report["disagreements"][0]["payment_id"], paid);
}

/// Attack: someone with the service's database login rewrites history, or someone with the
/// owner's wipes it. The service's role cannot change the logs at all, TRUNCATE is refused even
/// to the owner, and `serve`/`work` refuse to run as a role that could.
#[tokio::test]
async fn the_service_role_cannot_change_the_logs_and_truncate_is_refused_to_all() {
    let app = spawn_app().await;
    app.start_worker();
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_visa",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 10)
        .await;

    let service_url =
        evisa_core::db::as_login(app.database_url(), crate::common::SERVICE_LOGIN).unwrap();
    let service = evisa_core::db::connect(&service_url, 1).await.unwrap();
    for attack in [
        "UPDATE payment_events SET to_status = 'failed'",
        "DELETE FROM payment_events",
        "TRUNCATE payment_events",
        "TRUNCATE application_events",
        "ALTER TABLE payment_events DISABLE TRIGGER payment_events_append_only",
        "DROP INDEX payment_events_one_successor",
        "UPDATE _sqlx_migrations SET success = false",
    ] {
        let refused = sqlx::query(attack).execute(&service).await;
        assert!(refused.is_err(), "the service role could: {attack}");
    }
    // It still does its job: reads everything, and the payment's log is intact.
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment_events WHERE payment_id = $1::uuid")
            .bind(&payment)
            .fetch_one(&service)
            .await
            .unwrap();
    assert!(n >= 3);
    assert!(
        evisa_core::db::log_tamper_power(&service)
            .await
            .unwrap()
            .is_none()
    );

    // Even the owner cannot TRUNCATE without first dropping the guard.
    for table in ["payment_events", "application_events"] {
        let refused = sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {table} CASCADE")))
            .execute(&app.db)
            .await;
        assert!(refused.is_err(), "TRUNCATE {table} went through");
    }
    let (ok, out) = audit(app.database_url());
    assert!(ok, "{out}");
    assert!(!out.contains(" 0 events"), "{out}");

    // `work` signed in as the owner refuses to start, naming the problem.
    let owner_env: Vec<(String, String)> = app
        .worker_env()
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "DATABASE_URL" {
                app.database_url().to_string()
            } else {
                v
            };
            (k, v)
        })
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evisa"))
        .arg("work")
        .envs(owner_env)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("can alter, delete or truncate the event logs"),
        "{stderr}"
    );
}

fn audit_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evisa"))
        .arg("audit")
        .args(args)
        .env("DATABASE_URL", url)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Attack: an administrator of the database truncates the log, cuts the tail off a chain, or
/// rewrites a row and recomputes every hash after it, so that the chains hold again. A signed
/// checkpoint kept elsewhere catches each; so does a status that no longer matches its log.
#[tokio::test]
async fn a_signed_checkpoint_catches_a_shortened_or_recomputed_chain() {
    // The sweeper must not reconcile the tampered payment back to the truth meanwhile.
    let app = crate::common::spawn_app_with(&[("EVISA_RECONCILE_AFTER_SECONDS", "86400")]).await;
    app.start_worker();
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_visa",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 10)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let url = app.database_url().to_string();

    let (ok, keys) = audit_with(&url, &["keygen"], &[]);
    assert!(ok, "{keys}");
    let key = |name: &str| {
        keys.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let (signing, verifying) = (
        key("EVISA_AUDIT_SIGNING_KEY"),
        key("EVISA_AUDIT_VERIFY_KEY"),
    );
    let file = std::env::temp_dir().join(format!("checkpoint-{}.json", uuid::Uuid::now_v7()));
    let file_arg = file.to_str().unwrap().to_string();
    let (ok, out) = audit_with(
        &url,
        &["checkpoint", "--out", &file_arg],
        &[("EVISA_AUDIT_SIGNING_KEY", &signing)],
    );
    assert!(ok, "{out}");
    let verify = |url: &str| {
        audit_with(
            url,
            &["verify", "--checkpoint", &file_arg],
            &[("EVISA_AUDIT_VERIFY_KEY", &verifying)],
        )
    };
    let (ok, out) = verify(&url);
    assert!(ok, "{out}");
    assert!(out.contains("extends the checkpoint"), "{out}");

    // A checkpoint altered by hand, or checked with another key, is refused.
    let (_, other_keys) = audit_with(&url, &["keygen"], &[]);
    let other = other_keys
        .lines()
        .find_map(|l| l.strip_prefix("EVISA_AUDIT_VERIFY_KEY="))
        .unwrap()
        .to_string();
    let (ok, out) = audit_with(
        &url,
        &["verify", "--checkpoint", &file_arg],
        &[("EVISA_AUDIT_VERIFY_KEY", &other)],
    );
    assert!(!ok && out.contains("signature does not verify"), "{out}");

    // The owner drops the guards and rewrites the payment's last event, recomputing its hash:
    // the chain alone still holds, the payment still agrees, but the checkpoint does not.
    tamper(
        &app,
        &payment,
        &[
            "ALTER TABLE payment_events DISABLE TRIGGER USER",
            "UPDATE payment_events SET cause = 'rewritten' WHERE id = (SELECT max(id) FROM payment_events WHERE payment_id = $1::uuid)",
            "UPDATE payment_events SET hash = audit_hash(prev_hash, id, payment_id, event, from_status, to_status, actor_kind, actor_id, cause, occurred_at) WHERE id = (SELECT max(id) FROM payment_events WHERE payment_id = $1::uuid)",
            "ALTER TABLE payment_events ENABLE TRIGGER USER",
        ],
    )
    .await;
    let (ok, out) = audit_with(&url, &["verify"], &[]);
    assert!(ok, "the recomputed chain holds by itself: {out}");
    let (ok, out) = verify(&url);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("payment_events of {payment}")),
        "{out}"
    );
    assert!(out.contains("rewritten"), "{out}");

    // Cutting the tail off the chain (and putting the status back so it agrees): shorter.
    tamper(
        &app,
        &payment,
        &[
            "ALTER TABLE payment_events DISABLE TRIGGER USER",
            "DELETE FROM payment_events WHERE id = (SELECT max(id) FROM payment_events WHERE payment_id = $1::uuid)",
            "UPDATE payments SET status = (SELECT to_status FROM payment_events WHERE payment_id = $1::uuid ORDER BY id DESC LIMIT 1) WHERE id = $1::uuid",
            "ALTER TABLE payment_events ENABLE TRIGGER USER",
        ],
    )
    .await;
    let (ok, out) = verify(&url);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("payment_events of {payment}"))
            && out.contains("the checkpoint says"),
        "{out}"
    );

    // Truncating everything (guards dropped first): every chain is shorter.
    tamper(
        &app,
        &payment,
        &[
            "ALTER TABLE payment_events DISABLE TRIGGER USER",
            "ALTER TABLE application_events DISABLE TRIGGER USER",
            "TRUNCATE payment_events, application_events",
            "ALTER TABLE payment_events ENABLE TRIGGER USER",
            "ALTER TABLE application_events ENABLE TRIGGER USER",
        ],
    )
    .await;
    let (ok, out) = audit_with(&url, &["verify"], &[]);
    assert!(!ok, "statuses no longer match an empty log: {out}");
    assert!(out.contains("is not the last one its log records"), "{out}");
    let (ok, out) = verify(&url);
    assert!(!ok, "{out}");
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn the_sweeper_writes_signed_checkpoints_to_the_configured_directory() {
    let (_, keys) = audit_with("postgres://unused@127.0.0.1:1/x", &["keygen"], &[]);
    let key = |name: &str| {
        keys.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let dir = std::env::temp_dir().join(format!("checkpoints-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let app = crate::common::spawn_app_with(&[
        ("EVISA_AUDIT_SIGNING_KEY", &key("EVISA_AUDIT_SIGNING_KEY")),
        ("EVISA_AUDIT_CHECKPOINT_DIR", dir.to_str().unwrap()),
        ("EVISA_AUDIT_CHECKPOINT_SECONDS", "3600"),
    ])
    .await;
    let (token, application) = app.submitted_application().await;
    app.start_worker();
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_visa",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    app.wait_for_payment(&token, r.body["id"].as_str().unwrap(), "succeeded", 10)
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let file = loop {
        let found = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "json"));
        if let Some(f) = found {
            break f;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let (ok, out) = audit_with(
        app.database_url(),
        &["verify", "--checkpoint", file.to_str().unwrap()],
        &[("EVISA_AUDIT_VERIFY_KEY", &key("EVISA_AUDIT_VERIFY_KEY"))],
    );
    assert!(ok, "{out}");
    assert!(out.contains("extends the checkpoint"), "{out}");
    // One per interval, not one per sweep.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let count = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(count, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn migrate_makes_the_service_login_that_serve_and_work_accept() {
    let app = spawn_app().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evisa"))
        .args(["migrate", "--service-login", "evisa_test_app"])
        .env("DATABASE_URL", app.database_url())
        .env(
            "EVISA_SERVICE_DB_PASSWORD",
            "a-long-random-password-for-tests",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("login evisa_test_app is a member of evisa_service")
    );
    let url = evisa_core::db::as_login(app.database_url(), "evisa_test_app").unwrap();
    let service = evisa_core::db::connect(&url, 1).await.unwrap();
    assert!(
        evisa_core::db::log_tamper_power(&service)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sqlx::query("DELETE FROM payment_events")
            .execute(&service)
            .await
            .is_err()
    );
    // Without a password, or with a short one, it is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evisa"))
        .args(["migrate", "--service-login", "evisa_test_app"])
        .env("DATABASE_URL", app.database_url())
        .env("EVISA_SERVICE_DB_PASSWORD", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("EVISA_SERVICE_DB_PASSWORD"));
}
