//! The application's event log (`application_events`), one chained row per status change.

use super::*;
use crate::{
    audit::chained_event,
    notify::{EventType, recorded, recorded_values},
};

/// Appends one status change to the event log, chained to the application's previous event.
/// The caller holds the application's row lock, so it is the chain's only writer; a second
/// writer would violate `application_events_one_successor` rather than fork the chain.
pub(crate) async fn record_event(
    conn: &mut PgConnection,
    id: ApplicationId,
    event: ApplicationEvent,
    from: ApplicationStatus,
    to: ApplicationStatus,
    actor: Actor,
    cause: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(chained_event!("application_events", "application_id"))
        .bind(id)
        .bind(event.as_str())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(actor.kind())
        .bind(actor.id())
        .bind(cause)
        .execute(conn)
        .await?;
    Ok(())
}

/// A payment paid the application: it moves `from` → `to` (decided by the caller through
/// [`ApplicationStatus::next`]) with `paid_at`, the change is logged, and `application.paid` is
/// recorded for the portals' back offices, in one statement. The caller holds the application's
/// row lock.
pub(crate) async fn record_paid(
    conn: &mut PgConnection,
    id: ApplicationId,
    from: ApplicationStatus,
    to: ApplicationStatus,
    actor: Actor,
    cause: &str,
) -> Result<(), sqlx::Error> {
    // $1 to $7 are the log's (see `chained_event!`), $8 to $10 the notification's.
    let (notification, kind, object_kind) = recorded_values(EventType::ApplicationPaid);
    sqlx::query(concat!(
        "WITH paid AS (UPDATE applications SET status = $4, paid_at = now(), updated_at = now()
                        WHERE id = $1), ",
        recorded!("$8", "$9", "$10", "$1"),
        " ",
        chained_event!("application_events", "application_id")
    ))
    .bind(id)
    .bind(ApplicationEvent::PaymentSucceeded.as_str())
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(actor.kind())
    .bind(actor.id())
    .bind(cause)
    .bind(notification)
    .bind(kind)
    .bind(object_kind)
    .execute(conn)
    .await?;
    Ok(())
}
