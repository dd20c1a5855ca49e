//! Bearer-token authentication and role checks for operations.

use evisa_core::{
    application::Actor,
    auth::Principal,
    users::{self, Role},
};
use poem::{IntoResponse, Request};
use poem_openapi::{SecurityScheme, auth::Bearer};

use crate::{problem::ApiError, state::AppState};

/// A valid access token from `POST /v1/auth/login`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_token")]
pub struct BearerAuth(pub Principal);

/// A token is good while its account stands behind it: not disabled, the same token version (a
/// password change revokes every earlier token), and with the role the account has now.
async fn check_token(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let refused = || poem::Error::from(poem_openapi::error::AuthorizationError);
    let state = req.data::<AppState>().ok_or_else(refused)?;
    let claims = state.tokens.verify(&bearer.token).ok_or_else(refused)?;
    match users::standing(&state.db, claims.user_id).await {
        Ok(standing) => claims.principal(standing).ok_or_else(refused),
        Err(e) => {
            tracing::error!(error = %e, "cannot check a token's account");
            Err(poem::Error::from_response(
                ApiError::unavailable("accounts are briefly unavailable").into_response(),
            ))
        }
    }
}

impl BearerAuth {
    /// The caller, who must be an applicant.
    pub fn applicant(&self) -> Result<Principal, ApiError> {
        match self.0.role {
            Role::Applicant => Ok(self.0),
            _ => Err(ApiError::forbidden(
                "only applicants have applications; staff use /v1/admin",
            )),
        }
    }

    /// The caller, who must be an officer or an admin.
    pub fn staff(&self) -> Result<Principal, ApiError> {
        if self.0.role.is_staff() {
            Ok(self.0)
        } else {
            Err(ApiError::forbidden(
                "this needs an officer or admin account",
            ))
        }
    }

    /// The caller, who must be an admin.
    pub fn admin(&self) -> Result<Principal, ApiError> {
        if self.0.role == Role::Admin {
            Ok(self.0)
        } else {
            Err(ApiError::forbidden("this needs an admin account"))
        }
    }

    pub fn actor(&self) -> Actor {
        Actor::User {
            id: self.0.user_id,
            role: self.0.role,
        }
    }
}
