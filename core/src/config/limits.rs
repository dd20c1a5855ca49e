//! Rate limits and attempt limits, counted in Redis by [`crate::ratelimit`]. Defaults are far
//! above what a real applicant, officer or gateway does, and far below what an attack needs.

use std::time::Duration;

use super::source::Reader;
use crate::ratelimit::Quota;

/// How much each kind of caller may do.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Sign-ins per minute per source address, and per account from one source (so that
    /// nobody can lock a real user out by failing to sign in as them from elsewhere).
    pub logins_per_minute: u32,
    /// Accounts registered per hour per source address.
    pub registrations_per_hour: u32,
    /// Payments started per minute per source address.
    pub payments_per_minute: u32,
    /// Refunds asked for per minute per source address.
    pub refunds_per_minute: u32,
    /// Gateway webhooks and notifies per minute per source address.
    pub callbacks_per_minute: u32,
    /// Failed payment attempts per application per day (card testing).
    pub failed_payments_per_application: u32,
    /// Failed payment attempts per applicant per day, over all their applications.
    pub failed_payments_per_applicant: u32,
}

const DAY: Duration = Duration::from_secs(86_400);

impl LimitSettings {
    pub fn login(&self) -> Quota {
        Quota::per_minute(self.logins_per_minute)
    }
    pub fn registration(&self) -> Quota {
        Quota::per(self.registrations_per_hour, Duration::from_secs(3600))
    }
    pub fn payment(&self) -> Quota {
        Quota::per_minute(self.payments_per_minute)
    }
    pub fn refund(&self) -> Quota {
        Quota::per_minute(self.refunds_per_minute)
    }
    pub fn callback(&self) -> Quota {
        Quota::per_minute(self.callbacks_per_minute)
    }
    pub fn failures_per_application(&self) -> Quota {
        Quota::per(self.failed_payments_per_application, DAY)
    }
    pub fn failures_per_applicant(&self) -> Quota {
        Quota::per(self.failed_payments_per_applicant, DAY)
    }
}

pub(super) fn load(r: &mut Reader) -> LimitSettings {
    let mut count = |var: &'static str, default: u32| {
        r.parsed(var, default, |v| match v.parse::<u32>() {
            Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
            _ => Err("must be a number from 1 to 1000000".into()),
        })
    };
    LimitSettings {
        logins_per_minute: count("EVISA_LOGIN_ATTEMPTS_PER_MINUTE", 10),
        registrations_per_hour: count("EVISA_REGISTRATIONS_PER_HOUR", 20),
        payments_per_minute: count("EVISA_PAYMENTS_PER_MINUTE", 30),
        refunds_per_minute: count("EVISA_REFUNDS_PER_MINUTE", 30),
        callbacks_per_minute: count("EVISA_CALLBACKS_PER_MINUTE", 6000),
        failed_payments_per_application: count("EVISA_FAILED_PAYMENTS_PER_APPLICATION", 10),
        failed_payments_per_applicant: count("EVISA_FAILED_PAYMENTS_PER_APPLICANT", 20),
    }
}
