//! The fee schedule: which rule prices an application, and in which currencies.
//!
//! A rule covers one visa type at one processing speed for a nationality given as a country, a
//! named group of countries, or nobody in particular (everyone else). The most specific rule in
//! force on the day wins: country, then group, then everyone; among equals the latest start date.

use chrono::NaiveDate;
use sqlx::{PgExecutor, PgPool};

use crate::{
    country::CountryCode,
    ids::FeeRuleId,
    money::{Currency, Money},
    visa::{ProcessingSpeed, VisaType},
};

/// What a rule was matched on, most specific first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NationalityMatch {
    Country(CountryCode),
    Group(String),
    Everyone,
}

/// The fee for one combination on one day, from one rule of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeQuote {
    pub rule_id: FeeRuleId,
    pub matched: NationalityMatch,
    /// The fee-exempt case: nothing to pay, the application is paid on submission.
    pub exempt: bool,
    /// The price in the rule's base currency: the application's `fee`.
    pub base: Money,
    /// Every currency the fee may be paid in (the base among them), by currency code.
    pub prices: Vec<Money>,
    pub description: String,
}

#[derive(sqlx::FromRow)]
struct QuoteRow {
    id: FeeRuleId,
    exempt: bool,
    base_currency: String,
    description: String,
    nationality_country: Option<String>,
    nationality_group: Option<String>,
    prices: sqlx::types::Json<Vec<PriceRow>>,
}

#[derive(serde::Deserialize)]
struct PriceRow {
    currency: String,
    amount: i64,
}

/// The schedule holds something the domain cannot represent (a bad currency code, a rule whose
/// base currency has no price). Operators must fix the data.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    #[error("fee rule {rule}: {problem}")]
    CorruptRule { rule: FeeRuleId, problem: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The quote for a combination on `on`, or `None` when no rule covers it.
pub async fn quote<'e>(
    db: impl PgExecutor<'e>,
    visa_type: VisaType,
    nationality: CountryCode,
    speed: ProcessingSpeed,
    on: NaiveDate,
) -> Result<Option<FeeQuote>, QuoteError> {
    let row: Option<QuoteRow> = sqlx::query_as(
        "SELECT r.id, r.exempt, r.base_currency, r.description,
                r.nationality_country, r.nationality_group,
                (SELECT coalesce(json_agg(json_build_object('currency', p.currency,
                                                            'amount', p.amount_minor)
                                          ORDER BY p.currency), '[]')
                   FROM fee_rule_prices p WHERE p.rule_id = r.id) AS prices
           FROM fee_rules r
          WHERE r.visa_type = $1 AND r.processing_speed = $2
            AND r.effective_from <= $4
            AND (r.effective_until IS NULL OR r.effective_until > $4)
            AND (r.nationality_country = $3
                 OR r.nationality_group IN (SELECT group_code FROM nationality_group_members
                                             WHERE country = $3)
                 OR (r.nationality_country IS NULL AND r.nationality_group IS NULL))
          ORDER BY CASE WHEN r.nationality_country IS NOT NULL THEN 0
                        WHEN r.nationality_group IS NOT NULL THEN 1
                        ELSE 2 END,
                   r.effective_from DESC, r.id
          LIMIT 1",
    )
    .bind(visa_type.as_str())
    .bind(speed.as_str())
    .bind(nationality.alpha2())
    .bind(on)
    .fetch_optional(db)
    .await?;
    row.map(|r| r.into_quote()).transpose()
}

impl QuoteRow {
    fn into_quote(self) -> Result<FeeQuote, QuoteError> {
        let rule = self.id;
        let corrupt = |problem: String| QuoteError::CorruptRule { rule, problem };
        let prices = self
            .prices
            .0
            .into_iter()
            .map(|p| {
                let currency = Currency::parse(&p.currency).map_err(|e| corrupt(e.to_string()))?;
                Money::new(p.amount, currency).map_err(|e| corrupt(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let base_currency =
            Currency::parse(&self.base_currency).map_err(|e| corrupt(e.to_string()))?;
        let base = prices
            .iter()
            .copied()
            .find(|m| m.currency() == base_currency)
            .ok_or_else(|| corrupt(format!("no price in its base currency {base_currency}")))?;
        if self.exempt != prices.iter().all(Money::is_zero) {
            return Err(corrupt(
                "exempt rules must have only zero prices, and others none".into(),
            ));
        }
        let matched = match (self.nationality_country, self.nationality_group) {
            (Some(c), _) => NationalityMatch::Country(
                CountryCode::parse(&c).map_err(|e| corrupt(e.to_string()))?,
            ),
            (None, Some(g)) => NationalityMatch::Group(g),
            (None, None) => NationalityMatch::Everyone,
        };
        Ok(FeeQuote {
            rule_id: rule,
            matched,
            exempt: self.exempt,
            base,
            prices,
            description: self.description,
        })
    }
}

/// The demo schedule: three visa types, two speeds, the EU, ASEAN and GCC groups, country rules
/// for China (with CNY prices for Alipay) and Japan (priced in yen), one historical rule, and
/// transit for ASEAN nationals fee-exempt. Seeding is idempotent.
pub const DEMO_SCHEDULE: &str = include_str!("demo_schedule.sql");

/// Loads [`DEMO_SCHEDULE`] into the database (idempotent).
pub async fn seed_demo_schedule(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(DEMO_SCHEDULE).execute(&mut *tx).await?;
    tx.commit().await
}
