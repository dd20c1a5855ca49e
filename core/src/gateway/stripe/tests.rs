use super::*;

#[test]
fn intents_map_to_payment_events() {
    let snap = |status: &str, err: Option<IntentError>| IntentSnapshot {
        id: "pi_1".into(),
        status: status.into(),
        amount: 5000,
        currency: "usd".into(),
        client_secret: Some("pi_1_secret".into()),
        metadata: HashMap::new(),
        last_payment_error: err,
        cancellation_reason: None,
    };
    assert_eq!(
        snap("succeeded", None).report().unwrap().event,
        PaymentEvent::GatewaySaysSucceeded
    );
    assert_eq!(
        snap("canceled", None).report().unwrap().event,
        PaymentEvent::Cancelled
    );
    let abandoned = IntentSnapshot {
        cancellation_reason: Some("abandoned".into()),
        ..snap("canceled", None)
    };
    assert_eq!(abandoned.report().unwrap().event, PaymentEvent::Expired);
    let r = snap("requires_action", None).report().unwrap();
    assert_eq!(r.event, PaymentEvent::GatewayRequiresAction);
    assert_eq!(
        r.facts.next_action,
        Some(NextAction::UseStripeSdk {
            client_secret: "pi_1_secret".into()
        })
    );
    assert!(snap("requires_payment_method", None).report().is_none());
    let declined = snap(
        "requires_payment_method",
        Some(IntentError {
            code: Some("card_declined".into()),
            decline_code: Some("insufficient_funds".into()),
            message: None,
        }),
    )
    .report()
    .unwrap();
    assert_eq!(declined.event, PaymentEvent::Declined);
    assert_eq!(
        declined.facts.failure_code.as_deref(),
        Some("insufficient_funds")
    );
    assert_eq!(
        snap("canceled", None).report().unwrap().event,
        PaymentEvent::Cancelled
    );
    assert_eq!(r.facts.amount.unwrap().amount_minor(), 5000);
}
