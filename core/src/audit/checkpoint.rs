//! Signed checkpoints of the event logs (`evisa audit checkpoint`): the length and head hash of
//! every chain, signed with an Ed25519 key kept outside the database. Kept elsewhere, a
//! checkpoint shows what the hash chains alone cannot: that a chain lost its tail, or that every
//! hash was recomputed after a rewrite. `evisa audit verify --checkpoint` checks both.

use base64::Engine;
use ring::{
    rand::SystemRandom,
    signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};
use sqlx::PgPool;

use super::LOGS;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One chain as it stood: the events of one application or payment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainHead {
    /// `application_events` or `payment_events`.
    pub log: String,
    pub entity: uuid::Uuid,
    /// Events in the chain.
    pub length: i64,
    /// The hash of its last event, hex.
    pub head: String,
}

/// What is signed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub chains: Vec<ChainHead>,
}

/// A checkpoint and its signature, as written to a file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// Ed25519 over the checkpoint's JSON as serialised here, base64.
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the signing key is not an Ed25519 PKCS#8 key in base64 (EVISA_AUDIT_SIGNING_KEY)")]
    BadSigningKey,
    #[error("the verifying key is not an Ed25519 public key in base64 (EVISA_AUDIT_VERIFY_KEY)")]
    BadVerifyKey,
    #[error("the checkpoint's signature does not verify: it was altered or signed by another key")]
    BadSignature,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A new signing key pair: (private PKCS#8, public), both base64.
pub fn generate_key() -> (String, String) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .expect("the system random source works");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a fresh key parses");
    (
        B64.encode(pkcs8.as_ref()),
        B64.encode(pair.public_key().as_ref()),
    )
}

/// The heads of every chain now, signed with `signing_key` (base64 PKCS#8).
pub async fn take(pool: &PgPool, signing_key: &str) -> Result<SignedCheckpoint, CheckpointError> {
    let pkcs8 = B64
        .decode(signing_key.trim())
        .map_err(|_| CheckpointError::BadSigningKey)?;
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| CheckpointError::BadSigningKey)?;
    let mut chains = Vec::new();
    // One snapshot for both logs.
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    for (log, entity) in LOGS {
        let sql = format!(
            "SELECT DISTINCT ON ({entity}) {entity}, count(*) OVER (PARTITION BY {entity}), encode(hash, 'hex')
               FROM {log} ORDER BY {entity}, id DESC"
        );
        let rows: Vec<(uuid::Uuid, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *tx)
            .await?;
        chains.extend(rows.into_iter().map(|(id, length, head)| ChainHead {
            log: log.to_string(),
            entity: id,
            length,
            head,
        }));
    }
    tx.commit().await?;
    let checkpoint = Checkpoint {
        version: 1,
        created_at: chrono::Utc::now(),
        chains,
    };
    let signature = pair.sign(&signed_bytes(&checkpoint));
    Ok(SignedCheckpoint {
        checkpoint,
        signature: B64.encode(signature.as_ref()),
    })
}

fn signed_bytes(c: &Checkpoint) -> Vec<u8> {
    serde_json::to_vec(c).expect("a checkpoint serialises")
}

/// The checkpoint, if `verify_key` (base64 public key) signed it.
pub fn open(signed: &SignedCheckpoint, verify_key: &str) -> Result<Checkpoint, CheckpointError> {
    let public = B64
        .decode(verify_key.trim())
        .map_err(|_| CheckpointError::BadVerifyKey)?;
    let signature = B64
        .decode(&signed.signature)
        .map_err(|_| CheckpointError::BadSignature)?;
    UnparsedPublicKey::new(&ED25519, public)
        .verify(&signed_bytes(&signed.checkpoint), &signature)
        .map_err(|_| CheckpointError::BadSignature)?;
    Ok(signed.checkpoint.clone())
}

/// How the log differs from a checkpoint: the first chain that lost events or whose recorded
/// head was replaced.
pub async fn compare(
    pool: &PgPool,
    checkpoint: &Checkpoint,
) -> Result<Option<String>, sqlx::Error> {
    for chain in &checkpoint.chains {
        let Some((_, entity)) = LOGS.iter().find(|(log, _)| *log == chain.log) else {
            return Ok(Some(format!(
                "the checkpoint names an unknown log {}",
                chain.log
            )));
        };
        let sql = format!(
            "SELECT count(*), (SELECT encode(hash, 'hex') FROM {log} WHERE {entity} = $1
                                ORDER BY id OFFSET $2 - 1 LIMIT 1)
               FROM {log} WHERE {entity} = $1",
            log = chain.log
        );
        let (length, head): (i64, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(chain.entity)
            .bind(chain.length)
            .fetch_one(pool)
            .await?;
        let name = format!("{} of {}", chain.log, chain.entity);
        if length < chain.length {
            return Ok(Some(format!(
                "chain {name} has {length} events; the checkpoint says {}",
                chain.length
            )));
        }
        if head.as_deref() != Some(chain.head.as_str()) {
            return Ok(Some(format!(
                "chain {name}: event {} is not the one the checkpoint recorded (its history was rewritten)",
                chain.length
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_its_key_only_and_not_once_altered() {
        let (private, public) = generate_key();
        let (_, other_public) = generate_key();
        let pkcs8 = B64.decode(&private).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let checkpoint = Checkpoint {
            version: 1,
            created_at: chrono::Utc::now(),
            chains: vec![ChainHead {
                log: "payment_events".into(),
                entity: uuid::Uuid::now_v7(),
                length: 3,
                head: "ab".repeat(32),
            }],
        };
        let signed = SignedCheckpoint {
            signature: B64.encode(pair.sign(&signed_bytes(&checkpoint)).as_ref()),
            checkpoint,
        };
        assert!(open(&signed, &public).is_ok());
        assert!(matches!(
            open(&signed, &other_public),
            Err(CheckpointError::BadSignature)
        ));
        let mut shortened = signed.clone();
        shortened.checkpoint.chains[0].length = 2;
        assert!(matches!(
            open(&shortened, &public),
            Err(CheckpointError::BadSignature)
        ));
    }
}
