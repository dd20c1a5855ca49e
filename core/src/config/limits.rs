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

/// Bounds on connections and event streams, per API process.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this of its first byte (or of the connection's
    /// opening): half-sent requests (slowloris) are cut off.
    pub header_read_timeout: Duration,
    /// A connection with no bytes either way for this long is closed (event streams send a
    /// keep-alive comment every 15 s, so they stay open).
    pub idle_timeout: Duration,
    /// Connections open at once; beyond, new ones get 503 and are closed.
    pub max_connections: usize,
    /// Event streams one applicant may hold open at once (429 beyond).
    pub event_streams_per_applicant: usize,
    /// Event streams open at once in all (429 beyond).
    pub event_streams_total: usize,
    /// An event stream ends after this; the client reconnects if it still cares.
    pub event_stream_lifetime: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            event_streams_per_applicant: 5,
            event_streams_total: 512,
            event_stream_lifetime: Duration::from_secs(15 * 60),
        }
    }
}

pub(super) fn load_connections(r: &mut Reader) -> ConnectionLimits {
    let d = ConnectionLimits::default();
    let mut seconds = |var: &'static str, default: Duration, min: u64, max: u64| {
        r.parsed(var, default, |v| match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Duration::from_secs(n)),
            _ => Err(format!("must be a number of seconds from {min} to {max}")),
        })
    };
    let header_read_timeout = seconds(
        "EVISA_HEADER_READ_TIMEOUT_SECONDS",
        d.header_read_timeout,
        1,
        300,
    );
    let idle_timeout = seconds("EVISA_IDLE_TIMEOUT_SECONDS", d.idle_timeout, 20, 3600);
    let event_stream_lifetime = seconds(
        "EVISA_EVENT_STREAM_MAX_SECONDS",
        d.event_stream_lifetime,
        1,
        86_400,
    );
    let mut count = |var: &'static str, default: usize| {
        r.parsed(var, default, |v| match v.parse::<usize>() {
            Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
            _ => Err("must be a number from 1 to 1000000".into()),
        })
    };
    ConnectionLimits {
        header_read_timeout,
        idle_timeout,
        max_connections: count("EVISA_MAX_CONNECTIONS", d.max_connections),
        event_streams_per_applicant: count(
            "EVISA_EVENT_STREAMS_PER_APPLICANT",
            d.event_streams_per_applicant,
        ),
        event_streams_total: count("EVISA_EVENT_STREAMS_TOTAL", d.event_streams_total),
        event_stream_lifetime,
    }
}
