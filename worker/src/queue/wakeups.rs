//! When a queue's workers look for jobs: woken as soon as one is added, and polled besides.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Stream, StreamExt, stream::BoxStream};
use sqlx::PgPool;

use super::WAKE_CHANNEL;

/// Hands Postgres's job wake-ups (`NOTIFY evisa_jobs`, payload: the queue) to this process's
/// workers, through the same channel as the wake-ups sent after commit (`signals::wake_workers`): one
/// LISTEN connection for every worker of the process. Runs until aborted, listening again
/// whenever its connection is lost (polls cover the gap).
pub fn relay_notifications(db: PgPool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(mut listener) = sqlx::postgres::PgListener::connect_with(&db).await
                && listener.listen(WAKE_CHANNEL).await.is_ok()
            {
                while let Ok(n) = listener.recv().await {
                    evisa_jobs::deliver_wake(n.payload());
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// When a queue's workers look for jobs: as soon as one is added (told after commit by
/// `signals::wake_workers`, or by Postgres through [`relay_notifications`]), and at every poll interval
/// (delayed jobs, retries, lost wake-ups).
///
/// Each wake-up also re-schedules the worker's task, so that the next look registers for the
/// next wake-up: a stream that yields without that would leave a worker with free slots and
/// waiting jobs asleep until a running job ends.
pub struct Wakeups {
    queue: &'static str,
    /// The queue storage's "a fetch may find something" (see `Store::news`).
    news: Arc<AtomicBool>,
    tick: tokio::time::Interval,
    // A Mutex only to make it Sync (workers are shared across threads); never contended.
    woken: std::sync::Mutex<BoxStream<'static, ()>>,
}

/// A worker restarted by the monitor gets its own wake-ups and ticks (and must: without `Clone`,
/// `queue.clone()` would resolve through `Deref` to the bare queue, which nothing wakes).
impl Clone for Wakeups {
    fn clone(&self) -> Self {
        Self::new(self.queue, self.news.clone(), self.tick.period())
    }
}

impl Wakeups {
    pub(super) fn new(queue: &'static str, news: Arc<AtomicBool>, every: Duration) -> Self {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            queue,
            news,
            tick,
            woken: std::sync::Mutex::new(Self::woken(queue)),
        }
    }

    /// This queue's wake-ups; a receiver that fell behind wakes too.
    fn woken(queue: &'static str) -> BoxStream<'static, ()> {
        futures_util::stream::unfold(evisa_jobs::woken(), move |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(q) if &*q == queue => return Some(((), rx)),
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        return Some(((), rx));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

impl Stream for Wakeups {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        let this = &mut *self;
        let mut woken = this.tick.poll_tick(cx).is_ready();
        let local = this
            .woken
            .get_mut()
            .expect("never poisoned: polled by one task at a time");
        // Every wake-up waiting is taken: one look serves them all.
        while let Poll::Ready(Some(())) = local.poll_next_unpin(cx) {
            woken = true;
        }
        if woken {
            this.news.store(true, Ordering::Release);
            cx.waker().wake_by_ref();
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}
