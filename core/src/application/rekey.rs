//! Key rotation of the sealed personal fields (`evisa keys rotate`): every value sealed under a
//! key other than the current one is opened and sealed again under the current key, a batch of
//! applications per transaction. It runs beside the service (rows being re-sealed are skipped by
//! others' locks and picked up in a later batch) and can be stopped and started again at will:
//! what is done is committed, and what is left is found again by its key id.

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::{
    crypto::{DataKeys, OpenError},
    ids::ApplicationId,
};

/// The sealed columns of `applications`, by name (also the field part of their context).
const FIELDS: [&str; 3] = ["full_name", "passport_number", "date_of_birth"];

/// What a rotation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Values re-sealed, by the id of the key that had sealed them.
    pub resealed: BTreeMap<String, u64>,
    /// Applications touched.
    pub applications: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// A value cannot be opened with any configured key: nothing of its batch was changed.
    #[error("application {application}: {field} cannot be opened: {cause}")]
    Unreadable {
        application: ApplicationId,
        field: &'static str,
        cause: OpenError,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

type SealedRow = (
    ApplicationId,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

/// Re-seals everything not under the current key, `batch` applications per transaction.
pub async fn rotate(
    pool: &PgPool,
    keys: &DataKeys,
    batch: i64,
) -> Result<RotationReport, RotationError> {
    let current = keys.current_key_id().as_bytes().to_vec();
    let mut report = RotationReport::default();
    loop {
        let mut tx = pool.begin().await?;
        // The key id is the value's prefix: its length byte, then the id.
        let rows: Vec<SealedRow> = sqlx::query_as(
            "SELECT id, full_name, passport_number, date_of_birth FROM applications
             WHERE (full_name IS NOT NULL AND substring(full_name FROM 2 FOR get_byte(full_name, 0)) <> $1)
                OR (passport_number IS NOT NULL AND substring(passport_number FROM 2 FOR get_byte(passport_number, 0)) <> $1)
                OR (date_of_birth IS NOT NULL AND substring(date_of_birth FROM 2 FOR get_byte(date_of_birth, 0)) <> $1)
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(&current)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(report);
        }
        for (id, full_name, passport_number, date_of_birth) in rows {
            let mut resealed = Vec::with_capacity(3);
            for (field, sealed) in
                FIELDS
                    .into_iter()
                    .zip([full_name, passport_number, date_of_birth])
            {
                resealed.push(match sealed {
                    Some(s) if DataKeys::key_id_of(&s) != Some(keys.current_key_id()) => {
                        let context = super::store::context(field, id);
                        let plain =
                            keys.open(&context, &s)
                                .map_err(|cause| RotationError::Unreadable {
                                    application: id,
                                    field,
                                    cause,
                                })?;
                        let old = DataKeys::key_id_of(&s).unwrap_or("?").to_string();
                        *report.resealed.entry(old).or_default() += 1;
                        Some(keys.seal(&context, &plain))
                    }
                    other => other,
                });
            }
            sqlx::query(
                "UPDATE applications SET full_name = $2, passport_number = $3, date_of_birth = $4
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&resealed[0])
            .bind(&resealed[1])
            .bind(&resealed[2])
            .execute(&mut *tx)
            .await?;
            report.applications += 1;
        }
        tx.commit().await?;
    }
}

/// How many sealed values each key id holds now (to know when an old key can be dropped).
pub async fn values_per_key(pool: &PgPool) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows: Vec<(Option<Vec<u8>>, i64)> = sqlx::query_as(
        "SELECT substring(v FROM 2 FOR get_byte(v, 0)), count(*)
           FROM applications, LATERAL (VALUES (full_name), (passport_number), (date_of_birth)) f(v)
          WHERE v IS NOT NULL GROUP BY 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, n)| {
            (
                String::from_utf8_lossy(&id.unwrap_or_default()).into_owned(),
                n,
            )
        })
        .collect())
}
