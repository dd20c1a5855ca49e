//! `evisa bench`: load against a running service, and the job layer alone, printing figures.
//! `scripts/bench.sh` runs them all beside pgbench.

mod jobs;
mod payments;
mod probe;
mod webhooks;

use clap::Subcommand;

pub use jobs::JobBench;
pub use payments::Bench;

/// Where the cost of a run is read, when given.
#[derive(clap::Args)]
pub struct ProbeArgs {
    /// The service's database: commits and statements of the run are read from it.
    #[arg(long)]
    pub database_url: Option<String>,
    /// The service's process id, for its CPU time and peak memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The postmaster's process id, for Postgres's CPU time.
    #[arg(long)]
    pub postgres_pid: Option<u32>,
}

impl ProbeArgs {
    async fn probe(&self) -> anyhow::Result<Option<probe::Probe>> {
        match &self.database_url {
            None => Ok(None),
            Some(url) => Ok(Some(
                probe::Probe::new(url, self.server_pid, self.postgres_pid).await?,
            )),
        }
    }
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Card payments end to end (sandbox gateway): payments/s, POST→succeeded latency, and with
    /// --database-url the commits, statements and CPU per payment.
    Payments {
        /// The service's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        /// Payments offered per second (open loop); 0 for closed loop at --concurrency.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Payers in closed-loop mode.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[command(flatten)]
        probe: ProbeArgs,
    },
    /// Signed Stripe webhooks about succeeded payments: verified and stored per second.
    Webhooks {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        /// The webhook signing secret the service verifies with.
        #[arg(long, default_value = evisa_core::config::SANDBOX_WEBHOOK_SECRET)]
        secret: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[command(flatten)]
        probe: ProbeArgs,
    },
    /// The job layer as `evisa work` configures it (DATABASE_URL, EVISA_JOB_*): no-op jobs/s,
    /// then again beside a history of finished jobs.
    Jobs {
        /// No-op jobs per drain (a drain of 100,000 takes about a second and a half here: long
        /// enough that the wait for the last outcomes and the start of the worker do not weigh).
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        /// Finished jobs to add to the history before the second measurement.
        #[arg(long, default_value_t = 1_000_000)]
        history: usize,
    },
}

pub async fn run(command: BenchCommand, config: evisa_core::config::Config) -> anyhow::Result<()> {
    match command {
        BenchCommand::Payments {
            base,
            rate,
            seconds,
            concurrency,
            probe,
        } => {
            payments::run(Bench {
                base,
                rate,
                seconds,
                concurrency,
                probe: probe.probe().await?,
            })
            .await
        }
        BenchCommand::Webhooks {
            base,
            secret,
            seconds,
            concurrency,
            probe,
        } => {
            let Some(probe) = probe.probe().await? else {
                anyhow::bail!("--database-url is needed: the events are about its payments");
            };
            webhooks::run(webhooks::WebhookBench {
                base,
                secret,
                seconds,
                concurrency,
                probe,
            })
            .await
        }
        BenchCommand::Jobs { jobs, history } => jobs::run(JobBench { jobs, history }, config).await,
    }
}
