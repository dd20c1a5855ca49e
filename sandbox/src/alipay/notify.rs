//! The sandbox's async notifies: on payment, on closing, and on every refund, to the trade's
//! `notify_url`, signed with the sandbox's key over every field but `sign` and `sign_type`,
//! and resent on Alipay's schedule until the merchant answers exactly `success`. The log of
//! sent notifies is bounded (oldest forgotten first).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::Duration,
};

use chrono::{DateTime, FixedOffset, Utc};
use evisa_core::gateway::alipay::{beijing_time, signing_string};
use serde::Serialize;

use super::{
    AlipaySandbox, BUYER_ID, BUYER_LOGON_ID,
    trades::{Trade, yuan},
};

/// Alipay's notify retry schedule, in minutes after the first attempt's failure.
const NOTIFY_SCHEDULE_MINUTES: [u64; 7] = [4, 10, 10, 60, 120, 360, 900];
/// Notifies kept in the log.
pub const MAX_NOTIFIES: usize = 10_000;

/// Why a notify was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    Payment,
    Close,
    Refund,
}

/// A notify as sent, with how its delivery went.
#[derive(Clone, Debug, Serialize)]
pub struct NotifyRecord {
    pub notify_id: String,
    pub kind: NotifyKind,
    pub out_trade_no: String,
    pub trade_status: String,
    /// The signed form, exactly as posted.
    pub form: BTreeMap<String, String>,
    pub attempts: u32,
    pub acknowledged: bool,
}

/// The bounded log of notifies, by id.
#[derive(Default)]
pub struct NotifyLog {
    by_id: HashMap<String, NotifyRecord>,
    order: VecDeque<String>,
}

impl NotifyLog {
    fn push(&mut self, record: NotifyRecord) {
        self.order.push_back(record.notify_id.clone());
        self.by_id.insert(record.notify_id.clone(), record);
        while self.order.len() > MAX_NOTIFIES {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    fn attempted(&mut self, notify_id: &str, acknowledged: bool) {
        if let Some(n) = self.by_id.get_mut(notify_id) {
            n.attempts += 1;
            n.acknowledged |= acknowledged;
        }
    }

    /// Every notify still in the log, oldest first.
    pub fn records(&self) -> Vec<NotifyRecord> {
        self.order
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .cloned()
            .collect()
    }
}

/// Alipay's clock with milliseconds (`gmt_refund`: `yyyy-MM-dd HH:mm:ss.SSS`, GMT+8).
pub fn beijing_millis(t: DateTime<Utc>) -> String {
    let gmt8 = FixedOffset::east_opt(8 * 3600).expect("valid offset");
    t.with_timezone(&gmt8)
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// The documented fields of a notify about `trade` as it now stands.
fn fields(sandbox: &AlipaySandbox, trade: &Trade, notify_id: &str) -> BTreeMap<String, String> {
    let config = &sandbox.config;
    let paid = trade.paid_at.is_some();
    // What the buyer paid: nothing for a trade closed unpaid.
    let paid_amount = yuan(if paid { trade.total_fen } else { 0 });
    let mut form: BTreeMap<String, String> = [
        ("notify_time", beijing_time(Utc::now())),
        ("notify_type", "trade_status_sync".into()),
        ("notify_id", notify_id.into()),
        ("app_id", config.app_id.clone()),
        ("auth_app_id", config.app_id.clone()),
        ("charset", "utf-8".into()),
        ("version", "1.0".into()),
        ("trade_no", trade.trade_no.clone()),
        ("out_trade_no", trade.out_trade_no.clone()),
        ("trade_status", trade.status.as_str().into()),
        ("total_amount", yuan(trade.total_fen)),
        ("receipt_amount", paid_amount.clone()),
        ("buyer_pay_amount", paid_amount.clone()),
        ("invoice_amount", paid_amount.clone()),
        ("point_amount", "0.00".into()),
        ("gmt_create", beijing_time(trade.created_at)),
        ("seller_id", config.seller_id.clone()),
        ("subject", trade.subject.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(at) = trade.paid_at {
        form.insert("gmt_payment".into(), beijing_time(at));
        form.insert("buyer_id".into(), BUYER_ID.into());
        form.insert("buyer_logon_id".into(), BUYER_LOGON_ID.into());
        // A JSON string in notifies (`fundChannel`), unlike the array in query answers.
        form.insert(
            "fund_bill_list".into(),
            serde_json::json!([{"amount": paid_amount, "fundChannel": "ALIPAYACCOUNT"}])
                .to_string(),
        );
    }
    if let Some(at) = trade.closed_at {
        form.insert("gmt_close".into(), beijing_time(at));
    }
    form
}

impl AlipaySandbox {
    /// Notifies the trade `out_trade_no` as it now stands; for a refund, `refund` names it.
    pub(super) fn notify(&self, out_trade_no: &str, kind: NotifyKind, refund: Option<&str>) {
        let notify_id = self.next_id("ntf");
        let (mut form, url, faults) = {
            let s = self.state.lock().expect("sandbox state");
            let Some(trade) = s.trades.get(out_trade_no) else {
                return;
            };
            if trade.notify_url.is_empty() {
                return;
            }
            let mut form = fields(self, trade, &notify_id);
            if let Some(r) = refund.and_then(|no| trade.refund(no)) {
                // `refund_fee` is what has been refunded in all, as Alipay documents it.
                form.insert("refund_fee".into(), yuan(trade.refunded_fen));
                form.insert("gmt_refund".into(), beijing_millis(r.at));
                form.insert("out_biz_no".into(), r.out_request_no.clone());
            }
            (form, trade.notify_url.clone(), s.faults.clone())
        };
        let message = signing_string(
            form.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &["sign_type"],
        );
        form.insert(
            "sign".into(),
            self.config.sandbox_private_key.sign(&message),
        );
        form.insert("sign_type".into(), "RSA2".into());
        self.state
            .lock()
            .expect("sandbox state")
            .notifies
            .push(NotifyRecord {
                notify_id: notify_id.clone(),
                kind,
                out_trade_no: out_trade_no.to_string(),
                trade_status: form["trade_status"].clone(),
                form: form.clone(),
                attempts: 0,
                acknowledged: false,
            });
        if faults.drop_notifies {
            return;
        }
        let copies = if faults.duplicate_notifies { 2 } else { 1 };
        for _ in 0..copies {
            let sandbox = self.clone();
            let (form, url, notify_id) = (form.clone(), url.clone(), notify_id.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(faults.notify_delay_ms)).await;
                for attempt in 0..=NOTIFY_SCHEDULE_MINUTES.len() {
                    let answer = sandbox.http.post(&url).form(&form).send().await;
                    let ok = match answer {
                        Ok(r) => r.text().await.is_ok_and(|t| t == "success"),
                        Err(_) => false,
                    };
                    sandbox
                        .state
                        .lock()
                        .expect("sandbox state")
                        .notifies
                        .attempted(&notify_id, ok);
                    if ok {
                        return;
                    }
                    if let Some(minutes) = NOTIFY_SCHEDULE_MINUTES.get(attempt) {
                        tokio::time::sleep(sandbox.config.notify_minute * (*minutes as u32)).await;
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alipay::trades::TradeStatus;

    #[test]
    fn the_log_forgets_the_oldest_beyond_its_limit() {
        let mut log = NotifyLog::default();
        for n in 0..MAX_NOTIFIES + 5 {
            log.push(NotifyRecord {
                notify_id: format!("n{n}"),
                kind: NotifyKind::Payment,
                out_trade_no: "o".into(),
                trade_status: TradeStatus::Success.as_str().into(),
                form: BTreeMap::new(),
                attempts: 0,
                acknowledged: false,
            });
        }
        log.attempted("n7", true);
        log.attempted(&format!("n{}", MAX_NOTIFIES + 4), true);
        let records = log.records();
        assert_eq!(records.len(), MAX_NOTIFIES);
        assert_eq!(records[0].notify_id, "n5");
        assert!(records.last().unwrap().acknowledged);
        assert_eq!(log.by_id.len(), MAX_NOTIFIES);
    }

    #[test]
    fn gmt_refund_has_milliseconds_in_beijing_time() {
        let t: DateTime<Utc> = "2026-12-02T02:03:04.056Z".parse().unwrap();
        assert_eq!(beijing_millis(t), "2026-12-02 10:03:04.056");
    }
}
