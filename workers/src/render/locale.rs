//! Formatting for the user's locale, from maintained locale data: glibc's
//! locale definitions (`pure-rust-locales`, through chrono for dates) for
//! month and day names, decimal marks, digit grouping and where a currency
//! symbol goes; ISO 4217 (`iso_currency`) for each currency's symbol and
//! decimal places.
//!
//! Separators are written as plain spaces, whatever the locale says (French
//! groups digits with a narrow no-break space): SMS keeps to the GSM-7
//! alphabet, where a no-break space would turn the whole message into UCS-2.

use pure_rust_locales::{locale_match, Locale};

/// The conventions of a BCP 47 tag: its language and region when glibc
/// knows the pair (`fr-CA` → `fr_CA`), else the language's own country
/// (`fr` → `fr_FR`, `de` → `de_DE`; `en` → `en_US`), else `en_US`.
pub fn conventions(tag: &str) -> Locale {
    // Looked up by every money, number and date of every message: each
    // thread remembers the tags it has seen (a handful).
    thread_local! {
        static SEEN: std::cell::RefCell<Vec<(String, Locale)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SEEN.with(|seen| {
        if let Some((_, locale)) = seen.borrow().iter().find(|(t, _)| t == tag) {
            return *locale;
        }
        let locale = lookup(tag);
        let mut seen = seen.borrow_mut();
        if seen.len() < 64 {
            seen.push((tag.to_string(), locale));
        }
        locale
    })
}

fn lookup(tag: &str) -> Locale {
    let mut parts = tag.split(['-', '_']);
    let lang = parts.next().unwrap_or_default().to_ascii_lowercase();
    let region = parts.next().map(str::to_ascii_uppercase);
    let known = |name: &str| Locale::try_from(name).ok();
    region
        .and_then(|r| known(&format!("{lang}_{r}")))
        .or_else(|| known(&format!("{lang}_{}", lang.to_ascii_uppercase())))
        .unwrap_or(Locale::en_US)
}

/// `amount` of `currency` (ISO 4217 code) as `locale` writes money:
/// `€29.95` in English, `29,95 €` in French, `¥1,200` with no decimals.
/// A code ISO 4217 does not know is written after the amount.
pub fn money(amount: f64, currency: &str, locale: Locale) -> String {
    let code = currency.to_ascii_uppercase();
    let Some(c) = iso_currency::Currency::from_code(&code) else {
        return format!("{} {code}", number(amount, 2, locale, true));
    };
    let decimals = c.exponent().unwrap_or(2) as usize;
    let digits = number(amount.abs(), decimals, locale, true);
    let symbol = c.symbol().symbol;
    let (precedes, spaced) = if amount < 0.0 {
        (locale_match!(locale => LC_MONETARY::N_CS_PRECEDES), locale_match!(locale => LC_MONETARY::N_SEP_BY_SPACE))
    } else {
        (locale_match!(locale => LC_MONETARY::P_CS_PRECEDES), locale_match!(locale => LC_MONETARY::P_SEP_BY_SPACE))
    };
    let space = if spaced == 1 { " " } else { "" };
    let sign = if amount < 0.0 { "-" } else { "" };
    if precedes == 1 {
        format!("{sign}{symbol}{space}{digits}")
    } else {
        format!("{sign}{digits}{space}{symbol}")
    }
}

/// `value` with `decimals` places, grouped and pointed as `locale` writes
/// numbers (`monetary`: as it writes amounts of money).
pub fn number(value: f64, decimals: usize, locale: Locale, monetary: bool) -> String {
    let (point, separator, grouping) = if monetary {
        (
            locale_match!(locale => LC_MONETARY::MON_DECIMAL_POINT),
            locale_match!(locale => LC_MONETARY::MON_THOUSANDS_SEP),
            locale_match!(locale => LC_MONETARY::MON_GROUPING),
        )
    } else {
        (
            locale_match!(locale => LC_NUMERIC::DECIMAL_POINT),
            locale_match!(locale => LC_NUMERIC::THOUSANDS_SEP),
            locale_match!(locale => LC_NUMERIC::GROUPING),
        )
    };
    let point = if point.is_empty() { "." } else { point };
    let separator = if separator.trim().is_empty() && !separator.is_empty() { " " } else { separator };
    let text = format!("{:.*}", decimals, value.abs());
    let (whole, fraction) = text.split_once('.').map_or((text.as_str(), None), |(w, f)| (w, Some(f)));
    let mut out = String::with_capacity(text.len() + 8);
    if value < 0.0 && text.bytes().any(|b| b.is_ascii_digit() && b != b'0') {
        out.push('-');
    }
    out.push_str(&group(whole, separator, grouping));
    if let Some(f) = fraction {
        out.push_str(point);
        out.push_str(f);
    }
    out
}

/// `digits` grouped from the right as glibc's `grouping` says (sizes from
/// the right, the last repeating; a size of 0 or below stops grouping).
fn group(digits: &str, separator: &str, grouping: &[i64]) -> String {
    if separator.is_empty() || grouping.is_empty() {
        return digits.to_string();
    }
    let mut cuts = Vec::new();
    let mut end = digits.len();
    let mut sizes = grouping.iter().copied();
    let mut size = sizes.next().unwrap_or(0);
    while size > 0 && end > size as usize {
        end -= size as usize;
        cuts.push(end);
        size = sizes.next().unwrap_or(size);
    }
    let mut out = String::with_capacity(digits.len() + cuts.len() * separator.len());
    let mut from = 0;
    for cut in cuts.into_iter().rev() {
        out.push_str(&digits[from..cut]);
        out.push_str(separator);
        from = cut;
    }
    out.push_str(&digits[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_written_as_each_locale_writes_it() {
        let (en, fr) = (conventions("en"), conventions("fr"));
        assert_eq!(money(29.95, "EUR", en), "€29.95");
        assert_eq!(money(29.95, "EUR", fr), "29,95 €");
        assert_eq!(money(1234567.5, "EUR", fr), "1 234 567,50 €");
        assert_eq!(money(1234567.5, "USD", en), "$1,234,567.50");
        assert_eq!(money(1200.0, "JPY", en), "¥1,200");
        assert_eq!(money(-5.0, "GBP", en), "-£5.00");
        assert_eq!(money(3.5, "QQQ", en), "3.50 QQQ");
        assert_eq!(money(29.95, "eur", conventions("fr-CA")), "29,95 €");
    }

    #[test]
    fn tags_find_their_conventions() {
        assert_eq!(conventions("fr-CA"), Locale::fr_CA);
        assert_eq!(conventions("fr"), Locale::fr_FR);
        assert_eq!(conventions("de-AT"), Locale::de_AT);
        assert_eq!(conventions("en"), Locale::en_US);
        assert_eq!(conventions("en-GB"), Locale::en_GB);
        assert_eq!(conventions("xx"), Locale::en_US);
    }

    #[test]
    fn numbers_group_and_point_as_the_locale_does() {
        assert_eq!(number(1234567.891, 2, conventions("en"), false), "1,234,567.89");
        assert_eq!(number(1234567.891, 2, conventions("fr"), false), "1 234 567,89");
        assert_eq!(number(999.0, 0, conventions("fr"), false), "999");
        assert_eq!(number(-0.001, 2, conventions("en"), false), "0.00");
    }
}
