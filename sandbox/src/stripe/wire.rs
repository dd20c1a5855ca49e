//! Stripe's wire conventions: form-encoded requests, the parameters each endpoint takes, and
//! error objects as Stripe words them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// An answer before it is sent: HTTP status and JSON body.
pub type Answer = (u16, Value);

/// A form body (`a=1&metadata[k]=v`), keys and values percent-decoded, in order.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

pub fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `metadata[k]=v` pairs.
pub fn metadata(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix("metadata[")?.strip_suffix(']')?.to_string(),
                v.clone(),
            ))
        })
        .collect()
}

/// The values of `expand[]` (sent as `expand[0]=a` or `expand[]=a`).
pub fn expansions(pairs: &[(String, String)]) -> Vec<&str> {
    pairs
        .iter()
        .filter(|(k, _)| k == "expand" || k.starts_with("expand["))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// An error answer: `{"error": {type, code, message, param, doc_url}}`. The request's
/// `request_log_url` is added when it is sent.
pub fn error(
    status: u16,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Answer {
    let mut e = json!({"type": kind, "message": message});
    if let Some(code) = code {
        e["code"] = json!(code);
        e["doc_url"] = json!(format!(
            "https://stripe.com/docs/error-codes/{}",
            code.replace('_', "-")
        ));
    }
    if let Some(param) = param {
        e["param"] = json!(param);
    }
    (status, json!({"error": e}))
}

pub fn invalid(code: Option<&str>, param: Option<&str>, message: &str) -> Answer {
    error(400, "invalid_request_error", code, param, message)
}

pub fn missing(param: &str) -> Answer {
    invalid(
        Some("parameter_missing"),
        Some(param),
        &format!("Missing required param: {param}."),
    )
}

pub fn no_such(kind: &str, id: &str) -> Answer {
    error(
        404,
        "invalid_request_error",
        Some("resource_missing"),
        Some("id"),
        &format!("No such {kind}: '{id}'"),
    )
}

/// The parameters one endpoint takes: exact names, and prefixes of nested ones (`metadata[`).
pub struct Spec {
    pub exact: &'static [&'static str],
    pub nested: &'static [&'static str],
    pub required: &'static [&'static str],
}

pub const CREATE_INTENT: Spec = Spec {
    exact: &[
        "amount",
        "currency",
        "confirm",
        "payment_method",
        "description",
        "receipt_email",
        "return_url",
        "capture_method",
        "confirmation_method",
        "customer",
        "setup_future_usage",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "off_session",
        "error_on_requires_action",
        "use_stripe_sdk",
        "transfer_group",
        "on_behalf_of",
    ],
    nested: &[
        "metadata[",
        "expand[",
        "automatic_payment_methods[",
        "payment_method_types[",
        "payment_method_options[",
        "shipping[",
        "mandate_data[",
    ],
    required: &["amount", "currency"],
};

pub const CONFIRM_INTENT: Spec = Spec {
    exact: &[
        "payment_method",
        "return_url",
        "receipt_email",
        "off_session",
        "error_on_requires_action",
        "use_stripe_sdk",
        "setup_future_usage",
        "capture_method",
        "client_secret",
    ],
    nested: &[
        "expand[",
        "payment_method_types[",
        "payment_method_options[",
        "shipping[",
        "mandate_data[",
    ],
    required: &[],
};

pub const CANCEL_INTENT: Spec = Spec {
    exact: &["cancellation_reason"],
    nested: &["expand["],
    required: &[],
};

pub const RETRIEVE: Spec = Spec {
    exact: &["client_secret"],
    nested: &["expand["],
    required: &[],
};

pub const LIST_EVENTS: Spec = Spec {
    exact: &[
        "limit",
        "type",
        "starting_after",
        "ending_before",
        "created",
        "delivery_success",
    ],
    nested: &["types[", "created[", "expand["],
    required: &[],
};

pub const CREATE_PAYMENT_METHOD: Spec = Spec {
    exact: &["type", "allow_redisplay", "payment_method", "customer"],
    nested: &["card[", "billing_details[", "metadata[", "expand["],
    required: &["type"],
};

pub const CREATE_REFUND: Spec = Spec {
    exact: &[
        "payment_intent",
        "charge",
        "amount",
        "reason",
        "instructions_email",
        "refund_application_fee",
        "reverse_transfer",
        "origin",
    ],
    nested: &["metadata[", "expand["],
    required: &[],
};

/// Refuses unknown and missing parameters, as Stripe does before anything runs.
pub fn check(spec: &Spec, pairs: &[(String, String)]) -> Result<(), Answer> {
    for (key, _) in pairs {
        let known = spec.exact.contains(&key.as_str())
            || key == "expand"
            || spec.nested.iter().any(|p| key.starts_with(p));
        if !known {
            let name = key.split('[').next().unwrap_or(key);
            return Err(invalid(
                Some("parameter_unknown"),
                Some(key),
                &format!("Received unknown parameter: {name}"),
            ));
        }
    }
    for required in spec.required {
        if param(pairs, required).is_none_or(str::is_empty) {
            return Err(missing(required));
        }
    }
    Ok(())
}

/// The presentment currencies Stripe supports (<https://docs.stripe.com/currencies>).
pub const SUPPORTED: &str = "usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bif bmd bnd \
    bob brl bsd bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp \
    gbp gel gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jpy kes kgs khr kmf krw kyd kzt \
    lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd \
    pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb \
    tjs top try ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xof xpf yer zar zmw";

/// Stripe's minimum charge per currency in minor units, as its table lists them
/// (<https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts>); other currencies
/// take 50 minor units here, where Stripe asks for the equivalent of US$0.50.
const MINIMUMS: &[(&str, i64, &str)] = &[
    ("usd", 50, "$0.50"),
    ("aed", 200, "AED 2.00"),
    ("aud", 50, "A$0.50"),
    ("bgn", 100, "BGN 1.00"),
    ("brl", 50, "R$0.50"),
    ("cad", 50, "CA$0.50"),
    ("chf", 50, "CHF 0.50"),
    ("czk", 1500, "CZK 15.00"),
    ("dkk", 250, "DKK 2.50"),
    ("eur", 50, "€0.50"),
    ("gbp", 30, "£0.30"),
    ("hkd", 400, "HK$4.00"),
    ("huf", 17500, "HUF 175.00"),
    ("inr", 50, "₹0.50"),
    ("jpy", 50, "¥50"),
    ("mxn", 1000, "MX$10.00"),
    ("myr", 200, "MYR 2.00"),
    ("nok", 300, "NOK 3.00"),
    ("nzd", 50, "NZ$0.50"),
    ("pln", 200, "PLN 2.00"),
    ("ron", 200, "RON 2.00"),
    ("sek", 300, "SEK 3.00"),
    ("sgd", 50, "S$0.50"),
    ("thb", 1000, "THB 10.00"),
];

/// `amount` and `currency` as Stripe validates them.
pub fn amount_and_currency(pairs: &[(String, String)]) -> Result<(i64, String), Answer> {
    let raw = param(pairs, "amount").unwrap_or_default();
    let Ok(amount) = raw.parse::<i64>() else {
        return Err(invalid(
            Some("parameter_invalid_integer"),
            Some("amount"),
            &format!("Invalid integer: {raw}"),
        ));
    };
    let currency = param(pairs, "currency")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if currency.len() != 3 || !SUPPORTED.split_whitespace().any(|c| c == currency) {
        let supported: Vec<&str> = SUPPORTED.split_whitespace().collect();
        return Err(invalid(
            None,
            Some("currency"),
            &format!(
                "Invalid currency: {currency}. Stripe currently supports these currencies: {}",
                supported.join(", ")
            ),
        ));
    }
    let (minimum, shown) = MINIMUMS
        .iter()
        .find(|(c, ..)| *c == currency)
        .map(|(_, m, s)| (*m, s.to_string()))
        .unwrap_or((50, "50 minor units of".to_string()));
    if amount < minimum {
        return Err(invalid(
            Some("amount_too_small"),
            Some("amount"),
            &format!("Amount must be at least {shown} {currency}"),
        ));
    }
    if amount > 99_999_999 {
        return Err(invalid(
            Some("amount_too_large"),
            Some("amount"),
            "Amount must be no more than 99999999",
        ));
    }
    Ok((amount, currency))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_nested_keys() {
        let pairs =
            form_pairs(b"amount=1099&metadata[payment_id]=p%201&metadata%5Bapp%5D=a&confirm=true");
        assert_eq!(param(&pairs, "amount"), Some("1099"));
        let m = metadata(&pairs);
        assert_eq!(m["payment_id"], "p 1");
        assert_eq!(m["app"], "a");
    }

    #[test]
    fn unknown_missing_and_small_are_refused_as_stripe_words_them() {
        let (_, e) = check(
            &CREATE_INTENT,
            &form_pairs(b"amount=100&currency=usd&colour=red"),
        )
        .unwrap_err();
        assert_eq!(e["error"]["code"], "parameter_unknown");
        assert_eq!(e["error"]["param"], "colour");
        let (_, e) = check(&CREATE_INTENT, &form_pairs(b"amount=100")).unwrap_err();
        assert_eq!(e["error"]["param"], "currency");
        let (_, e) = amount_and_currency(&form_pairs(b"amount=10&currency=usd")).unwrap_err();
        assert_eq!(e["error"]["code"], "amount_too_small");
        let (_, e) = amount_and_currency(&form_pairs(b"amount=100&currency=xyz")).unwrap_err();
        assert_eq!(e["error"]["param"], "currency");
        assert!(
            check(
                &CREATE_INTENT,
                &form_pairs(b"amount=1&currency=usd&metadata[a]=b&expand[0]=x")
            )
            .is_ok()
        );
    }
}
