//! Stripe's published test cards and test payment methods, and what each does when charged
//! (<https://docs.stripe.com/testing>).

/// What a test card does when a payment is confirmed with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Succeed,
    /// Succeeds, then the cardholder disputes the charge.
    SucceedThenDispute,
    /// Declined with this decline code.
    Decline(&'static str),
    /// Asks for 3-D Secure first.
    Authenticate,
}

/// A card as the sandbox knows it.
#[derive(Clone, Debug)]
pub struct TestCard {
    pub behaviour: Behaviour,
    pub brand: &'static str,
    pub last4: String,
    pub funding: &'static str,
    pub exp_month: i64,
    pub exp_year: i64,
}

/// Card numbers (digits only) with their brand, funding and behaviour.
const NUMBERS: &[(&str, &str, &str, Behaviour)] = &[
    ("4242424242424242", "visa", "credit", Behaviour::Succeed),
    ("4000056655665556", "visa", "debit", Behaviour::Succeed),
    (
        "5555555555554444",
        "mastercard",
        "credit",
        Behaviour::Succeed,
    ),
    (
        "2223003122003222",
        "mastercard",
        "credit",
        Behaviour::Succeed,
    ),
    ("378282246310005", "amex", "credit", Behaviour::Succeed),
    ("6011111111111117", "discover", "credit", Behaviour::Succeed),
    ("3566002020360505", "jcb", "credit", Behaviour::Succeed),
    ("6200000000000005", "unionpay", "credit", Behaviour::Succeed),
    (
        "4000000000000259",
        "visa",
        "credit",
        Behaviour::SucceedThenDispute,
    ),
    (
        "4000000000000002",
        "visa",
        "credit",
        Behaviour::Decline("generic_decline"),
    ),
    (
        "4000000000009995",
        "visa",
        "credit",
        Behaviour::Decline("insufficient_funds"),
    ),
    (
        "4000000000009987",
        "visa",
        "credit",
        Behaviour::Decline("lost_card"),
    ),
    (
        "4000000000009979",
        "visa",
        "credit",
        Behaviour::Decline("stolen_card"),
    ),
    (
        "4000000000000069",
        "visa",
        "credit",
        Behaviour::Decline("expired_card"),
    ),
    (
        "4000000000000127",
        "visa",
        "credit",
        Behaviour::Decline("incorrect_cvc"),
    ),
    (
        "4000000000000119",
        "visa",
        "credit",
        Behaviour::Decline("processing_error"),
    ),
    (
        "4100000000000019",
        "visa",
        "credit",
        Behaviour::Decline("fraudulent"),
    ),
    (
        "4000002760003184",
        "visa",
        "credit",
        Behaviour::Authenticate,
    ),
    (
        "4000002500003155",
        "visa",
        "credit",
        Behaviour::Authenticate,
    ),
    (
        "4000000000003220",
        "visa",
        "credit",
        Behaviour::Authenticate,
    ),
];

/// Stripe's test payment method ids, and the card numbers behind them.
const METHODS: &[(&str, &str)] = &[
    ("pm_card_visa", "4242424242424242"),
    ("pm_card_visa_debit", "4000056655665556"),
    ("pm_card_mastercard", "5555555555554444"),
    ("pm_card_amex", "378282246310005"),
    ("pm_card_discover", "6011111111111117"),
    ("pm_card_jcb", "3566002020360505"),
    ("pm_card_unionpay", "6200000000000005"),
    ("pm_card_createDispute", "4000000000000259"),
    ("pm_card_chargeDeclined", "4000000000000002"),
    ("pm_card_visa_chargeDeclined", "4000000000000002"),
    (
        "pm_card_chargeDeclinedInsufficientFunds",
        "4000000000009995",
    ),
    ("pm_card_chargeDeclinedLostCard", "4000000000009987"),
    ("pm_card_chargeDeclinedStolenCard", "4000000000009979"),
    ("pm_card_chargeDeclinedExpiredCard", "4000000000000069"),
    ("pm_card_chargeDeclinedIncorrectCvc", "4000000000000127"),
    ("pm_card_chargeDeclinedProcessingError", "4000000000000119"),
    ("pm_card_chargeDeclinedFraudulent", "4100000000000019"),
    ("pm_card_authenticationRequired", "4000002760003184"),
    ("pm_card_threeDSecure2Required", "4000000000003220"),
];

/// The card of one of Stripe's test payment method ids.
pub fn builtin(pm: &str) -> Option<TestCard> {
    let (_, number) = METHODS.iter().find(|(id, _)| *id == pm)?;
    by_number(number, 12, 2034)
}

/// The card a test number stands for; `None` for a number Stripe's test mode would refuse.
pub fn by_number(number: &str, exp_month: i64, exp_year: i64) -> Option<TestCard> {
    let (digits, brand, funding, behaviour) = NUMBERS.iter().find(|(n, ..)| *n == number)?;
    Some(TestCard {
        behaviour: *behaviour,
        brand,
        last4: digits[digits.len() - 4..].to_string(),
        funding,
        exp_month,
        exp_year,
    })
}

/// The Luhn check every card number passes.
pub fn luhn_valid(digits: &str) -> bool {
    if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// What Stripe tells the cardholder for a decline code.
pub fn decline_message(code: &str) -> &'static str {
    match code {
        "insufficient_funds" => "Your card has insufficient funds.",
        "expired_card" => "Your card has expired.",
        "incorrect_cvc" => "Your card's security code is incorrect.",
        "processing_error" => {
            "An error occurred while processing your card. Try again in a little bit."
        }
        _ => "Your card was declined.",
    }
}

/// The error `code` Stripe gives with a decline code (most are `card_declined`).
pub fn decline_error_code(decline: &str) -> &'static str {
    match decline {
        "expired_card" => "expired_card",
        "incorrect_cvc" => "incorrect_cvc",
        "processing_error" => "processing_error",
        _ => "card_declined",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_number_passes_luhn_and_every_method_has_a_card() {
        for (n, ..) in NUMBERS {
            assert!(luhn_valid(n), "{n}");
        }
        for (pm, _) in METHODS {
            assert!(builtin(pm).is_some(), "{pm}");
        }
        assert!(!luhn_valid("4242424242424241"));
        assert_eq!(builtin("pm_card_visa").unwrap().last4, "4242");
    }
}
