//! Committed status changes, told to the event streams of this process and of every other one.
//!
//! A change is announced after its transaction has committed ([`super::apply::announce`]): at
//! once to this process's followers, and through Redis pub/sub to the other processes', whose
//! relays hand it to theirs. It used to go out by Postgres `NOTIFY` inside the transaction; but
//! a transaction that notifies takes Postgres's one notification-queue lock at commit and holds
//! it through the WAL flush, so every payment's commits queued behind one another's.
//!
//! A change can still be missed — a process that stops between its commit and its publish, or
//! Redis away — so followers also re-read when a relay (re)subscribes (a `None` change), when
//! they lag, and every [`FOLLOWER_REREAD`].

use std::{
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::Announced;

/// One announcement; `None` when changes may have been missed (followers re-read).
pub type Change = Option<Arc<Announced>>;

/// How often a follower reads its payment again, whatever it was told.
pub const FOLLOWER_REREAD: Duration = Duration::from_secs(5);

/// This process's followers.
static LOCAL: LazyLock<broadcast::Sender<Change>> = LazyLock::new(|| broadcast::channel(1024).0);

/// Names this process in what it publishes, so that its relay skips its own announcements
/// (already delivered here).
static ORIGIN: LazyLock<String> = LazyLock::new(|| uuid::Uuid::now_v7().simple().to_string());

/// Where this process publishes: one channel in production; a test process running several
/// services (each with its own `EVISA_REDIS_PREFIX`) publishes on each of theirs.
static REMOTES: Mutex<Vec<Remote>> = Mutex::new(Vec::new());

struct Remote {
    redis: redis::aio::ConnectionManager,
    channel: String,
}

fn channel(prefix: &str) -> String {
    format!("{prefix}payment_status")
}

/// Every change from now on, from this process and (with a relay running) the others.
pub fn subscribe() -> broadcast::Receiver<Change> {
    LOCAL.subscribe()
}

/// Publishes this process's announcements to the others through `redis`, on the channel of
/// `prefix` (`EVISA_REDIS_PREFIX`).
pub fn publish_through(redis: redis::aio::ConnectionManager, prefix: &str) {
    let channel = channel(prefix);
    let mut remotes = REMOTES.lock().expect("never poisoned");
    if !remotes.iter().any(|r| r.channel == channel) {
        remotes.push(Remote { redis, channel });
    }
}

/// Tells followers here and elsewhere of one committed change (`text`: the payment's
/// announcement as its statement returned it).
pub(crate) fn publish(text: &str) {
    if let Some(change) = Announced::parse(text) {
        // No followers is fine.
        let _ = LOCAL.send(Some(Arc::new(change)));
    }
    let remotes: Vec<(redis::aio::ConnectionManager, String)> = REMOTES
        .lock()
        .expect("never poisoned")
        .iter()
        .map(|r| (r.redis.clone(), r.channel.clone()))
        .collect();
    if remotes.is_empty() {
        return;
    }
    let message = format!("{} {text}", *ORIGIN);
    tokio::spawn(async move {
        for (mut redis, channel) in remotes {
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&message)
                .query_async(&mut redis)
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "a payment's change could not be published; other processes' followers re-read it shortly");
            }
        }
    });
}

/// Hands the other processes' announcements (on the channel of `prefix`) to this process's
/// followers, subscribing again whenever the connection is lost. Runs until the process ends.
pub async fn relay(redis_url: String, prefix: String) {
    let channel = channel(&prefix);
    let mut warned = false;
    loop {
        let subscribed = async {
            let client = redis::Client::open(redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(5), subscribed).await {
            Ok(Ok(mut pubsub)) => {
                warned = false;
                // Whatever was published while this was not subscribed is read again.
                let _ = LOCAL.send(None);
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    let Some((origin, text)) = payload.split_once(' ') else {
                        continue;
                    };
                    if origin == ORIGIN.as_str() {
                        continue;
                    }
                    if let Some(change) = Announced::parse(text) {
                        let _ = LOCAL.send(Some(Arc::new(change)));
                    }
                }
                tracing::warn!("the relay of payment changes lost Redis; subscribing again");
                let _ = LOCAL.send(None);
            }
            Ok(Err(e)) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "the relay of payment changes cannot reach Redis; followers re-read every few seconds meanwhile");
            }
            Err(_) if !warned => {
                warned = true;
                tracing::warn!(
                    "the relay of payment changes cannot reach Redis (timed out); followers re-read every few seconds meanwhile"
                );
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
