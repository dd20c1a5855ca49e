//! People who sign in, and their roles.

use sqlx::PgPool;

use crate::{ids::UserId, person::Email, visa::string_enum};

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Fills in and pays for their own applications.
    Applicant,
    /// Decides applications and refunds.
    Officer,
    /// Everything an officer does, plus administration.
    Admin,
}

string_enum!(Role, "role", Applicant => "applicant", Officer => "officer", Admin => "admin");

impl Role {
    /// Officers and admins act on other people's applications.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Officer | Role::Admin)
    }
}

/// A stored account, as needed to check a login.
pub struct Account {
    pub id: UserId,
    pub role: Role,
    pub password_hash: String,
    /// Tokens carry it; moving it on revokes every earlier token.
    pub token_version: i64,
    pub disabled: bool,
}

/// What an access token is checked against on every request: the account as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub role: Role,
    pub token_version: i64,
    pub disabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Stores a new account. `password_hash` is an Argon2id PHC string.
pub async fn create(
    pool: &PgPool,
    email: &Email,
    password_hash: &str,
    role: Role,
) -> Result<UserId, CreateUserError> {
    let id = UserId::new();
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, password_hash, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(id)
    .bind(email.as_str())
    .bind(password_hash)
    .bind(role.as_str())
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(CreateUserError::EmailTaken);
    }
    Ok(id)
}

/// The account for `email`, if any.
pub async fn find_by_email(pool: &PgPool, email: &Email) -> Result<Option<Account>, sqlx::Error> {
    let row: Option<(UserId, String, String, i64, bool)> = sqlx::query_as(
        "SELECT id, role, password_hash, token_version, disabled_at IS NOT NULL
         FROM users WHERE email = $1",
    )
    .bind(email.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(
        row.and_then(|(id, role, password_hash, token_version, disabled)| {
            Some(Account {
                id,
                role: role.parse().ok()?,
                password_hash,
                token_version,
                disabled,
            })
        }),
    )
}

/// The account's current role and token version (one primary-key read per request).
pub async fn standing(pool: &PgPool, id: UserId) -> Result<Option<Standing>, sqlx::Error> {
    let row: Option<(String, i64, bool)> = sqlx::query_as(
        "SELECT role, token_version, disabled_at IS NOT NULL FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(role, token_version, disabled)| {
        Some(Standing {
            role: role.parse().ok()?,
            token_version,
            disabled,
        })
    }))
}

/// The account's password hash (to check the current password before a change).
pub async fn password_hash(pool: &PgPool, id: UserId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Sets a new password and revokes every token issued before; returns the new token version.
pub async fn change_password(
    pool: &PgPool,
    id: UserId,
    password_hash: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE users SET password_hash = $2, token_version = token_version + 1
         WHERE id = $1 RETURNING token_version",
    )
    .bind(id)
    .bind(password_hash)
    .fetch_one(pool)
    .await
}

/// Disables the account and revokes its tokens; `false` when no account has this email.
pub async fn disable(pool: &PgPool, email: &Email) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE users SET disabled_at = coalesce(disabled_at, now()),
                          token_version = token_version + 1
         WHERE email = $1",
    )
    .bind(email.as_str())
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Changes the account's role (it takes effect on the next request, whatever tokens say) and
/// revokes its tokens; `false` when no account has this email.
pub async fn set_role(pool: &PgPool, email: &Email, role: Role) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE users SET role = $2, token_version = token_version + 1 WHERE email = $1",
    )
    .bind(email.as_str())
    .bind(role.as_str())
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}
