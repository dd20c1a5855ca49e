//! The event logs are hash-chained: altering a row by SQL makes `evisa audit verify` name it.

use evisa_core::users::Role;

use crate::common::spawn_app;

fn audit(url: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evisa"))
        .args(["audit", "verify"])
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
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
    let report = app
        .get("/v1/admin/reconciliation?since=2026-01-01", Some(&officer))
        .await;
    assert_eq!(
        report.body,
        serde_json::json!({"checked": 4, "disagreements": []})
    );

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
    let report = app
        .get("/v1/admin/reconciliation?since=2026-01-01", Some(&officer))
        .await;
    assert_eq!(report.body["disagreements"][0]["payment_id"], paid);
}
