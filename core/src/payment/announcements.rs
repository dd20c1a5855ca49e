//! Committed status changes, told to the event streams of this process and of every other one.
//!
//! A change is announced after its transaction has committed ([`super::apply::announce`]): at
//! once to this process's followers, and to the other processes' through
//! [`crate::signals`] (Redis pub/sub). A change can still be missed — a process that stops
//! between its commit and its publish, or Redis away — so followers also re-read when a relay
//! (re)subscribes (a `None` change), when they lag, and every [`FOLLOWER_REREAD`].

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use tokio::sync::broadcast;

use super::Announced;
use crate::signals::{self, Topic};

/// One announcement; `None` when changes may have been missed (followers re-read).
pub type Change = Option<Arc<Announced>>;

/// How often a follower reads its payment again, whatever it was told.
pub const FOLLOWER_REREAD: Duration = Duration::from_secs(5);

/// This process's followers.
static LOCAL: LazyLock<broadcast::Sender<Change>> = LazyLock::new(|| broadcast::channel(1024).0);

/// Every change from now on, from this process and (once [`signals::connect`]ed) the others.
pub fn subscribe() -> broadcast::Receiver<Change> {
    LOCAL.subscribe()
}

/// Tells followers here and elsewhere of one committed change (`text`: the payment's
/// announcement as its move built it).
pub(crate) fn publish(text: &str) {
    deliver(text);
    signals::publish(Topic::PaymentStatus, text);
}

/// Tells this process's followers of a change (made here, or relayed from another process).
pub(crate) fn deliver(text: &str) {
    if let Some(change) = Announced::parse(text) {
        // No followers is fine.
        let _ = LOCAL.send(Some(Arc::new(change)));
    }
}

/// Tells this process's followers that changes may have been missed.
pub(crate) fn missed() {
    let _ = LOCAL.send(None);
}
