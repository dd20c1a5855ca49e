-- Reconciliation reports run as jobs: an admin starts one, a worker compares every payment since
-- the date with its gateway, and the admin reads the result later (no gateway calls inside a
-- request).
CREATE TABLE reconciliation_reports (
    id            uuid PRIMARY KEY,
    requested_by  uuid NOT NULL REFERENCES users (id),
    since         date NOT NULL,
    status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    checked       integer,
    disagreements jsonb,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
