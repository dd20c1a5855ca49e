//! `evisa bench jobs`: the job layer alone, as `evisa work` configures it, in the database of
//! DATABASE_URL (migrated first): no-op jobs drained per second with an empty history, then with
//! `history` finished jobs beside them.

use evisa_core::{config::Config, db};

pub struct JobBench {
    pub jobs: usize,
    pub history: usize,
}

pub async fn run(b: JobBench, config: Config) -> anyhow::Result<()> {
    let pool = db::connect(config.database_url.expose(), 40).await?;
    db::migrate(&pool).await?;
    println!(
        "job layer: concurrency {}, batch {}, poll {} ms (as `evisa work` runs it)",
        config.jobs.concurrency,
        config.jobs.batch_size,
        config.jobs.poll_interval.as_millis()
    );
    let mut pickups = evisa_worker::bench::pickup(&pool, &config, 200).await?;
    pickups.sort();
    let ms = |i: usize| pickups[i.min(pickups.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "one job added to an idle worker, commit to run: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(pickups.len() / 2),
        ms(pickups.len() * 99 / 100),
        ms(pickups.len() - 1)
    );
    let empty = drains(&pool, &config, b.jobs).await?;
    println!(
        "no-op jobs, empty history: {} in {:.2} s = {:.0} jobs/s (median of {DRAINS} drains)",
        b.jobs,
        b.jobs as f64 / empty,
        empty
    );
    evisa_worker::bench::add_history(&pool, b.history).await?;
    let long = drains(&pool, &config, b.jobs).await?;
    println!(
        "no-op jobs, {} finished jobs in the history: {} in {:.2} s = {long:.0} jobs/s ({:+.1}%, median of {DRAINS} drains)",
        b.history,
        b.jobs,
        b.jobs as f64 / long,
        (long / empty - 1.0) * 100.0
    );
    Ok(())
}

/// Drains per measurement: one drain takes a second or two here, so the median of a few is what
/// is printed.
const DRAINS: usize = 5;

/// The median rate, in jobs/s, of [`DRAINS`] drains of `jobs` no-op jobs, each started alike.
async fn drains(pool: &sqlx::PgPool, config: &Config, jobs: usize) -> anyhow::Result<f64> {
    let mut rates = Vec::new();
    for _ in 0..DRAINS {
        settle(pool).await;
        let took = evisa_worker::bench::drain(pool, config, jobs).await?;
        rates.push(jobs as f64 / took.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[DRAINS / 2])
}

/// Every drain starts alike: the dead rows of the jobs before vacuumed and the writes before
/// checkpointed, as autovacuum and the checkpointer would have done by then on a running
/// system. Without it the second drain meets the first one's dead rows in `jobs` and the
/// million history rows' checkpoint, and measures those rather than the history's size.
/// (CHECKPOINT needs a superuser or `pg_checkpoint`; without it the bench runs on.)
async fn settle(pool: &sqlx::PgPool) {
    for statement in ["VACUUM (ANALYZE) jobs, jobs_done", "CHECKPOINT"] {
        if let Err(e) = sqlx::query(statement).execute(pool).await {
            eprintln!("bench jobs: {statement} failed ({e}); measuring anyway");
        }
    }
}
