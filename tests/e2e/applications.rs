//! Applicants: register, sign in, draft, edit, submit; the fee comes only from the schedule.

use serde_json::{Value, json};

use crate::common::{complete_fields, spawn_app};

#[tokio::test]
async fn register_login_create_submit_fixes_the_schedule_fee() {
    let app = spawn_app().await;
    let token = app.applicant().await;

    let quote = app
        .get(
            "/v1/fees/quote?visa_type=tourist&nationality=FR&speed=standard",
            None,
        )
        .await;
    assert_eq!(quote.status, 200, "{}", quote.body);

    let id = app.draft(&token, &json!({"full_name": "Ann Lee"})).await;
    let draft = app
        .get(&format!("/v1/applications/{id}"), Some(&token))
        .await;
    assert_eq!(draft.body["status"], "draft");
    assert!(
        draft.body.get("fee").is_none(),
        "drafts have no fee: {}",
        draft.body
    );

    // Submitting an incomplete draft is a conflict with its state: it names every missing
    // field and changes nothing.
    let incomplete = app.submit(&token, &id).await;
    let p = incomplete.problem(409);
    assert_eq!(p["type"], "/problems/incomplete");
    assert_eq!(
        incomplete.fields(),
        [
            "passport_number",
            "date_of_birth",
            "nationality",
            "visa_type",
            "processing_speed",
            "intended_arrival_date"
        ]
    );

    let edited = app
        .patch(
            &format!("/v1/applications/{id}"),
            &token,
            &complete_fields("FR", "tourist", "standard"),
        )
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    assert_eq!(edited.body["passport_number"], "X1234567");

    let submitted = app.submit(&token, &id).await;
    assert_eq!(submitted.status, 200, "{}", submitted.body);
    assert_eq!(submitted.body["status"], "submitted");
    assert_eq!(submitted.body["fee"]["amount"], quote.body["fee"]["amount"]);
    assert_eq!(submitted.body["fee"]["amount"], 4000);
    assert_eq!(submitted.body["fee"]["currency"], "USD");
    assert_eq!(submitted.body["fee"]["exempt"], false);

    // After submission the application is fixed.
    let edit = app
        .patch(
            &format!("/v1/applications/{id}"),
            &token,
            &json!({"visa_type": "business"}),
        )
        .await;
    assert_eq!(edit.problem(409)["type"], "/problems/not-editable");
    let again = app.submit(&token, &id).await;
    assert_eq!(again.problem(409)["type"], "/problems/invalid-transition");
    let unchanged = app
        .get(&format!("/v1/applications/{id}"), Some(&token))
        .await;
    assert_eq!(unchanged.body["visa_type"], "tourist");
    assert_eq!(unchanged.body["fee"]["amount"], 4000);

    // The event log recorded exactly the one submission.
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT event, to_status FROM application_events WHERE application_id = $1::uuid ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(events, [("submit".to_string(), "submitted".to_string())]);
}

#[tokio::test]
async fn a_client_sent_amount_is_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    for (field, value) in [
        ("amount", json!(1)),
        ("fee", json!({"amount": 1, "currency": "USD"})),
        ("currency", json!("USD")),
    ] {
        let mut body = complete_fields("FR", "tourist", "standard");
        body[field] = value;
        let r = app.post("/v1/applications", Some(&token), &body).await;
        assert_eq!(r.problem(422)["type"], "/problems/server-set-field");
        assert_eq!(r.fields(), [field]);
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM applications")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0);

    // Nor can an amount be slipped into an edit.
    let id = app
        .draft(&token, &complete_fields("FR", "tourist", "standard"))
        .await;
    let r = app
        .patch(
            &format!("/v1/applications/{id}"),
            &token,
            &json!({"amount": 1}),
        )
        .await;
    assert_eq!(r.fields(), ["amount"]);
    let submitted = app.submit(&token, &id).await;
    assert_eq!(submitted.body["fee"]["amount"], 4000);
}

#[tokio::test]
async fn a_fee_exempt_application_is_paid_on_submit() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    // Transit for ASEAN nationals is exempt in the demo schedule.
    let id = app
        .draft(&token, &complete_fields("TH", "transit", "standard"))
        .await;
    let r = app.submit(&token, &id).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "paid");
    assert_eq!(r.body["fee"]["amount"], 0);
    assert_eq!(r.body["fee"]["exempt"], true);
    assert!(r.body["paid_at"].is_string());

    let events: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT event, to_status, actor_kind FROM application_events
          WHERE application_id = $1::uuid ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let expected = [
        ("submit", "submitted", "applicant"),
        ("fee_waived", "paid", "system"),
    ];
    assert_eq!(
        events,
        expected.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
}

#[tokio::test]
async fn alternative_currencies_are_fixed_with_the_quote() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let id = app
        .draft(&token, &complete_fields("CN", "tourist", "express"))
        .await;
    let r = app.submit(&token, &id).await;
    assert_eq!(r.body["fee"]["amount"], 9000);
    let options = r.body["fee"]["options"].as_array().unwrap().clone();
    assert!(
        options.contains(&json!({"amount": 65000, "currency": "CNY"})),
        "{options:?}"
    );
    assert!(
        options.contains(&json!({"amount": 9000, "currency": "USD"})),
        "{options:?}"
    );

    let id = app
        .draft(&token, &complete_fields("JP", "tourist", "standard"))
        .await;
    let r = app.submit(&token, &id).await;
    assert_eq!(
        r.body["fee"],
        json!({"amount": 7500, "currency": "JPY", "exempt": false,
        "options": [{"amount": 7500, "currency": "JPY"}, {"amount": 5000, "currency": "USD"}]})
    );
}

#[tokio::test]
async fn another_applicants_application_is_not_found() {
    let app = spawn_app().await;
    let ann = app.applicant().await;
    let bob = app.applicant().await;
    let id = app
        .draft(&ann, &complete_fields("FR", "tourist", "standard"))
        .await;

    let path = format!("/v1/applications/{id}");
    let missing = format!("/v1/applications/{}", uuid::Uuid::now_v7());
    for answer in [
        app.get(&path, Some(&bob)).await,
        app.patch(&path, &bob, &json!({"full_name": "Mallory"}))
            .await,
        app.submit(&bob, &id).await,
    ] {
        let p = answer.problem(404);
        // Indistinguishable from an id that does not exist at all.
        assert_eq!(p, app.get(&missing, Some(&bob)).await.problem(404));
    }
    let list = app.get("/v1/applications", Some(&bob)).await;
    assert_eq!(list.body["items"], json!([]));
    let still = app.get(&path, Some(&ann)).await;
    assert_eq!(still.body["full_name"], "Ann Lee");
    assert_eq!(still.body["status"], "draft");
}

#[tokio::test]
async fn listing_is_cursor_paginated_newest_first() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.draft(&token, &json!({})).await);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/applications?limit=2&cursor={c}"),
            None => "/v1/applications?limit=2".to_string(),
        };
        let page = app.get(&path, Some(&token)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_string()),
        );
        match page.body.get("next_cursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn personal_data_is_encrypted_at_rest() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let id = app
        .draft(&token, &complete_fields("FR", "tourist", "standard"))
        .await;
    let (name, passport, dob): (Vec<u8>, Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT full_name, passport_number, date_of_birth FROM applications WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    for (sealed, plain) in [
        (name, "Ann Lee"),
        (passport, "X1234567"),
        (dob, "1990-05-17"),
    ] {
        assert!(
            !sealed.windows(plain.len()).any(|w| w == plain.as_bytes()),
            "{plain} stored in clear"
        );
    }
    // ...and opens again through the API.
    let r = app
        .get(&format!("/v1/applications/{id}"), Some(&token))
        .await;
    assert_eq!(r.body["full_name"], "Ann Lee");
    assert_eq!(r.body["date_of_birth"], "1990-05-17");
}

#[tokio::test]
async fn login_failures_do_not_reveal_whether_the_email_exists() {
    let app = spawn_app().await;
    let creds = json!({"email": "known@example.org", "password": "correct horse battery staple"});
    assert_eq!(
        app.post("/v1/auth/register", None, &creds).await.status,
        201
    );
    let wrong_password = app
        .post(
            "/v1/auth/login",
            None,
            &json!({"email": "known@example.org", "password": "wrong password here"}),
        )
        .await;
    let unknown_email = app
        .post(
            "/v1/auth/login",
            None,
            &json!({"email": "nobody@example.org", "password": "wrong password here"}),
        )
        .await;
    assert_eq!(wrong_password.problem(401), unknown_email.problem(401));

    let login = app.post("/v1/auth/login", None, &creds).await;
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 900);

    // Registering the same email again is a conflict; a weak password names the field.
    assert_eq!(
        app.post("/v1/auth/register", None, &creds)
            .await
            .problem(409)["type"],
        "/problems/email-taken"
    );
    let weak = app
        .post(
            "/v1/auth/register",
            None,
            &json!({"email": "w@example.org", "password": "short"}),
        )
        .await;
    weak.problem(422);
    assert_eq!(weak.fields(), ["password"]);
    let role = app
        .post(
            "/v1/auth/register",
            None,
            &json!({"email": "x@example.org", "password": "correct horse battery staple", "role": "admin"}),
        )
        .await;
    assert_eq!(role.fields(), ["role"]);
}

#[tokio::test]
async fn creating_an_application_is_idempotent_with_a_key() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let post = |key: &str, body: Value| {
        app.send(
            app.http
                .post(app.url("/v1/applications"))
                .bearer_auth(&token)
                .header("idempotency-key", key)
                .json(&body),
        )
    };
    let first = post("draft-1", json!({"full_name": "Ann Lee"})).await;
    let again = post("draft-1", json!({"full_name": "Ann Lee"})).await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(first.body, again.body);
    let other = post("draft-1", json!({"full_name": "Bob Lee"})).await;
    assert_eq!(
        other.problem(409)["type"],
        "/problems/idempotency-key-reused"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM applications")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1);
    // The key belongs to the user: another applicant's identical key is independent.
    let bob = app.applicant().await;
    let theirs = app
        .send(
            app.http
                .post(app.url("/v1/applications"))
                .bearer_auth(&bob)
                .header("idempotency-key", "draft-1")
                .json(&json!({"full_name": "Ann Lee"})),
        )
        .await;
    assert_eq!(theirs.status, 201);
    assert_ne!(theirs.body["id"], first.body["id"]);
}

#[tokio::test]
async fn explicit_null_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let id = app
        .draft(&token, &complete_fields("FR", "tourist", "standard"))
        .await;
    let r = app
        .patch(
            &format!("/v1/applications/{id}"),
            &token,
            &json!({"intended_arrival_date": null, "full_name": null}),
        )
        .await;
    r.problem(422);
    let mut fields = r.fields();
    fields.sort();
    assert_eq!(fields, ["full_name", "intended_arrival_date"]);
    let kept = app
        .get(&format!("/v1/applications/{id}"), Some(&token))
        .await;
    assert_eq!(kept.body["full_name"], "Ann Lee");
}

#[tokio::test]
async fn dates_out_of_range_on_the_day_block_submission_with_409() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let mut fields = complete_fields("FR", "tourist", "standard");
    // A draft may hold them: whether they are in range depends on the day it is submitted.
    fields["date_of_birth"] = json!("2999-01-01");
    fields["intended_arrival_date"] = json!("2001-01-01");
    let id = app.draft(&token, &fields).await;
    let r = app.submit(&token, &id).await;
    assert_eq!(r.problem(409)["type"], "/problems/dates-out-of-range");
    assert_eq!(r.fields(), ["date_of_birth", "intended_arrival_date"]);
    let far = chrono::Utc::now().date_naive() + chrono::Days::new(400);
    let r = app
        .patch(
            &format!("/v1/applications/{id}"),
            &token,
            &json!({"date_of_birth": "1990-05-17", "intended_arrival_date": far.to_string()}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app.submit(&token, &id).await;
    r.problem(409);
    assert_eq!(r.fields(), ["intended_arrival_date"]);
    // The static floor of the date of birth is refused at once.
    let r = app
        .patch(
            &format!("/v1/applications/{id}"),
            &token,
            &json!({"date_of_birth": "1899-12-31"}),
        )
        .await;
    r.problem(422);
    assert_eq!(r.fields(), ["date_of_birth"]);
}
