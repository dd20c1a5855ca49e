//! The hosted checkout page for a group: `POST /v1/checkout` with the applications' ids gives one
//! link whose page shows the group's total and takes one payment of it.

use serde_json::json;

use crate::common::{Answer, TestApp, complete_fields, spawn_app};
use crate::group::family;

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn open_group_checkout(app: &TestApp, token: &str, ids: &[String]) -> Answer {
    app.send(
        app.http
            .post(app.url("/v1/checkout"))
            .bearer_auth(token)
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(&json!({"application_ids": ids})),
    )
    .await
}

#[tokio::test]
async fn a_group_checkout_page_shows_the_total_and_takes_one_payment_of_it() {
    let app = spawn_app().await;
    app.start_worker();
    let token = app.applicant().await;
    let ids = family(&app, &token, 3, "CN").await;

    let r = open_group_checkout(&app, &token, &ids).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let link = r.body["url"].as_str().unwrap();
    let first = browser().get(link).send().await.unwrap();
    assert_eq!(first.status(), 303);
    let path = first.headers()["location"].to_str().unwrap().to_string();
    let cookie = first.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = browser()
        .get(app.url(&path))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Three fees of 360.00 CNY (50.00 USD by card).
    assert!(html.contains("1,080.00"), "the group's CNY total");
    assert!(html.contains("150.00"), "the group's card total");
    let start = html.find("name=\"csrf_token\" value=\"").unwrap() + 25;
    let csrf = html[start..].split('"').next().unwrap().to_string();

    let r = browser()
        .post(app.url(&format!("{path}/card")))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("idempotency-key", "group-card")
        .json(&json!({"payment_method": "pm_card_visa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    let payment = body["id"].as_str().unwrap().to_string();
    app.wait_for_payment(&token, &payment, "succeeded", 15)
        .await;
    let p = app
        .get(&format!("/v1/payments/{payment}"), Some(&token))
        .await;
    assert_eq!(p.body["amount"], 15000);
    assert_eq!(p.body["allocations"].as_array().unwrap().len(), 3);
    assert_eq!(app.charges_for(&payment), 1);
    for id in &ids {
        let a = app
            .get(&format!("/v1/applications/{id}"), Some(&token))
            .await;
        assert_eq!(a.body["status"], "paid");
    }
}

#[tokio::test]
async fn a_group_checkout_refuses_members_by_name() {
    let app = spawn_app().await;
    let token = app.applicant().await;
    let ids = family(&app, &token, 2, "FR").await;
    let other = app.applicant().await;
    let theirs = family(&app, &other, 1, "FR").await;
    let draft = app
        .draft(&token, &complete_fields("FR", "tourist", "standard"))
        .await;

    let r = open_group_checkout(&app, &token, &[ids[0].clone(), theirs[0].clone()]).await;
    assert_eq!(r.problem(404)["errors"][0]["pointer"], "/application_ids/1");
    let r = open_group_checkout(&app, &token, &[draft, ids[1].clone()]).await;
    assert_eq!(r.problem(409)["errors"][0]["pointer"], "/application_ids/0");
    let r = open_group_checkout(&app, &token, &ids[..1]).await;
    assert_eq!(r.problem(422)["errors"][0]["field"], "application_ids");
    let (sessions,): (i64,) = sqlx::query_as("SELECT count(*) FROM checkout_sessions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
}
