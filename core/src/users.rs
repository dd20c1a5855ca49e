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
    let row: Option<(UserId, String, String)> =
        sqlx::query_as("SELECT id, role, password_hash FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(id, role, password_hash)| {
        Some(Account {
            id,
            role: role.parse().ok()?,
            password_hash,
        })
    }))
}
