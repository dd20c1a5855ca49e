//! Signed notifications to portals' back offices: what happened, told without polling.
//!
//! A state change calls [`record`] inside its own transaction (a transactional outbox): the event
//! and one delivery per subscribed endpoint exist if and only if the change does. Workers claim
//! due deliveries ([`delivery::claim`]), render the object as the API shows it at that moment,
//! sign and POST it, and record every attempt. Delivery is at least once and not ordered; each
//! body carries its resource's current state, so the latest one received is the truth.

pub mod delivery;
pub mod endpoints;

use sqlx::PgConnection;

/// Renders a resource as the API shows it, for a notification's `data.object` (`Ok(None)` when
/// it is gone). The API provides it (it owns the views); the worker's relay calls it.
pub type RenderObject = std::sync::Arc<
    dyn Fn(
            ObjectKind,
            uuid::Uuid,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = anyhow::Result<Option<serde_json::Value>>> + Send>,
        > + Send
        + Sync,
>;

/// A kind of notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    ApplicationPaid,
    ApplicationExpired,
    ApplicationDecided,
    PaymentFailed,
    RefundSucceeded,
    RefundFailed,
}

crate::visa::string_enum!(EventType, "notification event type",
    ApplicationPaid => "application.paid", ApplicationExpired => "application.expired",
    ApplicationDecided => "application.decided", PaymentFailed => "payment.failed",
    RefundSucceeded => "refund.succeeded", RefundFailed => "refund.failed");

impl EventType {
    /// The kind of resource the event's `data.object` is.
    pub fn object_kind(self) -> ObjectKind {
        match self {
            Self::ApplicationPaid | Self::ApplicationExpired | Self::ApplicationDecided => {
                ObjectKind::Application
            }
            Self::PaymentFailed => ObjectKind::Payment,
            Self::RefundSucceeded | Self::RefundFailed => ObjectKind::Refund,
        }
    }
}

/// What a notification's `data.object` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Application,
    Payment,
    Refund,
}

crate::visa::string_enum!(ObjectKind, "notification object kind",
    Application => "application", Payment => "payment", Refund => "refund");

/// SQL: the CTEs (`notified`, `notified_to`) that record a notification and one delivery per
/// endpoint subscribed now, for another statement to carry before its own work, so that a change
/// and its outbox row are one statement. The arguments name the parameters (`"$8"`, …) that hold
/// the event's id, type and object kind ([`recorded_values`]) and its object's id.
macro_rules! recorded {
    ($id:literal, $kind:literal, $object_kind:literal, $object_id:literal) => {
        concat!(
            "notified AS (
               INSERT INTO notification_events (id, type, object_kind, object_id)
               VALUES (",
            $id,
            ", ",
            $kind,
            ", ",
            $object_kind,
            ", ",
            $object_id,
            ") RETURNING id),
             notified_to AS (
               INSERT INTO notification_deliveries (id, event_id, endpoint_id)
               SELECT gen_random_uuid(), e.id, n.id
                 FROM notified e, notification_endpoints n
                WHERE n.deleted_at IS NULL AND (n.events = '{}' OR ",
            $kind,
            " = ANY (n.events)))"
        )
    };
}
pub(crate) use recorded;

/// The values a [`recorded!`] fragment binds: a new event id, the type and its object's kind.
pub(crate) fn recorded_values(kind: EventType) -> (uuid::Uuid, &'static str, &'static str) {
    (
        uuid::Uuid::now_v7(),
        kind.as_str(),
        kind.object_kind().as_str(),
    )
}

/// Records that `kind` happened to `object_id`, with a delivery for every endpoint subscribed
/// now, in the caller's transaction. One statement, so a change with no endpoints costs one insert.
pub async fn record(
    conn: &mut PgConnection,
    kind: EventType,
    object_id: uuid::Uuid,
) -> Result<(), sqlx::Error> {
    let (id, kind, object_kind) = recorded_values(kind);
    sqlx::query(concat!(
        "WITH ",
        recorded!("$1", "$2", "$3", "$4"),
        " SELECT"
    ))
    .bind(id)
    .bind(kind)
    .bind(object_kind)
    .bind(object_id)
    .execute(conn)
    .await?;
    Ok(())
}
