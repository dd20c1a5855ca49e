//! The portals' endpoints: where notifications go, which types, and the secrets that sign them.

use chrono::{DateTime, Utc};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::PgPool;

use super::EventType;
use crate::{crypto::DataKeys, secret::Secret};

/// How long a replaced secret keeps signing beside the new one.
pub const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);

/// A registered endpoint (never with its secrets: see [`signing_secrets`]).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: uuid::Uuid,
    pub url: String,
    /// Empty means every type.
    pub events: Vec<EventType>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: uuid::Uuid,
    url: String,
    events: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<EndpointRow> for Endpoint {
    fn from(r: EndpointRow) -> Self {
        Endpoint {
            id: r.id,
            url: r.url,
            events: r.events.iter().filter_map(|e| e.parse().ok()).collect(),
            created_at: r.created_at,
        }
    }
}

/// A URL no endpoint may have.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlRefusal {
    #[error("must be an absolute https URL")]
    NotHttps,
    #[error("must be https: plain http is allowed only to the hosts in EVISA_NOTIFY_ALLOW_HOSTS")]
    HostNotAllowed,
    #[error("must not carry a user name or password")]
    Credentials,
}

/// Checks an endpoint URL: `https`, or `http` to a host the operator allowed (e.g. `localhost`
/// in development).
pub fn check_url(raw: &str, allow_hosts: &[String]) -> Result<url::Url, UrlRefusal> {
    let url = url::Url::parse(raw).map_err(|_| UrlRefusal::NotHttps)?;
    let host = url
        .host_str()
        .ok_or(UrlRefusal::NotHttps)?
        .to_ascii_lowercase();
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefusal::Credentials);
    }
    let allowed = allow_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host));
    match url.scheme() {
        "https" => Ok(url),
        "http" if allowed => Ok(url),
        "http" => Err(UrlRefusal::HostNotAllowed),
        _ => Err(UrlRefusal::NotHttps),
    }
}

fn new_secret() -> Secret<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Secret::new(format!("evsec_{hex}"))
}

fn context(id: uuid::Uuid) -> String {
    format!("notification_endpoints.secret:{id}")
}

/// Registers an endpoint; returns it with its secret, which is shown this once.
pub async fn create(
    pool: &PgPool,
    keys: &DataKeys,
    url: &url::Url,
    events: &[EventType],
) -> Result<(Endpoint, Secret<String>), sqlx::Error> {
    let id = uuid::Uuid::now_v7();
    let secret = new_secret();
    let events: Vec<&str> = events.iter().map(EventType::as_str).collect();
    let row: EndpointRow = sqlx::query_as(
        "INSERT INTO notification_endpoints (id, url, events, secret_sealed)
         VALUES ($1, $2, $3, $4) RETURNING id, url, events, created_at",
    )
    .bind(id)
    .bind(url.as_str())
    .bind(&events)
    .bind(keys.seal(&context(id), secret.expose().as_bytes()))
    .fetch_one(pool)
    .await?;
    Ok((row.into(), secret))
}

pub async fn list(pool: &PgPool) -> Result<Vec<Endpoint>, sqlx::Error> {
    let rows: Vec<EndpointRow> = sqlx::query_as(
        "SELECT id, url, events, created_at FROM notification_endpoints
          WHERE deleted_at IS NULL ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Stops sending to an endpoint: pending deliveries to it are failed. `false` when unknown.
pub async fn delete(pool: &PgPool, id: uuid::Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let gone = sqlx::query(
        "UPDATE notification_endpoints SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    sqlx::query(
        "UPDATE notification_deliveries SET status = 'failed', updated_at = now()
          WHERE endpoint_id = $1 AND status = 'pending'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(gone)
}

/// A new secret for an endpoint; the old one keeps signing for [`ROTATION_OVERLAP`]. `None` when
/// the endpoint is unknown.
pub async fn rotate_secret(
    pool: &PgPool,
    keys: &DataKeys,
    id: uuid::Uuid,
) -> Result<Option<(Endpoint, Secret<String>)>, sqlx::Error> {
    let secret = new_secret();
    let row: Option<EndpointRow> = sqlx::query_as(
        "UPDATE notification_endpoints
            SET previous_secret_sealed = secret_sealed, previous_expires_at = now() + $3,
                secret_sealed = $2
          WHERE id = $1 AND deleted_at IS NULL
          RETURNING id, url, events, created_at",
    )
    .bind(id)
    .bind(keys.seal(&context(id), secret.expose().as_bytes()))
    .bind(ROTATION_OVERLAP)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.into(), secret)))
}

/// Re-seals every endpoint secret not under the current data key (part of `evisa keys rotate`).
/// Returns how many values were re-sealed; a value no key opens stops it, changing nothing.
pub async fn reseal(pool: &PgPool, keys: &DataKeys) -> Result<u64, anyhow::Error> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(uuid::Uuid, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT id, secret_sealed, previous_secret_sealed FROM notification_endpoints
          WHERE deleted_at IS NULL FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await?;
    let current = keys.current_key_id().as_bytes();
    let under_current =
        |v: &[u8]| v.get(1..1 + current.len()) == Some(current) && v[0] as usize == current.len();
    let mut resealed = 0;
    for (id, secret, previous) in rows {
        let again = |v: &[u8]| -> Result<Vec<u8>, anyhow::Error> {
            let plain = keys.open(&context(id), v).map_err(|e| {
                anyhow::anyhow!("notification endpoint {id}: secret cannot be opened: {e}")
            })?;
            Ok(keys.seal(&context(id), &plain))
        };
        let new_secret = if under_current(&secret) {
            None
        } else {
            Some(again(&secret)?)
        };
        let new_previous = match &previous {
            Some(p) if !under_current(p) => Some(again(p)?),
            _ => None,
        };
        resealed += u64::from(new_secret.is_some()) + u64::from(new_previous.is_some());
        sqlx::query(
            "UPDATE notification_endpoints SET secret_sealed = coalesce($2, secret_sealed),
                 previous_secret_sealed = coalesce($3, previous_secret_sealed) WHERE id = $1",
        )
        .bind(id)
        .bind(new_secret)
        .bind(new_previous)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(resealed)
}

/// The secrets that sign for an endpoint now: the current one, and the previous one during its
/// overlap.
pub(super) fn signing_secrets(
    keys: &DataKeys,
    id: uuid::Uuid,
    current: &[u8],
    previous: Option<&[u8]>,
) -> Vec<Secret<Vec<u8>>> {
    [Some(current), previous]
        .into_iter()
        .flatten()
        .filter_map(|sealed| keys.open(&context(id), sealed).ok())
        .map(Secret::new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_unless_the_host_is_allowed() {
        let allow = vec!["localhost".to_string()];
        assert!(check_url("https://portal.example.gov/hooks", &[]).is_ok());
        assert_eq!(
            check_url("http://portal.example.gov/hooks", &allow),
            Err(UrlRefusal::HostNotAllowed)
        );
        assert!(check_url("http://LOCALHOST:9000/hooks", &allow).is_ok());
        assert_eq!(
            check_url("ftp://x.example/", &allow),
            Err(UrlRefusal::NotHttps)
        );
        assert_eq!(check_url("not a url", &allow), Err(UrlRefusal::NotHttps));
        assert_eq!(
            check_url("https://u:p@portal.example.gov/", &allow),
            Err(UrlRefusal::Credentials)
        );
    }

    #[test]
    fn secrets_are_long_random_and_marked() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.expose().starts_with("evsec_") && a.expose().len() == 6 + 64);
        assert_ne!(a.expose(), b.expose());
    }
}
