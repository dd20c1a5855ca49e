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
//!
//! Signals that gather while a `PUBLISH` is on its way leave together, one a line. (A process
//! of a version before that reads such a message as one signal it does not understand, and
//! falls back as for a lost one, while both run during a rolling deploy.)

use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicBool, Ordering},
    },
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

/// Signals waiting for a publisher at most; beyond, new ones are dropped (the receivers' own
/// fallbacks cover them) rather than held while Redis is away.
const OUTBOX_CAPACITY: usize = 10_000;

/// Signals taken from the outbox at once at most.
const BATCH: usize = 500;

/// A `PUBLISH` holds at most this many bytes of signals (and one signal however long), so that
/// an outbox emptied after an outage stays well within what Redis buffers for a subscriber.
const MESSAGE_BYTES: usize = 256 * 1024;

/// Where this process publishes: one prefix in production; a test process running several
/// services (each with its own prefix) publishes under each of theirs.
struct Remote {
    prefix: String,
    /// To the prefix's publisher, which sends what has gathered while it was busy together.
    outbox: tokio::sync::mpsc::Sender<(Topic, String)>,
    /// Signals are being dropped (the outbox is full): warned once until one is published.
    dropping: Arc<AtomicBool>,
}

static REMOTES: Mutex<Vec<Remote>> = Mutex::new(Vec::new());

/// The relay of each prefix in this process (one each).
static RELAYED: LazyLock<Mutex<HashMap<String, tokio::task::JoinHandle<()>>>> =
    LazyLock::new(Mutex::default);

/// Publishes this process's signals to the others through `redis`, under `prefix`, and relays
/// theirs here (`redis_url`, a connection of its own). Once per prefix and process; again only
/// where a publisher or relay has stopped (the runtime that ran it ended: tests run several).
pub fn connect(redis: redis::aio::ConnectionManager, redis_url: &str, prefix: &str) {
    {
        let mut remotes = REMOTES.lock().expect("never poisoned");
        remotes.retain(|r| !r.outbox.is_closed());
        if !remotes.iter().any(|r| r.prefix == prefix) {
            let (outbox, pending) = tokio::sync::mpsc::channel(OUTBOX_CAPACITY);
            let dropping = Arc::new(AtomicBool::new(false));
            tokio::spawn(publisher(
                redis,
                prefix.to_string(),
                pending,
                dropping.clone(),
            ));
            remotes.push(Remote {
                prefix: prefix.to_string(),
                outbox,
                dropping,
            });
        }
    }
    let mut relayed = RELAYED.lock().expect("never poisoned");
    if relayed.get(prefix).is_none_or(|relay| relay.is_finished()) {
        let relay = tokio::spawn(relay(redis_url.to_string(), prefix.to_string()));
        relayed.insert(prefix.to_string(), relay);
    }
}

/// Sends a signal this process has already delivered to itself to the other processes.
pub(crate) fn publish(topic: Topic, text: &str) {
    for remote in REMOTES.lock().expect("never poisoned").iter() {
        match remote.outbox.try_send((topic, text.to_string())) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                if !remote.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        ?topic,
                        "signals to the other processes are being dropped (Redis is slow or away); they fall back on reading again"
                    );
                }
            }
            // Its publisher has stopped (the runtime that ran it has ended); `connect` replaces
            // it.
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Publishes what `pending` receives under `prefix`: each time, everything that gathered while
/// the last `PUBLISH` was on its way, one `PUBLISH` per topic (the texts one per line, after
/// this process's origin), in one round trip. An idle process publishes each signal at once.
async fn publisher(
    mut redis: redis::aio::ConnectionManager,
    prefix: String,
    mut pending: tokio::sync::mpsc::Receiver<(Topic, String)>,
    dropping: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while pending.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for topic in Topic::ALL {
            // A text never holds a line break: announcements are compact JSON, the others
            // queue names.
            let mut message = String::new();
            for (_, text) in batch.iter().filter(|(t, _)| *t == topic) {
                if !message.is_empty() && message.len() + 1 + text.len() > MESSAGE_BYTES {
                    pipe.cmd("PUBLISH")
                        .arg(topic.channel(&prefix))
                        .arg(std::mem::take(&mut message))
                        .ignore();
                }
                if message.is_empty() {
                    message.push_str(&ORIGIN);
                    message.push(' ');
                } else {
                    message.push('\n');
                }
                message.push_str(text);
            }
            if !message.is_empty() {
                pipe.cmd("PUBLISH")
                    .arg(topic.channel(&prefix))
                    .arg(message)
                    .ignore();
            }
        }
        batch.clear();
        match pipe.query_async::<()>(&mut redis).await {
            Ok(()) => dropping.store(false, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(error = %e, "signals to the other processes could not be published; they fall back on reading again");
            }
        }
    }
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
                    // One signal a line (see `publisher`).
                    match payload.split_once(' ') {
                        Some((origin, texts)) if origin != ORIGIN.as_str() => {
                            texts.split('\n').for_each(|text| topic.deliver(text))
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// The signals of a message published by this process that carry `tag` (tests run at once,
    /// and each process's signals go to every prefix it publishes under).
    fn own_lines(message: &redis::Msg, tag: &str) -> Vec<String> {
        let payload: String = message.get_payload().unwrap();
        assert!(
            payload.len() <= ORIGIN.len() + 1 + MESSAGE_BYTES,
            "{}",
            payload.len()
        );
        let (origin, lines) = payload.split_once(' ').unwrap();
        assert_eq!(origin, ORIGIN.as_str());
        lines
            .split('\n')
            .filter(|l| l.starts_with(tag))
            .map(str::to_string)
            .collect()
    }

    async fn subscribed(channel: &str) -> redis::aio::PubSub {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .expect("Redis must be running for tests");
        pubsub.subscribe(channel).await.unwrap();
        pubsub
    }

    /// A new prefix this process publishes under, and a subscription to its job wake-ups.
    async fn publishing() -> (String, redis::aio::PubSub) {
        let prefix = format!("test-{}-", uuid::Uuid::now_v7().simple());
        let pubsub = subscribed(&Topic::JobAdded.channel(&prefix)).await;
        let redis = crate::ratelimit::connect(&redis_url()).await.unwrap();
        connect(redis, &redis_url(), &prefix);
        (prefix, pubsub)
    }

    /// The signals tagged `tag` of the next message that has any.
    async fn next_own(
        messages: &mut (impl futures_util::Stream<Item = redis::Msg> + Unpin),
        tag: &str,
    ) -> Vec<String> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .expect("published")
                .unwrap();
            let own = own_lines(&message, tag);
            if !own.is_empty() {
                return own;
            }
        }
    }

    #[tokio::test]
    async fn signals_sent_together_leave_in_one_publish_in_order() {
        let (prefix, mut pubsub) = publishing().await;
        // Sent before the publisher runs (this runtime has one thread): they gather.
        let queues: Vec<String> = (0..100).map(|i| format!("{prefix}queue-{i}")).collect();
        for q in &queues {
            publish(Topic::JobAdded, q);
        }
        assert_eq!(next_own(&mut pubsub.on_message(), &prefix).await, queues);
    }

    #[tokio::test]
    async fn a_batch_larger_than_one_message_leaves_in_several_whole_lines() {
        let (prefix, mut pubsub) = publishing().await;
        // 200 texts of 4 KiB: 800 KiB, more than three messages' worth.
        let texts: Vec<String> = (0..200)
            .map(|i| format!("{prefix}{i:04}{}", "x".repeat(4092)))
            .collect();
        for text in &texts {
            publish(Topic::JobAdded, text);
        }
        let mut messages = pubsub.on_message();
        let mut received = Vec::new();
        let mut count = 0;
        while received.len() < texts.len() {
            received.extend(next_own(&mut messages, &prefix).await);
            count += 1;
        }
        assert_eq!(received, texts);
        assert!(count >= 4, "{count} messages");
    }

    #[test]
    fn a_publisher_whose_runtime_ended_is_replaced_by_the_next_connect() {
        let prefix = format!("test-{}-", uuid::Uuid::now_v7().simple());
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let first = runtime();
        first.block_on(async {
            let redis = crate::ratelimit::connect(&redis_url()).await.unwrap();
            connect(redis, &redis_url(), &prefix);
        });
        // Its publisher and relay end with it.
        drop(first);
        runtime().block_on(async {
            let mut pubsub = subscribed(&Topic::JobAdded.channel(&prefix)).await;
            let redis = crate::ratelimit::connect(&redis_url()).await.unwrap();
            connect(redis, &redis_url(), &prefix);
            let after = format!("{prefix}after");
            publish(Topic::JobAdded, &after);
            assert_eq!(next_own(&mut pubsub.on_message(), &prefix).await, [after]);
        });
    }

    #[tokio::test]
    async fn the_relay_delivers_each_line_of_another_process_publish() {
        let prefix = format!("test-{}-", uuid::Uuid::now_v7().simple());
        let redis = crate::ratelimit::connect(&redis_url()).await.unwrap();
        let mut woken = evisa_jobs::woken();
        connect(redis.clone(), &redis_url(), &prefix);
        let channel = Topic::JobAdded.channel(&prefix);
        let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
        // The relay subscribes in the background: publish until it hears.
        let heard = tokio::time::timeout(Duration::from_secs(5), async {
            let mut heard = Vec::new();
            while heard.len() < 2 {
                let mut conn = redis.clone();
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(format!("another-process {a}\n{b}"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                heard.clear();
                let listen = tokio::time::sleep(Duration::from_millis(200));
                tokio::pin!(listen);
                loop {
                    tokio::select! {
                        q = woken.recv() => {
                            let q = q.unwrap();
                            if q.starts_with(&prefix) {
                                heard.push(q.to_string());
                            }
                        }
                        _ = &mut listen => break,
                    }
                }
            }
            heard
        })
        .await
        .expect("the relay delivered both lines");
        assert_eq!(heard, [a, b]);
    }
}
