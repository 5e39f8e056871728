//! Helpers for template authors:
//!
//! - `{{date placed_at}}` / `{{date placed_at "%A %-d %B, %H:%M"}}`: an RFC 3339
//!   time shown in the user's time zone, with month and day names in the
//!   user's language (`26 November 2026`, `26 novembre 2026`).
//! - `{{money total currency}}`: `49.90` and `EUR` become `€49.90` in
//!   English and `49,90 €` in French (see [`super::locale`]).
//! - `{{number count}}` / `{{number distance 1}}`: grouped and pointed as
//!   the user's locale writes numbers (`1,234.5`, `1 234,5`).
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
    hb.register_helper("number", Box::new(number));
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
    write(r, out, &t.with_timezone(&tz).format_localized(format, conventions(ctx)).to_string())
}

/// The user's formatting conventions, from `tidings.locale`.
fn conventions(ctx: &Context) -> chrono::Locale {
    super::locale::conventions(ctx.data()["tidings"]["locale"].as_str().unwrap_or("en"))
}

fn number(
    h: &Helper<'_>,
    r: &Handlebars<'_>,
    ctx: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let value = amount(h, 0).ok_or_else(|| missing("number", h, 0, "a number"))?;
    let decimals = match h.param(1).map(|p| p.value()) {
        None => {
            if value.fract() == 0.0 {
                0
            } else {
                2
            }
        }
        Some(v) => v.as_u64().filter(|d| *d <= 10).ok_or_else(|| fail("number: decimals are 0 to 10".into()))? as usize,
    };
    write(r, out, &super::locale::number(value, decimals, conventions(ctx), false))
}

/// Parameter `i` as a number, written as one or as a string (`"49.90"`).
fn amount(h: &Helper<'_>, i: usize) -> Option<f64> {
    match h.param(i).map(|p| p.value()) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

fn money(
    h: &Helper<'_>,
    r: &Handlebars<'_>,
    ctx: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let amount = amount(h, 0).ok_or_else(|| missing("money", h, 0, "an amount"))?;
    let currency = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .ok_or_else(|| missing("money", h, 1, "a three-letter currency code"))?;
    write(r, out, &super::locale::money(amount, currency, conventions(ctx)))
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
        assert_eq!(html("{{money 3.5 \"QQQ\"}}", serde_json::json!({})).unwrap(), "3.50 QQQ");
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
    fn helpers_format_for_the_users_locale_and_zone() {
        let data = |locale: &str| {
            serde_json::json!({"total": "29.95", "n": 1234.5, "at": "2026-11-26T23:30:00Z",
                "tidings": {"locale": locale, "timezone": "Europe/Paris"}})
        };
        let all = "{{money total \"EUR\"}} | {{number n 1}} | {{date at}} | {{date at \"%A %H:%M\"}}";
        assert_eq!(html(all, data("en")).unwrap(), "€29.95 | 1,234.5 | 27 November 2026 | Friday 00:30");
        assert_eq!(html(all, data("fr-CA")).unwrap(), "29,95 € | 1 234,5 | 27 novembre 2026 | vendredi 00:30");
    }
}
