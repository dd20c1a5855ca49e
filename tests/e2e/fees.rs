//! The public fee quote over the demo schedule: specificity, dates, currencies, exemption.

use serde_json::json;

use crate::common::spawn_app;

#[tokio::test]
async fn quotes_follow_the_most_specific_rule_in_force() {
    let app = spawn_app().await;
    let q = |visa: &str, nat: &str, speed: &str, on: &str| {
        let on = if on.is_empty() {
            String::new()
        } else {
            format!("&on={on}")
        };
        format!("/v1/fees/quote?visa_type={visa}&nationality={nat}&speed={speed}{on}")
    };
    // (visa, nationality, speed, day) → (amount, currency, matched)
    let cases = [
        (("tourist", "US", "standard", ""), (5000, "USD", "everyone")),
        (("tourist", "US", "express", ""), (9000, "USD", "everyone")),
        (("tourist", "DE", "standard", ""), (4000, "USD", "group:eu")),
        (
            ("business", "DE", "standard", ""),
            (10000, "USD", "everyone"),
        ),
        (
            ("business", "KW", "standard", ""),
            (30500, "KWD", "group:gcc"),
        ),
        (
            ("business", "KW", "express", ""),
            (16000, "USD", "everyone"),
        ),
        (("tourist", "CN", "standard", ""), (5000, "USD", "country")),
        (("tourist", "JP", "standard", ""), (7500, "JPY", "country")),
        (("transit", "VN", "express", ""), (0, "USD", "group:asean")),
        (
            ("tourist", "US", "standard", "2025-06-01"),
            (4500, "USD", "everyone"),
        ),
        (
            ("tourist", "US", "standard", "2026-01-01"),
            (5000, "USD", "everyone"),
        ),
    ];
    for ((visa, nat, speed, on), (amount, currency, matched)) in cases {
        let r = app.get(&q(visa, nat, speed, on), None).await;
        assert_eq!(r.status, 200, "{visa} {nat} {speed} {on}: {}", r.body);
        assert_eq!(
            r.body["fee"],
            json!({"amount": amount, "currency": currency}),
            "{visa} {nat} {speed} {on}"
        );
        assert_eq!(r.body["matched"], matched, "{visa} {nat} {speed} {on}");
        assert_eq!(r.body["exempt"], amount == 0);
    }
    let cn = app.get(&q("tourist", "CN", "standard", ""), None).await;
    assert!(
        cn.body["options"]
            .as_array()
            .unwrap()
            .contains(&json!({"amount": 36000, "currency": "CNY"}))
    );

    // Before the schedule began, nothing is defined.
    let r = app
        .get(&q("tourist", "US", "standard", "2024-01-01"), None)
        .await;
    r.problem(404);
}
