//! The checkout page's message catalogue: one typed catalogue per locale. Every message is a
//! field of [`Messages`], so a locale missing a message, or a page asking for one that does not
//! exist, does not compile. Placeholders are `{name}`, filled by [`fill`] (server) or by the
//! page's script.

mod en;
mod zh_cn;

use evisa_core::checkout::Locale;

/// Every string the checkout page shows.
pub struct Messages {
    pub language_name: &'static str,
    pub switch_language: &'static str,
    pub service_name: &'static str,
    pub title_pay: &'static str,
    pub summary_heading: &'static str,
    /// A group payment's heading above its applications, and its total's label.
    pub group_heading: &'static str,
    pub group_total: &'static str,
    pub reference: &'static str,
    pub visa_type: &'static str,
    pub speed: &'static str,
    pub fee: &'static str,
    pub tourist: &'static str,
    pub business: &'static str,
    pub transit: &'static str,
    pub standard: &'static str,
    pub express: &'static str,
    pub deadline: &'static str,
    /// `{time}`: the deadline.
    pub expiry_warning: &'static str,
    pub expiry_passed: &'static str,
    pub card_heading: &'static str,
    pub card_needs_javascript: &'static str,
    pub card_unavailable: &'static str,
    pub card_name: &'static str,
    pub card_number: &'static str,
    pub card_number_hint: &'static str,
    pub card_expiry: &'static str,
    pub card_expiry_hint: &'static str,
    pub card_cvc: &'static str,
    pub card_cvc_hint: &'static str,
    pub continue_to_review: &'static str,
    pub review_heading: &'static str,
    /// `{amount}`, `{reference}`, `{last4}`.
    pub review_text: &'static str,
    /// `{amount}`.
    pub pay_now: &'static str,
    pub change_card: &'static str,
    pub error_summary: &'static str,
    pub error_name: &'static str,
    pub error_number: &'static str,
    pub error_expiry: &'static str,
    pub error_cvc: &'static str,
    pub error_network: &'static str,
    pub error_in_progress: &'static str,
    pub error_form: &'static str,
    pub processing: &'static str,
    pub authenticating: &'static str,
    pub bank_check_title: &'static str,
    pub declined_generic: &'static str,
    pub declined_insufficient_funds: &'static str,
    pub declined_expired_card: &'static str,
    pub declined_incorrect_cvc: &'static str,
    pub declined_authentication: &'static str,
    pub too_many_attempts: &'static str,
    pub alipay_heading: &'static str,
    /// `{amount}`.
    pub alipay_text: &'static str,
    /// `{amount}`.
    pub alipay_button: &'static str,
    pub alipay_continue: &'static str,
    pub waiting_heading: &'static str,
    pub waiting_text: &'static str,
    pub refresh: &'static str,
    pub failed_heading: &'static str,
    pub paid_heading: &'static str,
    pub paid_text: &'static str,
    pub verification_code: &'static str,
    pub view_receipt: &'static str,
    pub return_to_service: &'static str,
    pub used_heading: &'static str,
    pub used_text: &'static str,
    pub expired_heading: &'static str,
    pub expired_text: &'static str,
    pub not_found_heading: &'static str,
    pub not_found_text: &'static str,
    pub not_payable_heading: &'static str,
    pub not_payable_text: &'static str,
    pub receipt_heading: &'static str,
    pub payment_reference: &'static str,
    pub paid_with: &'static str,
    /// `{brand}`, `{last4}`.
    pub paid_with_card: &'static str,
    pub paid_with_alipay: &'static str,
    pub paid_on: &'static str,
    pub refunded: &'static str,
    pub receipt_check: &'static str,
    pub back_to_payment: &'static str,
    pub months: [&'static str; 12],
}

/// The catalogue of `locale`.
pub fn of(locale: Locale) -> &'static Messages {
    match locale {
        Locale::En => &en::MESSAGES,
        Locale::ZhCn => &zh_cn::MESSAGES,
    }
}

/// `template` with each `{name}` replaced by its value.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |text, (name, value)| {
            text.replace(&format!("{{{name}}}"), value)
        })
}

impl Messages {
    /// The message for a decline code, in this language.
    pub fn decline(&self, code: Option<&str>) -> &'static str {
        match code.unwrap_or_default() {
            "insufficient_funds" => self.declined_insufficient_funds,
            "expired_card" => self.declined_expired_card,
            "incorrect_cvc" => self.declined_incorrect_cvc,
            "payment_intent_authentication_failure" | "authentication_required" => {
                self.declined_authentication
            }
            _ => self.declined_generic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Placeholders are the same in every language, so no value is lost in translation.
    #[test]
    fn every_locale_has_the_same_placeholders() {
        let placeholders = |m: &Messages| {
            [
                m.expiry_warning,
                m.review_text,
                m.pay_now,
                m.alipay_text,
                m.alipay_button,
                m.paid_with_card,
            ]
            .map(|t| {
                let mut names: Vec<&str> = t
                    .split('{')
                    .skip(1)
                    .filter_map(|p| p.split_once('}').map(|(n, _)| n))
                    .collect();
                names.sort_unstable();
                names
            })
        };
        assert_eq!(placeholders(of(Locale::En)), placeholders(of(Locale::ZhCn)));
        assert_eq!(
            fill(of(Locale::En).pay_now, &[("amount", "US$40.00")]),
            "Pay US$40.00"
        );
    }
}
