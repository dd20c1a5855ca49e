-- Tamper evidence for the event logs: every application and payment event stores the hash of the
-- event before it (of the same application or payment) and its own hash over its contents, so
-- that changing or removing a row breaks the chain. `evisa audit verify` walks the chains.

ALTER TABLE application_events ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;
ALTER TABLE payment_events ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;

-- The hash of one event: SHA-256 over the previous hash and the event's fields, in a fixed form.
CREATE FUNCTION audit_hash(prev bytea, id bigint, entity uuid, event text, from_status text,
                           to_status text, actor_kind text, actor_id uuid, cause text,
                           occurred_at timestamptz) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(coalesce(prev, ''::bytea) || convert_to(concat_ws('|', id, entity, event,
        coalesce(from_status, ''), to_status, actor_kind, coalesce(actor_id::text, ''),
        coalesce(cause, ''), (extract(epoch FROM occurred_at) * 1000000)::bigint), 'UTF8'))
$$;

CREATE FUNCTION chain_application_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One writer per application's chain at a time.
    PERFORM pg_advisory_xact_lock(hashtextextended('application:' || NEW.application_id::text, 0));
    SELECT hash INTO NEW.prev_hash FROM application_events
     WHERE application_id = NEW.application_id ORDER BY id DESC LIMIT 1;
    NEW.hash := audit_hash(NEW.prev_hash, NEW.id, NEW.application_id, NEW.event, NEW.from_status,
                           NEW.to_status, NEW.actor_kind, NEW.actor_id, NEW.cause, NEW.occurred_at);
    RETURN NEW;
END $$;
CREATE TRIGGER application_events_chain BEFORE INSERT ON application_events
    FOR EACH ROW EXECUTE FUNCTION chain_application_event();

CREATE FUNCTION chain_payment_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('payment:' || NEW.payment_id::text, 0));
    SELECT hash INTO NEW.prev_hash FROM payment_events
     WHERE payment_id = NEW.payment_id ORDER BY id DESC LIMIT 1;
    NEW.hash := audit_hash(NEW.prev_hash, NEW.id, NEW.payment_id, NEW.event, NEW.from_status,
                           NEW.to_status, NEW.actor_kind, NEW.actor_id, NEW.cause, NEW.occurred_at);
    RETURN NEW;
END $$;
CREATE TRIGGER payment_events_chain BEFORE INSERT ON payment_events
    FOR EACH ROW EXECUTE FUNCTION chain_payment_event();

-- Chain the events written before this migration, in order.
DO $$
DECLARE
    r record;
    prev bytea;
    last_entity uuid;
BEGIN
    ALTER TABLE application_events DISABLE TRIGGER application_events_append_only;
    FOR r IN SELECT * FROM application_events ORDER BY application_id, id LOOP
        IF last_entity IS DISTINCT FROM r.application_id THEN
            prev := NULL;
            last_entity := r.application_id;
        END IF;
        UPDATE application_events
           SET prev_hash = prev,
               hash = audit_hash(prev, r.id, r.application_id, r.event, r.from_status, r.to_status,
                                 r.actor_kind, r.actor_id, r.cause, r.occurred_at)
         WHERE id = r.id RETURNING hash INTO prev;
    END LOOP;
    ALTER TABLE application_events ENABLE TRIGGER application_events_append_only;

    last_entity := NULL;
    ALTER TABLE payment_events DISABLE TRIGGER payment_events_append_only;
    FOR r IN SELECT * FROM payment_events ORDER BY payment_id, id LOOP
        IF last_entity IS DISTINCT FROM r.payment_id THEN
            prev := NULL;
            last_entity := r.payment_id;
        END IF;
        UPDATE payment_events
           SET prev_hash = prev,
               hash = audit_hash(prev, r.id, r.payment_id, r.event, r.from_status, r.to_status,
                                 r.actor_kind, r.actor_id, r.cause, r.occurred_at)
         WHERE id = r.id RETURNING hash INTO prev;
    END LOOP;
    ALTER TABLE payment_events ENABLE TRIGGER payment_events_append_only;
END $$;

ALTER TABLE application_events ALTER COLUMN hash SET NOT NULL;
ALTER TABLE payment_events ALTER COLUMN hash SET NOT NULL;
