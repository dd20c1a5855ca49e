//! An Alipay test-mode gateway: `gateway.do` for page and wap pay (a cashier page with Pay and
//! Cancel), trade query, close, refund and refund query. It checks the merchant's RSA2 signatures,
//! signs its own responses and notifies with its own key, and retries notifies on Alipay's
//! schedule (compressible for tests) until it hears `success`.
//!
//! Control endpoints: `GET /sandbox/alipay/trades`, `GET /sandbox/alipay/notifies`,
//! `POST /sandbox/alipay/faults`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use evisa_core::gateway::alipay::{AppPrivateKey, RsaPublicKey, beijing_time, signing_string};
use poem::{
    Body, EndpointExt, IntoResponse, Request, Response, Route, get, handler,
    http::StatusCode,
    post,
    web::{Data, Html, Json, Path, Redirect},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Alipay's notify retry schedule, in minutes after the first attempt's failure.
const NOTIFY_SCHEDULE_MINUTES: [u64; 7] = [4, 10, 10, 60, 120, 360, 900];

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
    /// Notifies are never sent.
    pub drop_notifies: bool,
    /// Every notify is sent twice.
    pub duplicate_notifies: bool,
    /// Every notify waits this long before its first attempt.
    pub notify_delay_ms: u64,
}

/// A trade, as the control endpoint shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TradeRecord {
    pub out_trade_no: String,
    pub trade_no: String,
    pub total_amount: String,
    pub status: String,
    pub subject: String,
    pub refunded: Vec<(String, String)>,
    #[serde(skip)]
    notify_url: String,
    #[serde(skip)]
    return_url: String,
}

#[derive(Clone, Debug, Serialize)]
struct NotifyRecord {
    notify_id: String,
    out_trade_no: String,
    trade_status: String,
    attempts: u32,
    acknowledged: bool,
}

#[derive(Default)]
struct State {
    trades: HashMap<String, TradeRecord>,
    notifies: Vec<NotifyRecord>,
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

    /// Every trade the sandbox knows.
    pub fn trades(&self) -> Vec<TradeRecord> {
        self.state
            .lock()
            .expect("sandbox state")
            .trades
            .values()
            .cloned()
            .collect()
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
            .at("/gateway.do", get(gateway).post(gateway))
            .at(
                "/sandbox/alipay/cashier/:out_trade_no/:action",
                post(cashier_action),
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

    /// `{"<key>":<object>,"sign":"..."}` with the signature over the object's exact text.
    fn signed_response(&self, key: &str, object: &Value) -> Response {
        let raw = object.to_string();
        let sign = self.config.sandbox_private_key.sign(&raw);
        let body = format!("{{\"{key}\":{raw},\"sign\":\"{sign}\"}}");
        Response::builder()
            .content_type("application/json;charset=utf-8")
            .body(body)
    }

    /// Sends a signed notify for `out_trade_no`, retrying on Alipay's schedule until `success`.
    fn notify(&self, out_trade_no: &str) {
        let (trade, faults) = {
            let s = self.state.lock().expect("sandbox state");
            (s.trades.get(out_trade_no).cloned(), s.faults.clone())
        };
        let Some(trade) = trade else { return };
        if trade.notify_url.is_empty() {
            return;
        }
        let notify_id = self.next_id("ntf");
        let now = beijing_time(Utc::now());
        let mut form: BTreeMap<String, String> = BTreeMap::from([
            ("notify_time".into(), now.clone()),
            ("notify_type".into(), "trade_status_sync".into()),
            ("notify_id".into(), notify_id.clone()),
            ("app_id".into(), self.config.app_id.clone()),
            ("seller_id".into(), self.config.seller_id.clone()),
            ("charset".into(), "utf-8".into()),
            ("version".into(), "1.0".into()),
            ("trade_no".into(), trade.trade_no.clone()),
            ("out_trade_no".into(), trade.out_trade_no.clone()),
            ("trade_status".into(), trade.status.clone()),
            ("total_amount".into(), trade.total_amount.clone()),
            ("receipt_amount".into(), trade.total_amount.clone()),
            ("buyer_pay_amount".into(), trade.total_amount.clone()),
            ("subject".into(), trade.subject.clone()),
            ("gmt_payment".into(), now),
            ("buyer_id".into(), "2088000000000001".into()),
        ]);
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
                out_trade_no: trade.out_trade_no.clone(),
                trade_status: trade.status.clone(),
                attempts: 0,
                acknowledged: false,
            });
        if faults.drop_notifies {
            return;
        }
        let copies = if faults.duplicate_notifies { 2 } else { 1 };
        for _ in 0..copies {
            let sandbox = self.clone();
            let (form, url, notify_id) =
                (form.clone(), trade.notify_url.clone(), notify_id.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(faults.notify_delay_ms)).await;
                for attempt in 0..=NOTIFY_SCHEDULE_MINUTES.len() {
                    let answer = sandbox.http.post(&url).form(&form).send().await;
                    let ok = match answer {
                        Ok(r) => r.text().await.is_ok_and(|t| t == "success"),
                        Err(_) => false,
                    };
                    {
                        let mut s = sandbox.state.lock().expect("sandbox state");
                        if let Some(n) = s.notifies.iter_mut().find(|n| n.notify_id == notify_id) {
                            n.attempts += 1;
                            n.acknowledged |= ok;
                        }
                    }
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

fn params_of(req: &Request, body: &[u8]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    params.extend(url::form_urlencoded::parse(body).into_owned());
    params
}

fn error_object(code: &str, msg: &str, sub_code: &str, sub_msg: &str) -> Value {
    json!({"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg})
}

#[handler]
async fn gateway(req: &Request, body: Body, sandbox: Data<&AlipaySandbox>) -> Response {
    let bytes = body.into_vec().await.unwrap_or_default();
    let params = params_of(req, &bytes);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let method = get("method");
    let key = format!("{}_response", method.replace('.', "_"));
    let (latency, fail) = {
        let mut s = sandbox.state.lock().expect("sandbox state");
        let fail = s.faults.fail_next > 0;
        s.faults.fail_next = s.faults.fail_next.saturating_sub(1);
        (s.faults.latency_ms, fail)
    };
    tokio::time::sleep(Duration::from_millis(latency)).await;
    if fail {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    // Check the merchant's signature over every parameter but `sign`.
    let message = signing_string(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), &[]);
    if get("app_id") != sandbox.config.app_id {
        return sandbox.signed_response(
            &key,
            &error_object(
                "40002",
                "Invalid Arguments",
                "isv.invalid-app-id",
                "无效的AppID参数",
            ),
        );
    }
    if !sandbox
        .config
        .merchant_public_key
        .verify(&message, &get("sign"))
    {
        return sandbox.signed_response(
            &key,
            &error_object(
                "40002",
                "Invalid Arguments",
                "isv.invalid-signature",
                "验签出错",
            ),
        );
    }
    let biz: Value = serde_json::from_str(&get("biz_content")).unwrap_or(Value::Null);
    let b = |k: &str| biz[k].as_str().unwrap_or_default().to_string();
    let out_trade_no = b("out_trade_no");
    match method.as_str() {
        "alipay.trade.page.pay" | "alipay.trade.wap.pay" => {
            // The buyer opened the cashier: from now on the trade exists.
            let mut s = sandbox.state.lock().expect("sandbox state");
            let trade = s
                .trades
                .entry(out_trade_no.clone())
                .or_insert_with(|| TradeRecord {
                    out_trade_no: out_trade_no.clone(),
                    trade_no: String::new(),
                    total_amount: b("total_amount"),
                    status: "WAIT_BUYER_PAY".into(),
                    subject: b("subject"),
                    refunded: Vec::new(),
                    notify_url: get("notify_url"),
                    return_url: get("return_url"),
                });
            let page = format!(
                r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>Alipay cashier (test mode)</title></head>
<body><h1>支付宝 · Alipay cashier (test mode)</h1>
<p>Order {0}: ¥{1} — {2}. Status: <span id="status">{3}</span>.</p>
<form method="post" action="/sandbox/alipay/cashier/{0}/pay"><button id="pay" type="submit">Pay</button></form>
<form method="post" action="/sandbox/alipay/cashier/{0}/cancel"><button id="cancel" type="submit">Cancel</button></form>
</body></html>"#,
                trade.out_trade_no,
                trade.total_amount,
                html_escape(&trade.subject),
                trade.status
            );
            Html(page).into_response()
        }
        "alipay.trade.query" => {
            let s = sandbox.state.lock().expect("sandbox state");
            let answer = match s.trades.get(&out_trade_no) {
                None => error_object(
                    "40004",
                    "Business Failed",
                    "ACQ.TRADE_NOT_EXIST",
                    "交易不存在",
                ),
                Some(t) => json!({
                    "code": "10000", "msg": "Success", "out_trade_no": t.out_trade_no, "trade_no": t.trade_no,
                    "trade_status": t.status, "total_amount": t.total_amount, "buyer_logon_id": "buy***@example.com",
                }),
            };
            drop(s);
            sandbox.signed_response(&key, &answer)
        }
        "alipay.trade.close" => {
            let mut s = sandbox.state.lock().expect("sandbox state");
            let answer = match s.trades.get_mut(&out_trade_no) {
                None => error_object(
                    "40004",
                    "Business Failed",
                    "ACQ.TRADE_NOT_EXIST",
                    "交易不存在",
                ),
                Some(t) if t.status == "WAIT_BUYER_PAY" => {
                    t.status = "TRADE_CLOSED".into();
                    json!({"code": "10000", "msg": "Success", "out_trade_no": t.out_trade_no, "trade_no": t.trade_no})
                }
                Some(t) if t.status == "TRADE_CLOSED" => {
                    json!({"code": "10000", "msg": "Success", "out_trade_no": t.out_trade_no, "trade_no": t.trade_no})
                }
                Some(_) => error_object(
                    "40004",
                    "Business Failed",
                    "ACQ.TRADE_STATUS_ERROR",
                    "交易状态不合法",
                ),
            };
            drop(s);
            sandbox.signed_response(&key, &answer)
        }
        "alipay.trade.refund" => {
            let mut s = sandbox.state.lock().expect("sandbox state");
            let request_no = b("out_request_no");
            let amount = b("refund_amount");
            let answer = match s.trades.get_mut(&out_trade_no) {
                None => error_object(
                    "40004",
                    "Business Failed",
                    "ACQ.TRADE_NOT_EXIST",
                    "交易不存在",
                ),
                Some(t) if t.status != "TRADE_SUCCESS" => error_object(
                    "40004",
                    "Business Failed",
                    "ACQ.TRADE_STATUS_ERROR",
                    "交易状态不合法",
                ),
                Some(t) => {
                    let fen = |a: &str| {
                        evisa_core::gateway::alipay::parse_cny(a)
                            .map(|m| m.amount_minor())
                            .unwrap_or(0)
                    };
                    let already = t.refunded.iter().any(|(no, _)| *no == request_no);
                    let refunded: i64 = t.refunded.iter().map(|(_, a)| fen(a)).sum();
                    if already {
                        json!({"code": "10000", "msg": "Success", "out_trade_no": t.out_trade_no, "trade_no": t.trade_no, "refund_fee": amount, "fund_change": "N"})
                    } else if fen(&amount) <= 0 || refunded + fen(&amount) > fen(&t.total_amount) {
                        error_object(
                            "40004",
                            "Business Failed",
                            "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
                            "退款金额超限",
                        )
                    } else {
                        t.refunded.push((request_no, amount.clone()));
                        json!({"code": "10000", "msg": "Success", "out_trade_no": t.out_trade_no, "trade_no": t.trade_no, "refund_fee": amount, "fund_change": "Y"})
                    }
                }
            };
            drop(s);
            sandbox.signed_response(&key, &answer)
        }
        "alipay.trade.fastpay.refund.query" => {
            let s = sandbox.state.lock().expect("sandbox state");
            let request_no = b("out_request_no");
            let answer = match s.trades.get(&out_trade_no).and_then(|t| {
                t.refunded
                    .iter()
                    .find(|(no, _)| *no == request_no)
                    .map(|r| (t, r))
            }) {
                Some((t, (no, amount))) => json!({
                    "code": "10000", "msg": "Success", "out_trade_no": t.out_trade_no, "trade_no": t.trade_no,
                    "out_request_no": no, "refund_amount": amount, "refund_status": "REFUND_SUCCESS",
                }),
                // Alipay answers 10000 with no refund_status when there is no such refund.
                None => {
                    json!({"code": "10000", "msg": "Success", "out_trade_no": out_trade_no, "out_request_no": request_no})
                }
            };
            drop(s);
            sandbox.signed_response(&key, &answer)
        }
        _ => sandbox.signed_response(
            &key,
            &error_object(
                "40004",
                "Business Failed",
                "isv.invalid-method",
                "不存在的方法名",
            ),
        ),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[handler]
async fn cashier_action(
    Path((out_trade_no, action)): Path<(String, String)>,
    sandbox: Data<&AlipaySandbox>,
) -> Response {
    let return_url = {
        let mut s = sandbox.state.lock().expect("sandbox state");
        let Some(trade) = s.trades.get_mut(&out_trade_no) else {
            return (StatusCode::NOT_FOUND, "no such order").into_response();
        };
        if action == "pay" {
            if trade.status != "WAIT_BUYER_PAY" {
                return (
                    StatusCode::CONFLICT,
                    format!("this order is {}", trade.status),
                )
                    .into_response();
            }
            trade.status = "TRADE_SUCCESS".into();
            trade.trade_no = format!("2026{}", &uuid::Uuid::new_v4().simple().to_string()[..24]);
        } else if action != "cancel" {
            return (StatusCode::NOT_FOUND, "unknown action").into_response();
        }
        trade.return_url.clone()
    };
    if action == "pay" {
        sandbox.notify(&out_trade_no);
    }
    if return_url.is_empty() {
        return Html("<!doctype html><p>Done. You can close this page.</p>").into_response();
    }
    // The browser goes back to the merchant. Anything in this URL is advisory only.
    let mut url = match url::Url::parse(&return_url) {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad return_url").into_response(),
    };
    url.query_pairs_mut()
        .append_pair("out_trade_no", &out_trade_no)
        .append_pair("method", "alipay.trade.page.pay.return");
    Redirect::see_other(url.as_str()).into_response()
}

#[handler]
fn list_trades(sandbox: Data<&AlipaySandbox>) -> Json<Vec<TradeRecord>> {
    Json(sandbox.trades())
}

#[handler]
fn list_notifies(sandbox: Data<&AlipaySandbox>) -> Json<Value> {
    Json(json!(sandbox.state.lock().expect("sandbox state").notifies))
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
