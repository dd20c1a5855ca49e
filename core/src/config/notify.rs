//! Settings of the signed notifications to portals' back offices.

use std::time::Duration;

use super::source::Reader;
use crate::notify::delivery::DEFAULT_SCHEDULE;

#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// Hosts an endpoint may reach over plain http (everything else must be https).
    pub allow_hosts: Vec<String>,
    /// The waits between attempts; once spent, a delivery is failed.
    pub schedule: Vec<Duration>,
    /// How often workers look for due deliveries.
    pub poll: Duration,
}

pub(super) fn load(r: &mut Reader, dev: bool) -> NotifySettings {
    let default_hosts = if dev {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        Vec::new()
    };
    let allow_hosts = r.parsed("EVISA_NOTIFY_ALLOW_HOSTS", default_hosts, |v| {
        Ok(v.split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect())
    });
    let schedule = r.parsed(
        "EVISA_NOTIFY_RETRY_SCHEDULE",
        DEFAULT_SCHEDULE.to_vec(),
        |v| {
            v.split(',')
                .map(|s| match s.trim().parse::<u64>() {
                    Ok(n) if (1..=7 * 86400).contains(&n) => Ok(Duration::from_secs(n)),
                    _ => Err(
                        "must be comma-separated waits in seconds, each from 1 to 604800".into(),
                    ),
                })
                .collect()
        },
    );
    let poll = r.parsed(
        "EVISA_NOTIFY_POLL_MS",
        Duration::from_millis(500),
        |v| match v.parse::<u64>() {
            Ok(n) if (10..=60_000).contains(&n) => Ok(Duration::from_millis(n)),
            _ => Err("must be milliseconds from 10 to 60000".into()),
        },
    );
    NotifySettings {
        allow_hosts,
        schedule,
        poll,
    }
}
