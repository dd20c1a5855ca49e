//! Facts about a person that arrive as text and are parsed once at the edge.

use std::fmt;

use chrono::NaiveDate;

/// Why a piece of personal data was refused. Messages never echo the value back (it is PII).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PersonError {
    #[error("must be a valid email address")]
    Email,
    #[error("must be 6 to 9 letters or digits, as printed in the passport's machine-readable zone")]
    PassportNumber,
    #[error("must be 1 to 200 characters of text, without control characters")]
    FullName,
    #[error("must be a date in the past, not before 1900-01-01")]
    DateOfBirth,
    #[error("must be between today and one year from today")]
    ArrivalDate,
}

/// A normalised (trimmed, lower-cased) email address.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, PersonError> {
        let normalised = raw.trim().to_lowercase();
        if normalised.len() > 254 {
            return Err(PersonError::Email);
        }
        let parsed = email_address::EmailAddress::parse_with_options(
            &normalised,
            email_address::Options::default()
                .without_display_text()
                .without_domain_literal(),
        )
        .map_err(|_| PersonError::Email)?;
        // A bare host name (`a@localhost`) is technically valid but never a real applicant.
        if !parsed.domain().contains('.') {
            return Err(PersonError::Email);
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(***)")
    }
}

/// A passport number: 6 to 9 ASCII letters or digits, stored upper-case (ICAO 9303 MRZ field).
#[derive(Clone, PartialEq, Eq)]
pub struct PassportNumber(String);

impl PassportNumber {
    pub fn parse(raw: &str) -> Result<Self, PersonError> {
        let s = raw.trim().to_ascii_uppercase();
        if !(6..=9).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(PersonError::PassportNumber);
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PassportNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PassportNumber(***)")
    }
}

/// The applicant's full name as in the passport. Any script is allowed.
#[derive(Clone, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    pub fn parse(raw: &str) -> Result<Self, PersonError> {
        let s = raw.trim();
        let chars = s.chars().count();
        if chars == 0 || chars > 200 || s.chars().any(char::is_control) {
            return Err(PersonError::FullName);
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FullName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FullName(***)")
    }
}

/// A date of birth: in the past and not absurdly long ago.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DateOfBirth(NaiveDate);

impl DateOfBirth {
    pub fn parse(date: NaiveDate, today: NaiveDate) -> Result<Self, PersonError> {
        let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date");
        if date < earliest || date >= today {
            return Err(PersonError::DateOfBirth);
        }
        Ok(Self(date))
    }

    /// The part of the rule that does not depend on the day: not before 1900-01-01. A draft may
    /// hold such a date; [`DateOfBirth::parse`] is checked again when it is submitted.
    pub fn for_draft(date: NaiveDate) -> Result<Self, PersonError> {
        if date < NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date") {
            return Err(PersonError::DateOfBirth);
        }
        Ok(Self(date))
    }

    pub fn date(&self) -> NaiveDate {
        self.0
    }
}

impl fmt::Debug for DateOfBirth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DateOfBirth(***)")
    }
}

/// The day the applicant means to arrive: from today up to one year ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrivalDate(NaiveDate);

impl ArrivalDate {
    pub fn parse(date: NaiveDate, today: NaiveDate) -> Result<Self, PersonError> {
        let latest = today + chrono::Days::new(366);
        if date < today || date > latest {
            return Err(PersonError::ArrivalDate);
        }
        Ok(Self(date))
    }

    /// Any date, for a draft: the window depends on the day, so [`ArrivalDate::parse`] is
    /// checked when the draft is submitted.
    pub fn for_draft(date: NaiveDate) -> Self {
        Self(date)
    }

    pub fn date(&self) -> NaiveDate {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ann@Example.ORG ").unwrap().as_str(),
            "ann@example.org"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.org",
            "ann@localhost",
            "Ann <ann@example.org>",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn passport_numbers() {
        assert_eq!(
            PassportNumber::parse("ab123456").unwrap().as_str(),
            "AB123456"
        );
        for bad in ["12345", "1234567890", "AB-12345", "AB 12345", "ÄB12345"] {
            assert!(
                PassportNumber::parse(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn names_allow_any_script() {
        assert_eq!(FullName::parse(" 李小龙 ").unwrap().as_str(), "李小龙");
        assert!(FullName::parse("   ").is_err());
        assert!(FullName::parse("a\u{0}b").is_err());
        assert!(FullName::parse(&"x".repeat(201)).is_err());
    }

    #[test]
    fn dates_are_range_checked() {
        let today = d("2026-11-26");
        assert!(DateOfBirth::parse(d("1990-05-01"), today).is_ok());
        assert!(DateOfBirth::parse(d("2026-11-26"), today).is_err());
        assert!(DateOfBirth::parse(d("1899-12-31"), today).is_err());
        assert!(DateOfBirth::for_draft(d("2999-01-01")).is_ok());
        assert!(DateOfBirth::for_draft(d("1899-12-31")).is_err());
        assert!(ArrivalDate::parse(d("2026-11-26"), today).is_ok());
        assert!(ArrivalDate::parse(d("2027-11-26"), today).is_ok());
        assert!(ArrivalDate::parse(d("2026-11-25"), today).is_err());
        assert!(ArrivalDate::parse(d("2028-01-01"), today).is_err());
    }

    #[test]
    fn debug_never_shows_pii() {
        let p = PassportNumber::parse("AB123456").unwrap();
        let e = Email::parse("ann@example.org").unwrap();
        assert!(!format!("{p:?}{e:?}").contains("AB123456"));
        assert!(!format!("{e:?}").contains("ann"));
    }
}
