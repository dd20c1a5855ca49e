//! Alipay as the real gateway behaves after payment, end to end: refunds notify (TRADE_SUCCESS
//! while money remains, TRADE_CLOSED once all is refunded), a notify confirms the refund it names
//! and never moves the payment or pays twice, closing a paid trade and refunding too much are
//! refused as Alipay documents, unsigned answers change nothing, and every answer and notify of
//! the sandbox verifies with both python-alipay-sdk and Ant Group's official alipay-sdk-python.

use std::{collections::BTreeMap, time::Duration};

use evisa_core::{
    gateway::alipay::{AppPrivateKey, out_trade_no, signing_string},
    users::Role,
};
use evisa_sandbox::{NotifyKind, NotifyRecord, test_keys};
use serde_json::{Value, json};

use crate::common::{Answer, TestApp, spawn_app};

/// The two SDKs every answer and notify is checked with: (name, peer script, merchant key).
const SDKS: [(&str, &str, &str); 2] = [
    (
        "python-alipay-sdk",
        "alipay_peer.py",
        "merchant_dev_private.pem",
    ),
    // Its RSA code reads PKCS#1 keys only.
    (
        "alipay-sdk-python",
        "alipay_official_peer.py",
        "merchant_dev_private_pkcs1.pem",
    ),
];

fn python() -> String {
    std::env::var("EVISA_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn key_path(name: &str) -> String {
    format!("{}/sandbox/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a peer off the test's runtime, which meanwhile serves the sandbox the peer calls.
async fn peer(script: &str, args: &[&str]) -> String {
    let script = format!("{}/tests/peers/{script}", env!("CARGO_MANIFEST_DIR"));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(python())
            .arg(&script)
            .args(&args)
            .output()
            .expect("the Python peer runs (scripts/test.sh installs both SDKs)");
        assert!(
            out.status.success(),
            "{script} {}: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
    .await
    .unwrap()
}

/// `method` called by an SDK's own client as `app_id` with `merchant_key`: {"ok": result} once
/// the SDK verified the answer's signature, or {"refused": why}.
async fn sdk_call_as(
    sdk: (&str, &str, &str),
    app: &TestApp,
    app_id: &str,
    merchant_key: &str,
    method: &str,
    biz: Value,
) -> Value {
    let gateway = format!("{}/gateway.do", app.sandbox_url);
    let out = peer(
        sdk.1,
        &[
            "call",
            &gateway,
            app_id,
            &key_path(merchant_key),
            &key_path("alipay_sandbox_public.pem"),
            method,
            &biz.to_string(),
        ],
    )
    .await;
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("{}: {out}", sdk.0))
}

async fn sdk_call(sdk: (&str, &str, &str), app: &TestApp, method: &str, biz: Value) -> Value {
    sdk_call_as(sdk, app, test_keys::APP_ID, sdk.2, method, biz).await
}

/// The verified result object of an answer.
fn verified(sdk: (&str, &str, &str), answer: Value) -> Value {
    match answer.get("ok") {
        Some(result) => result.clone(),
        None => panic!("{} refused the answer: {answer}", sdk.0),
    }
}

fn kind_name(kind: NotifyKind) -> &'static str {
    match kind {
        NotifyKind::Payment => "payment",
        NotifyKind::Close => "close",
        NotifyKind::Refund => "refund",
    }
}

/// Both SDKs verify the notify's signature, and it carries every documented field.
async fn verify_notify_with_both(n: &NotifyRecord) {
    let form = serde_json::to_string(&n.form).unwrap();
    for sdk in SDKS {
        assert_eq!(
            peer(
                sdk.1,
                &[
                    "verify-notify",
                    &key_path("alipay_sandbox_public.pem"),
                    kind_name(n.kind),
                    &form
                ]
            )
            .await,
            "ok",
            "{}",
            sdk.0
        );
    }
}

async fn faults(app: &TestApp, faults: Value) {
    let r = app.sandbox_post("/sandbox/alipay/faults", &faults).await;
    assert_eq!(r.status(), 200);
}

async fn refund(app: &TestApp, officer: &str, payment: &str, body: Value) -> Answer {
    app.send(
        app.http
            .post(app.url(&format!("/v1/admin/payments/{payment}/refunds")))
            .bearer_auth(officer)
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(&body),
    )
    .await
}

/// Waits until the refund has left `pending`; returns its status.
async fn refund_outcome(app: &TestApp, officer: &str, payment: &str, refund: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = app
            .get(
                &format!("/v1/admin/payments/{payment}/refunds"),
                Some(officer),
            )
            .await;
        let status = list
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == refund)
            .map(|r| r["status"].as_str().unwrap().to_string())
            .unwrap();
        if status != "pending" {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "refund still pending");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sandbox's acknowledged notifies of `kind` for a trade, once there are `count`.
async fn acknowledged(
    app: &TestApp,
    trade: &str,
    kind: NotifyKind,
    count: usize,
) -> Vec<NotifyRecord> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found: Vec<NotifyRecord> = app
            .alipay
            .notifies()
            .into_iter()
            .filter(|n| n.out_trade_no == trade && n.kind == kind && n.acknowledged)
            .collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} acknowledged {kind:?} notifies for {trade} expected: {:?}",
            app.alipay.notifies()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The inbox's verdict on a notify, once the worker has applied it: (state, note).
async fn inbox_verdict(app: &TestApp, notify_id: &str) -> (String, Option<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT state, note FROM gateway_inbox WHERE provider = 'alipay' AND event_id = $1",
        )
        .bind(notify_id)
        .fetch_optional(&app.db)
        .await
        .unwrap();
        if let Some(row) = row.filter(|(state, _)| state != "received") {
            return row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "notify {notify_id} not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn payment_status(app: &TestApp, token: &str, payment: &str) -> String {
    app.get(&format!("/v1/payments/{payment}"), Some(token))
        .await
        .body["status"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn refunded_minor(app: &TestApp, payment: &str) -> i64 {
    sqlx::query_scalar("SELECT refunded_amount_minor FROM payments WHERE id = $1::uuid")
        .bind(payment)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// The payment's history holds one move to succeeded, and it never moved after it.
async fn succeeded_once_and_stayed(app: &TestApp, payment: &str) -> Vec<(String, String)> {
    let history = app.payment_history(payment).await;
    let first = history
        .iter()
        .position(|(_, to)| to == "succeeded")
        .unwrap();
    assert!(
        history[first..].iter().all(|(_, to)| to == "succeeded"),
        "{history:?}"
    );
    assert_eq!(
        history
            .iter()
            .filter(|(e, _)| e == "gateway_says_succeeded")
            .count(),
        1,
        "{history:?}"
    );
    history
}

fn simple(uuid: &str) -> String {
    uuid.replace('-', "")
}

/// A notify Alipay would send for `trade`, signed with the sandbox's (Alipay's) key.
fn signed_notify(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    let fields: BTreeMap<String, String> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sign = AppPrivateKey::parse(test_keys::ALIPAY_SANDBOX_PRIVATE)
        .unwrap()
        .sign(&signing_string(
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &["sign_type"],
        ));
    let mut form: Vec<(String, String)> = fields.into_iter().collect();
    form.push(("sign".into(), sign));
    form.push(("sign_type".into(), "RSA2".into()));
    form
}

#[tokio::test]
async fn a_full_refund_closes_the_trade_and_its_notify_confirms_without_paying_twice() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let admin = app.staff(Role::Admin).await;
    let (token, _, payment) = app.paid_by_alipay().await;
    let trade = out_trade_no(payment.parse().unwrap());

    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"reason": "application withdrawn"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let refund_id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        refund_outcome(&app, &officer, &payment, &refund_id).await,
        "succeeded"
    );
    assert_eq!(payment_status(&app, &token, &payment).await, "succeeded");

    // Alipay closes a trade refunded in full; both SDKs verify the query's answer.
    for sdk in SDKS {
        let q = verified(
            sdk,
            sdk_call(
                sdk,
                &app,
                "alipay.trade.query",
                json!({"out_trade_no": trade}),
            )
            .await,
        );
        assert_eq!(q["trade_status"], "TRADE_CLOSED", "{}: {q}", sdk.0);
        assert_eq!(q["total_amount"], "360.00");
    }
    // The refund's notify says TRADE_CLOSED, names the refund, and is acknowledged.
    let n = acknowledged(&app, &trade, NotifyKind::Refund, 1)
        .await
        .remove(0);
    assert_eq!(n.trade_status, "TRADE_CLOSED");
    assert_eq!(n.form["out_biz_no"], simple(&refund_id));
    assert_eq!(n.form["refund_fee"], "360.00");
    verify_notify_with_both(&n).await;
    // Whichever came first, the notify or the worker's refund query, confirmed it once.
    let (state, note) = inbox_verdict(&app, &n.notify_id).await;
    assert!(state == "processed" || state == "ignored", "{state}");
    assert!(
        note.unwrap().contains(&refund_id),
        "the note names the refund"
    );

    // A TRADE_CLOSED sync for the paid trade, without refund fields: acknowledged, ignored.
    let trade_no = app.alipay.trade(&trade).unwrap().trade_no;
    let closed = signed_notify(&[
        ("notify_time", "2026-12-02 12:00:00"),
        ("notify_type", "trade_status_sync"),
        ("notify_id", "closed-after-refund-1"),
        ("app_id", test_keys::APP_ID),
        ("seller_id", test_keys::SELLER_ID),
        ("trade_no", &trade_no),
        ("out_trade_no", &trade),
        ("trade_status", "TRADE_CLOSED"),
        ("total_amount", "360.00"),
    ]);
    let answer = app
        .http
        .post(app.url("/v1/webhooks/alipay"))
        .form(&closed)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "success");
    let (state, note) = inbox_verdict(&app, "closed-after-refund-1").await;
    assert_eq!(state, "ignored", "{note:?}");

    // Nothing moved twice: one success, one refund, at Alipay and here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(payment_status(&app, &token, &payment).await, "succeeded");
    let history = succeeded_once_and_stayed(&app, &payment).await;
    assert_eq!(
        history
            .iter()
            .filter(|(e, _)| e == "refund_succeeded")
            .count(),
        1,
        "{history:?}"
    );
    assert_eq!(refunded_minor(&app, &payment).await, 36000);
    assert_eq!(app.alipay.trade(&trade).unwrap().refunded.len(), 1);

    // Reconciliation: a succeeded payment refunded in full agrees with a closed trade.
    let report = app.reconciliation_report(&admin, "2026-01-01").await;
    assert_eq!(report["status"], "done", "{report}");
    assert_eq!(report["disagreements"], json!([]), "{report}");

    // Behind the service's back, the refund is marked failed and its money as not given back:
    // the closed trade and Alipay's record of the refund disagree with both.
    sqlx::query("UPDATE refunds SET status = 'failed' WHERE id = $1::uuid")
        .bind(&refund_id)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("UPDATE payments SET refunded_amount_minor = 0 WHERE id = $1::uuid")
        .bind(&payment)
        .execute(&app.db)
        .await
        .unwrap();
    let report = app.reconciliation_report(&admin, "2026-01-01").await;
    let details: Vec<&str> = report["disagreements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["payment_id"] == payment)
        .map(|d| d["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        [
            "closed at Alipay, but 0 of 36000 refunded here".to_string(),
            format!("refund {refund_id} is failed here"),
        ],
        "{report}"
    );
}

#[tokio::test]
async fn a_partial_refund_notify_says_trade_success_and_confirms_the_pending_refund() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let admin = app.staff(Role::Admin).await;
    let (token, _, payment) = app.paid_by_alipay().await;
    let trade = out_trade_no(payment.parse().unwrap());

    // Every refund query fails: only the notify can confirm the refund.
    faults(
        &app,
        json!({"fail_methods": ["alipay.trade.fastpay.refund.query"]}),
    )
    .await;
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 10000, "reason": "part"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let first = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        refund_outcome(&app, &officer, &payment, &first).await,
        "succeeded"
    );
    let n = acknowledged(&app, &trade, NotifyKind::Refund, 1)
        .await
        .remove(0);
    assert_eq!(
        n.trade_status, "TRADE_SUCCESS",
        "money remains: the trade stays paid"
    );
    assert_eq!(n.form["refund_fee"], "100.00");
    assert_eq!(n.form["out_biz_no"], simple(&first));
    verify_notify_with_both(&n).await;
    assert_eq!(
        inbox_verdict(&app, &n.notify_id).await,
        (
            "processed".to_string(),
            Some(format!("refund {first} confirmed"))
        )
    );
    assert_eq!(payment_status(&app, &token, &payment).await, "succeeded");
    assert_eq!(refunded_minor(&app, &payment).await, 10000);

    // Alipay answers again: the worker's late query finds nothing left to do.
    faults(&app, json!({})).await;
    let r = refund(&app, &officer, &payment, json!({"reason": "the rest"})).await;
    let rest = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        refund_outcome(&app, &officer, &payment, &rest).await,
        "succeeded"
    );
    let notifies = acknowledged(&app, &trade, NotifyKind::Refund, 2).await;
    let last = notifies
        .iter()
        .find(|n| n.form["out_biz_no"] == simple(&rest))
        .unwrap();
    assert_eq!(last.trade_status, "TRADE_CLOSED");
    assert_eq!(
        last.form["refund_fee"], "360.00",
        "what has been refunded in all"
    );
    verify_notify_with_both(last).await;
    inbox_verdict(&app, &last.notify_id).await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(payment_status(&app, &token, &payment).await, "succeeded");
    let history = succeeded_once_and_stayed(&app, &payment).await;
    assert_eq!(
        history
            .iter()
            .filter(|(e, _)| e == "refund_succeeded")
            .count(),
        2,
        "{history:?}"
    );
    assert_eq!(refunded_minor(&app, &payment).await, 36000);
    let at_alipay: Vec<String> = app
        .alipay
        .trade(&trade)
        .unwrap()
        .refunded
        .into_iter()
        .map(|(_, amount)| amount)
        .collect();
    assert_eq!(at_alipay, ["100.00", "260.00"]);
    let report = app.reconciliation_report(&admin, "2026-01-01").await;
    assert_eq!(report["disagreements"], json!([]), "{report}");
}

#[tokio::test]
async fn every_answer_and_notify_verifies_with_both_python_sdks() {
    let app = spawn_app().await;
    app.start_worker();
    let (token, _, payment) = app.paid_by_alipay().await;
    let trade = out_trade_no(payment.parse().unwrap());

    for sdk in SDKS {
        let name = sdk.0;
        let q = verified(
            sdk,
            sdk_call(
                sdk,
                &app,
                "alipay.trade.query",
                json!({"out_trade_no": trade}),
            )
            .await,
        );
        assert_eq!(
            (q["code"].as_str(), q["trade_status"].as_str()),
            (Some("10000"), Some("TRADE_SUCCESS")),
            "{name}: {q}"
        );
        let trade_no = q["trade_no"].as_str().unwrap();
        assert!(
            trade_no.len() == 28 && trade_no.bytes().all(|b| b.is_ascii_digit()),
            "{trade_no}"
        );
        for (k, v) in [
            ("total_amount", "360.00"),
            ("buyer_pay_amount", "360.00"),
            ("receipt_amount", "360.00"),
        ] {
            assert_eq!(q[k], v, "{name}: {k}");
        }
        for k in ["send_pay_date", "buyer_user_id", "buyer_logon_id"] {
            assert!(
                q[k].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: {k} in {q}"
            );
        }
        // The same trade by Alipay's number.
        let by_no = verified(
            sdk,
            sdk_call(
                sdk,
                &app,
                "alipay.trade.query",
                json!({"trade_no": trade_no}),
            )
            .await,
        );
        assert_eq!(by_no["out_trade_no"], trade);

        // A paid trade cannot be closed; more than was paid cannot be refunded.
        let close = verified(
            sdk,
            sdk_call(
                sdk,
                &app,
                "alipay.trade.close",
                json!({"out_trade_no": trade}),
            )
            .await,
        );
        assert_eq!(
            (close["code"].as_str(), close["sub_code"].as_str()),
            (Some("40004"), Some("ACQ.TRADE_STATUS_ERROR")),
            "{name}"
        );
        let over = verified(
            sdk,
            sdk_call(
                sdk,
                &app,
                "alipay.trade.refund",
                json!({"out_trade_no": trade, "refund_amount": "360.01", "out_request_no": format!("over-{name}")}),
            ).await,
        );
        assert_eq!(
            over["sub_code"], "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
            "{name}: {over}"
        );
        assert_eq!(over["sub_msg"], "退款金额超限");
        let none = verified(
            sdk,
            sdk_call(
                sdk,
                &app,
                "alipay.trade.query",
                json!({"out_trade_no": "no-such-trade"}),
            )
            .await,
        );
        assert_eq!(none["sub_code"], "ACQ.TRADE_NOT_EXIST", "{name}");

        // Unsigned answers, as Alipay gives them to a request it cannot verify or an unknown
        // app: both SDKs refuse them.
        faults(&app, json!({"reject_signatures_next": 1})).await;
        let unsigned = sdk_call(
            sdk,
            &app,
            "alipay.trade.query",
            json!({"out_trade_no": trade}),
        )
        .await;
        assert!(unsigned.get("refused").is_some(), "{name}: {unsigned}");
        let foreign = sdk_call_as(
            sdk,
            &app,
            "2021999999999999",
            sdk.2,
            "alipay.trade.query",
            json!({"out_trade_no": trade}),
        )
        .await;
        assert!(foreign.get("refused").is_some(), "{name}: {foreign}");
    }
    // The raw unsigned answer: an error_response and no signature.
    let raw = app
        .http
        .post(format!("{}/gateway.do", app.sandbox_url))
        .form(&[
            ("app_id", "2021999999999999"),
            ("method", "alipay.trade.query"),
        ])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        raw["error_response"]["sub_code"], "isv.invalid-app-id",
        "{raw}"
    );
    assert!(raw.get("sign").is_none(), "{raw}");

    // A refund made at Alipay by someone else (not one of our refunds), and its query.
    let portal = verified(
        SDKS[0],
        sdk_call(
            SDKS[0],
            &app,
            "alipay.trade.refund",
            json!({"out_trade_no": trade, "refund_amount": "1.00", "out_request_no": "portal-1"}),
        )
        .await,
    );
    assert_eq!(
        (
            portal["fund_change"].as_str(),
            portal["refund_fee"].as_str()
        ),
        (Some("Y"), Some("1.00")),
        "{portal}"
    );
    let again = verified(
        SDKS[1],
        sdk_call(
            SDKS[1],
            &app,
            "alipay.trade.refund",
            json!({"out_trade_no": trade, "refund_amount": "1.00", "out_request_no": "portal-1"}),
        )
        .await,
    );
    assert_eq!(again["fund_change"], "N", "a repeat moves nothing: {again}");
    for sdk in SDKS {
        let rq = verified(
            sdk,
            sdk_call(
                sdk,
                &app,
                "alipay.trade.fastpay.refund.query",
                json!({"out_trade_no": trade, "out_request_no": "portal-1"}),
            )
            .await,
        );
        assert_eq!(rq["refund_status"], "REFUND_SUCCESS", "{}: {rq}", sdk.0);
        assert_eq!(
            (rq["total_amount"].as_str(), rq["refund_amount"].as_str()),
            (Some("360.00"), Some("1.00"))
        );
        assert!(
            rq["gmt_refund_pay"].as_str().is_some_and(|s| s.len() == 19),
            "{rq}"
        );
        let unknown = verified(
            sdk,
            sdk_call(
                sdk,
                &app,
                "alipay.trade.fastpay.refund.query",
                json!({"out_trade_no": trade, "out_request_no": "never"}),
            )
            .await,
        );
        assert_eq!(unknown["code"], "10000");
        assert!(unknown.get("refund_status").is_none(), "{unknown}");
    }
    // Our service acknowledges that refund's notify and records it as not ours.
    let n = acknowledged(&app, &trade, NotifyKind::Refund, 1)
        .await
        .remove(0);
    assert_eq!(n.form["out_biz_no"], "portal-1");
    assert_eq!(inbox_verdict(&app, &n.notify_id).await.0, "ignored");
    assert_eq!(payment_status(&app, &token, &payment).await, "succeeded");
    assert_eq!(
        refunded_minor(&app, &payment).await,
        0,
        "not one of our refunds"
    );

    // A trade closed unpaid: closing notifies (TRADE_CLOSED keeps its meaning for an unpaid
    // payment), and a closed trade cannot be closed again.
    let (token2, application2) = {
        let token = app.applicant().await;
        let id = app
            .draft(
                &token,
                &crate::common::complete_fields("CN", "tourist", "standard"),
            )
            .await;
        app.submit(&token, &id).await;
        (token, id)
    };
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/applications/{application2}/payments")))
                .bearer_auth(&token2)
                .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                .json(&json!({"provider": "alipay"})),
        )
        .await;
    let unpaid = r.body["id"].as_str().unwrap().to_string();
    app.http
        .get(r.body["next_action"]["redirect_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let unpaid_trade = out_trade_no(unpaid.parse().unwrap());
    let closed = verified(
        SDKS[1],
        sdk_call(
            SDKS[1],
            &app,
            "alipay.trade.close",
            json!({"out_trade_no": unpaid_trade}),
        )
        .await,
    );
    assert_eq!(closed["code"], "10000", "{closed}");
    let twice = verified(
        SDKS[0],
        sdk_call(
            SDKS[0],
            &app,
            "alipay.trade.close",
            json!({"out_trade_no": unpaid_trade}),
        )
        .await,
    );
    assert_eq!(twice["sub_code"], "ACQ.TRADE_STATUS_ERROR", "{twice}");
    let close_notify = acknowledged(&app, &unpaid_trade, NotifyKind::Close, 1)
        .await
        .remove(0);
    assert_eq!(close_notify.trade_status, "TRADE_CLOSED");
    app.wait_for_payment(&token2, &unpaid, "cancelled", 10)
        .await;

    // Every notify the sandbox sent verifies with both SDKs, carries every documented field,
    // and our service acknowledged it.
    let all = app.alipay.notifies();
    assert_eq!(all.len(), 3, "payment, refund and close: {all:?}");
    for n in &all {
        verify_notify_with_both(n).await;
    }
    acknowledged(&app, &trade, NotifyKind::Payment, 1).await;
    assert!(app.alipay.notifies().iter().all(|n| n.acknowledged));
}

#[tokio::test]
async fn unsigned_answers_never_change_a_refund_or_a_payment() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let (token, _, payment) = app.paid_by_alipay().await;

    // Alipay cannot verify our next two calls and answers them unsigned: the refund waits and
    // is retried, never recorded as failed.
    faults(&app, json!({"reject_signatures_next": 2})).await;
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 5000, "reason": "part"}),
    )
    .await;
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        refund_outcome(&app, &officer, &payment, &id).await,
        "succeeded"
    );
    let left: Value = app
        .http
        .get(format!("{}/sandbox/alipay/faults", app.sandbox_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        left["reject_signatures_next"], 0,
        "both unsigned answers were given"
    );
    let history = app.payment_history(&payment).await;
    assert!(
        !history.iter().any(|(e, _)| e == "refund_failed"),
        "{history:?}"
    );
    assert_eq!(payment_status(&app, &token, &payment).await, "succeeded");

    // No notify, and the first polls are answered unsigned: polling goes on until Alipay
    // answers signed, and the payment succeeds.
    let token2 = app.applicant().await;
    let application2 = app
        .draft(
            &token2,
            &crate::common::complete_fields("CN", "tourist", "standard"),
        )
        .await;
    app.submit(&token2, &application2).await;
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/applications/{application2}/payments")))
                .bearer_auth(&token2)
                .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                .json(&json!({"provider": "alipay"})),
        )
        .await;
    let second = r.body["id"].as_str().unwrap().to_string();
    app.http
        .get(r.body["next_action"]["redirect_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    faults(
        &app,
        json!({"drop_notifies": true, "reject_signatures_next": 3}),
    )
    .await;
    let second_trade = out_trade_no(second.parse().unwrap());
    app.http
        .post(format!(
            "{}/sandbox/alipay/cashier/{second_trade}/pay",
            app.sandbox_url
        ))
        .send()
        .await
        .unwrap();
    app.wait_for_payment(&token2, &second, "succeeded", 40)
        .await;
    let cause: String = sqlx::query_scalar(
        "SELECT cause FROM payment_events WHERE payment_id = $1::uuid AND to_status = 'succeeded'",
    )
    .bind(&second)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(cause.starts_with("job:"), "found by polling: {cause}");
    assert!(
        app.alipay
            .notifies()
            .iter()
            .any(|n| n.out_trade_no == second_trade && !n.acknowledged),
        "the notify was dropped"
    );
}
