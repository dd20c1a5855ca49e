//! ISO 3166-1 country codes, for nationality.

use std::{fmt, str::FromStr};

/// An officially assigned ISO 3166-1 alpha-2 country code, such as `FR` or `CN`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountryCode(isocountry::CountryCode);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an ISO 3166-1 alpha-2 country code (two capital letters, such as FR)")]
pub struct UnknownCountry(pub String);

impl CountryCode {
    pub fn parse(code: &str) -> Result<Self, UnknownCountry> {
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(UnknownCountry(code.to_string()));
        }
        isocountry::CountryCode::for_alpha2(code)
            .map(Self)
            .map_err(|_| UnknownCountry(code.to_string()))
    }

    /// Every assigned code, in alphabetical order (the values [`CountryCode::parse`] accepts).
    pub fn all_alpha2() -> impl Iterator<Item = &'static str> {
        isocountry::CountryCode::iter_alpha2().map(|c| c.alpha2())
    }

    pub fn alpha2(&self) -> &'static str {
        self.0.alpha2()
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpha2())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpha2())
    }
}

impl FromStr for CountryCode {
    type Err = UnknownCountry;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_assigned_codes_only() {
        assert_eq!(CountryCode::parse("FR").unwrap().alpha2(), "FR");
        assert_eq!(CountryCode::parse("CN").unwrap().alpha2(), "CN");
        assert!(CountryCode::parse("fr").is_err());
        assert!(CountryCode::parse("XX").is_err());
        assert!(CountryCode::parse("FRA").is_err());
        assert!(CountryCode::parse("").is_err());
        assert!(CountryCode::all_alpha2().all(|c| CountryCode::parse(c).is_ok()));
        assert!(CountryCode::all_alpha2().any(|c| c == "FR"));
    }
}
