//! Helpers for template authors:
//!
//! - `{{date placed_at}}` / `{{date placed_at "%A %-d %B, %H:%M"}}`: an RFC 3339
//!   time shown in the user's time zone, with month and day names in the
//!   user's language (`26 November 2026`, `26 novembre 2026`).
//! - `{{money total currency}}`: `49.90` and `EUR` become `€49.90` in
//!   English and `49,90 €` in French (see [`super::locale`]).
//! - `{{number count}}` / `{{number distance 1}}`: grouped and pointed as
//!   the user's locale writes numbers (`1,234.5`, `1 234,5`).
//! - `{{plural count "item" "items"}}`: `1 item`, `3 items`, by the plural
//!   rules of the user's language (CLDR, through `intl_pluralrules`): in
//!   French `0 article` is singular too. The two forms are CLDR's `one` and
//!   everything else.
//! - `{{default nickname "there"}}`: the value, or the fallback when it is
//!   missing, null or empty.
//! - `{{build_url "https://shop.example/orders" order_id utm_source="email"}}`:
//!   a base URL with path segments and query parameters added, each
//!   percent-encoded (`…/orders/o%2F1?utm_source=email`).
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
    hb.register_helper("default", Box::new(default));
    hb.register_helper("build_url", Box::new(build_url));
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

/// A value as text: a string as it is, anything else as JSON writes it.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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
    ctx: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let count = h.param(0).and_then(|p| p.value().as_i64()).ok_or_else(|| missing("plural", h, 0, "a whole number"))?;
    let one = h.param(1).and_then(|p| p.value().as_str()).ok_or_else(|| fail("plural: needs the singular".into()))?;
    let many = h.param(2).and_then(|p| p.value().as_str()).map(str::to_string).unwrap_or_else(|| format!("{one}s"));
    let language = ctx.data()["tidings"]["locale"].as_str().unwrap_or("en").split(['-', '_']).next().unwrap_or("en");
    let singular = match language
        .parse::<unic_langid::LanguageIdentifier>()
        .ok()
        .and_then(|l| intl_pluralrules::PluralRules::create(l, intl_pluralrules::PluralRuleType::CARDINAL).ok())
    {
        Some(rules) => rules.select(count) == Ok(intl_pluralrules::PluralCategory::ONE),
        None => count == 1,
    };
    write(r, out, &format!("{count} {}", if singular { one } else { &many }))
}

fn default(
    h: &Helper<'_>,
    r: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let value = h.param(0).map(|p| p.value()).filter(|v| match v {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        _ => true,
    });
    match value.or_else(|| h.param(1).map(|p| p.value())) {
        Some(Value::Null) | None => Err(fail("default: needs a fallback".into())),
        Some(v) => write(r, out, &text(v)),
    }
}

fn build_url(
    h: &Helper<'_>,
    r: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let base = h.param(0).and_then(|p| p.value().as_str()).ok_or_else(|| missing("build_url", h, 0, "a base URL"))?;
    let mut url = url::Url::parse(base).map_err(|e| fail(format!("build_url: `{base}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail(format!("build_url: `{base}` is not http or https")));
    }
    {
        let mut segments = url.path_segments_mut().map_err(|_| fail(format!("build_url: `{base}` takes no path")))?;
        segments.pop_if_empty();
        for p in h.params().iter().skip(1) {
            segments.push(&text(p.value()));
        }
    }
    if !h.hash().is_empty() {
        let mut pairs: Vec<(&&str, &handlebars::PathAndJson<'_>)> = h.hash().iter().collect();
        pairs.sort_by_key(|(k, _)| **k);
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs {
            query.append_pair(k, &text(v.value()));
        }
    }
    write(r, out, url.as_str())
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
    fn plurals_follow_the_languages_rules_defaults_fill_in_and_urls_are_escaped() {
        let data = |locale: &str| serde_json::json!({"n0": 0, "n1": 1, "n2": 2, "id": "o/1 b", "nick": "", "tidings": {"locale": locale}});
        let plural =
            "{{plural n0 \"item\" \"items\"}}, {{plural n1 \"item\" \"items\"}}, {{plural n2 \"item\" \"items\"}}";
        assert_eq!(html(plural, data("en")).unwrap(), "0 items, 1 item, 2 items");
        assert_eq!(html(plural, data("fr-CA")).unwrap(), "0 item, 1 item, 2 items");
        assert_eq!(html("Hi {{default nick \"there\"}}, {{default id \"-\"}}", data("en")).unwrap(), "Hi there, o/1 b");
        let link = "{{build_url \"https://shop.example/orders/\" id utm_source=\"e mail\" a=\"<x>\"}}";
        assert_eq!(
            html(link, data("en")).unwrap(),
            "https://shop.example/orders/o%2F1%20b?a&#x3D;%3Cx%3E&amp;utm_source&#x3D;e+mail"
        );
        assert!(html("{{build_url \"javascript:alert(1)\"}}", data("en"))
            .unwrap_err()
            .to_string()
            .contains("not http or https"));
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
