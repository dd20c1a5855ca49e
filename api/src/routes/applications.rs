//! An applicant's own visa applications: drafts, edits, submission.

use chrono::{NaiveDate, Utc};
use evisa_core::{
    CountryCode,
    application::{ApplicationChanges, ApplicationError, store},
    ids::ApplicationId,
    person::{ArrivalDate, DateOfBirth, FullName, PassportNumber},
};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::Example,
};

use super::{
    Tag,
    country::CountryWire,
    views::{ApplicationPage, ApplicationView, SpeedWire, VisaTypeWire},
};
use crate::{
    auth::BearerAuth,
    body::{JsonBody, ServerSetFields},
    idempotent::{self, KeyHeader},
    problem::{ApiError, ApiResult, FieldProblem},
    state::AppState,
};

pub struct ApplicationsApi;

/// Fields of an application. On create and edit every field is optional; omitted fields keep
/// their value (null is refused). All are required to submit, and the rules about dates that
/// depend on the day are checked then (409 if a date is out of range on the day of submission).
#[derive(Object, serde::Deserialize, Default)]
#[oai(rename = "ApplicationFields", example)]
#[serde(deny_unknown_fields)]
pub struct ApplicationFieldsBody {
    /// Full name as printed in the passport (1 to 200 characters, any script, no control
    /// characters, not only spaces).
    #[oai(validator(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    ))]
    pub full_name: Option<String>,
    /// Passport number: 6 to 9 letters or digits (stored upper-case).
    #[oai(validator(pattern = "^[A-Za-z0-9]{6,9}$"))]
    pub passport_number: Option<String>,
    /// Date of birth (YYYY-MM-DD), not before 1900-01-01 (422). It must also be before the day
    /// of submission (checked at submit: 409).
    // The 1900 floor is in the spec as a pattern: see `crate::spec::DATE_PATTERNS`.
    pub date_of_birth: Option<NaiveDate>,
    // The passport's country. No doc comment: it would wrap the `$ref` in an `allOf`, which
    // openapi-python-client cannot read for an enum; `CountryCode` describes itself.
    pub nationality: Option<CountryWire>,
    pub visa_type: Option<VisaTypeWire>,
    pub processing_speed: Option<SpeedWire>,
    /// Intended arrival (YYYY-MM-DD). A draft may hold any date; on the day of submission it
    /// must be from that day to 366 days ahead (checked at submit: 409).
    pub intended_arrival_date: Option<NaiveDate>,
}

impl Example for ApplicationFieldsBody {
    fn example() -> Self {
        ApplicationFieldsBody {
            full_name: Some("Ann Lee".into()),
            passport_number: Some("X1234567".into()),
            date_of_birth: NaiveDate::from_ymd_opt(1990, 5, 17),
            nationality: Some(CountryWire("FR".into())),
            visa_type: Some(VisaTypeWire::Tourist),
            processing_speed: Some(SpeedWire::Standard),
            intended_arrival_date: NaiveDate::from_ymd_opt(2027, 3, 1),
        }
    }
}

const FEE_IS_SERVER_SET: &str =
    "the fee is set by the server from the fee schedule when the application is submitted";

impl ServerSetFields for ApplicationFieldsBody {
    const SERVER_SET: &'static [(&'static str, &'static str)] = &[
        ("fee", FEE_IS_SERVER_SET),
        ("amount", FEE_IS_SERVER_SET),
        ("currency", FEE_IS_SERVER_SET),
        (
            "status",
            "the status changes only through submission and decisions",
        ),
    ];
}

fn check<T, E: std::fmt::Display>(
    errors: &mut Vec<FieldProblem>,
    name: &str,
    parsed: Option<Result<T, E>>,
) -> Option<T> {
    match parsed? {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(FieldProblem {
                field: name.into(),
                pointer: Some(format!("/{name}")),
                detail: e.to_string(),
            });
            None
        }
    }
}

impl ApplicationFieldsBody {
    /// Parses every field into its domain type, reporting all bad fields at once.
    fn into_changes(self) -> Result<ApplicationChanges, ApiError> {
        let mut errors = Vec::new();
        let e = &mut errors;
        let changes = ApplicationChanges {
            full_name: check(e, "full_name", self.full_name.map(|v| FullName::parse(&v))),
            passport_number: check(
                e,
                "passport_number",
                self.passport_number.map(|v| PassportNumber::parse(&v)),
            ),
            date_of_birth: check(
                e,
                "date_of_birth",
                self.date_of_birth.map(DateOfBirth::for_draft),
            ),
            nationality: check(
                e,
                "nationality",
                self.nationality.map(|v| CountryCode::parse(&v.0)),
            ),
            visa_type: self.visa_type.map(Into::into),
            processing_speed: self.processing_speed.map(Into::into),
            intended_arrival_date: self.intended_arrival_date.map(ArrivalDate::for_draft),
        };
        if errors.is_empty() {
            Ok(changes)
        } else {
            Err(ApiError::invalid(errors))
        }
    }
}

#[derive(ApiResponse)]
pub enum CreatedApplication {
    /// The draft was created.
    #[oai(status = 201)]
    Created(Json<ApplicationView>),
}

/// Maps the outcomes of application use cases to HTTP.
pub(super) fn application_error(e: ApplicationError) -> ApiError {
    match e {
        ApplicationError::NotFound => ApiError::not_found("application"),
        ApplicationError::OnHold {
            dispute_id,
            dispute,
            payment,
        } => ApiError::conflict(
            "application-on-hold",
            format!(
                "the application is on hold: its payment {payment} is disputed (dispute {dispute}); no decision until an officer resolves it with POST /v1/admin/disputes/{dispute_id}/resolve"
            ),
        ),
        ApplicationError::NotEditable { status } => ApiError::conflict(
            "not-editable",
            format!("the application is {status}; only drafts can be edited"),
        ),
        ApplicationError::Refused(r) => ApiError::conflict(
            "invalid-transition",
            format!(
                "the application is {}; it cannot take `{}`",
                r.from, r.event
            ),
        ),
        // Submission takes no body: what stops it is the draft's state (409).
        ApplicationError::Incomplete { missing } => ApiError::conflict_with(
            "incomplete",
            format!(
                "the application cannot be submitted until these are set: {}",
                missing.join(", ")
            ),
            missing
                .into_iter()
                .map(|f| FieldProblem {
                    field: f.into(),
                    pointer: Some(format!("/{f}")),
                    detail: "is required to submit".into(),
                })
                .collect(),
        ),
        ApplicationError::OutOfRange { fields } => ApiError::conflict_with(
            "dates-out-of-range",
            format!(
                "the application cannot be submitted today until these dates are changed: {}",
                fields
                    .iter()
                    .map(|(f, _)| *f)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fields
                .into_iter()
                .map(|(f, rule)| FieldProblem {
                    field: f.into(),
                    pointer: Some(format!("/{f}")),
                    detail: rule.to_string(),
                })
                .collect(),
        ),
        ApplicationError::NoFeeRule => ApiError::conflict(
            "no-fee-rule",
            "no fee is defined for this visa type, nationality and processing speed; \
             this combination cannot be applied for",
        ),
        other @ (ApplicationError::Crypto(_)
        | ApplicationError::Quote(_)
        | ApplicationError::Database(_)) => ApiError::internal(other),
    }
}

/// A cursor is the id of the last application of the previous page.
pub(super) fn parse_cursor(cursor: Option<uuid::Uuid>) -> Option<ApplicationId> {
    cursor.map(ApplicationId::from_uuid)
}

#[OpenApi(tag = "Tag::Applications")]
impl ApplicationsApi {
    /// Start an application.
    ///
    /// Creates a draft with whatever fields are given. Amounts may not be sent: the fee comes
    /// from the fee schedule at submission.
    #[oai(
        path = "/v1/applications",
        method = "post",
        operation_id = "createApplication"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        req: &poem::Request,
        state: Data<&AppState>,
        /// Optional: the same key and body replay the first answer for 24 hours.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<KeyHeader>>,
        body: JsonBody<ApplicationFieldsBody>,
    ) -> ApiResult<CreatedApplication> {
        let me = auth.applicant()?;
        // A key that is not text at all reads as no key; it must not silently lose its meaning.
        if idempotency_key.0.is_none() && req.headers().contains_key("idempotency-key") {
            return Err(ApiError::bad_param(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ));
        }
        let view = idempotent::once(
            &state.db,
            me.user_id,
            idempotency_key.0.as_ref().map(KeyHeader::as_str),
            "/v1/applications",
            &body.1.clone(),
            201,
            async |tx| {
                let changes = body.0.into_changes()?;
                let app = store::create_draft(tx, &state.config.data_keys, me.user_id, &changes)
                    .await
                    .map_err(application_error)?;
                Ok(ApplicationView::from(app))
            },
        )
        .await?;
        tracing::info!(application_id = %view.id, "draft created");
        Ok(CreatedApplication::Created(Json(view)))
    }

    /// List my applications.
    #[oai(
        path = "/v1/applications",
        method = "get",
        operation_id = "listApplications"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<uuid::Uuid>>,
    ) -> ApiResult<Json<ApplicationPage>> {
        let me = auth.applicant()?;
        let cursor = parse_cursor(cursor.0);
        let page = store::list_for_owner(
            &state.db,
            &state.config.data_keys,
            me.user_id,
            cursor,
            limit.0,
        )
        .await
        .map_err(application_error)?;
        Ok(Json(page.into()))
    }

    /// Get one of my applications.
    #[oai(
        path = "/v1/applications/:id",
        method = "get",
        operation_id = "getApplication"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<ApplicationView>> {
        let me = auth.applicant()?;
        let app = store::get_for_owner(
            &state.db,
            &state.config.data_keys,
            me.user_id,
            ApplicationId::from_uuid(id.0),
        )
        .await
        .map_err(application_error)?;
        Ok(Json(app.into()))
    }

    /// Edit a draft.
    ///
    /// Only drafts can be edited: once submitted, an application is fixed (409).
    #[oai(
        path = "/v1/applications/:id",
        method = "patch",
        operation_id = "updateApplication"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
        body: JsonBody<ApplicationFieldsBody>,
    ) -> ApiResult<Json<ApplicationView>> {
        let me = auth.applicant()?;
        let changes = body.0.into_changes()?;
        let app = store::update_draft(
            &state.db,
            &state.config.data_keys,
            me.user_id,
            ApplicationId::from_uuid(id.0),
            &changes,
        )
        .await
        .map_err(application_error)?;
        Ok(Json(app.into()))
    }

    /// Submit a draft.
    ///
    /// Checks that every field is set, fixes the fee from today's fee schedule, and moves the
    /// application to `submitted` — or straight to `paid` when the schedule exempts it.
    #[oai(
        path = "/v1/applications/:id/submit",
        method = "post",
        operation_id = "submitApplication"
    )]
    async fn submit(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<ApplicationView>> {
        let me = auth.applicant()?;
        let app = store::submit(
            &state.db,
            &state.config.data_keys,
            me.user_id,
            ApplicationId::from_uuid(id.0),
            Utc::now().date_naive(),
        )
        .await
        .map_err(application_error)?;
        tracing::info!(application_id = %app.id, status = %app.status, "application submitted");
        Ok(Json(app.into()))
    }
}

pub(super) fn default_limit() -> u32 {
    20
}
