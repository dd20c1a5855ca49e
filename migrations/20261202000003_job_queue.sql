-- evisa's own job table, driven by apalis's workers (worker/src/queue.rs). A job is one row while
-- it waits or runs; when it is done it moves, in batches, to `jobs_done`, an append-only history
-- pruned by age, so that fetching never wades through finished jobs however long the history.
CREATE TABLE jobs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue        text NOT NULL,
    -- The job's arguments as JSON (the job kinds are in core/src/jobs.rs).
    args         bytea NOT NULL,
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL CHECK (max_attempts > 0),
    -- The worker that claimed it (apalis worker name), while it runs.
    locked_by    text,
    locked_at    timestamptz,
    last_error   text,
    -- Set when it exhausted its attempts or was aborted: it waits for `evisa jobs retry`.
    dead_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- What a fetch reads: waiting jobs only, oldest due first.
CREATE INDEX jobs_waiting ON jobs (queue, run_at) WHERE locked_by IS NULL AND dead_at IS NULL;
CREATE INDEX jobs_claimed ON jobs (locked_by) WHERE locked_by IS NOT NULL;
CREATE INDEX jobs_dead ON jobs (dead_at) WHERE dead_at IS NOT NULL;

CREATE TABLE jobs_done (
    id         bigint NOT NULL,
    queue      text NOT NULL,
    attempts   integer NOT NULL,
    created_at timestamptz NOT NULL,
    done_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_done_by_age ON jobs_done USING brin (done_at);

-- Workers say they are alive here; the jobs of one that stopped saying so are taken back.
CREATE TABLE job_workers (
    name      text PRIMARY KEY,
    queue     text NOT NULL,
    last_seen timestamptz NOT NULL
);

-- Jobs that were waiting in apalis's table when this migration ran keep their place.
DO $$
BEGIN
    IF to_regclass('apalis.jobs') IS NOT NULL THEN
        INSERT INTO jobs (queue, args, run_at, attempts, max_attempts, last_error, dead_at)
        SELECT job_type, job, run_at, attempts, greatest(max_attempts, 1), last_result::text,
               CASE WHEN status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts)
                    THEN coalesce(done_at, now()) END
          FROM apalis.jobs
         WHERE status <> 'Done' AND job_type LIKE 'evisa.%';
    END IF;
END $$;
