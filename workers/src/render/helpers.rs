//! Helpers for template authors:
//!
//! - `{{date placed_at}}` / `{{date placed_at "%A %-d %B, %H:%M"}}`: an RFC 3339
//!   time shown in the user's time zone.
//! - `{{money total currency}}`: `49.90` and `EUR` become `€49.90`.
//! - `{{plural count "item" "items"}}`: `1 item`, `3 items`.
//!
//! What a helper writes goes through the registry's escaping (HTML in HTML
//! parts), as `{{variable}}` does: event data never becomes markup.

use chrono::DateTime;
use chrono_tz::Tz;
use handlebars::{Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderError, RenderErrorReason};
use serde_json::Value;

pub fn register(hb: &mut Handlebars<'static>) {
    hb.register_helper("date", Box::new(date));
    hb.register_helper("money", Box::new(money));
    hb.register_helper("plural", Box::new(plural));
}

/// HTML escaping as handlebars' own (`< > " & ' ` =`), which pushes char by
/// char into a growing string: this copies the runs between them at once,
/// into a string sized for the text, and every `{{value}}` of an HTML part goes through it.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'&' => "&amp;",
            b'\'' => "&#x27;",
            b'`' => "&#x60;",
            b'=' => "&#x3D;",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        out.push_str(entity);
        from = i + 1;
    }
    out.push_str(&s[from..]);
    out
}

fn fail(msg: String) -> RenderError {
    RenderErrorReason::Other(msg).into()
}

/// Names the variable behind parameter `i`, so a missing one is easy to find.
fn missing(helper: &str, h: &Helper<'_>, i: usize, wanted: &str) -> RenderError {
    match h.param(i).and_then(|p| p.relative_path().cloned()) {
        Some(path) => fail(format!("{helper}: `{path}` is missing or not {wanted}")),
        None => fail(format!("{helper}: needs {wanted}")),
    }
}

/// Writes `text` escaped as the registry escapes values.
fn write(r: &Handlebars<'_>, out: &mut dyn Output, text: &str) -> HelperResult {
    out.write(&r.get_escape_fn()(text))?;
    Ok(())
}

fn date(
    h: &Helper<'_>,
    r: &Handlebars<'_>,
    ctx: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let raw = h.param(0).and_then(|p| p.value().as_str()).ok_or_else(|| missing("date", h, 0, "an RFC 3339 time"))?;
    let format = h.param(1).and_then(|p| p.value().as_str()).unwrap_or("%-d %B %Y");
    let tz: Tz = ctx.data()["tidings"]["timezone"].as_str().and_then(|s| s.parse().ok()).unwrap_or(Tz::UTC);
    let t = DateTime::parse_from_rfc3339(raw).map_err(|e| fail(format!("date: `{raw}`: {e}")))?;
    write(r, out, &t.with_timezone(&tz).format(format).to_string())
}

fn money(
    h: &Helper<'_>,
    r: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let amount = match h.param(0).map(|p| p.value()) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| missing("money", h, 0, "an amount"))?;
    let currency = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .ok_or_else(|| missing("money", h, 1, "a three-letter currency code"))?;
    write(r, out, &format_money(amount, currency))
}

pub fn format_money(amount: f64, currency: &str) -> String {
    let (symbol, decimals) = match currency.to_ascii_uppercase().as_str() {
        "EUR" => ("€", 2),
        "USD" => ("$", 2),
        "GBP" => ("£", 2),
        "JPY" => ("¥", 0),
        _ => return format!("{amount:.2} {currency}"),
    };
    let sign = if amount < 0.0 { "-" } else { "" };
    format!("{sign}{symbol}{:.*}", decimals, amount.abs())
}

fn plural(
    h: &Helper<'_>,
    r: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let count = h.param(0).and_then(|p| p.value().as_i64()).ok_or_else(|| missing("plural", h, 0, "a whole number"))?;
    let one = h.param(1).and_then(|p| p.value().as_str()).ok_or_else(|| fail("plural: needs the singular".into()))?;
    let many = h.param(2).and_then(|p| p.value().as_str()).map(str::to_string).unwrap_or_else(|| format!("{one}s"));
    write(r, out, &format!("{count} {}", if count == 1 { one } else { &many }))
}

#[cfg(test)]
mod tests {
    use super::format_money;

    fn html(template: &str, data: serde_json::Value) -> Result<String, handlebars::RenderError> {
        let mut hb = handlebars::Handlebars::new();
        super::register(&mut hb);
        hb.render_template(template, &data)
    }

    #[test]
    fn helpers_never_turn_data_into_markup() {
        let bad = html(
            "{{money total currency}}",
            serde_json::json!({"total": 89.9, "currency": "<script>alert(1)</script>"}),
        );
        let e = bad.unwrap_err().to_string();
        assert!(e.contains("`currency` is missing or not a three-letter currency code"), "{e}");
        assert_eq!(html("{{money 3.5 \"CHF\"}}", serde_json::json!({})).unwrap(), "3.50 CHF");
        let words = html("{{plural n word}}", serde_json::json!({"n": 2, "word": "<b>box</b>"})).unwrap();
        assert_eq!(words, "2 &lt;b&gt;box&lt;/b&gt;s");
    }

    proptest::proptest! {
        #[test]
        fn html_is_escaped_as_handlebars_escapes_it(s in ".*") {
            proptest::prop_assert_eq!(super::escape_html(&s), handlebars::html_escape(&s));
        }
    }

    #[test]
    fn money_formats() {
        assert_eq!(format_money(49.9, "EUR"), "€49.90");
        assert_eq!(format_money(1200.0, "JPY"), "¥1200");
        assert_eq!(format_money(3.5, "CHF"), "3.50 CHF");
        assert_eq!(format_money(-2.0, "usd"), "-$2.00");
    }
}
