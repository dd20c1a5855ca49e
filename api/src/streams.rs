//! How many event streams are open, per applicant and in all, in this process: each stream holds
//! a slot for as long as it is open (a connection, a subscription and a task), so one applicant
//! cannot hold hundreds of them, nor everyone together more than the process can serve.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use evisa_core::{config::ConnectionLimits, ids::UserId};

use crate::problem::ApiError;

/// The open streams.
#[derive(Default)]
pub struct EventStreams {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_applicant: HashMap<UserId, usize>,
}

/// One open stream; dropping it (when the stream ends or its client goes) frees the slot.
pub struct StreamSlot {
    streams: Arc<EventStreams>,
    applicant: UserId,
}

impl EventStreams {
    /// A slot for one more stream of `applicant`, or 429 when over either limit.
    pub fn open(
        self: &Arc<Self>,
        applicant: UserId,
        limits: &ConnectionLimits,
    ) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().expect("stream counts");
        let mine = open.per_applicant.get(&applicant).copied().unwrap_or(0);
        if mine >= limits.event_streams_per_applicant || open.total >= limits.event_streams_total {
            return Err(ApiError::too_many(5));
        }
        open.total += 1;
        *open.per_applicant.entry(applicant).or_default() += 1;
        Ok(StreamSlot {
            streams: self.clone(),
            applicant,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().expect("stream counts");
        open.total -= 1;
        if let Some(n) = open.per_applicant.get_mut(&self.applicant) {
            *n -= 1;
            if *n == 0 {
                open.per_applicant.remove(&self.applicant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_applicant_and_in_all_and_freed_on_drop() {
        let streams = Arc::new(EventStreams::default());
        let limits = ConnectionLimits {
            event_streams_per_applicant: 2,
            event_streams_total: 3,
            ..ConnectionLimits::default()
        };
        let (ann, bob) = (UserId::new(), UserId::new());
        let a1 = streams.open(ann, &limits).unwrap();
        let _a2 = streams.open(ann, &limits).unwrap();
        assert!(streams.open(ann, &limits).is_err(), "per applicant");
        let _b1 = streams.open(bob, &limits).unwrap();
        assert!(streams.open(bob, &limits).is_err(), "in all");
        drop(a1);
        let _b2 = streams.open(bob, &limits).unwrap();
        assert!(streams.open(ann, &limits).is_err());
    }
}
