//! The HTTP contract: every error is problem+json naming what was wrong, every error status is
//! in the spec, and the committed spec is the code's spec.

use serde_json::{Value, json};

use crate::common::{spawn_app, spawn_app_with};

#[tokio::test]
async fn no_or_bad_token_is_401_problem() {
    let app = spawn_app().await;
    let none = app.get("/v1/applications", None).await;
    none.problem(401);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    app.get("/v1/applications", Some("not.a.jwt"))
        .await
        .problem(401);
    // A token signed with another key is refused the same way.
    let forged = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIwMTkwMDAwMC0wMDAwLTcwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJyb2xlIjoiYWRtaW4iLCJpc3MiOiJldmlzYS1wYXkiLCJhdWQiOiJldmlzYS1wYXktYXBpIiwiaWF0IjoxLCJleHAiOjk5OTk5OTk5OTl9.c2lnbmF0dXJl";
    app.get("/v1/admin/applications", Some(forged))
        .await
        .problem(401);
}

#[tokio::test]
async fn malformed_json_is_400_and_wrong_types_name_the_field() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let send_raw = |body: &'static str| {
        app.http
            .post(app.url("/v1/applications"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
    };
    let r = app.send(send_raw("{\"full_name\": ")).await;
    assert!(
        r.problem(400)["detail"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let r = app.send(send_raw("{\"visa_type\": 5}")).await;
    r.problem(422);
    assert_eq!(r.fields(), ["visa_type"]);
    let r = app.send(send_raw("{\"visa_type\": \"diplomatic\"}")).await;
    assert!(
        r.problem(422)["detail"]
            .as_str()
            .unwrap()
            .contains("tourist")
    );
    assert_eq!(r.fields(), ["visa_type"]);
    let r = app
        .send(send_raw("{\"date_of_birth\": \"17/05/1990\"}"))
        .await;
    assert!(
        r.problem(422)["detail"]
            .as_str()
            .unwrap()
            .contains("YYYY-MM-DD")
    );
    assert_eq!(r.fields(), ["date_of_birth"]);
    let r = app.send(send_raw("{\"surprise\": true}")).await;
    r.problem(422);
    assert_eq!(r.fields(), ["surprise"]);
}

#[tokio::test]
async fn rule_violations_are_422_naming_every_field() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let r = app
        .post(
            "/v1/applications",
            Some(&token),
            &json!({
                "passport_number": "AB-12",
                "nationality": "XX",
                "date_of_birth": "1899-12-31",
                "full_name": "   ",
            }),
        )
        .await;
    r.problem(422);
    assert_eq!(
        r.fields(),
        [
            "full_name",
            "passport_number",
            "date_of_birth",
            "nationality"
        ]
    );
    // No PII is echoed back in the problem.
    assert!(!r.body.to_string().contains("AB-12"));
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    for (path, param) in [
        ("/v1/fees/quote?visa_type=tourist&nationality=FR", "speed"),
        (
            "/v1/fees/quote?visa_type=yacht&nationality=FR&speed=standard",
            "visa_type",
        ),
        (
            "/v1/fees/quote?visa_type=tourist&nationality=XX&speed=standard",
            "nationality",
        ),
        (
            "/v1/fees/quote?visa_type=tourist&nationality=fr&speed=standard",
            "nationality",
        ),
        ("/v1/applications?limit=0", "limit"),
        ("/v1/applications?limit=500", "limit"),
        ("/v1/applications?cursor=nope", "cursor"),
        ("/v1/applications/not-a-uuid", "id"),
    ] {
        let r = app.get(path, Some(&token)).await;
        r.problem(400);
        assert_eq!(r.fields(), [param], "{path}");
    }
}

#[tokio::test]
async fn routing_media_type_and_size_errors_are_problems() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    app.get("/v1/nothing-here", None).await.problem(404);
    app.get("/nothing", None).await.problem(404);
    // A 405 says which methods the path answers.
    let r = app.send(app.http.delete(app.url("/v1/applications"))).await;
    r.problem(405);
    assert_eq!(r.headers["allow"], "GET, POST, HEAD");
    let r = app
        .send(
            app.http
                .put(app.url(&format!("/v1/applications/{}/submit", uuid::Uuid::nil()))),
        )
        .await;
    r.problem(405);
    assert_eq!(r.headers["allow"], "POST");
    let r = app.send(app.http.get(app.url("/v1/webhooks/stripe"))).await;
    r.problem(405);
    assert_eq!(r.headers["allow"], "POST");

    let r = app
        .send(
            app.http
                .post(app.url("/v1/applications"))
                .bearer_auth(&token)
                .header("content-type", "text/plain")
                .body("full_name=Ann"),
        )
        .await;
    r.problem(415);
    let r = app
        .send(
            app.http
                .post(app.url("/v1/applications"))
                .bearer_auth(&token)
                .body("{}"),
        )
        .await;
    r.problem(415);

    // The test app allows 8 KiB bodies.
    let big = json!({"full_name": "x".repeat(9000)});
    let r = app.post("/v1/applications", Some(&token), &big).await;
    r.problem(413);
    // A chunked body without Content-Length is cut off at the limit too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b' '; 5000]), Ok(vec![b' '; 5000])];
    let stream = reqwest::Body::wrap_stream(futures_stream(chunks));
    let r = app
        .send(
            app.http
                .post(app.url("/v1/applications"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(stream),
        )
        .await;
    r.problem(413);
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn staff_routes_are_403_for_applicants() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let r = app.get("/v1/admin/applications", Some(&token)).await;
    assert_eq!(r.problem(403)["type"], "/problems/forbidden");
}

#[tokio::test]
async fn login_attempts_are_rate_limited_with_retry_after() {
    let app = spawn_app_with(&[("EVISA_LOGIN_ATTEMPTS_PER_MINUTE", "3")]).await;
    let creds = json!({"email": "rl@example.org", "password": "wrong password here"});
    for _ in 0..3 {
        app.post("/v1/auth/login", None, &creds).await.problem(401);
    }
    let r = app.post("/v1/auth/login", None, &creds).await;
    r.problem(429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
}

#[tokio::test]
async fn every_error_status_is_documented_as_problem_json() {
    let spec: Value = serde_json::from_str(&evisa_api::spec_json()).unwrap();
    let paths = spec["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            assert!(
                op["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{method} {path}"
            );
            for status in [
                "400", "401", "403", "404", "405", "409", "413", "415", "422", "429", "500",
            ] {
                let resp = &op["responses"][status];
                assert_eq!(
                    resp["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} does not document {status}"
                );
            }
            let secured = op.get("security").is_some();
            let public = (path.starts_with("/v1/auth") && path != "/v1/auth/password")
                || path == "/v1/fees/quote"
                || path.starts_with("/v1/receipts/")
                || !path.starts_with("/v1");
            assert_eq!(secured, !public, "{method} {path} security");
        }
    }
    assert!(operations >= 12);
    assert_eq!(
        spec["components"]["securitySchemes"]["BearerAuth"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn the_committed_spec_is_the_codes_spec() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    let generated = evisa_api::spec_json();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is stale: run `cargo run -- spec > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn served_spec_docs_and_health() {
    let app = spawn_app().await;
    let served = app.get("/openapi.json", None).await;
    assert_eq!(served.status, 200);
    assert_eq!(
        served.body,
        serde_json::from_str::<Value>(&evisa_api::spec_json()).unwrap()
    );
    let docs = app.send(app.http.get(app.url("/docs"))).await;
    assert_eq!(docs.status, 200);
    assert!(docs.body.as_str().unwrap().contains("swagger"));
    // Offline: the UI is bundled, no script comes from another host.
    assert!(!docs.body.as_str().unwrap().contains("<script src=\"http"));
    assert_eq!(app.get("/healthz", None).await.body["status"], "ok");
    let ready = app.get("/readyz", None).await;
    assert_eq!(
        ready.body,
        json!({"status": "ready", "postgres": "ok", "redis": "ok"})
    );
    assert!(ready.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn readiness_names_a_dependency_that_is_down() {
    // Redis is up (the app needs it to start); point Postgres at a closed port instead.
    let app = spawn_app().await;
    app.db.close().await;
    let r = app.get("/readyz", None).await;
    r.problem(503);
    assert_eq!(r.fields(), ["postgres"]);
}
