//! Registering applicants and signing in.

use evisa_core::{
    auth,
    person::Email,
    ratelimit::bucket_digest,
    users::{self, CreateUserError, Role},
};
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json, types::Example};

use super::Tag;
use crate::{
    auth::BearerAuth,
    body::{JsonBody, ServerSetFields},
    limits::{WhenRedisIsDown, client_ip, limit},
    problem::{ApiError, ApiResult, FieldProblem},
    state::AppState,
};

pub struct AuthApi;

/// Changing one's own password (any role).
pub struct PasswordApi;

/// A new applicant account.
#[derive(Object, serde::Deserialize)]
#[oai(rename = "Registration", example)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBody {
    /// Email address; also the sign-in name.
    /// An address of the form the server accepts (a dot-atom local part, a domain with a dot).
    #[oai(validator(
        max_length = 254,
        pattern = "^[A-Za-z0-9!#$%&'*+/=?^_{|}~-]{1,32}(\\.[A-Za-z0-9!#$%&'*+/=?^_{|}~-]{1,15}){0,2}@[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?){1,3}$"
    ))]
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
    /// An address of the form the server accepts (a dot-atom local part, a domain with a dot).
    #[oai(validator(
        max_length = 254,
        pattern = "^[A-Za-z0-9!#$%&'*+/=?^_{|}~-]{1,32}(\\.[A-Za-z0-9!#$%&'*+/=?^_{|}~-]{1,15}){0,2}@[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?){1,3}$"
    ))]
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
            state.config.limits.registration(),
            WhenRedisIsDown::Refuse,
        )
        .await?;
        let password = body.password;
        let hash = state
            .hash_bounded(move || auth::hash_password(&password))
            .await?;
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
        limit_sign_in(&state, req, &bucket_digest(email.as_str())).await?;

        let account = users::find_by_email(&state.db, &email).await?;
        let hash = account
            .as_ref()
            .map(|a| a.password_hash.clone())
            .unwrap_or_else(|| auth::decoy_hash().to_string());
        let password = body.password;
        let matches = state
            .hash_bounded(move || auth::verify_password(&password, &hash))
            .await?;
        // A disabled account gets the answer a wrong password gets.
        let Some(account) = account.filter(|a| matches && !a.disabled) else {
            tracing::info!("sign-in refused");
            return Err(ApiError::unauthorized("email or password is incorrect"));
        };
        let token = state
            .tokens
            .issue(account.id, account.role, account.token_version);
        tracing::info!(user_id = %account.id, "signed in");
        Ok(Json(token.into()))
    }
}

/// A password change: the current password, then the new one.
#[derive(Object, serde::Deserialize)]
#[oai(rename = "PasswordChange", example)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeBody {
    #[oai(validator(max_length = 128))]
    pub current_password: String,
    /// 12 to 128 characters.
    #[oai(validator(min_length = 12, max_length = 128))]
    pub new_password: String,
}

impl Example for PasswordChangeBody {
    fn example() -> Self {
        PasswordChangeBody {
            current_password: "correct horse battery staple".into(),
            new_password: "a longer and newer passphrase".into(),
        }
    }
}

impl ServerSetFields for PasswordChangeBody {}

#[OpenApi(tag = "Tag::Auth")]
impl PasswordApi {
    /// Change my password.
    ///
    /// Every access token issued before (on any device) stops working at once; the answer
    /// carries a fresh one. Attempts are limited like sign-ins.
    #[oai(
        path = "/v1/auth/password",
        method = "post",
        operation_id = "changePassword"
    )]
    async fn change_password(
        &self,
        auth: BearerAuth,
        req: &Request,
        state: Data<&AppState>,
        body: JsonBody<PasswordChangeBody>,
    ) -> ApiResult<Json<AccessTokenView>> {
        let me = auth.0;
        let body = body.0;
        if let Err(e) = auth::check_password_policy(&body.new_password) {
            return Err(ApiError::invalid(vec![field("new_password", e)]));
        }
        limit_sign_in(&state, req, &me.user_id.to_string()).await?;
        let hash = users::password_hash(&state.db, me.user_id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("a valid bearer token is required"))?;
        let (current, new) = (body.current_password, body.new_password);
        let new_hash = state
            .hash_bounded(move || {
                auth::verify_password(&current, &hash).then(|| auth::hash_password(&new))
            })
            .await?
            .ok_or_else(|| {
                ApiError::invalid(vec![field(
                    "current_password",
                    "is not your current password",
                )])
            })?;
        let version = users::change_password(&state.db, me.user_id, &new_hash).await?;
        tracing::info!(user_id = %me.user_id, "password changed; earlier tokens revoked");
        let token = state.tokens.issue(me.user_id, me.role, version);
        Ok(Json(token.into()))
    }
}

/// Password checks are limited per source, and per account *from that source*: failing to sign in
/// as someone from elsewhere never locks them out. `account` names the account without PII.
async fn limit_sign_in(state: &AppState, req: &Request, account: &str) -> Result<(), ApiError> {
    let quota = state.config.limits.login();
    let ip = client_ip(req);
    limit(
        state,
        &format!("login:ip:{ip}"),
        quota,
        WhenRedisIsDown::Refuse,
    )
    .await?;
    limit(
        state,
        &format!("login:account:{account}:ip:{ip}"),
        quota,
        WhenRedisIsDown::Refuse,
    )
    .await
}

impl From<auth::AccessToken> for AccessTokenView {
    fn from(t: auth::AccessToken) -> Self {
        AccessTokenView {
            access_token: t.token,
            token_type: "Bearer".into(),
            expires_in: t.expires_in,
        }
    }
}

fn field(name: &str, e: impl std::fmt::Display) -> FieldProblem {
    FieldProblem {
        field: name.into(),
        pointer: Some(format!("/{name}")),
        detail: e.to_string(),
    }
}
