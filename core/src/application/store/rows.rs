//! Rows as stored: personal fields sealed with the data keys, prices as JSON, and the
//! bindings of a change set.

use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct ApplicationRow {
    pub(super) id: ApplicationId,
    pub(super) applicant_id: UserId,
    pub(super) status: String,
    pub(super) full_name: Option<Vec<u8>>,
    pub(super) passport_number: Option<Vec<u8>>,
    pub(super) date_of_birth: Option<Vec<u8>>,
    pub(super) nationality: Option<String>,
    pub(super) visa_type: Option<String>,
    pub(super) processing_speed: Option<String>,
    pub(super) intended_arrival_date: Option<NaiveDate>,
    pub(super) fee_rule_id: Option<FeeRuleId>,
    pub(super) fee_amount_minor: Option<i64>,
    pub(super) fee_currency: Option<String>,
    pub(super) fee_exempt: Option<bool>,
    pub(super) fee_prices: Option<sqlx::types::Json<Vec<StoredPrice>>>,
    pub(super) decision_reason: Option<String>,
    pub(super) submitted_at: Option<DateTime<Utc>>,
    pub(super) paid_at: Option<DateTime<Utc>>,
    pub(super) decided_at: Option<DateTime<Utc>>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StoredPrice {
    pub(super) currency: String,
    pub(super) amount: i64,
}

/// The encryption context of one personal field of one application.
pub(in crate::application) fn context(field: &str, id: ApplicationId) -> String {
    format!("applications.{field}:{id}")
}

pub(super) fn seal_text(
    keys: &DataKeys,
    field: &str,
    id: ApplicationId,
    value: Option<&str>,
) -> Option<Vec<u8>> {
    value.map(|v| keys.seal(&context(field, id), v.as_bytes()))
}

pub(super) fn open_text(
    keys: &DataKeys,
    field: &str,
    id: ApplicationId,
    sealed: Option<Vec<u8>>,
) -> Result<Option<String>, OpenError> {
    sealed
        .map(|s| {
            let plain = keys.open(&context(field, id), &s)?;
            String::from_utf8(plain).map_err(|_| OpenError::Malformed)
        })
        .transpose()
}

impl ApplicationRow {
    pub(super) fn open(self, keys: &DataKeys) -> Result<Application, ApplicationError> {
        let id = self.id;
        // Stored values passed the domain checks on the way in and the CHECK constraints; a value
        // that no longer parses means the data was changed behind our back.
        let corrupt = |what: &str| {
            ApplicationError::Database(sqlx::Error::Decode(
                format!("application {id}: stored {what} is invalid").into(),
            ))
        };
        let date_of_birth = open_text(keys, "date_of_birth", id, self.date_of_birth)?
            .map(|d| d.parse::<NaiveDate>().map_err(|_| corrupt("date_of_birth")))
            .transpose()?;
        let fee = match (self.fee_rule_id, self.fee_amount_minor, self.fee_currency) {
            (Some(rule_id), Some(amount), Some(currency)) => {
                let currency = Currency::parse(&currency).map_err(|_| corrupt("fee_currency"))?;
                let options = self
                    .fee_prices
                    .map(|p| p.0)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        let c = Currency::parse(&p.currency).map_err(|_| corrupt("fee_prices"))?;
                        Money::new(p.amount, c).map_err(|_| corrupt("fee_prices"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Some(FixedFee {
                    rule_id,
                    amount: Money::new(amount, currency).map_err(|_| corrupt("fee_amount"))?,
                    exempt: self.fee_exempt.unwrap_or(false),
                    options,
                })
            }
            _ => None,
        };
        Ok(Application {
            id,
            applicant_id: self.applicant_id,
            status: self.status.parse().map_err(|_| corrupt("status"))?,
            full_name: open_text(keys, "full_name", id, self.full_name)?,
            passport_number: open_text(keys, "passport_number", id, self.passport_number)?,
            date_of_birth,
            nationality: self
                .nationality
                .map(|c| CountryCode::parse(&c).map_err(|_| corrupt("nationality")))
                .transpose()?,
            visa_type: self
                .visa_type
                .map(|v| v.parse().map_err(|_| corrupt("visa_type")))
                .transpose()?,
            processing_speed: self
                .processing_speed
                .map(|v| v.parse().map_err(|_| corrupt("processing_speed")))
                .transpose()?,
            intended_arrival_date: self.intended_arrival_date,
            fee,
            decision_reason: self.decision_reason,
            submitted_at: self.submitted_at,
            paid_at: self.paid_at,
            decided_at: self.decided_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Sealed and stringified values of a change set, ready to bind.
pub(super) struct Bindings {
    pub(super) full_name: Option<Vec<u8>>,
    pub(super) passport_number: Option<Vec<u8>>,
    pub(super) date_of_birth: Option<Vec<u8>>,
    pub(super) nationality: Option<&'static str>,
    pub(super) visa_type: Option<&'static str>,
    pub(super) processing_speed: Option<&'static str>,
    pub(super) intended_arrival_date: Option<NaiveDate>,
}

impl Bindings {
    pub(super) fn new(keys: &DataKeys, id: ApplicationId, c: &ApplicationChanges) -> Self {
        Self {
            full_name: seal_text(
                keys,
                "full_name",
                id,
                c.full_name.as_ref().map(|v| v.as_str()),
            ),
            passport_number: seal_text(
                keys,
                "passport_number",
                id,
                c.passport_number.as_ref().map(|v| v.as_str()),
            ),
            date_of_birth: seal_text(
                keys,
                "date_of_birth",
                id,
                c.date_of_birth.map(|d| d.date().to_string()).as_deref(),
            ),
            nationality: c.nationality.map(|n| n.alpha2()),
            visa_type: c.visa_type.map(|v| v.as_str()),
            processing_speed: c.processing_speed.map(|v| v.as_str()),
            intended_arrival_date: c.intended_arrival_date.map(|d| d.date()),
        }
    }
}
