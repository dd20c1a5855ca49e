//! Reading applications: the applicant's own, and every one for officers.

use super::*;

/// The applicant's own application.
pub async fn get_for_owner(
    pool: &PgPool,
    keys: &DataKeys,
    applicant: UserId,
    id: ApplicationId,
) -> Result<Application, ApplicationError> {
    one(pool, keys, id, Some(applicant)).await
}

/// Any application (officers).
pub async fn get(
    pool: &PgPool,
    keys: &DataKeys,
    id: ApplicationId,
) -> Result<Application, ApplicationError> {
    one(pool, keys, id, None).await
}

/// The application `id`, if `owner` (when given) is its applicant.
async fn one(
    pool: &PgPool,
    keys: &DataKeys,
    id: ApplicationId,
    owner: Option<UserId>,
) -> Result<Application, ApplicationError> {
    let row: Option<ApplicationRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE id = $1 AND ($2::uuid IS NULL OR applicant_id = $2)"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    row.ok_or(ApplicationError::NotFound)?.open(keys)
}

fn page(
    keys: &DataKeys,
    mut rows: Vec<ApplicationRow>,
    limit: u32,
) -> Result<Page, ApplicationError> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let items = rows
        .into_iter()
        .map(|r| r.open(keys))
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if more {
        items.last().map(|a| a.id)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The applicant's applications, newest first, `limit` at a time after `cursor`.
pub async fn list_for_owner(
    pool: &PgPool,
    keys: &DataKeys,
    applicant: UserId,
    cursor: Option<ApplicationId>,
    limit: u32,
) -> Result<Page, ApplicationError> {
    let rows: Vec<ApplicationRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE applicant_id = $1 AND ($2::uuid IS NULL OR id < $2)
          ORDER BY id DESC LIMIT $3"
    ))
    .bind(applicant)
    .bind(cursor)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    page(keys, rows, limit)
}

/// All applications matching `filter`, newest first (officers).
pub async fn list_all(
    pool: &PgPool,
    keys: &DataKeys,
    filter: &AdminFilter,
    cursor: Option<ApplicationId>,
    limit: u32,
) -> Result<Page, ApplicationError> {
    let rows: Vec<ApplicationRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications
          WHERE ($1::text IS NULL OR status = $1)
            AND ($2::text IS NULL OR visa_type = $2)
            AND ($3::text IS NULL OR nationality = $3)
            AND ($4::uuid IS NULL OR id < $4)
          ORDER BY id DESC LIMIT $5"
    ))
    .bind(filter.status.map(|s| s.as_str()))
    .bind(filter.visa_type.map(|v| v.as_str()))
    .bind(filter.nationality.map(|n| n.alpha2()))
    .bind(cursor)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    page(keys, rows, limit)
}
