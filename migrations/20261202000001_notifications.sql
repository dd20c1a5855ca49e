-- Signed notifications to portals' back offices (outbound webhooks), as a transactional outbox:
-- a state change writes its event and one delivery per subscribed endpoint in its own
-- transaction; workers claim due deliveries, POST them and record every attempt.

CREATE TABLE notification_endpoints (
    id uuid PRIMARY KEY,
    url text NOT NULL,
    -- Event types sent here; empty means every type.
    events text[] NOT NULL DEFAULT '{}',
    -- HMAC keys, sealed with the data keys (context `notification_endpoints.secret:<id>`).
    secret_sealed bytea NOT NULL,
    -- The secret before the last rotation keeps signing until previous_expires_at.
    previous_secret_sealed bytea,
    previous_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);

CREATE TABLE notification_events (
    id uuid PRIMARY KEY,
    type text NOT NULL CHECK (type IN ('application.paid', 'application.expired',
        'application.decided', 'payment.failed', 'refund.succeeded', 'refund.failed')),
    -- What the event is about: rendered as the API shows it at each delivery attempt.
    object_kind text NOT NULL CHECK (object_kind IN ('application', 'payment', 'refund')),
    object_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notification_deliveries (
    id uuid PRIMARY KEY,
    event_id uuid NOT NULL REFERENCES notification_events (id),
    endpoint_id uuid NOT NULL REFERENCES notification_endpoints (id),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A worker's claim: another worker may take the delivery once it has passed (a killed worker).
    locked_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, endpoint_id)
);

-- Only pending deliveries are ever looked for by time.
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX notification_deliveries_endpoint ON notification_deliveries (endpoint_id, created_at);

CREATE TABLE notification_attempts (
    id bigserial PRIMARY KEY,
    delivery_id uuid NOT NULL REFERENCES notification_deliveries (id),
    attempted_at timestamptz NOT NULL DEFAULT now(),
    -- Absent when no answer came (refused connection, timeout).
    http_status integer,
    latency_ms integer NOT NULL,
    error text
);
CREATE INDEX notification_attempts_delivery ON notification_attempts (delivery_id, id);
