//! Stripe's refund, charge and dispute events, posted signed to `/v1/webhooks/stripe` with bodies
//! shaped like Stripe's own example objects: pending refunds settled by `refund.*` events (in
//! any order, delivered twice), refunds made in the Stripe dashboard recorded once, disputes
//! holding an application's decisions until they close, and every other type stored as ignored.

use evisa_core::users::Role;
use evisa_sandbox::stripe::signature_header;
use serde_json::{Value, json};

use crate::common::{Answer, TestApp, spawn_app};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn fresh(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Posts an event of `kind` about `object`, signed with one of our secrets: the HTTP status.
async fn post_event(app: &TestApp, event_id: &str, kind: &str, object: &Value) -> u16 {
    let body = json!({
        "id": event_id, "object": "event", "api_version": "2026-09-30.endive",
        "created": chrono::Utc::now().timestamp(), "data": {"object": object},
        "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": kind,
    })
    .to_string();
    let header = signature_header(
        &app.webhook_secrets[1],
        chrono::Utc::now().timestamp(),
        &body,
    );
    app.http
        .post(app.url("/v1/webhooks/stripe"))
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Posts a new event (fresh id): asserts Stripe is answered 200; returns the event id.
async fn deliver(app: &TestApp, kind: &str, object: &Value) -> String {
    let id = fresh("evt");
    assert_eq!(post_event(app, &id, kind, object).await, 200, "{kind}");
    id
}

/// The inbox's verdict on an event: (state, note).
async fn inbox(app: &TestApp, event_id: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT state, note FROM gateway_inbox WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// A Refund object as Stripe sends it (its fixture's shape).
fn refund_object(id: &str, intent: &str, amount: i64, status: &str, metadata: Value) -> Value {
    json!({
        "amount": amount, "balance_transaction": null, "charge": "ch_3PgafuB7WZ01zgkW",
        "created": 1234567890, "currency": "usd",
        "destination_details": {"card": {"type": "reversal"}, "type": "card"},
        "id": id, "metadata": metadata, "object": "refund", "payment_intent": intent,
        "reason": null, "receipt_number": null, "source_transfer_reversal": null,
        "status": status, "transfer_reversal": null,
        "failure_reason": if status == "failed" { json!("declined") } else { json!(null) },
    })
}

fn dispute_object(id: &str, intent: &str, amount: i64, status: &str) -> Value {
    json!({
        "amount": amount, "balance_transactions": [], "charge": "ch_3PgafuB7WZ01zgkW",
        "created": 1234567890, "currency": "usd", "evidence": {"uncategorized_text": null},
        "evidence_details": {"due_by": 1723679999, "has_evidence": false, "past_due": false,
                             "submission_count": 0},
        "id": id, "is_charge_refundable": false, "livemode": false, "metadata": {},
        "object": "dispute", "payment_intent": intent,
        "payment_method_details": {"card": {"brand": "visa", "case_type": "chargeback",
                                            "network_reason_code": "10.4"}, "type": "card"},
        "reason": "fraudulent", "status": status,
    })
}

/// A succeeded 4000 USD card payment: (applicant token, application, payment, intent).
async fn paid_by_card(app: &TestApp) -> (String, String, String, String) {
    let (token, application) = app.submitted_application().await;
    let r = app.pay(&token, &application, "pm_card_visa", &key()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let payment = r.body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 10)
        .await;
    let intent = app.intent_of(&payment).await;
    (token, application, payment, intent)
}

async fn refund(app: &TestApp, officer: &str, payment: &str, body: Value) -> Answer {
    app.send(
        app.http
            .post(app.url(&format!("/v1/admin/payments/{payment}/refunds")))
            .bearer_auth(officer)
            .header("idempotency-key", key())
            .json(&body),
    )
    .await
}

async fn refunds_of(app: &TestApp, officer: &str, payment: &str) -> Vec<Value> {
    let r = app
        .get(
            &format!("/v1/admin/payments/{payment}/refunds"),
            Some(officer),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.as_array().unwrap().clone()
}

async fn refunded_amount(app: &TestApp, officer: &str, payment: &str) -> i64 {
    app.get(&format!("/v1/admin/payments/{payment}"), Some(officer))
        .await
        .body["refunded_amount"]
        .as_i64()
        .unwrap_or_else(|| panic!("refunded_amount"))
}

/// Our refund's metadata at Stripe, as `StripeGateway::refund` sets it.
fn ours(refund_id: &str) -> Value {
    json!({"refund_id": uuid::Uuid::parse_str(refund_id).unwrap().simple().to_string()})
}

#[tokio::test]
async fn pending_refunds_are_settled_by_refund_events_in_any_order_once() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let (_, _, payment, intent) = paid_by_card(&app).await;
    // From here the refund job never runs: only Stripe's events can settle the refunds.
    app.stop_worker().await;

    // Pending at Stripe, then succeeded: the event settles it.
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 1000, "reason": "goodwill"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (202, Some("pending"))
    );
    let first = r.body["id"].as_str().unwrap().to_string();
    let re1 = fresh("re");
    let created = refund_object(&re1, &intent, 1000, "pending", ours(&first));
    let e = deliver(&app, "refund.created", &created).await;
    assert_eq!(inbox(&app, &e).await.0, "processed");
    let listed = refunds_of(&app, &officer, &payment).await;
    assert_eq!(listed[0]["status"], "pending");
    assert_eq!(listed[0]["gateway_reference"], re1.as_str());
    let succeeded = refund_object(&re1, &intent, 1000, "succeeded", ours(&first));
    let updated = deliver(&app, "refund.updated", &succeeded).await;
    assert_eq!(inbox(&app, &updated).await.0, "processed");
    assert_eq!(
        refunds_of(&app, &officer, &payment).await[0]["status"],
        "succeeded"
    );
    assert_eq!(refunded_amount(&app, &officer, &payment).await, 1000);
    // The same delivery again, and a late `pending`: nothing changes.
    assert_eq!(
        post_event(&app, &updated, "refund.updated", &succeeded).await,
        200
    );
    let late = deliver(&app, "refund.created", &created).await;
    assert_eq!(inbox(&app, &late).await.0, "ignored");
    assert_eq!(
        refunds_of(&app, &officer, &payment).await[0]["status"],
        "succeeded"
    );
    assert_eq!(refunded_amount(&app, &officer, &payment).await, 1000);

    // Out of order: `refund.updated` succeeded before `refund.created` pending.
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 500, "reason": "goodwill"}),
    )
    .await;
    let second = r.body["id"].as_str().unwrap().to_string();
    let re2 = fresh("re");
    deliver(
        &app,
        "refund.updated",
        &refund_object(&re2, &intent, 500, "succeeded", ours(&second)),
    )
    .await;
    let e = deliver(
        &app,
        "refund.created",
        &refund_object(&re2, &intent, 500, "pending", ours(&second)),
    )
    .await;
    assert_eq!(inbox(&app, &e).await.0, "ignored");
    assert_eq!(
        refunds_of(&app, &officer, &payment).await[1]["status"],
        "succeeded"
    );
    assert_eq!(refunded_amount(&app, &officer, &payment).await, 1500);

    // Failed at Stripe (refund.failed, then refund.updated failed): the amount is free again.
    let r = refund(&app, &officer, &payment, json!({"reason": "the rest"})).await;
    assert_eq!(r.body["amount"], 2500);
    let third = r.body["id"].as_str().unwrap().to_string();
    let over = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 1, "reason": "more"}),
    )
    .await;
    assert_eq!(over.status, 409, "{}", over.body);
    let re3 = fresh("re");
    let failed = refund_object(&re3, &intent, 2500, "failed", ours(&third));
    let e = deliver(&app, "refund.failed", &failed).await;
    assert_eq!(inbox(&app, &e).await.0, "processed");
    let e = deliver(&app, "refund.updated", &failed).await;
    assert_eq!(inbox(&app, &e).await.0, "ignored");
    let listed = refunds_of(&app, &officer, &payment).await;
    assert_eq!(listed[2]["status"], "failed");
    assert!(
        listed[2]["failure_message"]
            .as_str()
            .unwrap()
            .contains("declined")
    );
    assert_eq!(refunded_amount(&app, &officer, &payment).await, 1500);
    let again = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 2500, "reason": "retry"}),
    )
    .await;
    assert_eq!(again.status, 202, "{}", again.body);

    // A refund settled as succeeded that Stripe later calls failed is kept for a person.
    let e = deliver(
        &app,
        "refund.updated",
        &refund_object(&re1, &intent, 1000, "failed", ours(&first)),
    )
    .await;
    assert_eq!(inbox(&app, &e).await.0, "quarantined");
    assert_eq!(refunded_amount(&app, &officer, &payment).await, 1500);
    let events: Vec<String> = app
        .payment_history(&payment)
        .await
        .into_iter()
        .map(|(e, _)| e)
        .filter(|e| e.starts_with("refund_"))
        .collect();
    assert_eq!(
        events,
        [
            "refund_requested",
            "refund_succeeded",
            "refund_requested",
            "refund_succeeded",
            "refund_requested",
            "refund_failed",
            "refund_requested"
        ]
    );
}

#[tokio::test]
async fn a_dashboard_refund_is_recorded_once_and_reported() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let admin = app.staff(Role::Admin).await;
    let (_, _, payment, intent) = paid_by_card(&app).await;
    let since = chrono::Utc::now().date_naive().to_string();

    // charge.refunded first (current API versions list no refunds): nothing names the refund
    // yet, so the total is remembered and the report flags it.
    let charge = json!({"id": "ch_3PgafuB7WZ01zgkW", "object": "charge", "amount": 4000,
        "amount_captured": 4000, "amount_refunded": 1500, "captured": true, "currency": "usd",
        "disputed": false, "metadata": {}, "paid": true, "payment_intent": intent,
        "refunded": false, "status": "succeeded"});
    let e = deliver(&app, "charge.refunded", &charge).await;
    assert_eq!(inbox(&app, &e).await.0, "processed");
    let report = app.reconciliation_report(&admin, &since).await;
    let found = report["disagreements"].as_array().unwrap();
    assert!(
        found.iter().any(|d| d["detail"]
            .as_str()
            .unwrap()
            .contains("1500 USD is unexplained")),
        "{report}"
    );

    // Then the refund event names it: one refund of origin `gateway`, however often it comes.
    let re = fresh("re");
    let object = refund_object(&re, &intent, 1500, "succeeded", json!({}));
    let e = deliver(&app, "refund.created", &object).await;
    assert_eq!(inbox(&app, &e).await.0, "processed");
    assert_eq!(post_event(&app, &e, "refund.created", &object).await, 200);
    deliver(&app, "refund.updated", &object).await;
    deliver(&app, "charge.refunded", &charge).await;
    let listed = refunds_of(&app, &officer, &payment).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["origin"], "gateway");
    assert_eq!(listed[0]["status"], "succeeded");
    assert_eq!(listed[0]["gateway_reference"], re.as_str());
    assert_eq!(refunded_amount(&app, &officer, &payment).await, 1500);
    let history = app.payment_history(&payment).await;
    assert_eq!(
        history
            .iter()
            .filter(|(e, _)| e == "outside_refund_recorded")
            .count(),
        1
    );

    // It counts against what officers can still refund.
    let r = refund(
        &app,
        &officer,
        &payment,
        json!({"amount": 3000, "reason": "too much"}),
    )
    .await;
    assert_eq!(r.problem(422)["type"], "/problems/refund-exceeds-remainder");
    assert!(r.body["detail"].as_str().unwrap().contains("2500"));

    let report = app.reconciliation_report(&admin, &since).await;
    let found = report["disagreements"].as_array().unwrap();
    assert!(
        found.iter().any(|d| d["payment_id"] == payment.as_str()
            && d["detail"]
                .as_str()
                .unwrap()
                .contains("refunded outside evisa-pay")
            && d["gateway"].as_str().unwrap().contains(&re)),
        "{report}"
    );
    assert!(
        !found
            .iter()
            .any(|d| d["detail"].as_str().unwrap().contains("unexplained")),
        "{report}"
    );
}

async fn decide(app: &TestApp, officer: &str, application: &str, decision: Value) -> Answer {
    app.post(
        &format!("/v1/admin/applications/{application}/decision"),
        Some(officer),
        &decision,
    )
    .await
}

#[tokio::test]
async fn a_dispute_holds_decisions_until_it_closes_and_its_outcome_is_recorded() {
    let app = spawn_app().await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let admin = app.staff(Role::Admin).await;
    let since = chrono::Utc::now().date_naive().to_string();

    for outcome in ["won", "lost"] {
        let (_, application, payment, intent) = paid_by_card(&app).await;
        let dp = fresh("dp");
        let opened = dispute_object(&dp, &intent, 4000, "needs_response");
        let e = deliver(&app, "charge.dispute.created", &opened).await;
        assert_eq!(inbox(&app, &e).await.0, "processed");
        // Delivered twice: still one dispute.
        assert_eq!(
            post_event(&app, &e, "charge.dispute.created", &opened).await,
            200
        );

        // On hold: no decision, no refund, each refused naming the dispute.
        let r = decide(
            &app,
            &officer,
            &application,
            json!({"decision": "begin_processing"}),
        )
        .await;
        assert_eq!(r.problem(409)["type"], "/problems/application-on-hold");
        assert!(
            r.body["detail"].as_str().unwrap().contains(&dp),
            "{}",
            r.body
        );
        let r = refund(
            &app,
            &officer,
            &payment,
            json!({"amount": 100, "reason": "x"}),
        )
        .await;
        assert_eq!(r.problem(409)["type"], "/problems/payment-disputed");
        assert!(r.body["detail"].as_str().unwrap().contains(&dp));

        let open = app
            .get("/v1/admin/disputes?state=open", Some(&officer))
            .await;
        assert_eq!(open.status, 200, "{}", open.body);
        let items = open.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{}", open.body);
        assert_eq!(items[0]["gateway_reference"], dp.as_str());
        assert_eq!(items[0]["application_id"], application.as_str());
        assert_eq!(items[0]["reason"], "fraudulent");
        assert_eq!(items[0]["open"], true);

        // `updated` keeps it open; `closed` records the outcome and releases the hold.
        deliver(
            &app,
            "charge.dispute.updated",
            &dispute_object(&dp, &intent, 4000, "under_review"),
        )
        .await;
        let closed = dispute_object(&dp, &intent, 4000, outcome);
        let e = deliver(&app, "charge.dispute.closed", &closed).await;
        assert_eq!(inbox(&app, &e).await.0, "processed");
        // A late `created` does not reopen it.
        let e = deliver(&app, "charge.dispute.created", &opened).await;
        assert_eq!(inbox(&app, &e).await.0, "ignored");

        let mine = app
            .get(
                &format!("/v1/admin/payments/{payment}/disputes"),
                Some(&officer),
            )
            .await;
        assert_eq!(mine.body[0]["outcome"], outcome, "{}", mine.body);
        assert_eq!(mine.body[0]["open"], false);
        assert_eq!(mine.body[0]["status"], outcome);
        // Closed at Stripe, the application is still on hold until an officer resolves it.
        assert_eq!(mine.body[0]["on_hold"], true);
        let begin = json!({"decision": "begin_processing"});
        let r = decide(&app, &officer, &application, begin.clone()).await;
        assert_eq!(r.problem(409)["type"], "/problems/application-on-hold");
        let ours = mine.body[0]["id"].as_str().unwrap().to_string();
        assert!(
            r.body["detail"].as_str().unwrap().contains(&ours),
            "{}",
            r.body
        );
        let resolve = format!("/v1/admin/disputes/{ours}/resolve");
        let blank = app
            .post(&resolve, Some(&officer), &json!({"resolution": " "}))
            .await;
        assert_eq!(blank.problem(422)["errors"][0]["field"], "resolution");
        let note = json!({"resolution": format!("Dispute {outcome}; the applicant was told.")});
        let r = app.post(&resolve, Some(&officer), &note).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["on_hold"], false);
        assert!(r.body["resolved_by"].is_string());
        let again = app.post(&resolve, Some(&officer), &note).await;
        assert_eq!(again.problem(409)["type"], "/problems/dispute-resolved");
        let r = decide(&app, &officer, &application, begin).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = decide(&app, &officer, &application, json!({"decision": "approve"})).await;
        assert_eq!(r.body["status"], "approved");

        // Lost: the money is gone, so nothing is left to refund; won: it can be refunded.
        let r = refund(
            &app,
            &officer,
            &payment,
            json!({"amount": 100, "reason": "x"}),
        )
        .await;
        if outcome == "lost" {
            assert_eq!(r.problem(409)["type"], "/problems/fully-refunded");
        } else {
            assert_eq!(r.status, 202, "{}", r.body);
        }
        let history: Vec<String> = app
            .payment_history(&payment)
            .await
            .into_iter()
            .map(|(e, _)| e)
            .filter(|e| e.starts_with("dispute_"))
            .collect();
        assert_eq!(
            history,
            [
                "dispute_opened",
                &format!("dispute_{outcome}"),
                "dispute_resolved"
            ]
        );
    }

    let closed = app
        .get("/v1/admin/disputes?state=closed", Some(&admin))
        .await;
    assert_eq!(closed.body["items"].as_array().unwrap().len(), 2);
    let open = app.get("/v1/admin/disputes?state=open", Some(&admin)).await;
    assert!(open.body["items"].as_array().unwrap().is_empty());
    let bad = app
        .get("/v1/admin/disputes?state=maybe", Some(&admin))
        .await;
    bad.problem(400);
    let applicant = app.applicant().await;
    let r = app.get("/v1/admin/disputes", Some(&applicant)).await;
    assert_eq!(r.status, 403);

    let report = app.reconciliation_report(&admin, &since).await;
    let details: Vec<&str> = report["disagreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["detail"].as_str().unwrap())
        .collect();
    assert!(
        details.iter().any(|d| d.starts_with("dispute won")),
        "{report}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("dispute lost: 4000 USD taken back")),
        "{report}"
    );
}

#[tokio::test]
async fn every_verified_event_is_stored_and_acknowledged() {
    let app = spawn_app().await;
    let cases = [
        (
            "customer.created",
            json!({"id": "cus_1", "object": "customer"}),
            "ignored",
        ),
        (
            "charge.succeeded",
            json!({"id": "ch_1", "object": "charge"}),
            "ignored",
        ),
        (
            "charge.failed",
            json!({"id": "ch_2", "object": "charge"}),
            "ignored",
        ),
        (
            "payment_intent.created",
            json!({"id": "pi_1", "object": "payment_intent", "status": "requires_payment_method"}),
            "ignored",
        ),
        // A type we act on with an object that is not what it should be: kept for a person.
        (
            "refund.updated",
            json!({"id": "re_1", "object": "refund"}),
            "quarantined",
        ),
        // About nothing of ours (another product on the same Stripe account).
        (
            "charge.dispute.created",
            dispute_object("dp_elsewhere", "pi_elsewhere", 100, "needs_response"),
            "ignored",
        ),
        (
            "refund.created",
            refund_object("re_elsewhere", "pi_elsewhere", 100, "succeeded", json!({})),
            "ignored",
        ),
    ];
    for (kind, object, state) in cases {
        let e = deliver(&app, kind, &object).await;
        let (got, note) = inbox(&app, &e).await;
        assert_eq!(got, state, "{kind}");
        assert!(
            note.is_some(),
            "{kind}: an ignored or quarantined event says why"
        );
        // Delivered again: acknowledged, stored once.
        assert_eq!(post_event(&app, &e, kind, &object).await, 200);
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway_inbox")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 7);
}

#[tokio::test]
async fn the_hold_is_checked_by_the_deciding_transaction_and_stops_refund_on_rejection() {
    let app = crate::common::spawn_app_with(&[("EVISA_REFUND_ON_REJECTION", "true")]).await;
    app.start_worker();
    let officer = app.staff(Role::Officer).await;
    let (_, application, payment, intent) = paid_by_card(&app).await;
    let r = decide(
        &app,
        &officer,
        &application,
        json!({"decision": "begin_processing"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Something else holds the application's row (as a dispute's event or a decision would):
    // the dispute's event queues behind it, then the rejection queues behind the dispute.
    let mut blocker = app.db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM applications WHERE id = $1::uuid FOR UPDATE")
        .bind(&application)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let dp = fresh("dp");
    let opened = dispute_object(&dp, &intent, 4000, "needs_response");
    let dispute = tokio::spawn({
        let (app_url, secret, http) = (
            app.url("/v1/webhooks/stripe"),
            app.webhook_secrets[1].clone(),
            app.http.clone(),
        );
        async move {
            let body = json!({"id": fresh("evt"), "object": "event", "created": 1,
                "data": {"object": opened}, "livemode": false, "pending_webhooks": 1,
                "type": "charge.dispute.created"})
            .to_string();
            let header = signature_header(&secret, chrono::Utc::now().timestamp(), &body);
            http.post(app_url)
                .header("stripe-signature", header)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let reject = decide(
        &app,
        &officer,
        &application,
        json!({"decision": "reject", "reason": "Passport expires too soon."}),
    );
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        blocker.rollback().await.unwrap();
    };
    let (r, ()) = tokio::join!(reject, release);
    assert_eq!(dispute.await.unwrap(), 200);
    // The rejection read the dispute after taking the lock, in its own transaction.
    assert_eq!(r.problem(409)["type"], "/problems/application-on-hold");
    assert!(r.body["detail"].as_str().unwrap().contains(&dp));
    assert!(refunds_of(&app, &officer, &payment).await.is_empty());
    let status = app
        .get(
            &format!("/v1/admin/applications/{application}"),
            Some(&officer),
        )
        .await;
    assert_eq!(status.body["status"], "processing");

    // Closed and resolved: the rejection goes through and its policy refund with it.
    deliver(
        &app,
        "charge.dispute.closed",
        &dispute_object(&dp, &intent, 4000, "won"),
    )
    .await;
    let ours = app
        .get(
            &format!("/v1/admin/payments/{payment}/disputes"),
            Some(&officer),
        )
        .await
        .body[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post(
            &format!("/v1/admin/disputes/{ours}/resolve"),
            Some(&officer),
            &json!({"resolution": "Won at the card network."}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = decide(
        &app,
        &officer,
        &application,
        json!({"decision": "reject", "reason": "Passport expires too soon."}),
    )
    .await;
    assert_eq!(r.body["status"], "rejected", "{}", r.body);
    assert_eq!(refunds_of(&app, &officer, &payment).await.len(), 1);
}

/// The webhook of a success the worker's answer already applied is stored `processed` in one
/// statement, without waiting for the payment's lock, and changes nothing; one that disagrees (another amount) still goes the whole way
/// and is quarantined.
#[tokio::test]
async fn a_success_already_applied_is_recorded_without_changing_anything() {
    let app = spawn_app().await;
    app.start_worker();
    let (_token, application, payment, intent) = paid_by_card(&app).await;
    let pid: uuid::Uuid = payment.parse().unwrap();
    let (amount, currency): (i64, String) =
        sqlx::query_as("SELECT amount_minor, currency FROM payments WHERE id = $1")
            .bind(pid)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let application: uuid::Uuid = application.parse().unwrap();
    let events_of = |db: sqlx::PgPool| async move {
        let n: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM payment_events WHERE payment_id = $1),
                    (SELECT count(*) FROM application_events WHERE application_id = $2)",
        )
        .bind(pid)
        .bind(application)
        .fetch_one(&db)
        .await
        .unwrap();
        n
    };
    let before = events_of(app.db.clone()).await;
    let object = |amount: i64| {
        json!({"id": intent, "object": "payment_intent", "status": "succeeded",
               "amount": amount, "currency": currency.to_lowercase(),
               "metadata": {"payment_id": payment}})
    };
    // Someone else holds the payment's row lock: the whole way would wait for it.
    let mut holder = app.db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE")
        .bind(pid)
        .execute(&mut *holder)
        .await
        .unwrap();
    let e = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        deliver(&app, "payment_intent.succeeded", &object(amount)),
    )
    .await
    .expect("acknowledged without taking the payment's lock");
    holder.rollback().await.unwrap();
    assert_eq!(inbox(&app, &e).await, ("processed".to_string(), None));
    // Delivered again: acknowledged, stored once.
    assert_eq!(
        post_event(&app, &e, "payment_intent.succeeded", &object(amount)).await,
        200
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway_inbox WHERE event_id = $1")
        .bind(&e)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let wrong = deliver(&app, "payment_intent.succeeded", &object(amount + 1)).await;
    assert_eq!(inbox(&app, &wrong).await.0, "quarantined");
    assert_eq!(events_of(app.db.clone()).await, before);
    let status: String = sqlx::query_scalar("SELECT status FROM payments WHERE id = $1")
        .bind(pid)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "succeeded");
}

/// Events that change nothing arriving together share statements (`inbox::settled`): every
/// delivery is acknowledged, each event id is stored once even when its two deliveries land in
/// the same batch, each gets its own verdict, and one that contradicts the payment still goes
/// the whole way and is quarantined.
#[tokio::test]
async fn settled_events_arriving_together_are_each_stored_once_with_their_verdict() {
    let app = spawn_app().await;
    app.start_worker();
    let (_token, _application, payment, intent) = paid_by_card(&app).await;
    let (amount, currency): (i64, String) =
        sqlx::query_as("SELECT amount_minor, currency FROM payments WHERE id = $1")
            .bind(payment.parse::<uuid::Uuid>().unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    let success = |amount: i64| {
        json!({"id": intent, "object": "payment_intent", "status": "succeeded",
               "amount": amount, "currency": currency.to_lowercase(),
               "metadata": {"payment_id": payment}})
    };
    let customer = json!({"id": "cus_settled", "object": "customer"});
    let mut events: Vec<(String, &str, Value, &str)> = Vec::new();
    for i in 0..60 {
        events.push((
            fresh("evt"),
            "payment_intent.succeeded",
            success(amount),
            "processed",
        ));
        if i % 2 == 0 {
            events.push((
                fresh("evt"),
                "customer.created",
                customer.clone(),
                "ignored",
            ));
        }
    }
    events.push((
        fresh("evt"),
        "payment_intent.succeeded",
        success(amount + 1),
        "quarantined",
    ));
    // Each event delivered twice, all at once.
    let deliveries = events
        .iter()
        .chain(events.iter())
        .map(|(id, kind, object, _)| post_event(&app, id, kind, object));
    let statuses = futures_util::future::join_all(deliveries).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for (id, _, _, verdict) in &events {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT state FROM gateway_inbox WHERE event_id = $1")
                .bind(id)
                .fetch_all(&app.db)
                .await
                .unwrap();
        assert_eq!(rows, vec![(verdict.to_string(),)], "{id}");
    }
    let status: String = sqlx::query_scalar("SELECT status FROM payments WHERE id = $1")
        .bind(payment.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "succeeded");
}
