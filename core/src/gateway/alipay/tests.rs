use super::wire::string_member;
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

const ALIPAY_PRIVATE: &str = include_str!("../../../../sandbox/keys/alipay_sandbox_private.pem");
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
