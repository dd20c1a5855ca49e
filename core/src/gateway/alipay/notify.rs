//! Alipay's async notifies: a form, RSA2-signed over every field but `sign` and `sign_type`.
//!
//! A notify is parsed once into [`VerifiedNotify`], and only that value travels on (into the
//! inbox, then to the worker). The checks read exactly the fields that were signed: a form with
//! any key twice is refused before anything else, since the signature would cover one copy and a
//! naive check could read the other (notify smuggling).

use std::collections::BTreeMap;

use super::{RsaPublicKey, TradeState, signing_string};
use crate::{gateway::Report, ids::PaymentId, payment::PaymentStatus};

/// What a verified notify means for its payment: the one place that reads `trade_status`,
/// `refund_fee` and `out_biz_no` of a notify.
#[derive(Debug, Clone)]
pub enum NotifyMeaning {
    /// The trade was paid, or closed unpaid: a report for the payment.
    Payment(Report),
    /// A refund of the paid trade (Alipay notifies every refund, `TRADE_SUCCESS` while money
    /// remains and `TRADE_CLOSED` once all is refunded). It confirms the refund it names
    /// (`out_biz_no`, our `out_request_no`) and never moves the payment.
    Refund { out_request_no: Option<String> },
    /// Nothing to act on, and why.
    Nothing(String),
}

/// How a notify was refused. Never echoes a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotifyError {
    #[error("field `{0}` appears more than once")]
    RepeatedField(String),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("signature does not verify with Alipay's public key")]
    BadSignature,
    #[error("app_id is not ours")]
    ForeignApp,
    #[error("seller_id is not ours")]
    ForeignSeller,
}

/// Whose notifies we accept: our app, paid to our seller account, signed by Alipay's key.
#[derive(Clone, Copy)]
pub struct NotifyPolicy<'a> {
    pub alipay_key: &'a RsaPublicKey,
    pub app_id: &'a str,
    pub seller_id: &'a str,
}

/// A notify whose signature verified and whose `app_id` and `seller_id` are ours. Its fields are
/// unique by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNotify {
    fields: BTreeMap<String, String>,
}

impl VerifiedNotify {
    /// Parses and verifies a notify body (`application/x-www-form-urlencoded`).
    pub fn verify(body: &[u8], policy: NotifyPolicy<'_>) -> Result<Self, NotifyError> {
        let mut fields = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            if fields.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(NotifyError::RepeatedField(k.into_owned()));
            }
        }
        let notify = VerifiedNotify { fields };
        let sign = notify.required("sign")?;
        let message = signing_string(
            notify.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &["sign_type"],
        );
        if !policy.alipay_key.verify(&message, sign) {
            return Err(NotifyError::BadSignature);
        }
        // Empty values are not signed, so `required` (non-empty) also means "signed".
        if notify.required("app_id")? != policy.app_id {
            return Err(NotifyError::ForeignApp);
        }
        if notify.required("seller_id")? != policy.seller_id {
            return Err(NotifyError::ForeignSeller);
        }
        notify.required("notify_id")?;
        notify.required("out_trade_no")?;
        Ok(notify)
    }

    fn required(&self, key: &'static str) -> Result<&str, NotifyError> {
        Some(self.get(key))
            .filter(|v| !v.is_empty())
            .ok_or(NotifyError::Missing(key))
    }

    /// A field's value, or `""` when absent.
    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }

    /// Alipay's id of this notify: the inbox deduplicates on it.
    pub fn notify_id(&self) -> &str {
        self.get("notify_id")
    }

    /// The payment it is about, when `out_trade_no` is one of ours.
    pub fn payment_id(&self) -> Option<PaymentId> {
        super::payment_of(self.get("out_trade_no"))
    }

    /// What the notify says of the trade, if it says something we understand.
    pub fn trade_state(&self) -> Option<TradeState> {
        TradeState::from_notify(
            self.get("trade_status"),
            self.get("trade_no"),
            self.get("total_amount"),
        )
    }

    /// What this notify means for a payment that is `status` now (`expired`: past its deadline).
    pub fn interpret(&self, status: PaymentStatus, expired: bool) -> NotifyMeaning {
        let refund_field = ["refund_fee", "out_biz_no", "gmt_refund"]
            .iter()
            .any(|k| !self.get(k).is_empty());
        // A trade we know was paid closes only when refunded in full: a refund, never a
        // cancellation of a succeeded payment.
        let closed_after_payment =
            self.get("trade_status") == "TRADE_CLOSED" && status == PaymentStatus::Succeeded;
        if refund_field || closed_after_payment {
            return NotifyMeaning::Refund {
                out_request_no: Some(self.get("out_biz_no").to_string()).filter(|s| !s.is_empty()),
            };
        }
        match self.trade_state().and_then(|t| t.report(expired)) {
            Some(report) => NotifyMeaning::Payment(report),
            None => NotifyMeaning::Nothing(format!(
                "trade_status `{}`: nothing to apply",
                self.get("trade_status")
            )),
        }
    }

    /// The form as a JSON object, as the inbox keeps it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.fields
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    }

    /// The inbox's copy of a notify that was verified when it arrived (nothing else writes the
    /// inbox). `None` for a document that is not a flat object of strings.
    pub fn from_inbox(stored: &serde_json::Value) -> Option<Self> {
        let fields = stored
            .as_object()?
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(VerifiedNotify { fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::alipay::AppPrivateKey;

    const ALIPAY_PRIVATE: &str =
        include_str!("../../../../sandbox/keys/alipay_sandbox_private.pem");
    const ALIPAY_PUBLIC: &str = include_str!("../../../../sandbox/keys/alipay_sandbox_public.pem");
    const OUR_APP: &str = "2021000000000001";
    const OUR_SELLER: &str = "2088000000000009";

    fn signed(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        let key = AppPrivateKey::parse(ALIPAY_PRIVATE).unwrap();
        let message = signing_string(fields.iter().copied(), &["sign_type"]);
        let mut form: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        form.push(("sign".into(), key.sign(&message)));
        form.push(("sign_type".into(), "RSA2".into()));
        form
    }

    fn encode(form: &[(String, String)]) -> Vec<u8> {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish()
            .into_bytes()
    }

    fn verify(form: &[(String, String)]) -> Result<VerifiedNotify, NotifyError> {
        let key = RsaPublicKey::parse(ALIPAY_PUBLIC).unwrap();
        VerifiedNotify::verify(
            &encode(form),
            NotifyPolicy {
                alipay_key: &key,
                app_id: OUR_APP,
                seller_id: OUR_SELLER,
            },
        )
    }

    fn fields<'a>(app: &'a str, seller: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("app_id", app),
            ("seller_id", seller),
            ("notify_id", "n1"),
            ("out_trade_no", "t1"),
            ("trade_status", "TRADE_SUCCESS"),
            ("total_amount", "360.00"),
        ]
    }

    #[test]
    fn a_notify_for_us_verifies_and_keeps_its_fields() {
        let n = verify(&signed(&fields(OUR_APP, OUR_SELLER))).unwrap();
        assert_eq!(n.get("total_amount"), "360.00");
        assert_eq!(n.notify_id(), "n1");
        assert_eq!(VerifiedNotify::from_inbox(&n.to_json()), Some(n));
    }

    #[test]
    fn a_second_copy_of_app_id_is_refused_before_the_signature() {
        // Signed for another app; our app_id smuggled in as a second copy, first or last.
        let mut last = signed(&fields("2021999999999999", OUR_SELLER));
        last.push(("app_id".into(), OUR_APP.into()));
        assert_eq!(
            verify(&last),
            Err(NotifyError::RepeatedField("app_id".into()))
        );
        let mut first = signed(&fields("2021999999999999", OUR_SELLER));
        first.insert(0, ("app_id".into(), OUR_APP.into()));
        assert_eq!(
            verify(&first),
            Err(NotifyError::RepeatedField("app_id".into()))
        );
        // Any key, even one that is not signed.
        let mut sign_type = signed(&fields(OUR_APP, OUR_SELLER));
        sign_type.push(("sign_type".into(), "RSA".into()));
        assert_eq!(
            verify(&sign_type),
            Err(NotifyError::RepeatedField("sign_type".into()))
        );
    }

    #[test]
    fn another_app_or_seller_is_refused_even_when_signed() {
        assert_eq!(
            verify(&signed(&fields("2021999999999999", OUR_SELLER))),
            Err(NotifyError::ForeignApp)
        );
        assert_eq!(
            verify(&signed(&fields(OUR_APP, "2088999999999999"))),
            Err(NotifyError::ForeignSeller)
        );
        // An empty seller_id is not signed at all.
        assert_eq!(
            verify(&signed(&fields(OUR_APP, ""))),
            Err(NotifyError::Missing("seller_id"))
        );
    }

    fn notify(extra: &[(&str, &str)]) -> VerifiedNotify {
        let mut f = fields(OUR_APP, OUR_SELLER);
        f.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        f.extend_from_slice(extra);
        verify(&signed(&f)).unwrap()
    }

    #[test]
    fn refund_notifies_confirm_refunds_and_never_move_the_payment() {
        use crate::payment::PaymentEvent;
        let partial = notify(&[
            ("refund_fee", "100.00"),
            ("out_biz_no", "r1"),
            ("gmt_refund", "2026-12-02 10:00:00.123"),
        ]);
        let full = notify(&[
            ("trade_status", "TRADE_CLOSED"),
            ("refund_fee", "360.00"),
            ("out_biz_no", "r2"),
        ]);
        for status in PaymentStatus::ALL {
            for (n, want) in [(&partial, "r1"), (&full, "r2")] {
                match n.interpret(*status, false) {
                    NotifyMeaning::Refund { out_request_no } => {
                        assert_eq!(out_request_no.as_deref(), Some(want))
                    }
                    other => panic!("{status}: {other:?}"),
                }
            }
        }
        // TRADE_CLOSED without refund fields: a refund when the payment had succeeded, ...
        let closed = notify(&[("trade_status", "TRADE_CLOSED")]);
        assert!(matches!(
            closed.interpret(PaymentStatus::Succeeded, false),
            NotifyMeaning::Refund {
                out_request_no: None
            }
        ));
        // ... and what it always meant for an unpaid one.
        for (expired, event) in [
            (false, PaymentEvent::Cancelled),
            (true, PaymentEvent::Expired),
        ] {
            match closed.interpret(PaymentStatus::RequiresAction, expired) {
                NotifyMeaning::Payment(r) => assert_eq!(r.event, event),
                other => panic!("{other:?}"),
            }
        }
        match notify(&[]).interpret(PaymentStatus::RequiresAction, false) {
            NotifyMeaning::Payment(r) => assert_eq!(r.event, PaymentEvent::GatewaySaysSucceeded),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            notify(&[("trade_status", "WAIT_BUYER_PAY")])
                .interpret(PaymentStatus::RequiresAction, false),
            NotifyMeaning::Nothing(_)
        ));
    }

    #[test]
    fn a_changed_field_breaks_the_signature() {
        let mut form = signed(&fields(OUR_APP, OUR_SELLER));
        form[5].1 = "0.01".into();
        assert_eq!(verify(&form), Err(NotifyError::BadSignature));
    }
}
