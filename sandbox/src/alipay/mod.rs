//! An Alipay test-mode gateway: `gateway.do` for page and wap pay (a cashier page with Pay and
//! Cancel), trade query, close, refund and refund query. It checks the merchant's RSA2 signatures
//! (and, like Alipay, answers a request it cannot verify with an unsigned `error_response`),
//! signs its own answers and notifies with its own key, and notifies on payment, on closing and
//! on every refund, retrying on Alipay's schedule (compressible for tests) until it hears
//! `success`. Its memory is bounded: trades and notifies beyond a limit are forgotten, oldest
//! first.
//!
//! Control endpoints: `GET /sandbox/alipay/trades`, `GET /sandbox/alipay/notifies`,
//! `POST /sandbox/alipay/faults`.

mod cashier;
mod gateway;
mod notify;
mod trades;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use evisa_core::gateway::alipay::{AppPrivateKey, RsaPublicKey};
use poem::{
    EndpointExt, Route, get, handler, post,
    web::{Data, Json},
};
use serde::{Deserialize, Serialize};

pub use notify::{MAX_NOTIFIES, NotifyKind, NotifyRecord};
pub use trades::{MAX_CLOSED_TRADES, MAX_OPEN_TRADES, TradeRecord};

/// The test buyer every trade is paid by.
const BUYER_ID: &str = "2088102169481075";
const BUYER_LOGON_ID: &str = "buy***@example.com";

/// How the Alipay sandbox is set up.
#[derive(Clone, Debug)]
pub struct AlipaySandboxConfig {
    /// The only app it serves.
    pub app_id: String,
    /// The merchant account its notifies say was paid.
    pub seller_id: String,
    /// Verifies the merchant's requests.
    pub merchant_public_key: RsaPublicKey,
    /// Signs the sandbox's responses and notifies.
    pub sandbox_private_key: AppPrivateKey,
    /// One "minute" of the notify retry schedule (a minute for realism, milliseconds in tests).
    pub notify_minute: Duration,
}

/// Faults to inject, set with `POST /sandbox/alipay/faults`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlipayFaults {
    pub latency_ms: u64,
    /// The next N `gateway.do` calls answer 500.
    pub fail_next: u32,
    /// The next N `gateway.do` calls are answered as Alipay answers a request whose signature
    /// does not verify: an unsigned `error_response` (`isv.invalid-signature`).
    pub reject_signatures_next: u32,
    /// `gateway.do` calls of these methods answer 500 while they are listed.
    pub fail_methods: Vec<String>,
    /// Notifies are never sent.
    pub drop_notifies: bool,
    /// Every notify is sent twice.
    pub duplicate_notifies: bool,
    /// Every notify waits this long before its first attempt.
    pub notify_delay_ms: u64,
}

#[derive(Default)]
struct State {
    trades: trades::Trades,
    notifies: notify::NotifyLog,
    faults: AlipayFaults,
    counter: u64,
}

/// The Alipay sandbox.
#[derive(Clone)]
pub struct AlipaySandbox {
    config: Arc<AlipaySandboxConfig>,
    state: Arc<Mutex<State>>,
    http: reqwest::Client,
}

impl AlipaySandbox {
    pub fn new(config: AlipaySandboxConfig) -> Self {
        AlipaySandbox {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State::default())),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client can be built"),
        }
    }

    /// Every trade the sandbox still remembers.
    pub fn trades(&self) -> Vec<TradeRecord> {
        self.state.lock().expect("sandbox state").trades.records()
    }

    /// One trade, by our `out_trade_no`.
    pub fn trade(&self, out_trade_no: &str) -> Option<TradeRecord> {
        self.state
            .lock()
            .expect("sandbox state")
            .trades
            .get(out_trade_no)
            .map(TradeRecord::from)
    }

    /// Every notify still in the log, oldest first, with the form as sent.
    pub fn notifies(&self) -> Vec<NotifyRecord> {
        self.state.lock().expect("sandbox state").notifies.records()
    }

    pub fn set_faults(&self, faults: AlipayFaults) {
        self.state.lock().expect("sandbox state").faults = faults;
    }

    /// Routes: `/gateway.do`, the cashier, and control endpoints under `/sandbox/alipay`.
    pub fn routes(&self) -> impl poem::Endpoint + 'static {
        self.add_routes(Route::new()).data(self.clone())
    }

    /// Adds this sandbox's paths to `route`; the caller adds the sandbox itself as data.
    pub fn add_routes(&self, route: Route) -> Route {
        route
            .at("/gateway.do", get(gateway::gateway).post(gateway::gateway))
            .at(
                "/sandbox/alipay/cashier/:out_trade_no/:action",
                post(cashier::cashier_action),
            )
            .at("/sandbox/alipay/trades", get(list_trades))
            .at("/sandbox/alipay/notifies", get(list_notifies))
            .at("/sandbox/alipay/faults", post(set_faults).get(get_faults))
    }

    fn next_id(&self, prefix: &str) -> String {
        let mut s = self.state.lock().expect("sandbox state");
        s.counter += 1;
        format!(
            "{prefix}{}{:06}",
            Utc::now().format("%Y%m%d%H%M%S"),
            s.counter
        )
    }

    /// A new 28-digit trade number, shaped like Alipay's: the date, `2200`, and 16 digits.
    fn next_trade_no(&self) -> String {
        let mut s = self.state.lock().expect("sandbox state");
        s.counter += 1;
        let random = uuid::Uuid::new_v4().as_u128() % 10_000_000_000;
        format!(
            "{}2200{random:010}{:06}",
            Utc::now().format("%Y%m%d"),
            s.counter % 1_000_000
        )
    }
}

#[handler]
fn list_trades(sandbox: Data<&AlipaySandbox>) -> Json<Vec<TradeRecord>> {
    Json(sandbox.trades())
}

#[handler]
fn list_notifies(sandbox: Data<&AlipaySandbox>) -> Json<Vec<NotifyRecord>> {
    Json(sandbox.notifies())
}

#[handler]
fn set_faults(
    sandbox: Data<&AlipaySandbox>,
    Json(faults): Json<AlipayFaults>,
) -> Json<AlipayFaults> {
    sandbox.set_faults(faults.clone());
    Json(faults)
}

#[handler]
fn get_faults(sandbox: Data<&AlipaySandbox>) -> Json<AlipayFaults> {
    Json(sandbox.state.lock().expect("sandbox state").faults.clone())
}

#[cfg(test)]
mod tests {
    #[test]
    fn trade_numbers_are_28_digits_and_distinct() {
        let sandbox = crate::dev_alipay(std::time::Duration::from_millis(1));
        let a = sandbox.next_trade_no();
        let b = sandbox.next_trade_no();
        for t in [&a, &b] {
            assert_eq!(t.len(), 28, "{t}");
            assert!(t.bytes().all(|c| c.is_ascii_digit()), "{t}");
        }
        assert_ne!(a, b);
    }
}
