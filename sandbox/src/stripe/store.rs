//! The sandbox's memory: every collection is keyed by id (no scans per request) and bounded
//! (the oldest entries go first), so no load makes it grow without limit.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use super::objects::{Charge, Dispute, Intent, Refund};
use super::{EventRecord, Faults};

/// How many of each kind of object the sandbox remembers. Stripe keeps everything; a test
/// gateway only needs the recent past, and its memory must stay flat under a benchmark. With
/// 50,000, `evisa dev`'s resident memory still grew past 160 MB after 14,000 card payments in
/// six bench runs in a row; with 10,000 it stopped at 147-149 MB (the service's budget is 150).
pub(super) const RETAINED: usize = 10_000;

/// How many event bodies `GET /v1/events` can list (each is a few kilobytes).
pub(super) const EVENT_BODIES: usize = 1_000;

/// How many idempotency keys are remembered with their answers. Stripe keeps a key for 24
/// hours; a client retries within minutes, so the latest keys are what matters, and each record
/// holds a whole answer.
pub(super) const IDEMPOTENCY_KEYS: usize = 10_000;

/// A map that forgets its oldest entries beyond a capacity, and lists in insertion order.
pub(super) struct Bounded<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    cap: usize,
}

impl<V> Bounded<V> {
    pub(super) fn new(cap: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    pub(super) fn insert(&mut self, key: String, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// Values, newest first.
    pub(super) fn newest_first(&self) -> impl Iterator<Item = &V> {
        self.order.iter().rev().filter_map(|k| self.map.get(k))
    }

    /// Values, oldest first.
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.order.iter().filter_map(|k| self.map.get(k))
    }
}

/// An idempotency key's record: what it was first used for, and the answer once there is one.
/// Kept as text, one allocation each, rather than as a parsed tree of many small ones: a key
/// is replayed rarely, and ten thousand answers as JSON trees would be a hundred megabytes.
pub(super) struct KeyRecord {
    /// `POST /v1/refunds`, say.
    pub endpoint: String,
    /// The request's parameters, sorted, as one line (each key and value prefixed by its length).
    pub params: Box<str>,
    /// The status and body as JSON; `None` while the first request is still running.
    pub answer: Option<(u16, Box<str>)>,
}

impl KeyRecord {
    /// The parameters of a request in the form a record keeps them.
    pub fn params_of(pairs: &[(String, String)]) -> Box<str> {
        let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
        sorted.sort();
        let mut line = String::new();
        for (k, v) in sorted {
            // Lengths first, so that no key or value can pass for another split.
            line.push_str(&format!("{}:{k}{}:{v};", k.len(), v.len()));
        }
        line.into_boxed_str()
    }

    pub fn keep(answer: &super::wire::Answer) -> (u16, Box<str>) {
        (answer.0, answer.1.to_string().into_boxed_str())
    }

    /// The answer kept, as it was sent.
    pub fn replay(kept: &(u16, Box<str>)) -> super::wire::Answer {
        (
            kept.0,
            serde_json::from_str(&kept.1).expect("a kept answer is the JSON it was made from"),
        )
    }
}

pub(super) struct State {
    pub intents: Bounded<Intent>,
    /// Intent ids by one metadata pair (`key\0value`), for search.
    pub by_metadata: Bounded<Vec<String>>,
    pub charges: Bounded<Charge>,
    pub refunds: Bounded<Refund>,
    pub disputes: Bounded<Dispute>,
    /// Payment methods made by tokenising a card number.
    pub payment_methods: Bounded<super::cards::TestCard>,
    pub idempotency: Bounded<KeyRecord>,
    pub events: Bounded<EventRecord>,
    /// The bodies of the latest events, for `GET /v1/events` (Stripe keeps 30 days of them).
    pub event_bodies: Bounded<Value>,
    pub faults: Faults,
    /// Webhooks held back per payment intent, while reordering.
    pub held: HashMap<String, Vec<(String, Value)>>,
    counter: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            intents: Bounded::new(RETAINED),
            by_metadata: Bounded::new(RETAINED),
            charges: Bounded::new(RETAINED),
            refunds: Bounded::new(RETAINED),
            disputes: Bounded::new(RETAINED),
            payment_methods: Bounded::new(RETAINED),
            idempotency: Bounded::new(IDEMPOTENCY_KEYS),
            events: Bounded::new(RETAINED),
            event_bodies: Bounded::new(EVENT_BODIES),
            faults: Faults::default(),
            held: HashMap::new(),
            counter: 0,
        }
    }
}

impl State {
    /// Stores a new intent, findable by each of its metadata pairs.
    pub(super) fn add_intent(&mut self, intent: Intent) {
        for (k, v) in &intent.metadata {
            let key = format!("{k}\0{v}");
            let mut ids = self.by_metadata.get(&key).cloned().unwrap_or_default();
            ids.push(intent.id.clone());
            self.by_metadata.insert(key, ids);
        }
        self.intents.insert(intent.id.clone(), intent);
    }

    /// An id like Stripe's: a prefix, then 24 characters, unique within the sandbox.
    pub(super) fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!(
            "{prefix}_{}{:08}",
            &uuid::Uuid::new_v4().simple().to_string()[..16],
            self.counter
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_maps_forget_the_oldest_and_keep_their_order() {
        let mut m = Bounded::new(3);
        for i in 0..5 {
            m.insert(format!("k{i}"), i);
        }
        assert!(m.get("k0").is_none() && m.get("k1").is_none());
        assert_eq!(m.values().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        m.insert("k3".into(), 30);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), vec![2, 30, 4]);
    }
}
