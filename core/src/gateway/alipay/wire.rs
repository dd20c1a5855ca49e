//! Alipay's wire rules: the signing string, Beijing time, trade numbers, and reading answers
//! (the raw text each signature covers, codes, and which answers to trust).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};

use super::{CallResult, RsaPublicKey};
use crate::gateway::GatewayError;

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

pub(super) fn code_of(r: &serde_json::Map<String, serde_json::Value>) -> (&str, &str) {
    let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    (s("code"), s("sub_code"))
}

/// The `key` (or `error_response`) object of an answer, only when Alipay's signature over its
/// exact text verifies. Alipay leaves some errors unsigned (a bad request signature, an unknown
/// app id), and anyone on the path can write an unsigned answer: none of them is trusted, so
/// each is a transient error that changes no state and is asked again later.
pub(super) fn trusted_result(text: &str, key: &str, alipay_key: &RsaPublicKey) -> CallResult {
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

pub(super) fn classify(code: &str, sub: &str) -> GatewayError {
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

pub(super) fn string_member(text: &str, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get(key)?.as_str().map(str::to_string)
}
