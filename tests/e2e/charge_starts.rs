//! Charge jobs running at once start their charges in one statement
//! (`payment::start_charges`): each `created` payment moves to `processing` once, with its own
//! event chained to its own history, whatever else the batch holds.

use evisa_core::{
    audit,
    ids::PaymentId,
    payment::{PaymentStatus, start_charges},
};

use crate::common::spawn_app;

#[tokio::test]
async fn charges_started_together_each_move_once_with_their_own_event() {
    // No worker runs: only these calls move the payments.
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, payment) = app.card_payment().await;
        ids.push(payment.parse::<PaymentId>().unwrap());
    }
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    // `c` was started by an earlier run of its job.
    let earlier = start_charges(&app.db, &[(c, "job:earlier")]).await.unwrap();
    assert_eq!(
        earlier[0].as_ref().unwrap().status,
        PaymentStatus::Processing
    );

    let unknown = PaymentId::new();
    let now = start_charges(
        &app.db,
        &[
            (b, "job:b"),
            (unknown, "job:unknown"),
            (a, "job:a"),
            (c, "job:c"),
            // The same payment twice in one batch moves it once.
            (b, "job:b-again"),
        ],
    )
    .await
    .unwrap();
    let seen: Vec<Option<(PaymentId, PaymentStatus)>> = now
        .iter()
        .map(|p| p.as_ref().map(|p| (p.id, p.status)))
        .collect();
    assert_eq!(
        seen,
        [
            Some((b, PaymentStatus::Processing)),
            None,
            Some((a, PaymentStatus::Processing)),
            Some((c, PaymentStatus::Processing)),
            Some((b, PaymentStatus::Processing)),
        ]
    );

    for (payment, cause) in [(a, "job:a"), (b, "job:b"), (c, "job:earlier")] {
        let started: Vec<(String, String)> = sqlx::query_as(
            "SELECT cause, to_status FROM payment_events
              WHERE payment_id = $1 AND event = 'charge_started'",
        )
        .bind(payment)
        .fetch_all(&app.db)
        .await
        .unwrap();
        assert_eq!(
            started,
            [(cause.to_string(), "processing".to_string())],
            "{payment}"
        );
        assert_eq!(
            app.payment_history(&payment.to_string()).await,
            [
                ("created".to_string(), "created".to_string()),
                ("charge_started".to_string(), "processing".to_string())
            ],
            "{payment}"
        );
    }
    // Every event links to the one before it in its payment's chain.
    let (checked, broken) = audit::verify(&app.db).await.unwrap();
    assert!(checked >= 6, "{checked}");
    assert_eq!(broken, None);
}
