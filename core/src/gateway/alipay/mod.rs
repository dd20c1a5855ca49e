//! Alipay OpenAPI v2 (`gateway.do`), implemented here rather than through a third-party crate:
//! RSA2 request signing (ring), verification of response signatures over the raw response text
//! and of async notifies, and the trade calls evisa-pay makes.
//!
//! Signing rule: every parameter except `sign` (and, for notifies, `sign_type`), without empty
//! values, sorted by key, joined as `k=v` with `&` using raw values; RSA PKCS#1 v1.5 with SHA-256;
//! base64.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};

mod keys;
mod notify;
mod trade;
mod wire;

pub use keys::{AppPrivateKey, KeyError, RsaPublicKey};
pub use notify::{NotifyError, NotifyMeaning, NotifyPolicy, VerifiedNotify};
pub use trade::{Channel, TradeState, parse_cny};
pub use wire::{beijing_time, out_trade_no, payment_of, raw_member, signing_string};
use wire::{classify, code_of, trusted_result};

use super::GatewayError;
use crate::{money::Money, payment::NextAction};

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
    slots: super::CallSlots,
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
            slots: super::CallSlots::default(),
        }
    }

    /// At most `calls` calls to Alipay in flight at once through this client (and its clones).
    pub fn with_calls_in_flight(self, calls: usize) -> Self {
        Self {
            slots: super::CallSlots::new(calls),
            ..self
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
        self.slots
            .call("alipay", method, self.call_unmetered(method, biz))
            .await
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

/// The Alipay client for `config`, when Alipay is configured (all of its settings are set).
pub fn client_for(config: &crate::config::Config) -> Option<AlipayClient> {
    let a = &config.alipay;
    Some(
        AlipayClient::new(
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
        )
        .with_calls_in_flight(config.jobs.gateway_calls),
    )
}

#[cfg(test)]
mod tests;
