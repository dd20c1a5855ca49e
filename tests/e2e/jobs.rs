//! The job layer itself, as `evisa work` configures it.

use std::time::Duration;

use crate::common::spawn_app_with;

/// A finished job leaves the queue without waiting for the next poll, even when it ended while
/// the worker's fetch was asking Postgres: apalis hands outcomes to the storage only when the
/// worker's task runs outside a fetch, and after a fetch that finds nothing the task sleeps
/// until something wakes it. Here every claim takes 100 ms (a statement trigger sleeps), so the
/// no-op jobs of each batch end while the next fetch runs, and the last fetch finds nothing.
/// With polls and heartbeats (which also wake the worker) a minute apart, each of three drains
/// of 2,000 jobs must have stored every outcome well before the minute is up; a drain whose
/// last outcomes waited for the poll takes it.
#[tokio::test]
async fn finished_jobs_leave_the_queue_without_waiting_for_the_poll() {
    let app = spawn_app_with(&[
        ("EVISA_JOB_POLL_MS", "60000"),
        // Heartbeats every third of it: a minute.
        ("EVISA_JOB_ORPHAN_TIMEOUT_SECONDS", "180"),
    ])
    .await;
    sqlx::raw_sql(
        "CREATE FUNCTION slow_claims() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.1); RETURN NULL; END $$;
         CREATE TRIGGER slow_claims BEFORE UPDATE ON jobs
             FOR EACH STATEMENT EXECUTE FUNCTION slow_claims();",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let config = app.config();
    for round in 0..3 {
        let drained = tokio::time::timeout(
            Duration::from_secs(30),
            evisa_worker::bench::drain(&app.db, &config, 2000),
        )
        .await;
        assert!(
            matches!(drained, Ok(Ok(_))),
            "round {round}: the last outcomes waited for the poll: {drained:?}"
        );
    }
}
