//! The Stripe sandbox against Stripe's official Python library and Stripe's published schemas
//! (tests/peers/stripe_fidelity.py), with every event it sent delivered to the service.

use serde_json::Value;

use crate::common::spawn_app;

#[tokio::test]
async fn the_sandbox_answers_as_stripe_and_the_service_acknowledges_every_event() {
    let app = spawn_app().await;
    let python = std::env::var("EVISA_PYTHON").unwrap_or_else(|_| "python3".into());
    let sandbox_url = app.sandbox_url.clone();
    let (secret, publishable) = (app.stripe_key.clone(), app.sandbox.publishable_key());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .args([
                "tests/peers/stripe_fidelity.py",
                &sandbox_url,
                &secret,
                &publishable,
            ])
            .output()
            .expect("the Python peer runs (scripts/test.sh installs it)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stripe-fidelity: 0 failed"), "{stdout}");

    // Every event, of every type, reached the service and was acknowledged with a 2xx (none
    // of these payments is ours, so each is recorded or ignored, never refused).
    let mut events: Vec<Value> = Vec::new();
    for _ in 0..100 {
        events = app
            .http
            .get(format!("{}/sandbox/events", app.sandbox_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if events.iter().all(|e| e["delivered"] == true) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let undelivered: Vec<&Value> = events.iter().filter(|e| e["delivered"] != true).collect();
    assert!(events.len() > 40, "{} events", events.len());
    assert!(undelivered.is_empty(), "not acknowledged: {undelivered:?}");
}
