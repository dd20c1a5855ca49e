-- Group and family payments: one payment (one gateway charge) may pay several applications. Which
-- applications a payment pays, and how much of it is each one's, are its allocations; a payment
-- of one application has one allocation. The rules that were on `payments.application_id` move
-- onto allocations, so that the database enforces them for single and group payments alike.

CREATE TABLE payment_allocations (
    payment_id     uuid NOT NULL REFERENCES payments (id),
    application_id uuid NOT NULL REFERENCES applications (id),
    -- The application's fee in the payment's currency, fixed when the payment is made.
    amount_minor   bigint NOT NULL CHECK (amount_minor > 0),
    currency       char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- What succeeded refunds of this application's share gave back.
    refunded_minor bigint NOT NULL DEFAULT 0
                       CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    -- The payment's status, kept in step by `payment_allocations_follow_payment` (below), so
    -- that the partial unique indexes can see it.
    payment_status text NOT NULL CHECK (payment_status IN
                       ('created', 'processing', 'requires_action', 'succeeded', 'failed',
                        'cancelled', 'expired')),
    PRIMARY KEY (payment_id, application_id)
);

INSERT INTO payment_allocations (payment_id, application_id, amount_minor, currency,
                                 refunded_minor, payment_status)
SELECT id, application_id, amount_minor, currency, refunded_amount_minor, status FROM payments;

-- At most one payment in flight per application, and never two that succeeded: single or group.
DROP INDEX payments_one_open_per_application;
DROP INDEX payments_one_success_per_application;
CREATE UNIQUE INDEX payment_allocations_one_open_per_application
    ON payment_allocations (application_id)
    WHERE payment_status IN ('created', 'processing', 'requires_action');
CREATE UNIQUE INDEX payment_allocations_one_success_per_application
    ON payment_allocations (application_id) WHERE payment_status = 'succeeded';
CREATE INDEX payment_allocations_by_application ON payment_allocations (application_id, payment_id);

-- The allocations take the payment's status in the statement that changes it.
CREATE FUNCTION payment_allocations_follow_payment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE payment_allocations SET payment_status = NEW.status WHERE payment_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER payment_allocations_follow_payment AFTER UPDATE OF status ON payments
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION payment_allocations_follow_payment();

-- While a payment is in flight, none of its applications expires, changes its fee, owner or
-- particulars, or moves anywhere but to `paid`. (Re-sealing personal data under a new key is
-- not an edit and stays allowed.)
CREATE FUNCTION applications_held_by_payment_in_flight() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    holder uuid;
BEGIN
    SELECT payment_id INTO holder FROM payment_allocations
     WHERE application_id = OLD.id
       AND payment_status IN ('created', 'processing', 'requires_action')
     LIMIT 1;
    IF holder IS NOT NULL THEN
        RAISE EXCEPTION 'application % is held by payment % in flight', OLD.id, holder
            USING ERRCODE = 'object_in_use', CONSTRAINT = 'applications_held_by_payment_in_flight';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER applications_held_by_payment_in_flight BEFORE UPDATE ON applications
    FOR EACH ROW WHEN (
        (OLD.status IS DISTINCT FROM NEW.status AND NEW.status <> 'paid')
        OR (OLD.applicant_id, OLD.nationality, OLD.visa_type, OLD.processing_speed,
            OLD.intended_arrival_date, OLD.fee_rule_id, OLD.fee_amount_minor, OLD.fee_currency,
            OLD.fee_exempt, OLD.fee_prices::text)
           IS DISTINCT FROM
           (NEW.applicant_id, NEW.nationality, NEW.visa_type, NEW.processing_speed,
            NEW.intended_arrival_date, NEW.fee_rule_id, NEW.fee_amount_minor, NEW.fee_currency,
            NEW.fee_exempt, NEW.fee_prices::text))
    EXECUTE FUNCTION applications_held_by_payment_in_flight();

-- A refund asked for through evisa-pay gives back part of one application's share. A refund made
-- at the gateway, outside evisa-pay, of a group payment names no application (it is bounded by
-- the payment's total, as before).
ALTER TABLE refunds ADD COLUMN application_id uuid REFERENCES applications (id);
UPDATE refunds r SET application_id = p.application_id FROM payments p WHERE p.id = r.payment_id;
ALTER TABLE refunds ADD CONSTRAINT refunds_name_their_application
    CHECK (origin = 'gateway' OR application_id IS NOT NULL);
ALTER TABLE refunds ADD CONSTRAINT refunds_of_an_allocation
    FOREIGN KEY (payment_id, application_id) REFERENCES payment_allocations (payment_id, application_id);
CREATE INDEX refunds_by_allocation ON refunds (payment_id, application_id);
