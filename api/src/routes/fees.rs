//! The public fee quote.

use chrono::{NaiveDate, Utc};
use evisa_core::{CountryCode, fees};
use poem::web::Data;
use poem_openapi::{OpenApi, param::Query, payload::Json};

use super::{
    Tag,
    country::CountryWire,
    views::{FeeQuoteView, SpeedWire, VisaTypeWire},
};
use crate::{
    problem::{ApiError, ApiResult},
    state::AppState,
};

pub struct FeesApi;

#[OpenApi(tag = "Tag::Fees")]
impl FeesApi {
    /// Quote the visa fee.
    ///
    /// The fee for a visa type, nationality and processing speed on a day (today, UTC, unless
    /// `on` is given). Public: no token needed. The amount charged is always the one fixed on
    /// the application when it is submitted.
    #[oai(path = "/v1/fees/quote", method = "get", operation_id = "quoteFee")]
    async fn quote(
        &self,
        state: Data<&AppState>,
        visa_type: Query<VisaTypeWire>,
        /// The passport's country.
        nationality: Query<CountryWire>,
        speed: Query<SpeedWire>,
        /// The day to quote for (YYYY-MM-DD); defaults to today (UTC).
        on: Query<Option<NaiveDate>>,
    ) -> ApiResult<Json<FeeQuoteView>> {
        let country = CountryCode::parse(&nationality.0.0)
            .map_err(|e| ApiError::bad_param("nationality", e.to_string()))?;
        let on = on.0.unwrap_or_else(|| Utc::now().date_naive());
        let (visa_type, speed) = (visa_type.0.into(), speed.0.into());
        let quote = fees::quote(&state.db, visa_type, country, speed, on)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::from_status(
                    poem::http::StatusCode::NOT_FOUND,
                    format!(
                        "no fee is defined for a {visa_type} visa, {speed} processing, for {country} nationals on {on}"
                    ),
                    vec![],
                )
            })?;
        Ok(Json(FeeQuoteView::new(
            quote,
            visa_type,
            country.alpha2(),
            speed,
            on,
        )))
    }
}
