//! `evisa audit ...`: the tamper-evident event logs, checked from outside the service.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Subcommand;
use evisa_core::audit;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chains of every application's and payment's events, and check that every
    /// status is the last one its log records; with --checkpoint, also that no chain is shorter
    /// than the checkpoint says or was rewritten since. Exit status 1 on the first problem.
    Verify {
        /// A checkpoint written by `evisa audit checkpoint` (needs EVISA_AUDIT_VERIFY_KEY).
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Print a checkpoint of every chain (length and head), signed with EVISA_AUDIT_SIGNING_KEY,
    /// to keep somewhere the database's administrators cannot write.
    Checkpoint {
        /// Write it here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print a new signing key pair for checkpoints (EVISA_AUDIT_SIGNING_KEY and
    /// EVISA_AUDIT_VERIFY_KEY).
    Keygen,
}

fn env(var: &str) -> anyhow::Result<String> {
    std::env::var(var).with_context(|| format!("{var} is required"))
}

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    if let AuditCommand::Keygen = command {
        let (private, public) = audit::checkpoint::generate_key();
        println!("EVISA_AUDIT_SIGNING_KEY={private}");
        println!("EVISA_AUDIT_VERIFY_KEY={public}");
        return Ok(ExitCode::SUCCESS);
    }
    let pool = crate::connect_from_env(2).await?;
    match command {
        AuditCommand::Keygen => unreachable!("answered above"),
        AuditCommand::Checkpoint { out } => {
            let signed = audit::checkpoint::take(&pool, &env("EVISA_AUDIT_SIGNING_KEY")?).await?;
            let text = serde_json::to_string_pretty(&signed)?;
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{text}"),
            }
            eprintln!(
                "audit: checkpoint of {} chains",
                signed.checkpoint.chains.len()
            );
        }
        AuditCommand::Verify { checkpoint } => {
            let (checked, broken) = audit::verify(&pool).await?;
            if let Some(link) = broken {
                println!("audit: {checked} events checked; first broken link: {link}");
                return Ok(ExitCode::FAILURE);
            }
            if let Some(problem) = audit::status_mismatch(&pool).await? {
                println!("audit: {checked} events checked; {problem}");
                return Ok(ExitCode::FAILURE);
            }
            if let Some(path) = checkpoint {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let signed: audit::checkpoint::SignedCheckpoint =
                    serde_json::from_str(&text).context("the checkpoint file is not one")?;
                let cp = audit::checkpoint::open(&signed, &env("EVISA_AUDIT_VERIFY_KEY")?)?;
                if let Some(problem) = audit::checkpoint::compare(&pool, &cp).await? {
                    println!(
                        "audit: {checked} events checked; against the checkpoint of {}: {problem}",
                        cp.created_at
                    );
                    return Ok(ExitCode::FAILURE);
                }
                println!(
                    "audit: {checked} events checked; every chain holds and extends the checkpoint of {} ({} chains)",
                    cp.created_at,
                    cp.chains.len()
                );
            } else {
                println!("audit: {checked} events checked; every chain holds");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
