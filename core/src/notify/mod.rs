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

/// Records that `kind` happened to `object_id`, with a delivery for every endpoint subscribed
/// now, in the caller's transaction. One statement, so a change with no endpoints costs one insert.
pub async fn record(
    conn: &mut PgConnection,
    kind: EventType,
    object_id: uuid::Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH e AS (
            INSERT INTO notification_events (id, type, object_kind, object_id)
            VALUES ($1, $2, $3, $4) RETURNING id
         )
         INSERT INTO notification_deliveries (id, event_id, endpoint_id)
         SELECT gen_random_uuid(), e.id, n.id
           FROM e, notification_endpoints n
          WHERE n.deleted_at IS NULL AND (n.events = '{}' OR $2 = ANY (n.events))",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(kind.as_str())
    .bind(kind.object_kind().as_str())
    .bind(object_id)
    .execute(conn)
    .await?;
    Ok(())
}
