-- The event logs' hash chains are now computed by the INSERT that appends each event
-- (`payment::store::record_event`, `application::store::record_event`), under the row lock of the
-- payment or application that every writer already holds, instead of by a PL/pgSQL row trigger
-- taking an advisory lock: the same `audit_hash`, the same chains, at a fraction of the cost.
--
-- Nothing can fork a chain: a second event appended after the same predecessor (two writers that
-- did not hold the lock) violates the unique index below and fails, instead of branching. The
-- first event of each chain has no predecessor (NULL), and NULLS NOT DISTINCT makes that unique
-- too. `evisa audit verify` checks every hash and link as before.
DROP TRIGGER payment_events_chain ON payment_events;
DROP TRIGGER application_events_chain ON application_events;
DROP FUNCTION chain_payment_event();
DROP FUNCTION chain_application_event();
CREATE UNIQUE INDEX payment_events_one_successor
    ON payment_events (payment_id, prev_hash) NULLS NOT DISTINCT;
CREATE UNIQUE INDEX application_events_one_successor
    ON application_events (application_id, prev_hash) NULLS NOT DISTINCT;
