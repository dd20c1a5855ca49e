-- The event logs hold against TRUNCATE too (row triggers do not see it), and the service runs as
-- a role that cannot change them at all: `evisa_service` may read and append to the logs, and
-- read and write everything else, but neither update, delete nor truncate a log row, nor alter a
-- table (only the owner, who runs migrations, can). `serve` and `work` refuse to start as a role
-- that could. Operators give their service login this role: see the README.

CREATE FUNCTION forbid_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: TRUNCATE is refused', TG_TABLE_NAME;
END $$;
CREATE TRIGGER application_events_no_truncate BEFORE TRUNCATE ON application_events
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_truncate();
CREATE TRIGGER payment_events_no_truncate BEFORE TRUNCATE ON payment_events
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_truncate();

-- Roles belong to the whole cluster; another database may have made it already.
DO $$
BEGIN
    CREATE ROLE evisa_service NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

GRANT USAGE ON SCHEMA public TO evisa_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO evisa_service;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO evisa_service;
REVOKE UPDATE, DELETE, TRUNCATE ON application_events, payment_events FROM evisa_service;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON _sqlx_migrations FROM evisa_service;
-- Tables of later migrations: the same, and a later migration that adds a log revokes again.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO evisa_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO evisa_service;
