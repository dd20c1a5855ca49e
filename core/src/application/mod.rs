//! Visa applications: their status machine and their storage.

pub mod rekey;
mod status;
pub mod store;

pub use status::{ApplicationEvent, ApplicationRefusal, ApplicationStatus};
pub use store::{
    Actor, AdminFilter, Application, ApplicationChanges, ApplicationError, Decision, FixedFee, Page,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::person::{DateOfBirth, FullName, PassportNumber};

    /// Every read model that holds personal data prints `***` for it.
    #[test]
    fn personal_data_never_shows_in_debug() {
        let name = "Zhang Wei Secretname";
        let passport = "E98765432";
        let birth = chrono::NaiveDate::from_ymd_opt(1987, 6, 5).unwrap();
        let application = Application {
            id: crate::ids::ApplicationId::new(),
            applicant_id: crate::ids::UserId::new(),
            status: ApplicationStatus::Draft,
            full_name: Some(name.into()),
            passport_number: Some(passport.into()),
            date_of_birth: Some(birth),
            nationality: None,
            visa_type: None,
            processing_speed: None,
            intended_arrival_date: None,
            fee: None,
            decision_reason: None,
            submitted_at: None,
            paid_at: None,
            decided_at: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let changes = ApplicationChanges {
            full_name: Some(FullName::parse(name).unwrap()),
            passport_number: Some(PassportNumber::parse(passport).unwrap()),
            date_of_birth: Some(
                DateOfBirth::parse(birth, birth + chrono::Days::new(20_000)).unwrap(),
            ),
            ..ApplicationChanges::default()
        };
        for printed in [format!("{application:?}"), format!("{changes:?}")] {
            for secret in [name, passport, "1987", "Secretname"] {
                assert!(!printed.contains(secret), "{secret} in {printed}");
            }
            assert!(printed.contains("***"), "{printed}");
        }
    }
}
