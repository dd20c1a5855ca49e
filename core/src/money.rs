//! Money as an integer number of minor units with its ISO 4217 currency. No floats anywhere.

use std::{fmt, str::FromStr};

/// An ISO 4217 currency. Its exponent (how many minor units make a major one) comes from the
/// `iso_currency` tables: USD has 2, JPY has 0, KWD has 3.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an ISO 4217 currency code (three capital letters, such as USD)")]
pub struct UnknownCurrency(pub String);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, UnknownCurrency> {
        // iso_currency accepts only the canonical upper-case code; be strict on purpose so that a
        // stored code always round-trips byte for byte.
        iso_currency::Currency::from_code(code)
            .map(Self)
            .ok_or_else(|| UnknownCurrency(code.to_string()))
    }

    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point in the major unit; `None`-exponent currencies (gold, SDR)
    /// have no minor unit and count as 0.
    pub fn exponent(&self) -> u32 {
        self.0.exponent().map(u32::from).unwrap_or(0)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = UnknownCurrency;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An amount of money: integer minor units and a currency.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("an amount may not be negative")]
    Negative,
}

impl Money {
    /// A non-negative amount in minor units of `currency`.
    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if amount_minor < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(Self {
            amount_minor,
            currency,
        })
    }

    pub fn zero(currency: Currency) -> Self {
        Self {
            amount_minor: 0,
            currency,
        }
    }

    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn is_zero(&self) -> bool {
        self.amount_minor == 0
    }

    /// The amount as a decimal string in major units, e.g. `12.50` USD, `1500` JPY, `1.250` KWD.
    /// Used where a gateway wants decimals (Alipay's `total_amount`) and in receipts.
    pub fn to_major_string(&self) -> String {
        let exp = self.currency.exponent();
        if exp == 0 {
            return self.amount_minor.to_string();
        }
        let scale = 10i64.pow(exp);
        format!(
            "{}.{:0width$}",
            self.amount_minor / scale,
            self.amount_minor % scale,
            width = exp as usize
        )
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_major_string(), self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({} {})", self.amount_minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn exponents_come_from_iso_4217() {
        assert_eq!(c("USD").exponent(), 2);
        assert_eq!(c("JPY").exponent(), 0);
        assert_eq!(c("KWD").exponent(), 3);
        assert_eq!(c("CNY").exponent(), 2);
    }

    #[test]
    fn unknown_or_lowercase_codes_are_refused() {
        assert!(Currency::parse("XYZ").is_err());
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("").is_err());
    }

    #[test]
    fn major_unit_strings_follow_the_exponent() {
        assert_eq!(
            Money::new(1250, c("USD")).unwrap().to_major_string(),
            "12.50"
        );
        assert_eq!(Money::new(5, c("USD")).unwrap().to_major_string(), "0.05");
        assert_eq!(
            Money::new(1500, c("JPY")).unwrap().to_major_string(),
            "1500"
        );
        assert_eq!(
            Money::new(1250, c("KWD")).unwrap().to_major_string(),
            "1.250"
        );
        assert_eq!(
            Money::new(35000, c("CNY")).unwrap().to_string(),
            "350.00 CNY"
        );
    }

    #[test]
    fn negative_amounts_are_refused() {
        assert_eq!(Money::new(-1, c("USD")), Err(MoneyError::Negative));
        assert!(Money::zero(c("USD")).is_zero());
    }
}
