//! Amounts and dates as each locale writes them (CLDR's patterns for the currencies of the fee
//! schedule): `US$40.00`, `CN¥360.00` in English and `¥360.00` in Chinese, `JP¥4,000`.

use chrono::{DateTime, Datelike, Timelike, Utc};
use evisa_core::{checkout::Locale, money::Money};

use super::messages;

/// The currency's symbol in `locale`, with the space that follows it, if any.
fn symbol(code: &str, locale: Locale) -> String {
    match (code, locale) {
        ("USD", _) => "US$".into(),
        ("CNY", Locale::ZhCn) => "¥".into(),
        ("CNY", Locale::En) => "CN¥".into(),
        ("JPY", _) => "JP¥".into(),
        ("EUR", _) => "€".into(),
        ("GBP", _) => "£".into(),
        ("HKD", _) => "HK$".into(),
        // No symbol of its own in CLDR for these locales: the ISO code and a no-break space.
        (other, _) => format!("{other}\u{a0}"),
    }
}

/// `amount` with its currency's own minor units and digit grouping.
pub fn money(amount: Money, locale: Locale) -> String {
    let exponent = amount.currency().exponent();
    let minor = amount.amount_minor();
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    let scale = 10u64.pow(exponent);
    let whole = group(minor / scale);
    let symbol = symbol(amount.currency().code(), locale);
    if exponent == 0 {
        format!("{sign}{symbol}{whole}")
    } else {
        let fraction = minor % scale;
        let width = exponent as usize;
        format!("{sign}{symbol}{whole}.{fraction:0width$}")
    }
}

fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A moment as a date and time in UTC (the page's script shows it in the browser's own zone).
pub fn moment(at: DateTime<Utc>, locale: Locale) -> String {
    let m = messages::of(locale);
    let month = m.months[at.month0() as usize];
    match locale {
        Locale::En => format!(
            "{} {month} {}, {:02}:{:02} UTC",
            at.day(),
            at.year(),
            at.hour(),
            at.minute()
        ),
        Locale::ZhCn => format!(
            "{}年{month}{}日 {:02}:{:02} UTC",
            at.year(),
            at.day(),
            at.hour(),
            at.minute()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use evisa_core::money::Currency;

    fn m(minor: i64, code: &str) -> Money {
        Money::new(minor, Currency::parse(code).unwrap()).unwrap()
    }

    #[test]
    fn amounts_use_the_currency_minor_units_and_the_locale_symbols() {
        assert_eq!(money(m(4000, "USD"), Locale::En), "US$40.00");
        assert_eq!(money(m(4000, "USD"), Locale::ZhCn), "US$40.00");
        assert_eq!(money(m(36000, "CNY"), Locale::ZhCn), "¥360.00");
        assert_eq!(money(m(36000, "CNY"), Locale::En), "CN¥360.00");
        assert_eq!(money(m(4000, "JPY"), Locale::En), "JP¥4,000");
        assert_eq!(money(m(12500, "KWD"), Locale::En), "KWD\u{a0}12.500");
        assert_eq!(money(m(123456789, "EUR"), Locale::En), "€1,234,567.89");
        assert_eq!(money(m(5, "EUR"), Locale::En), "€0.05");
    }

    #[test]
    fn dates_are_written_per_locale() {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 9, 5, 0).unwrap();
        assert_eq!(moment(at, Locale::En), "2 December 2026, 09:05 UTC");
        assert_eq!(moment(at, Locale::ZhCn), "2026年12月2日 09:05 UTC");
    }
}
