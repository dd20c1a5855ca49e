-- Payment attempts, their history, idempotent API requests, and the inbox of gateway callbacks.

CREATE TABLE payments (
    id                uuid PRIMARY KEY,
    application_id    uuid NOT NULL REFERENCES applications (id),
    applicant_id      uuid NOT NULL REFERENCES users (id),
    provider          text NOT NULL CHECK (provider IN ('stripe', 'alipay')),
    status            text NOT NULL CHECK (status IN
                          ('created', 'processing', 'requires_action', 'succeeded', 'failed',
                           'cancelled', 'expired')),
    -- Copied from the application's fee quote when the payment is made; never from a client.
    amount_minor      bigint NOT NULL CHECK (amount_minor > 0),
    currency          char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- The payer's instrument at the gateway (a Stripe PaymentMethod id); never card data.
    payment_method    text,
    -- The gateway's object for this attempt (a PaymentIntent id, an Alipay trade number).
    gateway_reference text,
    client_secret     text,
    next_action       jsonb,
    failure_code      text,
    failure_message   text,
    -- The gateway charged although another payment of the application already succeeded.
    duplicate_charge  boolean NOT NULL DEFAULT false,
    expires_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- At most one attempt in flight per application, and never two that succeeded.
CREATE UNIQUE INDEX payments_one_open_per_application ON payments (application_id)
    WHERE status IN ('created', 'processing', 'requires_action');
CREATE UNIQUE INDEX payments_one_success_per_application ON payments (application_id)
    WHERE status = 'succeeded';
CREATE INDEX payments_by_application ON payments (application_id, id DESC);
CREATE INDEX payments_open_by_age ON payments (updated_at)
    WHERE status IN ('created', 'processing', 'requires_action');
CREATE UNIQUE INDEX payments_by_gateway_reference ON payments (provider, gateway_reference)
    WHERE gateway_reference IS NOT NULL;

-- Append-only history of every payment status change.
CREATE TABLE payment_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id  uuid NOT NULL REFERENCES payments (id),
    event       text NOT NULL,
    from_status text,
    to_status   text NOT NULL,
    actor_kind  text NOT NULL CHECK (actor_kind IN ('applicant', 'officer', 'admin', 'system', 'gateway')),
    actor_id    uuid,
    cause       text,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_events_by_payment ON payment_events (payment_id, id);
CREATE TRIGGER payment_events_append_only BEFORE UPDATE OR DELETE ON payment_events
    FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- Saved answers to POSTs made with an Idempotency-Key, replayed for 24 hours.
CREATE TABLE idempotency_keys (
    user_id         uuid NOT NULL REFERENCES users (id),
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    bytea NOT NULL,
    response_status smallint NOT NULL,
    response_body   jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Verified gateway callbacks, stored before they are acknowledged and processed by a job.
CREATE TABLE gateway_inbox (
    id           uuid PRIMARY KEY,
    provider     text NOT NULL CHECK (provider IN ('stripe', 'alipay')),
    event_id     text NOT NULL,
    event_type   text NOT NULL,
    payload      jsonb NOT NULL,
    -- received → processed | ignored | quarantined (amount, currency or payment did not match).
    state        text NOT NULL DEFAULT 'received'
                     CHECK (state IN ('received', 'processed', 'ignored', 'quarantined')),
    note         text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    UNIQUE (provider, event_id)
);
