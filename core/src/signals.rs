//! Signals between the service's processes, sent once a transaction has committed: a payment's
//! new state for event streams ([`crate::payment::announcements`]) and "a job was added" for a
//! queue's workers ([`wake_workers`]).
//!
//! They travel through Redis pub/sub, on channels named by `EVISA_REDIS_PREFIX`; each process
//! delivers its own signals to itself directly and skips their echo. They used to be Postgres
//! `NOTIFY`s inside the transactions, but a transaction that notifies takes Postgres's one
//! notification-queue lock at commit and holds it through the WAL flush, so those commits ran
//! one at a time. A signal can be lost (a process stopping between its commit and its publish,
//! Redis away): each receiver has its own fallback (streams re-read, workers poll).

use std::{
    collections::HashSet,
    sync::{LazyLock, Mutex},
    time::Duration,
};

use futures_util::StreamExt;

/// What a signal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topic {
    /// A payment's announcement (its row as JSON).
    PaymentStatus,
    /// A job was added to the queue named.
    JobAdded,
}

impl Topic {
    const ALL: [Topic; 2] = [Topic::PaymentStatus, Topic::JobAdded];

    fn channel(self, prefix: &str) -> String {
        match self {
            Topic::PaymentStatus => format!("{prefix}payment_status"),
            Topic::JobAdded => format!("{prefix}jobs_added"),
        }
    }

    fn deliver(self, text: &str) {
        match self {
            Topic::PaymentStatus => crate::payment::announcements::deliver(text),
            Topic::JobAdded => evisa_jobs::deliver_wake(text),
        }
    }
}

/// Wakes the workers of `queue`, here and in the other processes, once the transaction that
/// added a job with `evisa_jobs::enqueue_then_wake` has committed. A lost wake-up costs only
/// time: idle workers poll every `EVISA_JOB_POLL_MS`.
pub fn wake_workers(queue: &str) {
    evisa_jobs::deliver_wake(queue);
    publish(Topic::JobAdded, queue);
}

/// Names this process in what it publishes, so that its relay skips its own signals.
static ORIGIN: LazyLock<String> = LazyLock::new(|| uuid::Uuid::now_v7().simple().to_string());

/// Where this process publishes: one prefix in production; a test process running several
/// services (each with its own prefix) publishes under each of theirs.
static REMOTES: Mutex<Vec<(redis::aio::ConnectionManager, String)>> = Mutex::new(Vec::new());

/// The prefixes whose relay runs in this process (one each).
static RELAYED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// Publishes this process's signals to the others through `redis`, under `prefix`, and relays
/// theirs here (`redis_url`, a connection of its own). Once per prefix and process.
pub fn connect(redis: redis::aio::ConnectionManager, redis_url: &str, prefix: &str) {
    {
        let mut remotes = REMOTES.lock().expect("never poisoned");
        if !remotes.iter().any(|(_, p)| p == prefix) {
            remotes.push((redis, prefix.to_string()));
        }
    }
    if RELAYED
        .lock()
        .expect("never poisoned")
        .insert(prefix.to_string())
    {
        tokio::spawn(relay(redis_url.to_string(), prefix.to_string()));
    }
}

/// Sends a signal this process has already delivered to itself to the other processes.
pub(crate) fn publish(topic: Topic, text: &str) {
    let remotes: Vec<(redis::aio::ConnectionManager, String)> =
        REMOTES.lock().expect("never poisoned").clone();
    if remotes.is_empty() {
        return;
    }
    let message = format!("{} {text}", *ORIGIN);
    tokio::spawn(async move {
        for (mut redis, prefix) in remotes {
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(topic.channel(&prefix))
                .arg(&message)
                .query_async(&mut redis)
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, ?topic, "a signal to the other processes could not be published; they fall back on reading again");
            }
        }
    });
}

/// Hands the other processes' signals under `prefix` to this one, subscribing again whenever
/// the connection is lost. Runs until the process ends.
async fn relay(redis_url: String, prefix: String) {
    let channels: Vec<(String, Topic)> = Topic::ALL
        .iter()
        .map(|t| (t.channel(&prefix), *t))
        .collect();
    let mut warned = false;
    loop {
        let subscribed = async {
            let client = redis::Client::open(redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            for (channel, _) in &channels {
                pubsub.subscribe(channel).await?;
            }
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(5), subscribed).await {
            Ok(Ok(mut pubsub)) => {
                warned = false;
                // Whatever was published while this was not subscribed may be missing.
                crate::payment::announcements::missed();
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let Some(topic) = channels
                        .iter()
                        .find(|(c, _)| c == message.get_channel_name())
                        .map(|(_, t)| *t)
                    else {
                        continue;
                    };
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    match payload.split_once(' ') {
                        Some((origin, text)) if origin != ORIGIN.as_str() => topic.deliver(text),
                        _ => {}
                    }
                }
                tracing::warn!(
                    "the relay of signals between processes lost Redis; subscribing again"
                );
                crate::payment::announcements::missed();
            }
            Ok(Err(e)) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "the relay of signals between processes cannot reach Redis; streams re-read and workers poll meanwhile");
            }
            Err(_) if !warned => {
                warned = true;
                tracing::warn!(
                    "the relay of signals between processes cannot reach Redis (timed out); streams re-read and workers poll meanwhile"
                );
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
