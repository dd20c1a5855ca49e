//! What a benchmark run cost the machine: commits and statements in the service's database, and
//! CPU seconds of Postgres and of the service, read before and after the measured phase.
//!
//! Commits are the transactions that wrote (each took a transaction id; read-only ones take
//! none), beside every transaction `pg_stat_database` counted; statements from `pg_stat_statements` when the server has
//! it loaded (transaction control and this probe's own queries are not counted), "n/a"
//! otherwise; CPU from `/proc/<pid>/stat` (Postgres: the postmaster, its live children, and the
//! children it has already reaped).

use std::time::Instant;

use sqlx::PgPool;

/// Where to look.
pub struct Probe {
    db: PgPool,
    server_pid: Option<u32>,
    postgres_pid: Option<u32>,
    ticks_per_second: f64,
}

/// One reading.
#[derive(Clone, Copy)]
pub struct Reading {
    at: Instant,
    commits: i64,
    /// Transaction ids handed out so far (cluster-wide): one per transaction that wrote.
    xids: i64,
    statements: Option<i64>,
    postgres_cpu: Option<f64>,
    server_cpu: Option<f64>,
}

/// What happened between two readings, per unit of work.
pub struct Cost {
    /// Transactions that wrote (each a durable commit: a WAL flush).
    pub commits: f64,
    /// Every transaction, read-only ones too (`pg_stat_database.xact_commit`).
    pub transactions: f64,
    pub statements: Option<f64>,
    /// CPU milliseconds.
    pub postgres_cpu_ms: Option<f64>,
    pub server_cpu_ms: Option<f64>,
    /// Cores busy on average over the interval.
    pub postgres_cores: Option<f64>,
    pub server_cores: Option<f64>,
}

impl Probe {
    pub async fn new(
        database_url: &str,
        server_pid: Option<u32>,
        postgres_pid: Option<u32>,
    ) -> anyhow::Result<Self> {
        let db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(database_url)
            .await?;
        let ticks_per_second = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0);
        Ok(Self {
            db,
            server_pid,
            postgres_pid,
            ticks_per_second,
        })
    }

    pub async fn read(&self) -> anyhow::Result<Reading> {
        // Statistics are sent to the collector at transaction end and cached per transaction:
        // clear the snapshot so this reading sees what is there now.
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&self.db)
            .await?;
        let commits: i64 = sqlx::query_scalar(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&self.db)
        .await?;
        // The next transaction id, read without taking one.
        let xids: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
                .fetch_one(&self.db)
                .await?;
        let statements: Option<i64> = sqlx::query_scalar(
            "SELECT sum(calls)::bigint FROM pg_stat_statements
              WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND query !~* '^\\s*(begin|commit|rollback|start transaction)'
                AND query !~ 'pg_stat_'",
        )
        .fetch_one(&self.db)
        .await
        .ok()
        .flatten();
        Ok(Reading {
            at: Instant::now(),
            commits,
            xids,
            statements,
            postgres_cpu: self.postgres_pid.and_then(|p| self.tree_cpu(p)),
            server_cpu: self.server_pid.and_then(|p| self.own_cpu(p, false)),
        })
    }

    /// utime + stime (+ the reaped children's, with `children`) of one process, in seconds.
    fn own_cpu(&self, pid: u32, children: bool) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name (which may hold spaces).
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
        let n = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
        let mut ticks = n(14)? + n(15)?;
        if children {
            ticks += n(16)? + n(17)?;
        }
        Some(ticks / self.ticks_per_second)
    }

    /// The postmaster, every live child of it, and the children it has reaped.
    fn tree_cpu(&self, postmaster: u32) -> Option<f64> {
        let mut total = self.own_cpu(postmaster, true)?;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                });
            if parent == Some(postmaster) {
                total += self.own_cpu(pid, false).unwrap_or(0.0);
            }
        }
        Some(total)
    }

    /// The service's peak resident memory so far, in MB (`VmHWM`).
    pub fn server_peak_rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.server_pid?)).ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

impl Reading {
    /// The cost of `units` of work done between `self` and `later`.
    pub fn cost_until(&self, later: &Reading, units: usize) -> Cost {
        let units = units.max(1) as f64;
        let seconds = (later.at - self.at).as_secs_f64();
        let delta = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        let pg = delta(self.postgres_cpu, later.postgres_cpu);
        let srv = delta(self.server_cpu, later.server_cpu);
        Cost {
            commits: (later.xids - self.xids) as f64 / units,
            transactions: (later.commits - self.commits) as f64 / units,
            statements: delta(
                self.statements.map(|s| s as f64),
                later.statements.map(|s| s as f64),
            )
            .map(|s| s / units),
            postgres_cpu_ms: pg.map(|s| s * 1000.0 / units),
            server_cpu_ms: srv.map(|s| s * 1000.0 / units),
            postgres_cores: pg.map(|s| s / seconds),
            server_cores: srv.map(|s| s / seconds),
        }
    }
}

impl Cost {
    /// Prints the figures, one per line, each prefixed by `what` (e.g. "per payment").
    pub fn print(&self, what: &str) {
        let or_na = |v: Option<f64>, digits: usize| {
            v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"))
        };
        println!(
            "commits {what}: {:.2} (transactions that wrote; {:.2} with read-only ones)",
            self.commits, self.transactions
        );
        println!(
            "statements {what}: {}",
            self.statements.map_or(
                "n/a (pg_stat_statements is not loaded)".to_string(),
                |s| format!("{s:.1}")
            )
        );
        println!(
            "Postgres CPU {what}: {} ms ({} cores busy)",
            or_na(self.postgres_cpu_ms, 2),
            or_na(self.postgres_cores, 2)
        );
        println!(
            "service CPU {what}: {} ms ({} cores busy)",
            or_na(self.server_cpu_ms, 2),
            or_na(self.server_cores, 2)
        );
    }
}

impl Probe {
    /// Gateway callbacks stored but not yet applied.
    pub async fn unprocessed_callbacks(&self) -> anyhow::Result<i64> {
        Ok(evisa_core::inbox::unprocessed(&self.db).await?)
    }

    pub fn pool(&self) -> &PgPool {
        &self.db
    }
}
