//! `gateway.do`: the merchant's signed calls. Each answer is `{"<method>_response":{...},
//! "sign":"..."}` signed over the object's exact text — except, as at Alipay, when the request
//! itself cannot be trusted (unknown app id, missing or bad signature): then an unsigned
//! `error_response`.

use std::time::Duration;

use evisa_core::gateway::alipay::{beijing_time, signing_string};
use poem::{Body, IntoResponse, Request, Response, handler, http::StatusCode, web::Data};
use serde_json::{Value, json};

use super::{
    AlipaySandbox, BUYER_ID, BUYER_LOGON_ID, cashier,
    notify::NotifyKind,
    trades::{MAX_REFUNDS_PER_TRADE, RefundOutcome, Trade, yuan},
};

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

fn business_error(sub_code: &str, sub_msg: &str) -> Value {
    error_object("40004", "Business Failed", sub_code, sub_msg)
}

fn no_such_trade() -> Value {
    business_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
}

/// An answer Alipay does not sign: to a request it could not attribute to the app.
fn unsigned_error(sub_code: &str, sub_msg: &str) -> Response {
    let object = error_object("40002", "Invalid Arguments", sub_code, sub_msg);
    Response::builder()
        .content_type("application/json;charset=utf-8")
        .body(json!({ "error_response": object }).to_string())
}

/// A yuan amount as the merchant sends it (`100`, `100.5`, `100.50`), in fen.
fn fen_of(amount: &str) -> Option<i64> {
    let (yuan, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if yuan.is_empty() || fraction.len() > 2 || !digits(yuan) || !digits(fraction) {
        return None;
    }
    let fraction = format!("{fraction:0<2}");
    yuan.parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(fraction.parse().ok()?)
}

impl AlipaySandbox {
    /// `{"<key>":<object>,"sign":"..."}` with the signature over the object's exact text.
    fn signed_response(&self, key: &str, object: &Value) -> Response {
        let raw = object.to_string();
        let sign = self.config.sandbox_private_key.sign(&raw);
        let body = format!("{{\"{key}\":{raw},\"sign\":\"{sign}\"}}");
        Response::builder()
            .content_type("application/json;charset=utf-8")
            .body(body)
    }
}

/// `alipay.trade.query`'s answer for a trade.
fn query_answer(t: &Trade) -> Value {
    let paid = t.paid_at.is_some();
    let paid_amount = yuan(if paid { t.total_fen } else { 0 });
    let mut answer = json!({
        "code": "10000", "msg": "Success", "trade_no": t.trade_no, "out_trade_no": t.out_trade_no,
        "trade_status": t.status.as_str(), "total_amount": yuan(t.total_fen),
        "buyer_pay_amount": paid_amount, "receipt_amount": paid_amount,
        "invoice_amount": paid_amount, "point_amount": "0.00",
    });
    if let Some(at) = t.paid_at {
        let extra = json!({
            "send_pay_date": beijing_time(at), "buyer_user_id": BUYER_ID,
            "buyer_logon_id": BUYER_LOGON_ID,
            "fund_bill_list": [{"amount": paid_amount, "fund_channel": "ALIPAYACCOUNT"}],
        });
        for (k, v) in extra.as_object().expect("an object") {
            answer[k] = v.clone();
        }
    }
    answer
}

#[handler]
pub(super) async fn gateway(req: &Request, body: Body, sandbox: Data<&AlipaySandbox>) -> Response {
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
    let (latency, fail, reject_signature) = {
        let mut s = sandbox.state.lock().expect("sandbox state");
        let f = &mut s.faults;
        let fail = f.fail_next > 0 || f.fail_methods.contains(&method);
        f.fail_next = f.fail_next.saturating_sub(1);
        let reject = !fail && f.reject_signatures_next > 0;
        if reject {
            f.reject_signatures_next -= 1;
        }
        (f.latency_ms, fail, reject)
    };
    tokio::time::sleep(Duration::from_millis(latency)).await;
    if fail {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    if get("app_id") != sandbox.config.app_id {
        return unsigned_error("isv.invalid-app-id", "无效的AppID参数");
    }
    let sign = get("sign");
    if sign.is_empty() {
        return unsigned_error("isv.missing-signature", "缺少签名参数");
    }
    // The merchant's signature over every parameter but `sign`.
    let message = signing_string(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), &[]);
    if reject_signature || !sandbox.config.merchant_public_key.verify(&message, &sign) {
        return unsigned_error("isv.invalid-signature", "验签出错");
    }
    let biz: Value = serde_json::from_str(&get("biz_content")).unwrap_or(Value::Null);
    let b = |k: &str| biz[k].as_str().unwrap_or_default().to_string();
    let (out_trade_no, trade_no) = (b("out_trade_no"), b("trade_no"));
    let answer = match method.as_str() {
        "alipay.trade.page.pay" | "alipay.trade.wap.pay" => {
            let Some(total_fen) = fen_of(&b("total_amount")).filter(|f| *f > 0) else {
                return sandbox
                    .signed_response(&key, &business_error("ACQ.INVALID_PARAMETER", "参数无效"));
            };
            // The buyer opened the cashier: from now on the trade exists.
            let new_trade_no = sandbox.next_trade_no();
            let mut s = sandbox.state.lock().expect("sandbox state");
            let trade = s.trades.open_or_get(&out_trade_no, || {
                Trade::new(
                    out_trade_no.clone(),
                    new_trade_no,
                    total_fen,
                    b("subject"),
                    get("notify_url"),
                    get("return_url"),
                )
            });
            return cashier::page(trade);
        }
        "alipay.trade.query" => {
            let s = sandbox.state.lock().expect("sandbox state");
            match s.trades.find(&out_trade_no, &trade_no) {
                None => no_such_trade(),
                Some(t) => query_answer(t),
            }
        }
        "alipay.trade.close" => {
            let (answer, closed) = {
                let mut s = sandbox.state.lock().expect("sandbox state");
                let found = s
                    .trades
                    .find(&out_trade_no, &trade_no)
                    .map(|t| (t.out_trade_no.clone(), t.trade_no.clone()));
                match found {
                    None => (no_such_trade(), None),
                    Some((o, t)) => match s.trades.close(&o, &t) {
                        Some(true) => (
                            json!({"code": "10000", "msg": "Success", "out_trade_no": o, "trade_no": t}),
                            Some(o),
                        ),
                        // Paid, or closed already: only an unpaid trade can be closed.
                        _ => (
                            business_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
                            None,
                        ),
                    },
                }
            };
            if let Some(o) = closed {
                sandbox.notify(&o, NotifyKind::Close, None);
            }
            answer
        }
        "alipay.trade.refund" => {
            let request_no = b("out_request_no");
            let Some(fen) = fen_of(&b("refund_amount")).filter(|f| *f > 0) else {
                return sandbox
                    .signed_response(&key, &business_error("ACQ.INVALID_PARAMETER", "参数无效"));
            };
            let (answer, refunded) = {
                let mut s = sandbox.state.lock().expect("sandbox state");
                let outcome = s.trades.refund(&out_trade_no, &trade_no, &request_no, fen);
                let t = s.trades.find(&out_trade_no, &trade_no);
                match (outcome, t) {
                    (RefundOutcome::Refunded { .. } | RefundOutcome::Repeat, Some(t)) => {
                        let moved = matches!(outcome, RefundOutcome::Refunded { .. });
                        let r = t.refund(&request_no).expect("just refunded");
                        (
                            json!({
                                "code": "10000", "msg": "Success", "trade_no": t.trade_no,
                                "out_trade_no": t.out_trade_no, "buyer_logon_id": BUYER_LOGON_ID,
                                "buyer_user_id": BUYER_ID, "fund_change": if moved { "Y" } else { "N" },
                                // What has been refunded in all; this refund's own amount is
                                // `send_back_fee`.
                                "refund_fee": yuan(t.refunded_fen), "send_back_fee": yuan(r.fen),
                                "gmt_refund_pay": beijing_time(r.at),
                            }),
                            moved.then(|| t.out_trade_no.clone()),
                        )
                    }
                    (RefundOutcome::NotRefundable, _) => (
                        business_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
                        None,
                    ),
                    (RefundOutcome::TooMuch, _) => (
                        business_error("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限"),
                        None,
                    ),
                    (RefundOutcome::Discordant, _) => (
                        business_error("ACQ.DISCORDANT_REPEAT_REQUEST", "请求信息不一致"),
                        None,
                    ),
                    (RefundOutcome::TooMany, _) => (
                        business_error(
                            "ACQ.TRADE_NOT_ALLOW_REFUND",
                            &format!(
                                "the sandbox takes at most {MAX_REFUNDS_PER_TRADE} refunds per trade"
                            ),
                        ),
                        None,
                    ),
                    _ => (no_such_trade(), None),
                }
            };
            if let Some(o) = refunded {
                sandbox.notify(&o, NotifyKind::Refund, Some(&request_no));
            }
            answer
        }
        "alipay.trade.fastpay.refund.query" => {
            let request_no = b("out_request_no");
            let s = sandbox.state.lock().expect("sandbox state");
            match s.trades.find(&out_trade_no, &trade_no) {
                None => no_such_trade(),
                Some(t) => match t.refund(&request_no) {
                    Some(r) => json!({
                        "code": "10000", "msg": "Success", "trade_no": t.trade_no,
                        "out_trade_no": t.out_trade_no, "out_request_no": r.out_request_no,
                        "total_amount": yuan(t.total_fen), "refund_amount": yuan(r.fen),
                        "refund_status": "REFUND_SUCCESS", "gmt_refund_pay": beijing_time(r.at),
                    }),
                    // Alipay answers 10000 with no refund_status when there is no such refund.
                    None => json!({
                        "code": "10000", "msg": "Success", "trade_no": t.trade_no,
                        "out_trade_no": t.out_trade_no, "out_request_no": request_no,
                    }),
                },
            }
        }
        _ => {
            return sandbox.signed_response(
                "error_response",
                &error_object(
                    "40002",
                    "Invalid Arguments",
                    "isv.invalid-method",
                    "不存在的方法名",
                ),
            );
        }
    };
    sandbox.signed_response(&key, &answer)
}

#[cfg(test)]
mod tests {
    use super::fen_of;

    #[test]
    fn merchant_amounts_parse_to_fen() {
        assert_eq!(fen_of("360.00"), Some(36000));
        assert_eq!(fen_of("100"), Some(10000));
        assert_eq!(fen_of("0.5"), Some(50));
        for bad in ["", ".5", "1.234", "-1.00", "1e2", "1.0x"] {
            assert_eq!(fen_of(bad), None, "{bad}");
        }
    }
}
