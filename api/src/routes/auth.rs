//! Registering applicants and signing in.

use evisa_core::{
    auth,
    person::Email,
    ratelimit::{Decision, Quota, bucket_digest},
    users::{self, CreateUserError, Role},
};
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json, types::Example};

use super::Tag;
use crate::{
    body::{JsonBody, ServerSetFields},
    problem::{ApiError, ApiResult, FieldProblem},
    state::AppState,
};

pub struct AuthApi;

/// A new applicant account.
#[derive(Object, serde::Deserialize)]
#[oai(rename = "Registration", example)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBody {
    /// Email address; also the sign-in name.
    #[oai(validator(max_length = 254))]
    pub email: String,
    /// 12 to 128 characters.
    #[oai(validator(min_length = 12, max_length = 128))]
    pub password: String,
}

impl Example for RegistrationBody {
    fn example() -> Self {
        RegistrationBody {
            email: "ann.lee@example.org".into(),
            password: "correct horse battery staple".into(),
        }
    }
}

impl ServerSetFields for RegistrationBody {
    const SERVER_SET: &'static [(&'static str, &'static str)] = &[(
        "role",
        "accounts registered here are applicants; staff accounts are made with `evisa user create`",
    )];
}

/// Email and password.
#[derive(Object, serde::Deserialize)]
#[oai(rename = "Credentials", example)]
#[serde(deny_unknown_fields)]
pub struct CredentialsBody {
    #[oai(validator(max_length = 254))]
    pub email: String,
    #[oai(validator(max_length = 128))]
    pub password: String,
}

impl Example for CredentialsBody {
    fn example() -> Self {
        CredentialsBody {
            email: "ann.lee@example.org".into(),
            password: "correct horse battery staple".into(),
        }
    }
}

impl ServerSetFields for CredentialsBody {}

/// An account.
#[derive(Object)]
#[oai(rename = "Account")]
pub struct AccountView {
    pub id: uuid::Uuid,
    pub email: String,
    /// `applicant`, `officer` or `admin`.
    pub role: String,
}

/// A bearer token for the `Authorization` header.
#[derive(Object)]
#[oai(rename = "AccessToken")]
pub struct AccessTokenView {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

#[derive(ApiResponse)]
pub enum RegisterResponse {
    /// The account was created; sign in with `POST /v1/auth/login`.
    #[oai(status = 201)]
    Created(Json<AccountView>),
}

fn parse_email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).map_err(|e| {
        ApiError::invalid(vec![FieldProblem {
            field: "email".into(),
            pointer: Some("/email".into()),
            detail: e.to_string(),
        }])
    })
}

/// Counts one attempt against a bucket; 429 when over, 503 when the limiter is unreachable
/// (failing closed: no unlimited guessing while Redis is down).
async fn limit(state: &AppState, bucket: &str, quota: Quota) -> Result<(), ApiError> {
    match state.limiter.check(bucket, quota).await {
        Ok(Decision::Allowed) => Ok(()),
        Ok(Decision::Limited { retry_after }) => {
            Err(ApiError::too_many(retry_after.as_secs_f64().ceil() as u64))
        }
        Err(e) => {
            tracing::error!(error = %e, "rate limiter unavailable");
            Err(ApiError::unavailable("sign-in is briefly unavailable"))
        }
    }
}

fn client_ip(req: &Request) -> String {
    req.remote_addr()
        .as_socket_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[OpenApi(tag = "Tag::Auth")]
impl AuthApi {
    /// Register an applicant account.
    ///
    /// Staff accounts cannot be registered here; an operator creates them with
    /// `evisa user create`.
    #[oai(path = "/v1/auth/register", method = "post", operation_id = "register")]
    async fn register(
        &self,
        req: &Request,
        state: Data<&AppState>,
        body: JsonBody<RegistrationBody>,
    ) -> ApiResult<RegisterResponse> {
        let body = body.0;
        let mut errors = Vec::new();
        let email = Email::parse(&body.email)
            .map_err(|e| errors.push(field("email", e)))
            .ok();
        if let Err(e) = auth::check_password_policy(&body.password) {
            errors.push(field("password", e));
        }
        let Some(email) = email.filter(|_| errors.is_empty()) else {
            return Err(ApiError::invalid(errors));
        };
        limit(
            &state,
            &format!("register:ip:{}", client_ip(req)),
            Quota::per_minute(state.config.login_attempts_per_minute),
        )
        .await?;
        let password = body.password;
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
            .await
            .map_err(ApiError::internal)?;
        let id = users::create(&state.db, &email, &hash, Role::Applicant)
            .await
            .map_err(|e| match e {
                CreateUserError::EmailTaken => ApiError::conflict(
                    "email-taken",
                    "an account with this email already exists; sign in instead",
                ),
                CreateUserError::Database(e) => e.into(),
            })?;
        tracing::info!(user_id = %id, "applicant registered");
        Ok(RegisterResponse::Created(Json(AccountView {
            id: id.as_uuid(),
            email: email.as_str().to_string(),
            role: Role::Applicant.as_str().into(),
        })))
    }

    /// Sign in and get an access token.
    ///
    /// A wrong email and a wrong password get the same answer. Attempts are limited per client
    /// address and per account; over the limit the answer is 429 with `Retry-After`.
    #[oai(path = "/v1/auth/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        req: &Request,
        state: Data<&AppState>,
        body: JsonBody<CredentialsBody>,
    ) -> ApiResult<Json<AccessTokenView>> {
        let body = body.0;
        let email = parse_email(&body.email)?;
        let quota = Quota::per_minute(state.config.login_attempts_per_minute);
        limit(&state, &format!("login:ip:{}", client_ip(req)), quota).await?;
        limit(
            &state,
            &format!("login:account:{}", bucket_digest(email.as_str())),
            quota,
        )
        .await?;

        let account = users::find_by_email(&state.db, &email).await?;
        let hash = account
            .as_ref()
            .map(|a| a.password_hash.clone())
            .unwrap_or_else(|| auth::decoy_hash().to_string());
        let password = body.password;
        let matches = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
            .await
            .map_err(ApiError::internal)?;
        let Some(account) = account.filter(|_| matches) else {
            tracing::info!("sign-in refused");
            return Err(ApiError::unauthorized("email or password is incorrect"));
        };
        let token = state.tokens.issue(account.id, account.role);
        tracing::info!(user_id = %account.id, "signed in");
        Ok(Json(AccessTokenView {
            access_token: token.token,
            token_type: "Bearer".into(),
            expires_in: token.expires_in,
        }))
    }
}

fn field(name: &str, e: impl std::fmt::Display) -> FieldProblem {
    FieldProblem {
        field: name.into(),
        pointer: Some(format!("/{name}")),
        detail: e.to_string(),
    }
}
