//! Alipay OpenAPI v2 (`gateway.do`), implemented here rather than through a third-party crate:
//! RSA2 request signing (ring), verification of response signatures over the raw response text
//! and of async notifies, and the trade calls evisa-pay makes.
//!
//! Signing rule: every parameter except `sign` (and, for notifies, `sign_type`), without empty
//! values, sorted by key, joined as `k=v` with `&` using raw values; RSA PKCS#1 v1.5 with SHA-256;
//! base64.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, FixedOffset, Utc};

mod keys;
mod notify;

pub use keys::{AppPrivateKey, KeyError, RsaPublicKey};
pub use notify::{NotifyError, NotifyMeaning, NotifyPolicy, VerifiedNotify};

use super::{GatewayError, Report};
use crate::{
    money::{Currency, Money},
    payment::{GatewayFacts, NextAction, PaymentEvent},
};

/// The string that is signed: sorted `k=v` pairs joined by `&`, skipping `sign`, empty values and
/// any `excluded` keys (`sign_type` for notifies).
pub fn signing_string<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    excluded: &[&str],
) -> String {
    let sorted: BTreeMap<&str, &str> = params
        .into_iter()
        .filter(|(k, v)| *k != "sign" && !excluded.contains(k) && !v.is_empty())
        .collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Alipay's clock: `yyyy-MM-dd HH:mm:ss` in GMT+8.
pub fn beijing_time(t: DateTime<Utc>) -> String {
    let gmt8 = FixedOffset::east_opt(8 * 3600).expect("valid offset");
    t.with_timezone(&gmt8)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Our payment's `out_trade_no`: its id without dashes (Alipay allows letters, digits, `_`).
pub fn out_trade_no(payment: crate::ids::PaymentId) -> String {
    payment.as_uuid().simple().to_string()
}

/// The payment an `out_trade_no` names.
pub fn payment_of(out_trade_no: &str) -> Option<crate::ids::PaymentId> {
    uuid::Uuid::try_parse(out_trade_no)
        .ok()
        .map(crate::ids::PaymentId::from_uuid)
}

/// Which cashier the buyer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Desktop browser: `alipay.trade.page.pay`.
    Page,
    /// Mobile browser: `alipay.trade.wap.pay`.
    Wap,
}

impl Channel {
    fn method_and_product(self) -> (&'static str, &'static str) {
        match self {
            Channel::Page => ("alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY"),
            Channel::Wap => ("alipay.trade.wap.pay", "QUICK_WAP_WAY"),
        }
    }
}

/// A trade as Alipay reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeState {
    /// The buyer has not opened the cashier yet (`ACQ.TRADE_NOT_EXIST`).
    NotCreated,
    WaitBuyerPay,
    /// Paid (`TRADE_SUCCESS` or `TRADE_FINISHED`), with Alipay's trade number and the amount.
    Paid {
        trade_no: String,
        total_amount: String,
    },
    /// Closed unpaid (timed out, cancelled) or fully refunded.
    Closed,
}

impl TradeState {
    /// The state a notify reports.
    pub fn from_notify(status: &str, trade_no: &str, total_amount: &str) -> Option<TradeState> {
        Self::from_status(status, Some(trade_no), Some(total_amount))
    }

    fn from_status(
        status: &str,
        trade_no: Option<&str>,
        total: Option<&str>,
    ) -> Option<TradeState> {
        Some(match status {
            "WAIT_BUYER_PAY" => TradeState::WaitBuyerPay,
            "TRADE_SUCCESS" | "TRADE_FINISHED" => TradeState::Paid {
                trade_no: trade_no.unwrap_or_default().to_string(),
                total_amount: total.unwrap_or_default().to_string(),
            },
            "TRADE_CLOSED" => TradeState::Closed,
            _ => return None,
        })
    }

    /// What the trade says about the payment, if anything.
    pub fn report(&self, expired: bool) -> Option<Report> {
        match self {
            TradeState::Paid {
                trade_no,
                total_amount,
            } => Some(Report {
                event: PaymentEvent::GatewaySaysSucceeded,
                facts: GatewayFacts {
                    reference: Some(trade_no.clone()).filter(|t| !t.is_empty()),
                    amount: parse_cny(total_amount),
                    ..GatewayFacts::default()
                },
            }),
            TradeState::Closed => Some(Report {
                event: if expired {
                    PaymentEvent::Expired
                } else {
                    PaymentEvent::Cancelled
                },
                facts: GatewayFacts::default(),
            }),
            TradeState::NotCreated | TradeState::WaitBuyerPay => None,
        }
    }
}

/// `total_amount` (yuan, two decimals) as money. Strict: exactly two decimals.
pub fn parse_cny(amount: &str) -> Option<Money> {
    let (yuan, fen) = amount.split_once('.')?;
    if fen.len() != 2
        || yuan.is_empty()
        || !yuan.bytes().chain(fen.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let minor = yuan
        .parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(fen.parse::<i64>().ok()?)?;
    Money::new(minor, Currency::parse("CNY").ok()?).ok()
}

/// An Alipay client for one app.
#[derive(Clone, Debug)]
pub struct AlipayClient {
    app_id: String,
    /// Our merchant account (`2088…`): notifies must say they paid it.
    seller_id: String,
    gateway: url::Url,
    app_key: AppPrivateKey,
    alipay_key: RsaPublicKey,
    notify_url: String,
    http: reqwest::Client,
}

/// The result object of a call, after its signature was checked.
type CallResult = Result<serde_json::Map<String, serde_json::Value>, GatewayError>;

impl AlipayClient {
    pub fn new(
        app_id: &str,
        seller_id: &str,
        gateway: url::Url,
        app_key: AppPrivateKey,
        alipay_key: RsaPublicKey,
        notify_url: String,
        timeout: Duration,
    ) -> Self {
        AlipayClient {
            app_id: app_id.to_string(),
            seller_id: seller_id.to_string(),
            gateway,
            app_key,
            alipay_key,
            notify_url,
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("an HTTP client can be built"),
        }
    }

    /// The common parameters plus `sign`, for `method` with `biz_content`: exactly what a call
    /// sends (public so that peers can check our signatures).
    pub fn signed_params(
        &self,
        method: &str,
        biz_content: &serde_json::Value,
        return_url: Option<&str>,
    ) -> BTreeMap<String, String> {
        let mut params = BTreeMap::from([
            ("app_id".to_string(), self.app_id.clone()),
            ("method".to_string(), method.to_string()),
            ("format".to_string(), "JSON".to_string()),
            ("charset".to_string(), "utf-8".to_string()),
            ("sign_type".to_string(), "RSA2".to_string()),
            ("timestamp".to_string(), beijing_time(Utc::now())),
            ("version".to_string(), "1.0".to_string()),
            ("notify_url".to_string(), self.notify_url.clone()),
            ("biz_content".to_string(), biz_content.to_string()),
        ]);
        if let Some(r) = return_url {
            params.insert("return_url".into(), r.to_string());
        }
        let message = signing_string(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), &[]);
        params.insert("sign".into(), self.app_key.sign(&message));
        params
    }

    /// The signed URL that sends the buyer to Alipay's cashier. Built locally; nothing is sent.
    pub fn pay_url(
        &self,
        channel: Channel,
        out_trade_no: &str,
        amount: Money,
        subject: &str,
        expires_at: DateTime<Utc>,
        return_url: &str,
    ) -> url::Url {
        let (method, product) = channel.method_and_product();
        let biz = serde_json::json!({
            "out_trade_no": out_trade_no,
            "total_amount": amount.to_major_string(),
            "subject": subject,
            "product_code": product,
            "time_expire": beijing_time(expires_at),
        });
        let mut url = self.gateway.clone();
        url.query_pairs_mut()
            .extend_pairs(self.signed_params(method, &biz, Some(return_url)));
        url
    }

    /// Calls `method` and returns its `..._response` object once its signature verified.
    async fn call(&self, method: &'static str, biz: serde_json::Value) -> CallResult {
        crate::metrics::gateway_call("alipay", method, self.call_unmetered(method, biz)).await
    }

    async fn call_unmetered(&self, method: &str, biz: serde_json::Value) -> CallResult {
        let params = self.signed_params(method, &biz, None);
        let response = self
            .http
            .post(self.gateway.clone())
            .form(&params)
            .send()
            .await
            .map_err(|e| GatewayError::Transient(format!("alipay unreachable: {e}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| GatewayError::Transient(format!("alipay response unreadable: {e}")))?;
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(GatewayError::Transient(format!(
                "alipay answered HTTP {status}"
            )));
        }
        let key = format!("{}_response", method.replace('.', "_"));
        trusted_result(&text, &key, &self.alipay_key)
    }

    /// `alipay.trade.query`.
    pub async fn query(&self, out_trade_no: &str) -> Result<TradeState, GatewayError> {
        let r = self
            .call(
                "alipay.trade.query",
                serde_json::json!({"out_trade_no": out_trade_no}),
            )
            .await?;
        match code_of(&r) {
            ("10000", _) => {
                let s = |k: &str| r.get(k).and_then(|v| v.as_str());
                TradeState::from_status(
                    s("trade_status").unwrap_or_default(),
                    s("trade_no"),
                    s("total_amount"),
                )
                .ok_or_else(|| GatewayError::Rejected("unknown trade_status".into()))
            }
            (_, "ACQ.TRADE_NOT_EXIST") => Ok(TradeState::NotCreated),
            (code, sub) => Err(classify(code, sub)),
        }
    }

    /// `alipay.trade.close`. `Ok(None)` when closed; `Ok(Some(state))` when the trade could not be
    /// closed because it is already paid or never existed.
    pub async fn close(&self, out_trade_no: &str) -> Result<Option<TradeState>, GatewayError> {
        let r = self
            .call(
                "alipay.trade.close",
                serde_json::json!({"out_trade_no": out_trade_no}),
            )
            .await?;
        match code_of(&r) {
            ("10000", _) => Ok(None),
            (_, "ACQ.TRADE_NOT_EXIST") => Ok(Some(TradeState::NotCreated)),
            // A paid trade cannot be closed: find out how it stands.
            (_, "ACQ.TRADE_STATUS_ERROR") => self.query(out_trade_no).await.map(Some),
            (code, sub) => Err(classify(code, sub)),
        }
    }

    /// `alipay.trade.refund`, idempotent per `out_request_no`. Returns whether money moved.
    pub async fn refund(
        &self,
        out_trade_no: &str,
        amount: Money,
        out_request_no: &str,
    ) -> Result<bool, GatewayError> {
        let r = self
            .call(
                "alipay.trade.refund",
                serde_json::json!({"out_trade_no": out_trade_no, "refund_amount": amount.to_major_string(), "out_request_no": out_request_no}),
            )
            .await?;
        match code_of(&r) {
            ("10000", _) => Ok(r.get("fund_change").and_then(|v| v.as_str()) == Some("Y")),
            (code, sub) => Err(classify(code, sub)),
        }
    }

    /// `alipay.trade.fastpay.refund.query`: whether the refund `out_request_no` succeeded.
    pub async fn refund_query(
        &self,
        out_trade_no: &str,
        out_request_no: &str,
    ) -> Result<bool, GatewayError> {
        let r = self
            .call(
                "alipay.trade.fastpay.refund.query",
                serde_json::json!({"out_trade_no": out_trade_no, "out_request_no": out_request_no}),
            )
            .await?;
        match code_of(&r) {
            // 10000 means only that the query worked; the refund's own status says the rest.
            ("10000", _) => {
                Ok(r.get("refund_status").and_then(|v| v.as_str()) == Some("REFUND_SUCCESS"))
            }
            (code, sub) => Err(classify(code, sub)),
        }
    }

    /// Parses and verifies an async notify's body: one copy of every field, Alipay's signature,
    /// our app and our seller account.
    pub fn verify_notify(&self, body: &[u8]) -> Result<VerifiedNotify, NotifyError> {
        VerifiedNotify::verify(
            body,
            NotifyPolicy {
                alipay_key: &self.alipay_key,
                app_id: &self.app_id,
                seller_id: &self.seller_id,
            },
        )
    }

    /// The next action for a redirect URL.
    pub fn next_action(url: &url::Url) -> NextAction {
        NextAction::Redirect {
            redirect_url: url.to_string(),
        }
    }
}

fn code_of(r: &serde_json::Map<String, serde_json::Value>) -> (&str, &str) {
    let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    (s("code"), s("sub_code"))
}

/// The `key` (or `error_response`) object of an answer, only when Alipay's signature over its
/// exact text verifies. Alipay leaves some errors unsigned (a bad request signature, an unknown
/// app id), and anyone on the path can write an unsigned answer: none of them is trusted, so
/// each is a transient error that changes no state and is asked again later.
fn trusted_result(text: &str, key: &str, alipay_key: &RsaPublicKey) -> CallResult {
    let Some(raw) = raw_member(text, key).or_else(|| raw_member(text, "error_response")) else {
        return Err(GatewayError::Transient(
            "alipay response has no result".into(),
        ));
    };
    let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw)
        .map_err(|_| GatewayError::Transient("alipay result is not JSON".into()))?;
    let (code, sub) = code_of(&parsed);
    match string_member(text, "sign") {
        Some(sign) if alipay_key.verify(raw, &sign) => Ok(parsed),
        Some(_) => Err(GatewayError::Transient(format!(
            "alipay answer ({code} {sub}) has a signature that does not verify; not trusted"
        ))),
        None => Err(GatewayError::Transient(format!(
            "alipay answer ({code} {sub}) is unsigned; not trusted"
        ))),
    }
}

fn classify(code: &str, sub: &str) -> GatewayError {
    match code {
        // Service unavailable / system busy: try again later.
        "20000" | "20001" => GatewayError::Transient(format!("alipay {code} {sub}")),
        _ if sub.ends_with("SYSTEM_ERROR") => {
            GatewayError::Transient(format!("alipay {code} {sub}"))
        }
        _ => GatewayError::Rejected(format!("alipay {code} {sub}")),
    }
}

/// The exact text of the JSON value of top-level member `key` (from its `{` to the matching `}`),
/// as signed by Alipay; re-serialising would change it.
pub fn raw_member<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\"");
    let start = text.find(&needle)? + needle.len();
    let rest = text[start..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let offset = text.len() - rest.len();
    if !rest.starts_with('{') {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in rest.char_indices() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (true, false, _) => {}
            (false, _, '"') => in_string = true,
            (false, _, '{') => depth += 1,
            (false, _, '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[offset..offset + i + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

fn string_member(text: &str, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get(key)?.as_str().map(str::to_string)
}

/// The Alipay client for `config`, when Alipay is configured (all of its settings are set).
pub fn client_for(config: &crate::config::Config) -> Option<AlipayClient> {
    let a = &config.alipay;
    Some(AlipayClient::new(
        a.app_id.as_deref()?,
        a.seller_id.as_deref()?,
        a.gateway_url.clone()?,
        a.app_private_key.clone()?,
        a.public_key.clone()?,
        config
            .public_base_url
            .join("v1/webhooks/alipay")
            .ok()?
            .to_string(),
        config.payments.gateway_timeout,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_string_is_sorted_raw_and_skips_sign_and_empties() {
        let s = signing_string(
            [
                ("b", "2"),
                ("sign", "x"),
                ("a", "1 &ü"),
                ("empty", ""),
                ("sign_type", "RSA2"),
            ],
            &["sign_type"],
        );
        assert_eq!(s, "a=1 &ü&b=2");
    }

    #[test]
    fn raw_members_are_cut_from_the_text_as_sent() {
        let text = r#"{"alipay_trade_query_response":{"code":"10000","msg":"Success","x":"a}\"{b"} ,"sign":"SIG"}"#;
        assert_eq!(
            raw_member(text, "alipay_trade_query_response"),
            Some(r#"{"code":"10000","msg":"Success","x":"a}\"{b"}"#)
        );
        assert_eq!(string_member(text, "sign").as_deref(), Some("SIG"));
        assert_eq!(raw_member(text, "error_response"), None);
    }

    const ALIPAY_PRIVATE: &str =
        include_str!("../../../../sandbox/keys/alipay_sandbox_private.pem");
    const ALIPAY_PUBLIC: &str = include_str!("../../../../sandbox/keys/alipay_sandbox_public.pem");

    fn answer(key: &str, object: &str, signed: bool) -> String {
        let sign = AppPrivateKey::parse(ALIPAY_PRIVATE).unwrap().sign(object);
        if signed {
            format!(r#"{{"{key}":{object},"sign":"{sign}"}}"#)
        } else {
            format!(r#"{{"{key}":{object}}}"#)
        }
    }

    #[test]
    fn only_answers_signed_by_alipay_are_trusted() {
        let alipay = RsaPublicKey::parse(ALIPAY_PUBLIC).unwrap();
        let key = "alipay_trade_close_response";
        let not_exist = r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"x"}"#;
        // Signed: a business error is an answer like any other.
        let ok = trusted_result(&answer(key, not_exist, true), key, &alipay).unwrap();
        assert_eq!(code_of(&ok), ("40004", "ACQ.TRADE_NOT_EXIST"));
        // The same answer unsigned, or under error_response unsigned (as Alipay answers a bad
        // request signature), or with a signature over other text: never trusted.
        let bad_signature = r#"{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature","sub_msg":"x"}"#;
        let paid = r#"{"code":"10000","msg":"Success","trade_status":"TRADE_SUCCESS"}"#;
        let forged =
            answer(key, not_exist, true).replace("ACQ.TRADE_NOT_EXIST", "ACQ.TRADE_STATUS_ERROR");
        for text in [
            answer(key, not_exist, false),
            answer("error_response", bad_signature, false),
            answer(key, paid, false),
            forged,
        ] {
            match trusted_result(&text, key, &alipay) {
                Err(GatewayError::Transient(reason)) => {
                    assert!(reason.contains("not trusted"), "{reason}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            trusted_result("<html>busy</html>", key, &alipay),
            Err(GatewayError::Transient(_))
        ));
    }

    #[test]
    fn amounts_and_times() {
        assert_eq!(parse_cny("360.00").unwrap().amount_minor(), 36000);
        assert_eq!(parse_cny("0.01").unwrap().amount_minor(), 1);
        for bad in ["360", "360.0", "360.000", "-1.00", "1e2.00", ""] {
            assert!(parse_cny(bad).is_none(), "{bad}");
        }
        let t: DateTime<Utc> = "2026-11-26T16:30:00Z".parse().unwrap();
        assert_eq!(beijing_time(t), "2026-11-27 00:30:00");
        let id = crate::ids::PaymentId::new();
        assert_eq!(payment_of(&out_trade_no(id)), Some(id));
        assert_eq!(out_trade_no(id).len(), 32);
    }
}
