//! The sandbox's trades, kept in bounded memory: looked up by `out_trade_no` or `trade_no` in
//! hash maps, and forgotten oldest first beyond a limit (closed trades, which nothing will ask
//! about again, sooner than open ones). Amounts are integer fen; yuan strings only at the wire.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Closed trades kept for queries after they closed.
pub const MAX_CLOSED_TRADES: usize = 10_000;
/// Open trades (waiting for the buyer, or paid and refundable) kept at most.
pub const MAX_OPEN_TRADES: usize = 20_000;
/// Refunds one trade takes at most: the sandbox's own bound, to keep its memory bounded.
pub const MAX_REFUNDS_PER_TRADE: usize = 50;

/// A trade's `trade_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TradeStatus {
    WaitBuyerPay,
    /// Paid and refundable.
    Success,
    /// Closed unpaid (timed out, cancelled) or refunded in full.
    Closed,
}

impl TradeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeStatus::Success => "TRADE_SUCCESS",
            TradeStatus::Closed => "TRADE_CLOSED",
        }
    }
}

/// One refund of a trade.
#[derive(Clone, Debug)]
pub struct Refund {
    pub out_request_no: String,
    pub fen: i64,
    pub at: DateTime<Utc>,
}

/// A trade as the sandbox holds it.
#[derive(Clone, Debug)]
pub struct Trade {
    pub out_trade_no: String,
    /// Alipay's 28-digit trade number, assigned when the trade is created.
    pub trade_no: String,
    pub total_fen: i64,
    pub subject: String,
    pub status: TradeStatus,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub refunded_fen: i64,
    /// In the order they were made.
    pub refunds: Vec<Refund>,
    refund_index: HashMap<String, usize>,
    pub notify_url: String,
    pub return_url: String,
}

impl Trade {
    pub fn new(
        out_trade_no: String,
        trade_no: String,
        total_fen: i64,
        subject: String,
        notify_url: String,
        return_url: String,
    ) -> Trade {
        Trade {
            out_trade_no,
            trade_no,
            total_fen,
            subject,
            status: TradeStatus::WaitBuyerPay,
            created_at: Utc::now(),
            paid_at: None,
            closed_at: None,
            refunded_fen: 0,
            refunds: Vec::new(),
            refund_index: HashMap::new(),
            notify_url,
            return_url,
        }
    }

    /// The refund made with `out_request_no`, if any.
    pub fn refund(&self, out_request_no: &str) -> Option<&Refund> {
        self.refund_index
            .get(out_request_no)
            .map(|&i| &self.refunds[i])
    }

    fn add_refund(&mut self, refund: Refund) {
        self.refunded_fen += refund.fen;
        self.refund_index
            .insert(refund.out_request_no.clone(), self.refunds.len());
        self.refunds.push(refund);
    }
}

/// What a refund request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundOutcome {
    /// Money moved; `closed` when the trade is now refunded in full.
    Refunded {
        closed: bool,
    },
    /// The same `out_request_no` again: nothing moved.
    Repeat,
    /// The same `out_request_no` again, for another amount.
    Discordant,
    NoSuchTrade,
    /// Not paid, or closed.
    NotRefundable,
    /// More than what remains.
    TooMuch,
    TooMany,
}

/// A trade as the control endpoint and tests see it.
#[derive(Clone, Debug, Serialize)]
pub struct TradeRecord {
    pub out_trade_no: String,
    pub trade_no: String,
    pub total_amount: String,
    pub status: String,
    pub subject: String,
    /// `(out_request_no, amount)` of each refund, oldest first.
    pub refunded: Vec<(String, String)>,
}

impl From<&Trade> for TradeRecord {
    fn from(t: &Trade) -> Self {
        TradeRecord {
            out_trade_no: t.out_trade_no.clone(),
            trade_no: t.trade_no.clone(),
            total_amount: yuan(t.total_fen),
            status: t.status.as_str().to_string(),
            subject: t.subject.clone(),
            refunded: t
                .refunds
                .iter()
                .map(|r| (r.out_request_no.clone(), yuan(r.fen)))
                .collect(),
        }
    }
}

/// Fen as Alipay's yuan string (`360.00`).
pub fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// Every trade the sandbox still remembers.
pub struct Trades {
    by_out_trade_no: HashMap<String, Trade>,
    by_trade_no: HashMap<String, String>,
    /// Open trades by creation, oldest first; may hold ids since closed or forgotten (skipped).
    open: VecDeque<String>,
    open_count: usize,
    /// Closed trades by closing, oldest first.
    closed: VecDeque<String>,
    max_open: usize,
    max_closed: usize,
}

impl Default for Trades {
    fn default() -> Self {
        Trades::with_limits(MAX_OPEN_TRADES, MAX_CLOSED_TRADES)
    }
}

impl Trades {
    pub fn with_limits(max_open: usize, max_closed: usize) -> Trades {
        Trades {
            by_out_trade_no: HashMap::new(),
            by_trade_no: HashMap::new(),
            open: VecDeque::new(),
            open_count: 0,
            closed: VecDeque::new(),
            max_open,
            max_closed,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_out_trade_no.len()
    }

    pub fn get(&self, out_trade_no: &str) -> Option<&Trade> {
        self.by_out_trade_no.get(out_trade_no)
    }

    /// A trade by `out_trade_no`, or else by Alipay's `trade_no` (callers may name either).
    pub fn find(&self, out_trade_no: &str, trade_no: &str) -> Option<&Trade> {
        self.get(out_trade_no).or_else(|| {
            self.by_trade_no
                .get(trade_no)
                .and_then(|o| self.by_out_trade_no.get(o))
        })
    }

    fn key_of(&self, out_trade_no: &str, trade_no: &str) -> Option<String> {
        self.find(out_trade_no, trade_no)
            .map(|t| t.out_trade_no.clone())
    }

    /// The trade `out_trade_no`, created with `make` if it is new.
    pub fn open_or_get(&mut self, out_trade_no: &str, make: impl FnOnce() -> Trade) -> &Trade {
        if !self.by_out_trade_no.contains_key(out_trade_no) {
            let trade = make();
            self.by_trade_no
                .insert(trade.trade_no.clone(), out_trade_no.to_string());
            self.by_out_trade_no.insert(out_trade_no.to_string(), trade);
            self.open.push_back(out_trade_no.to_string());
            self.open_count += 1;
            self.forget_oldest_open();
        }
        &self.by_out_trade_no[out_trade_no]
    }

    /// The buyer paid: true when the trade was waiting for it.
    pub fn pay(&mut self, out_trade_no: &str) -> bool {
        match self.by_out_trade_no.get_mut(out_trade_no) {
            Some(t) if t.status == TradeStatus::WaitBuyerPay => {
                t.status = TradeStatus::Success;
                t.paid_at = Some(Utc::now());
                true
            }
            _ => false,
        }
    }

    /// Closes an unpaid trade: `Some(true)` when closed now, `Some(false)` when it is paid or
    /// closed already, `None` when there is no such trade.
    pub fn close(&mut self, out_trade_no: &str, trade_no: &str) -> Option<bool> {
        let key = self.key_of(out_trade_no, trade_no)?;
        let t = self.by_out_trade_no.get_mut(&key)?;
        if t.status != TradeStatus::WaitBuyerPay {
            return Some(false);
        }
        self.finish(&key);
        Some(true)
    }

    /// Refunds `fen` of a paid trade, idempotent per `out_request_no`.
    pub fn refund(
        &mut self,
        out_trade_no: &str,
        trade_no: &str,
        out_request_no: &str,
        fen: i64,
    ) -> RefundOutcome {
        let Some(key) = self.key_of(out_trade_no, trade_no) else {
            return RefundOutcome::NoSuchTrade;
        };
        let t = self.by_out_trade_no.get_mut(&key).expect("found above");
        // A repeat is answered as the first was, also once the trade has closed.
        if let Some(earlier) = t.refund(out_request_no) {
            return if earlier.fen == fen {
                RefundOutcome::Repeat
            } else {
                RefundOutcome::Discordant
            };
        }
        if t.status != TradeStatus::Success {
            return RefundOutcome::NotRefundable;
        }
        if t.refunded_fen + fen > t.total_fen {
            return RefundOutcome::TooMuch;
        }
        if t.refunds.len() >= MAX_REFUNDS_PER_TRADE {
            return RefundOutcome::TooMany;
        }
        t.add_refund(Refund {
            out_request_no: out_request_no.to_string(),
            fen,
            at: Utc::now(),
        });
        let closed = t.refunded_fen == t.total_fen;
        if closed {
            self.finish(&key);
        }
        RefundOutcome::Refunded { closed }
    }

    /// An open trade closes: it moves from the open count to the closed queue.
    fn finish(&mut self, key: &str) {
        let Some(t) = self.by_out_trade_no.get_mut(key) else {
            return;
        };
        t.status = TradeStatus::Closed;
        t.closed_at = Some(Utc::now());
        self.open_count -= 1;
        self.closed.push_back(key.to_string());
        while self.closed.len() > self.max_closed {
            if let Some(old) = self.closed.pop_front() {
                self.remove(&old);
            }
        }
        // Ids of closed trades linger in `open` until skipped; keep that queue near its size.
        if self.open.len() > 2 * self.max_open.max(self.open_count) {
            let map = &self.by_out_trade_no;
            self.open
                .retain(|k| map.get(k).is_some_and(|t| t.status != TradeStatus::Closed));
        }
    }

    fn forget_oldest_open(&mut self) {
        while self.open_count > self.max_open {
            let Some(old) = self.open.pop_front() else {
                return;
            };
            if self
                .by_out_trade_no
                .get(&old)
                .is_some_and(|t| t.status != TradeStatus::Closed)
            {
                self.remove(&old);
                self.open_count -= 1;
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(t) = self.by_out_trade_no.remove(key) {
            self.by_trade_no.remove(&t.trade_no);
        }
    }

    pub fn records(&self) -> Vec<TradeRecord> {
        self.by_out_trade_no
            .values()
            .map(TradeRecord::from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(n: usize) -> Trade {
        Trade::new(
            format!("o{n}"),
            format!("t{n}"),
            36000,
            "s".into(),
            String::new(),
            String::new(),
        )
    }

    fn open(trades: &mut Trades, n: usize) {
        trades.open_or_get(&format!("o{n}"), || trade(n));
    }

    #[test]
    fn refunds_add_up_close_the_trade_and_repeat_idempotently() {
        let mut trades = Trades::default();
        open(&mut trades, 1);
        assert_eq!(
            trades.refund("o1", "", "r0", 100),
            RefundOutcome::NotRefundable
        );
        assert!(trades.pay("o1"));
        assert!(!trades.pay("o1"));
        assert_eq!(
            trades.close("o1", ""),
            Some(false),
            "a paid trade does not close"
        );
        assert_eq!(
            trades.refund("o1", "", "r1", 10000),
            RefundOutcome::Refunded { closed: false }
        );
        assert_eq!(trades.refund("o1", "", "r2", 26001), RefundOutcome::TooMuch);
        // By Alipay's trade number too.
        assert_eq!(
            trades.refund("", "t1", "r2", 26000),
            RefundOutcome::Refunded { closed: true }
        );
        assert_eq!(trades.get("o1").unwrap().status, TradeStatus::Closed);
        assert_eq!(trades.refund("o1", "", "r2", 26000), RefundOutcome::Repeat);
        assert_eq!(
            trades.refund("o1", "", "r2", 100),
            RefundOutcome::Discordant
        );
        assert_eq!(
            trades.refund("o1", "", "r3", 1),
            RefundOutcome::NotRefundable
        );
        assert_eq!(trades.close("o1", ""), Some(false), "closed already");
        assert_eq!(trades.close("nope", ""), None);
        assert_eq!(
            trades.refund("nope", "", "r", 1),
            RefundOutcome::NoSuchTrade
        );
        assert_eq!(trades.get("o1").unwrap().refund("r1").unwrap().fen, 10000);
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let mut trades = Trades::with_limits(3, 2);
        for n in 0..5 {
            open(&mut trades, n);
        }
        // Five opened, three kept: the newest.
        assert_eq!(trades.len(), 3);
        assert!(trades.get("o1").is_none() && trades.get("o2").is_some());
        assert!(trades.find("", "t1").is_none(), "forgotten by trade_no too");
        // Closed trades beyond two are forgotten, oldest closed first; open ones stay.
        for n in 2..5 {
            assert_eq!(trades.close(&format!("o{n}"), ""), Some(true));
        }
        assert!(trades.get("o2").is_none());
        assert!(trades.get("o3").is_some() && trades.get("o4").is_some());
        for n in 5..1000 {
            open(&mut trades, n);
            if n % 2 == 0 {
                trades.close(&format!("o{n}"), "");
            }
        }
        assert!(trades.len() <= 5, "{}", trades.len());
        assert!(trades.open.len() <= 6 + 1, "{}", trades.open.len());
        assert_eq!(trades.by_trade_no.len(), trades.len());
    }
}
