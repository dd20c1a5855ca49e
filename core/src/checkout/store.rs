//! The `checkout_sessions` and `checkout_session_applications` tables.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use super::{BrowserSecret, CheckoutSession, LinkToken, Locale};
use crate::{
    application::ApplicationStatus,
    ids::{ApplicationId, CheckoutSessionId, UserId},
    secret::Secret,
};

/// Why a checkout session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CreateSessionError {
    /// No such application of this applicant's.
    #[error("application not found")]
    ApplicationNotFound,
    /// Only a submitted application can be paid, and a paid one shown as paid (a group's
    /// members must all be submitted).
    #[error("the application is {0}")]
    NotPayable(ApplicationStatus),
    /// The same application is named twice.
    #[error("the application is named twice")]
    Repeated,
    /// One application of a group cannot be paid (its position in the request, and why).
    #[error("application {application} (number {index} of the group): {refusal}")]
    Member {
        index: usize,
        application: ApplicationId,
        refusal: Box<CreateSessionError>,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Opens a session for `applicant`'s `applications` (one, or a group paid together), in the
/// caller's transaction. It is valid until the earliest of the applications' payment deadlines
/// (submission + `deadline_after`); for a single application already paid, for as long again
/// from now (the page only shows it paid).
pub async fn create(
    tx: &mut PgConnection,
    link_key: &Secret<Vec<u8>>,
    applicant: UserId,
    applications: &[ApplicationId],
    return_url: Option<&str>,
    locale: Option<Locale>,
    deadline_after: chrono::Duration,
) -> Result<CheckoutSession, CreateSessionError> {
    let group = applications.len() > 1;
    let member = |index: usize, application: ApplicationId, refusal: CreateSessionError| {
        if group {
            CreateSessionError::Member {
                index,
                application,
                refusal: Box::new(refusal),
            }
        } else {
            refusal
        }
    };
    let ids: Vec<uuid::Uuid> = applications.iter().map(|a| a.as_uuid()).collect();
    let rows: Vec<(ApplicationId, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT id, status::text, submitted_at FROM applications
          WHERE id = ANY($1) AND applicant_id = $2 ORDER BY id FOR SHARE",
    )
    .bind(&ids)
    .bind(applicant)
    .fetch_all(&mut *tx)
    .await?;
    let now = Utc::now();
    let mut expires_at: Option<DateTime<Utc>> = None;
    for (i, &application) in applications.iter().enumerate() {
        if applications[..i].contains(&application) {
            return Err(member(i, application, CreateSessionError::Repeated));
        }
        let (_, status, submitted_at) = rows
            .iter()
            .find(|r| r.0 == application)
            .ok_or_else(|| member(i, application, CreateSessionError::ApplicationNotFound))?;
        let status: ApplicationStatus = status
            .parse()
            .map_err(|_| sqlx::Error::Decode(format!("application status {status}").into()))?;
        let deadline = match (status, submitted_at) {
            (ApplicationStatus::Submitted, Some(at)) => *at + deadline_after,
            (ApplicationStatus::Paid, _) if !group => now + deadline_after,
            (other, _) => {
                return Err(member(
                    i,
                    application,
                    CreateSessionError::NotPayable(other),
                ));
            }
        };
        if deadline <= now {
            // Past its deadline but not yet expired by the sweeper: nothing can be paid any more.
            return Err(member(
                i,
                application,
                CreateSessionError::NotPayable(ApplicationStatus::Expired),
            ));
        }
        expires_at = Some(expires_at.map_or(deadline, |e| e.min(deadline)));
    }
    let expires_at = expires_at.ok_or(CreateSessionError::ApplicationNotFound)?;
    let id = CheckoutSessionId::new();
    let token = LinkToken::of(link_key, id);
    sqlx::query(
        "WITH s AS (
            INSERT INTO checkout_sessions (id, applicant_id, token_hash, return_url, locale, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING id)
         INSERT INTO checkout_session_applications (session_id, application_id)
         SELECT s.id, a FROM s, unnest($7::uuid[]) AS a",
    )
    .bind(id.as_uuid())
    .bind(applicant)
    .bind(token.hash())
    .bind(return_url)
    .bind(locale.map(Locale::tag))
    .bind(expires_at)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    let mut application_ids = applications.to_vec();
    // As a stored session reads them back.
    application_ids.sort();
    Ok(CheckoutSession {
        id,
        applicant_id: applicant,
        application_ids,
        return_url: return_url.map(str::to_string),
        locale,
        expires_at,
        bound: false,
        browser_hash: None,
    })
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: uuid::Uuid,
    applicant_id: UserId,
    application_ids: Vec<uuid::Uuid>,
    return_url: Option<String>,
    locale: Option<String>,
    expires_at: DateTime<Utc>,
    browser_hash: Option<Vec<u8>>,
}

impl From<SessionRow> for CheckoutSession {
    fn from(r: SessionRow) -> Self {
        CheckoutSession {
            id: CheckoutSessionId::from_uuid(r.id),
            applicant_id: r.applicant_id,
            application_ids: r
                .application_ids
                .into_iter()
                .map(ApplicationId::from_uuid)
                .collect(),
            return_url: r.return_url,
            locale: r.locale.as_deref().and_then(Locale::parse),
            expires_at: r.expires_at,
            bound: r.browser_hash.is_some(),
            browser_hash: r.browser_hash,
        }
    }
}

macro_rules! select_session {
    ($where:literal) => {
        concat!(
            "SELECT s.id, s.applicant_id, s.return_url, s.locale, s.expires_at, s.browser_hash,
                    ARRAY(SELECT a.application_id FROM checkout_session_applications a
                           WHERE a.session_id = s.id ORDER BY a.application_id) AS application_ids
               FROM checkout_sessions s WHERE ",
            $where
        )
    };
}

/// The session a link's token opens, if any.
pub async fn find_by_token(
    db: impl PgExecutor<'_>,
    token: &LinkToken,
) -> Result<Option<CheckoutSession>, sqlx::Error> {
    let row: Option<SessionRow> = sqlx::query_as(select_session!("s.token_hash = $1"))
        .bind(token.hash())
        .fetch_optional(db)
        .await?;
    Ok(row.map(Into::into))
}

/// A session by id.
pub async fn get(
    db: impl PgExecutor<'_>,
    id: CheckoutSessionId,
) -> Result<Option<CheckoutSession>, sqlx::Error> {
    let row: Option<SessionRow> = sqlx::query_as(select_session!("s.id = $1"))
        .bind(id.as_uuid())
        .fetch_optional(db)
        .await?;
    Ok(row.map(Into::into))
}

/// What became of a first visit.
pub enum BindOutcome {
    /// This browser now holds the session.
    Bound,
    /// Another browser already does.
    AlreadyBound,
}

/// Binds `session` to the browser holding `cookie`, unless one already holds it: of two
/// browsers opening the link at once, exactly one wins.
pub async fn bind(
    db: impl PgExecutor<'_>,
    session: CheckoutSessionId,
    cookie: &BrowserSecret,
) -> Result<BindOutcome, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE checkout_sessions SET browser_hash = $2, bound_at = now()
          WHERE id = $1 AND browser_hash IS NULL AND expires_at > now()",
    )
    .bind(session.as_uuid())
    .bind(cookie.hash())
    .execute(db)
    .await?;
    Ok(if done.rows_affected() == 1 {
        BindOutcome::Bound
    } else {
        BindOutcome::AlreadyBound
    })
}
