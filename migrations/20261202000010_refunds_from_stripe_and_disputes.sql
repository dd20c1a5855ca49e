-- Stripe's refund, charge and dispute events.
--
-- Refunds made outside evisa-pay (in the Stripe dashboard) are recorded from Stripe's events
-- beside officers' own: origin `gateway`, nobody of ours asked for them, keyed like every Stripe
-- refund by Stripe's refund id. They count against the payment's refundable remainder and its
-- `refunded_amount_minor` like any other refund.
ALTER TABLE refunds
    ADD COLUMN origin text NOT NULL DEFAULT 'evisa' CHECK (origin IN ('evisa', 'gateway')),
    ALTER COLUMN requested_by DROP NOT NULL,
    ADD CONSTRAINT refunds_asked_by_staff CHECK (origin = 'gateway' OR requested_by IS NOT NULL);
-- One row per Stripe refund, however many events name it.
CREATE UNIQUE INDEX refunds_by_gateway_reference ON refunds (gateway_reference)
    WHERE gateway_reference IS NOT NULL;

-- The most Stripe has said the payment's charge refunded in all (`charge.refunded`'s
-- `amount_refunded`): the reconciliation report flags it when our refunds explain less.
ALTER TABLE payments ADD COLUMN gateway_refunded_minor bigint CHECK (gateway_refunded_minor >= 0);

-- Disputes (chargebacks) of card payments, from Stripe's `charge.dispute.*` events. While one is
-- open (closed_at IS NULL) its application takes no officer's decision.
CREATE TABLE disputes (
    id                uuid PRIMARY KEY,
    -- Stripe's dispute id (dp_...).
    gateway_reference text NOT NULL UNIQUE,
    payment_id        uuid NOT NULL REFERENCES payments (id),
    amount_minor      bigint NOT NULL CHECK (amount_minor > 0),
    currency          char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    reason            text NOT NULL,
    -- Stripe's status as last reported (needs_response, under_review, won, lost, ...).
    status            text NOT NULL,
    -- How it ended: won (the money stays), lost (the card holder's bank took it back),
    -- warning_closed (an inquiry that never became a chargeback).
    outcome           text CHECK (outcome IN ('won', 'lost', 'warning_closed')),
    opened_at         timestamptz NOT NULL DEFAULT now(),
    closed_at         timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((closed_at IS NULL) = (outcome IS NULL))
);
CREATE INDEX disputes_by_payment ON disputes (payment_id, id);
CREATE INDEX disputes_open ON disputes (payment_id) WHERE closed_at IS NULL;
