//! The operator's one-off commands against the database: staff accounts (`evisa user`) and
//! field-encryption keys (`evisa keys`).

use std::io::BufRead;

use anyhow::Context;
use clap::Subcommand;
use evisa_core::{
    auth,
    crypto::DataKeys,
    db,
    person::Email,
    users::{self, Role},
};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account. The password is read from standard input with --password-stdin;
    /// otherwise a random one is generated and printed once.
    Create {
        #[arg(long)]
        email: String,
        /// applicant, officer or admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account: it can no longer sign in, and every token it holds stops working.
    Disable {
        #[arg(long)]
        email: String,
    },
    /// Change an account's role (applicant, officer or admin); its tokens stop working.
    SetRole {
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Print a new random key entry for EVISA_DATA_KEYS (`id:base64`).
    Generate {
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Re-seal every personal field under the current (first) key of EVISA_DATA_KEYS, in
    /// batches, beside the running service; resumable. Prints counts per key id.
    Rotate {
        /// Applications per transaction.
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
}

/// The database of the CLI's one-off commands: DATABASE_URL, or dev's database.
pub async fn connect_from_env(max_connections: u32) -> anyhow::Result<sqlx::PgPool> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/evisa".into());
    db::connect(&url, max_connections)
        .await
        .context("cannot reach Postgres (DATABASE_URL)")
}

/// `evisa keys rotate`: needs DATABASE_URL and the key ring with the new key first.
pub async fn rotate_keys(batch: i64) -> anyhow::Result<()> {
    let spec = match (
        std::env::var("EVISA_DATA_KEYS"),
        std::env::var("EVISA_DATA_KEYS_FILE"),
    ) {
        (Ok(v), _) => v,
        (_, Ok(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading EVISA_DATA_KEYS_FILE {path}"))?,
        _ => anyhow::bail!(
            "EVISA_DATA_KEYS (or EVISA_DATA_KEYS_FILE) is required: the new key first, then the old ones"
        ),
    };
    let keys = DataKeys::parse(spec.trim()).map_err(|e| anyhow::anyhow!("EVISA_DATA_KEYS: {e}"))?;
    let pool = connect_from_env(2).await?;
    let report = evisa_core::application::rekey::rotate(&pool, &keys, batch).await?;
    for (old, n) in &report.resealed {
        println!(
            "re-sealed {n} values from key {old} to {}",
            keys.current_key_id()
        );
    }
    println!("{} applications re-sealed", report.applications);
    let secrets = evisa_core::notify::endpoints::reseal(&pool, &keys).await?;
    println!("{secrets} notification endpoint secrets re-sealed");
    let now = evisa_core::application::rekey::values_per_key(&pool).await?;
    for (id, n) in &now {
        println!("key {id}: {n} values");
    }
    if now.keys().all(|id| id == keys.current_key_id()) {
        println!(
            "every value is under {}: the other keys can be dropped from EVISA_DATA_KEYS",
            keys.current_key_id()
        );
    } else {
        println!(
            "some values are under other keys still (written meanwhile by a process that does not have the new key first?): run again"
        );
    }
    Ok(())
}

/// `evisa user ...`: staff accounts, straight against the database.
pub async fn user_command(command: UserCommand) -> anyhow::Result<()> {
    let connect = || connect_from_env(2);
    let email_arg = |email: &str| Email::parse(email).map_err(|e| anyhow::anyhow!("--email {e}"));
    match command {
        UserCommand::Create {
            email,
            role,
            password_stdin,
        } => {
            let email = email_arg(&email)?;
            let role: Role = role.parse().map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_string(), false)
            } else {
                let entry = DataKeys::generate_entry("p");
                (entry[2..].trim_end_matches('=').to_string(), true)
            };
            auth::check_password_policy(&password).map_err(|e| anyhow::anyhow!("password {e}"))?;
            let pool = connect().await?;
            let hash = auth::hash_password(&password);
            let id = users::create(&pool, &email, &hash, role).await?;
            println!("created {role} {id}");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Disable { email } => {
            let email = email_arg(&email)?;
            if !users::disable(&connect().await?, &email).await? {
                anyhow::bail!("no account with that email");
            }
            println!("disabled; every token of this account is revoked");
        }
        UserCommand::SetRole { email, role } => {
            let email = email_arg(&email)?;
            let role: Role = role.parse().map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            if !users::set_role(&connect().await?, &email, role).await? {
                anyhow::bail!("no account with that email");
            }
            println!("role set to {role}; every token of this account is revoked");
        }
    }
    Ok(())
}
