//! The checkout page's templates (askama: checked when the crate compiles, every value
//! HTML-escaped) and what each state of a session shows.

use askama::Template;
use evisa_core::{
    application::{Application, ApplicationStatus},
    checkout::{CheckoutSession, Locale},
    money::Currency,
    payment::{NextAction, Payment, PaymentStatus, Provider},
    visa::{ProcessingSpeed, VisaType},
};

use super::{
    assets, format,
    messages::{self, Messages, fill},
};

/// A link of the language switch.
pub struct Language {
    pub tag: &'static str,
    pub name: &'static str,
    pub href: String,
    pub current: bool,
}

/// What every page needs.
pub struct Frame {
    pub lang: &'static str,
    pub m: &'static Messages,
    pub nonce: String,
    pub stylesheet: String,
    pub script: String,
    pub languages: Vec<Language>,
}

impl Frame {
    /// The frame of a page at `path` in `locale`.
    pub fn new(locale: Locale, nonce: String, path: &str) -> Frame {
        Frame {
            lang: locale.tag(),
            m: messages::of(locale),
            nonce,
            stylesheet: assets::path(&assets::STYLESHEET),
            script: assets::path(&assets::SCRIPT),
            languages: Locale::ALL
                .iter()
                .map(|l| Language {
                    tag: l.tag(),
                    name: messages::of(*l).language_name,
                    href: format!("{path}?lang={}", l.tag()),
                    current: *l == locale,
                })
                .collect(),
        }
    }
}

/// A page that only says something (link used, expired, paid, waiting...).
#[derive(Template)]
#[template(path = "checkout/message.html")]
pub struct MessagePage {
    pub lang: &'static str,
    pub m: &'static Messages,
    pub nonce: String,
    pub stylesheet: String,
    pub script: String,
    pub languages: Vec<Language>,
    pub heading: &'static str,
    pub text: &'static str,
    pub receipt_code: Option<String>,
    pub receipt_link: Option<String>,
    /// A link onwards (`href`, label), e.g. back to Alipay's cashier.
    pub continue_link: Option<(String, String)>,
    pub return_url: Option<String>,
    /// The event stream the script follows until a final status.
    pub follow: Option<String>,
    pub page_url: String,
}

impl MessagePage {
    pub fn new(frame: Frame, heading: &'static str, text: &'static str) -> MessagePage {
        MessagePage {
            lang: frame.lang,
            m: frame.m,
            nonce: frame.nonce,
            stylesheet: frame.stylesheet,
            script: frame.script,
            languages: frame.languages,
            heading,
            text,
            receipt_code: None,
            receipt_link: None,
            continue_link: None,
            return_url: None,
            follow: None,
            page_url: String::new(),
        }
    }
}

/// One application of a group payment, as its page lists it.
pub struct Member {
    pub reference: String,
    pub fee: String,
}

/// The page that takes the payment.
#[derive(Template)]
#[template(path = "checkout/pay.html")]
pub struct PayPage {
    pub lang: &'static str,
    pub m: &'static Messages,
    pub nonce: String,
    pub stylesheet: String,
    pub script: String,
    pub languages: Vec<Language>,
    pub error: Option<String>,
    /// A group payment's applications (empty for one application).
    pub members: Vec<Member>,
    pub reference: String,
    pub visa_type: &'static str,
    pub speed: &'static str,
    pub fee: String,
    pub fee_cny: Option<String>,
    pub expires_at: String,
    pub expires_at_iso: String,
    pub card_offered: bool,
    pub stripe_js: bool,
    /// The script's settings and strings, as JSON (escaped into an attribute).
    pub config_json: String,
    pub pay_label: String,
    pub alipay_button: Option<String>,
    pub alipay_text: String,
    pub alipay_action: String,
    pub alipay_attempt: String,
    pub csrf: String,
}

/// A receipt.
#[derive(Template)]
#[template(path = "checkout/receipt.html")]
pub struct ReceiptPage {
    pub lang: &'static str,
    pub m: &'static Messages,
    pub stylesheet: String,
    pub languages: Vec<Language>,
    pub payment_reference: String,
    pub reference: String,
    pub amount: String,
    pub method: String,
    pub paid_at: String,
    pub refunded: Option<String>,
    pub code: String,
    pub back: String,
}

pub fn visa_type(m: &Messages, v: Option<VisaType>) -> &'static str {
    match v {
        Some(VisaType::Tourist) => m.tourist,
        Some(VisaType::Business) => m.business,
        Some(VisaType::Transit) => m.transit,
        None => "",
    }
}

pub fn speed(m: &Messages, s: Option<ProcessingSpeed>) -> &'static str {
    match s {
        Some(ProcessingSpeed::Standard) => m.standard,
        Some(ProcessingSpeed::Express) => m.express,
        None => "",
    }
}

/// What a session shows, from its application and that application's payments (newest first).
pub enum State<'a> {
    /// Nothing paid yet, nothing in flight: offer the ways to pay (with the last attempt's
    /// failure, if it failed).
    Pay { last_failure: Option<&'a Payment> },
    /// An attempt is in flight.
    Waiting { payment: &'a Payment },
    /// The fee is paid.
    Paid { payment: Option<&'a Payment> },
    /// The session's time is up.
    Expired,
    /// The application no longer waits for payment.
    NotPayable,
}

impl<'a> State<'a> {
    pub fn of(
        session: &CheckoutSession,
        application: &Application,
        payments: &'a [Payment],
        now: chrono::DateTime<chrono::Utc>,
    ) -> State<'a> {
        let succeeded = payments
            .iter()
            .find(|p| p.status == PaymentStatus::Succeeded);
        match application.status {
            ApplicationStatus::Paid
            | ApplicationStatus::Processing
            | ApplicationStatus::Approved
            | ApplicationStatus::Rejected
                if application.paid_at.is_some() || succeeded.is_some() =>
            {
                return State::Paid { payment: succeeded };
            }
            ApplicationStatus::Submitted => {}
            _ => return State::NotPayable,
        }
        if session.expired(now) {
            return State::Expired;
        }
        match payments.first() {
            Some(p) if !p.status.is_terminal() => State::Waiting { payment: p },
            Some(p) if p.status == PaymentStatus::Failed => State::Pay {
                last_failure: Some(p),
            },
            _ => State::Pay { last_failure: None },
        }
    }
}

/// The CNY price of a fee, for Alipay, if the schedule has one.
pub fn cny_price(application: &Application) -> Option<evisa_core::money::Money> {
    let cny = Currency::parse("CNY").ok()?;
    let fee = application.fee.as_ref()?;
    fee.options.iter().copied().find(|m| m.currency() == cny)
}

/// Where an in-flight Alipay attempt continues: its cashier.
pub fn cashier_url(payment: &Payment) -> Option<String> {
    match (&payment.provider, &payment.next_action) {
        (Provider::Alipay, Some(NextAction::Redirect { redirect_url })) => {
            Some(redirect_url.clone())
        }
        _ => None,
    }
}

/// The script's strings in `m`.
pub fn script_strings(m: &Messages) -> serde_json::Value {
    serde_json::json!({
        "error_name": m.error_name,
        "error_number": m.error_number,
        "error_expiry": m.error_expiry,
        "error_cvc": m.error_cvc,
        "error_network": m.error_network,
        "error_in_progress": m.error_in_progress,
        "too_many_attempts": m.too_many_attempts,
        "processing": m.processing,
        "authenticating": m.authenticating,
        "review_text": m.review_text,
        "expiry_warning": m.expiry_warning,
        "expiry_passed": m.expiry_passed,
        "paid_heading": m.paid_heading,
        "failed_heading": m.failed_heading,
        "declined_generic": m.declined_generic,
    })
}

/// `{amount}` filled in.
pub fn with_amount(template: &str, amount: &str) -> String {
    fill(template, &[("amount", amount)])
}

/// The card a receipt names.
pub fn card_words(m: &Messages, brand: &str, last4: &str) -> String {
    fill(m.paid_with_card, &[("brand", brand), ("last4", last4)])
}

pub use format::{moment, money};
