//! Admins register the portal back-office endpoints that receive signed notifications, rotate
//! their secrets, and read every delivery attempt. Sending is the worker's (see
//! `evisa_core::notify`).

use evisa_core::notify::{EventType, delivery, endpoints};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    types::Example,
};

use super::Tag;
use crate::{
    auth::BearerAuth,
    body::{JsonBody, ServerSetFields},
    problem::{ApiError, ApiResult, FieldProblem},
    state::AppState,
};

pub struct NotificationsApi;

/// A kind of notification.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[oai(rename = "NotificationEventType")]
pub enum EventTypeWire {
    #[oai(rename = "application.paid")]
    #[serde(rename = "application.paid")]
    ApplicationPaid,
    #[oai(rename = "application.expired")]
    #[serde(rename = "application.expired")]
    ApplicationExpired,
    #[oai(rename = "application.decided")]
    #[serde(rename = "application.decided")]
    ApplicationDecided,
    #[oai(rename = "payment.failed")]
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    #[oai(rename = "refund.succeeded")]
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    #[oai(rename = "refund.failed")]
    #[serde(rename = "refund.failed")]
    RefundFailed,
}

impl From<EventTypeWire> for EventType {
    fn from(w: EventTypeWire) -> Self {
        match w {
            EventTypeWire::ApplicationPaid => EventType::ApplicationPaid,
            EventTypeWire::ApplicationExpired => EventType::ApplicationExpired,
            EventTypeWire::ApplicationDecided => EventType::ApplicationDecided,
            EventTypeWire::PaymentFailed => EventType::PaymentFailed,
            EventTypeWire::RefundSucceeded => EventType::RefundSucceeded,
            EventTypeWire::RefundFailed => EventType::RefundFailed,
        }
    }
}

impl From<EventType> for EventTypeWire {
    fn from(d: EventType) -> Self {
        match d {
            EventType::ApplicationPaid => EventTypeWire::ApplicationPaid,
            EventType::ApplicationExpired => EventTypeWire::ApplicationExpired,
            EventType::ApplicationDecided => EventTypeWire::ApplicationDecided,
            EventType::PaymentFailed => EventTypeWire::PaymentFailed,
            EventType::RefundSucceeded => EventTypeWire::RefundSucceeded,
            EventType::RefundFailed => EventTypeWire::RefundFailed,
        }
    }
}

/// An endpoint to register.
#[derive(Object, serde::Deserialize)]
#[oai(rename = "NotificationEndpointRequest", example)]
#[serde(deny_unknown_fields)]
pub struct EndpointRequestBody {
    /// Where to POST notifications: `https`, or `http` only to a host in `EVISA_NOTIFY_ALLOW_HOSTS`.
    #[oai(validator(max_length = 2000))]
    pub url: String,
    /// The types to send here; every type when omitted.
    #[oai(skip_serializing_if_is_none)]
    pub events: Option<Vec<EventTypeWire>>,
}

impl Example for EndpointRequestBody {
    fn example() -> Self {
        EndpointRequestBody {
            url: "https://backoffice.portal.example.gov/evisa-notifications".into(),
            events: Some(vec![EventTypeWire::ApplicationPaid]),
        }
    }
}

impl ServerSetFields for EndpointRequestBody {
    const SERVER_SET: &'static [(&'static str, &'static str)] = &[
        ("id", "the server assigns it"),
        ("secret", "the server makes it"),
    ];
}

/// A registered endpoint.
#[derive(Object)]
#[oai(rename = "NotificationEndpoint")]
pub struct EndpointView {
    pub id: uuid::Uuid,
    pub url: String,
    /// The types sent here; every type when empty.
    pub events: Vec<EventTypeWire>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<endpoints::Endpoint> for EndpointView {
    fn from(e: endpoints::Endpoint) -> Self {
        EndpointView {
            id: e.id,
            url: e.url,
            events: e.events.into_iter().map(Into::into).collect(),
            created_at: e.created_at,
        }
    }
}

/// An endpoint with its signing secret, shown only when made or rotated. (No `Debug`.)
#[derive(Object)]
#[oai(rename = "NotificationEndpointWithSecret")]
pub struct EndpointWithSecret {
    pub id: uuid::Uuid,
    pub url: String,
    pub events: Vec<EventTypeWire>,
    /// Verify each notification's `Evisa-Signature` with it (see the README). Shown once.
    pub secret: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

fn with_secret(
    (e, secret): (endpoints::Endpoint, evisa_core::Secret<String>),
) -> EndpointWithSecret {
    let view = EndpointView::from(e);
    EndpointWithSecret {
        id: view.id,
        url: view.url,
        events: view.events,
        secret: secret.expose().clone(),
        created_at: view.created_at,
    }
}

/// Every registered endpoint.
#[derive(Object)]
#[oai(rename = "NotificationEndpointList")]
pub struct EndpointList {
    pub items: Vec<EndpointView>,
}

/// Where a delivery is.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename = "NotificationDeliveryStatus", rename_all = "snake_case")]
pub enum DeliveryStatusWire {
    /// Not yet answered with a 2xx; tried again at `next_attempt_at`.
    Pending,
    Delivered,
    /// Every attempt failed (or its endpoint was deleted); `evisa notify redeliver` sends it again.
    Failed,
}

impl DeliveryStatusWire {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// One attempt to deliver.
#[derive(Object)]
#[oai(rename = "NotificationAttempt")]
pub struct AttemptView {
    pub attempted_at: chrono::DateTime<chrono::Utc>,
    /// The endpoint's HTTP status; absent when no answer came.
    #[oai(skip_serializing_if_is_none)]
    pub http_status: Option<i32>,
    pub latency_ms: i32,
    /// Why no answer came (connection refused, timeout).
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
}

/// One event's delivery to one endpoint.
#[derive(Object)]
#[oai(rename = "NotificationDelivery")]
pub struct DeliveryView {
    pub id: uuid::Uuid,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub endpoint_id: uuid::Uuid,
    pub status: DeliveryStatusWire,
    #[oai(skip_serializing_if_is_none)]
    pub next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub attempts: Vec<AttemptView>,
}

impl From<delivery::DeliveryRecord> for DeliveryView {
    fn from(d: delivery::DeliveryRecord) -> Self {
        DeliveryView {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            endpoint_id: d.endpoint_id,
            status: match d.status.as_str() {
                "delivered" => DeliveryStatusWire::Delivered,
                "failed" => DeliveryStatusWire::Failed,
                _ => DeliveryStatusWire::Pending,
            },
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
            attempts: d
                .attempts
                .into_iter()
                .map(|a| AttemptView {
                    attempted_at: a.attempted_at,
                    http_status: a.http_status,
                    latency_ms: a.latency_ms,
                    error: a.error,
                })
                .collect(),
        }
    }
}

/// The newest deliveries first.
#[derive(Object)]
#[oai(rename = "NotificationDeliveryList")]
pub struct DeliveryList {
    pub items: Vec<DeliveryView>,
}

#[derive(ApiResponse)]
pub enum EndpointCreated {
    /// Registered. Keep `secret`: it is not shown again.
    #[oai(status = 201)]
    Created(Json<EndpointWithSecret>),
}

#[derive(ApiResponse)]
pub enum EndpointDeleted {
    /// Deleted: nothing more is sent to it, and its pending deliveries are failed.
    #[oai(status = 204)]
    Deleted,
}

fn default_limit() -> u32 {
    50
}

#[OpenApi(tag = "Tag::Admin")]
impl NotificationsApi {
    /// Register a notification endpoint (admins).
    ///
    /// Notifications are POSTed as JSON `{id, type, created, data: {object}}` with the header
    /// `Evisa-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    #[oai(
        path = "/v1/admin/notification-endpoints",
        method = "post",
        operation_id = "createNotificationEndpoint"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        body: JsonBody<EndpointRequestBody>,
    ) -> ApiResult<EndpointCreated> {
        auth.admin()?;
        let request = body.0;
        let url =
            endpoints::check_url(&request.url, &state.config.notify.allow_hosts).map_err(|e| {
                ApiError::invalid(vec![FieldProblem {
                    field: "url".into(),
                    pointer: Some("/url".into()),
                    detail: e.to_string(),
                }])
            })?;
        let mut events: Vec<EventType> = request
            .events
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect();
        events.sort_by_key(|e| e.as_str());
        events.dedup();
        let made = endpoints::create(&state.db, &state.config.data_keys, &url, &events).await?;
        Ok(EndpointCreated::Created(Json(with_secret(made))))
    }

    /// List notification endpoints (admins); secrets are never shown here.
    #[oai(
        path = "/v1/admin/notification-endpoints",
        method = "get",
        operation_id = "listNotificationEndpoints"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> ApiResult<Json<EndpointList>> {
        auth.admin()?;
        let items = endpoints::list(&state.db).await?;
        Ok(Json(EndpointList {
            items: items.into_iter().map(Into::into).collect(),
        }))
    }

    /// Delete a notification endpoint (admins).
    #[oai(
        path = "/v1/admin/notification-endpoints/:id",
        method = "delete",
        operation_id = "deleteNotificationEndpoint"
    )]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<EndpointDeleted> {
        auth.admin()?;
        if endpoints::delete(&state.db, id.0).await? {
            Ok(EndpointDeleted::Deleted)
        } else {
            Err(ApiError::not_found("notification endpoint"))
        }
    }

    /// Give an endpoint a new secret (admins); the old one keeps signing beside it for 24 hours.
    #[oai(
        path = "/v1/admin/notification-endpoints/:id/rotate-secret",
        method = "post",
        operation_id = "rotateNotificationSecret"
    )]
    async fn rotate(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<EndpointWithSecret>> {
        auth.admin()?;
        endpoints::rotate_secret(&state.db, &state.config.data_keys, id.0)
            .await?
            .map(|made| Json(with_secret(made)))
            .ok_or_else(|| ApiError::not_found("notification endpoint"))
    }

    /// Deliveries of notifications, newest first, with every attempt (admins).
    #[oai(
        path = "/v1/admin/notification-deliveries",
        method = "get",
        operation_id = "listNotificationDeliveries"
    )]
    async fn deliveries(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// Only this endpoint's.
        endpoint: Query<Option<uuid::Uuid>>,
        /// Only deliveries in this status.
        status: Query<Option<DeliveryStatusWire>>,
        /// At most this many, 1 to 200.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        limit: Query<u32>,
    ) -> ApiResult<Json<DeliveryList>> {
        auth.admin()?;
        let items = delivery::list(
            &state.db,
            endpoint.0,
            status.0.map(DeliveryStatusWire::as_str),
            i64::from(limit.0),
        )
        .await?;
        Ok(Json(DeliveryList {
            items: items.into_iter().map(Into::into).collect(),
        }))
    }
}
