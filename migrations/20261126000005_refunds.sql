-- Refunds of succeeded payments, asked for by officers. A payment can never be refunded more than
-- it took: the API locks the payment row while it adds up what is already pending or refunded.

CREATE TABLE refunds (
    id                uuid PRIMARY KEY,
    payment_id        uuid NOT NULL REFERENCES payments (id),
    amount_minor      bigint NOT NULL CHECK (amount_minor > 0),
    currency          char(3) NOT NULL,
    reason            text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    gateway_reference text,
    failure_message   text,
    requested_by      uuid NOT NULL REFERENCES users (id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_by_payment ON refunds (payment_id, id);

-- What has been given back so far (succeeded refunds only).
ALTER TABLE payments ADD COLUMN refunded_amount_minor bigint NOT NULL DEFAULT 0
    CHECK (refunded_amount_minor >= 0 AND refunded_amount_minor <= amount_minor);
