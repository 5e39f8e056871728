//! Links in rendered HTML: every attribute or style that a mail client or a
//! browser treats as a URL must name `http` or `https` if it names a scheme
//! at all. Anything else (`javascript:`, `data:`, `vbscript:`, `mailto:`
//! from event data) is replaced by `#`.
//!
//! Checked on the rendered output, so it holds however the value was put
//! together (a variable, a helper, a partial, several pieces) and whoever
//! wrote it. Data cannot open or close a tag or an attribute (the
//! registry escapes `<`, `>`, quotes and `=`), so the tags are the
//! template author's and a small scanner reads them reliably; an HTML
//! sanitiser would also rewrite the author's markup, which is not wanted.
//!
//! What is read as a URL:
//! - the URL attributes of HTML and SVG (`href`, `src`, `action`, `data`,
//!   `xlink:href`, … [`URL_ATTRIBUTES`]), and `<param value>`;
//! - lists of URLs: `srcset`, `imagesrcset`, `ping`, `archive` (every
//!   token; a `data:` URL's comma splits it, and its first half is refused);
//! - the `content` of `<meta http-equiv="refresh">` (`5; url=…`);
//! - the values SVG animation sets on a link (`to`, `from`, `by`, `values`
//!   of `<animate…>` and `<set>` whose `attributeName` is `href`,
//!   `xlink:href` or `src`, or not said), each of `values`' items;
//! - CSS in `style` attributes, SVG presentation attributes (`fill`,
//!   `filter`, `mask`, …), the values SVG animation sets on those, and
//!   `<style>` elements, read with the tokenizer browsers use: each
//!   `url(…)`, each string of a function that takes an image or URL
//!   (`image-set(…)`, …) and of an `@import`; `expression(…)` is refused
//!   outright. An unsafe value replaces the whole attribute value or
//!   element content;
//! - `<iframe srcdoc>` is a whole document whose markup data can write
//!   (`&lt;` decodes to `<` there): any non-empty `srcdoc` is replaced.
//!
//! Event handler attributes (`onclick`, …) are the author's script and are
//! not read; `templates check` refuses triple-stash output (`{{{x}}}`,
//! `{{&x}}`), the one way data reaches markup unescaped.

/// Attributes whose value a mail client or browser treats as one URL.
const URL_ATTRIBUTES: [&str; 17] = [
    "href",
    "src",
    "action",
    "formaction",
    "background",
    "poster",
    "cite",
    "xlink:href",
    "data",
    "codebase",
    "classid",
    "longdesc",
    "lowsrc",
    "dynsrc",
    "usemap",
    "manifest",
    "icon",
];

/// Attributes that hold several URLs (separated by spaces or commas).
const URL_LIST_ATTRIBUTES: [&str; 4] = ["srcset", "imagesrcset", "ping", "archive"];

/// SVG presentation attributes whose value is CSS that may hold `url(…)`.
const CSS_ATTRIBUTES: [&str; 10] =
    ["fill", "stroke", "filter", "mask", "clip-path", "marker", "marker-start", "marker-mid", "marker-end", "cursor"];

/// How an attribute's value is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Url,
    UrlList,
    Refresh,
    Animated,
    Css,
    Document,
}

/// What decides how a tag's attributes are read.
struct Context<'a> {
    /// The tag's name without a namespace prefix (`svg:animate` is `animate`).
    tag: &'a str,
    /// A `<meta http-equiv="refresh">`: its `content` is a URL.
    refresh: bool,
    /// An SVG animation of a link (`attributeName` `href`, `xlink:href`, or none said).
    animates_link: bool,
    /// An SVG animation of a style or presentation attribute: its values are CSS.
    animates_css: bool,
}

impl<'a> Context<'a> {
    fn of(tag: &'a str, attrs: &[(&str, usize, usize)], html: &str) -> Self {
        let tag = tag.rsplit(':').next().unwrap_or(tag);
        let value = |name: &str| {
            attrs
                .iter()
                .find(|(a, _, _)| a.eq_ignore_ascii_case(name))
                .map(|(_, s, e)| decode_references(&html[*s..*e]))
        };
        let refresh = tag.eq_ignore_ascii_case("meta")
            && value("http-equiv").is_some_and(|v| v.trim().eq_ignore_ascii_case("refresh"));
        let animated = value("attributename");
        let animates_link = animated.as_deref().is_none_or(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("href") || v.eq_ignore_ascii_case("xlink:href") || v.eq_ignore_ascii_case("src")
        });
        let animates_css = animated.as_deref().is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("style") || CSS_ATTRIBUTES.iter().any(|a| v.eq_ignore_ascii_case(a))
        });
        Context { tag, refresh, animates_link, animates_css }
    }

    fn kind(&self, attr: &str) -> Option<Kind> {
        let is = |name: &str| attr.eq_ignore_ascii_case(name);
        let tag_is = |name: &str| self.tag.eq_ignore_ascii_case(name);
        let animation = self.tag.get(..7).is_some_and(|t| t.eq_ignore_ascii_case("animate")) || tag_is("set");
        if URL_ATTRIBUTES.iter().any(|a| is(a)) || (tag_is("param") && is("value")) {
            Some(Kind::Url)
        } else if URL_LIST_ATTRIBUTES.iter().any(|a| is(a)) {
            Some(Kind::UrlList)
        } else if self.refresh && is("content") {
            Some(Kind::Refresh)
        } else if animation && ["to", "from", "by", "values"].iter().any(|a| is(a)) {
            if self.animates_link {
                Some(Kind::Animated)
            } else if self.animates_css {
                Some(Kind::Css)
            } else {
                None
            }
        } else if is("style") || CSS_ATTRIBUTES.iter().any(|a| is(a)) {
            Some(Kind::Css)
        } else if is("srcdoc") {
            Some(Kind::Document)
        } else {
            None
        }
    }
}

/// Whether an attribute value (as written in HTML) read as `kind` is safe.
fn value_is_safe(kind: Kind, value: &str) -> bool {
    match kind {
        Kind::Url => is_safe(value),
        Kind::UrlList => decode_references(value).split(|c: char| c.is_whitespace() || c == ',').all(url_is_safe),
        Kind::Refresh => refresh_url(&decode_references(value)).is_none_or(url_is_safe),
        Kind::Animated => decode_references(value).split(';').all(|v| url_is_safe(v.trim())),
        Kind::Css => css_is_safe(&decode_references(value)),
        Kind::Document => value.trim().is_empty(),
    }
}

/// `html` with every unsafe URL attribute value replaced by `#`, and the
/// values replaced (cut to 60 characters), in order.
pub fn neutralise(html: String) -> (String, Vec<String>) {
    let unsafe_values = find_unsafe(&html);
    if unsafe_values.is_empty() {
        return (html, Vec::new());
    }
    let mut out = String::with_capacity(html.len());
    let mut last = 0;
    let mut replaced = Vec::with_capacity(unsafe_values.len());
    for (start, end) in unsafe_values {
        out.push_str(&html[last..start]);
        out.push('#');
        replaced.push(html[start..end].chars().take(60).collect());
        last = end;
    }
    out.push_str(&html[last..]);
    (out, replaced)
}

/// The byte ranges of the URL attribute values in `html` that are not safe.
fn find_unsafe(html: &str) -> Vec<(usize, usize)> {
    let b = html.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(lt) = b[i..].iter().position(|&c| c == b'<') {
        i += lt + 1;
        if b[i..].starts_with(b"!--") {
            i = find(b, i, b"-->").map_or(b.len(), |at| at + 3);
            continue;
        }
        if !b.get(i).is_some_and(u8::is_ascii_alphabetic) {
            continue;
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' && b[i] != b'/' {
            i += 1;
        }
        let tag = &html[name_start..i];
        // Attributes, up to the end of the tag: (name, value start, value end).
        let mut attrs: Vec<(&str, usize, usize)> = Vec::new();
        loop {
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            if i >= b.len() || b[i] == b'>' {
                break;
            }
            let attr_start = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
                i += 1;
            }
            let attr = &html[attr_start..i];
            if attr_start == i {
                i += 1; // a stray `/` or `=`: step over it
                continue;
            }
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if b.get(j) != Some(&b'=') {
                continue; // an attribute without a value
            }
            j += 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let (start, end, next) = match b.get(j) {
                Some(&q @ (b'"' | b'\'')) => {
                    let end = b[j + 1..].iter().position(|&c| c == q).map_or(b.len(), |at| j + 1 + at);
                    (j + 1, end, (end + 1).min(b.len()))
                }
                _ => {
                    let end =
                        b[j..].iter().position(|&c| c.is_ascii_whitespace() || c == b'>').map_or(b.len(), |at| j + at);
                    (j, end, end)
                }
            };
            attrs.push((attr, start, end));
            i = next;
        }
        let context = Context::of(tag, &attrs, html);
        for (attr, start, end) in attrs {
            if context.kind(attr).is_some_and(|k| !value_is_safe(k, &html[start..end])) {
                found.push((start, end));
            }
        }
        // The content of a script or style element is not markup.
        let close: Option<&[u8]> = if tag.eq_ignore_ascii_case("script") {
            Some(b"</script")
        } else if tag.eq_ignore_ascii_case("style") {
            Some(b"</style")
        } else {
            None
        };
        if let Some(close) = close {
            let start = if b.get(i) == Some(&b'>') { i + 1 } else { i };
            let end = find_ignore_case(b, start, close).unwrap_or(b.len());
            // Raw text in HTML; in SVG, references are decoded there: both readings must be safe.
            let sheet = &html[start..end];
            if tag.eq_ignore_ascii_case("style") && !(css_is_safe(sheet) && css_is_safe(&decode_references(sheet))) {
                found.push((start, end));
            }
            i = end;
        }
    }
    found
}

/// Whether a URL attribute value, as written in HTML, is relative or an
/// `http`/`https` URL. Character references are decoded first, so
/// `java&#x09;script:` is seen as what it is.
pub fn is_safe(value: &str) -> bool {
    url_is_safe(&decode_references(value))
}

/// Whether a URL (references decoded) is relative or `http`/`https`, once
/// what a browser drops is dropped: leading controls and spaces, tabs and
/// newlines anywhere, and (as CSS and refresh values are read) a quote.
fn url_is_safe(decoded: &str) -> bool {
    let trimmed = decoded.trim_start_matches(|c: char| c <= ' ');
    let trimmed = trimmed.strip_prefix(['"', '\'']).unwrap_or(trimmed).trim_start_matches(|c: char| c <= ' ');
    let url: String = trimmed.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
    let scheme_len = url.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')));
    match scheme_len {
        Some(n) if n > 0 && url[n..].starts_with(':') && url.starts_with(|c: char| c.is_ascii_alphabetic()) => {
            let scheme = url[..n].to_ascii_lowercase();
            scheme == "http" || scheme == "https"
        }
        // No scheme: a path, a query or a fragment.
        _ => true,
    }
}

/// The URL of a `<meta http-equiv=refresh>` content (`5; url=…`, `0;…`):
/// `None` when it does not start with a time, as browsers ignore it then.
/// Both readings of what follows the separator (with and without a
/// leading `url=`) must be safe, so the one checked is the worse.
fn refresh_url(content: &str) -> Option<&str> {
    let s = content.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let rest = s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    if rest.len() == s.len() {
        return None;
    }
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ';' || c == ',');
    let named = rest
        .get(..3)
        .filter(|u| u.eq_ignore_ascii_case("url"))
        .map(|_| rest[3..].trim_start_matches(|c: char| c.is_ascii_whitespace()))
        .and_then(|r| r.strip_prefix('='));
    match named {
        Some(url) if !url_is_safe(url) => Some(url),
        _ => Some(rest),
    }
}

/// Whether CSS loads only relative or `http`/`https` URLs and runs no
/// `expression(…)`: every `url(…)`, every string in a function that takes
/// an image or a URL (`url("…")`, `image-set(…)`, `src(…)`, …) and the
/// string of an `@import`, read by the tokenizer browsers use (Servo's
/// `cssparser`: escapes, comments, strings and line continuations as a
/// browser reads them). What does not read as CSS is not safe.
fn css_is_safe(css: &str) -> bool {
    css_tokens_safe(&mut cssparser::Parser::new(css), false)
}

fn css_tokens_safe(parser: &mut cssparser::Parser<'_>, strings_are_urls: bool) -> bool {
    use cssparser::Token;
    let mut import = false;
    loop {
        let token = match parser.next_including_whitespace_and_comments() {
            Ok(token) => token.clone(),
            Err(_) => return true, // the end of this block
        };
        let nested = match &token {
            Token::UnquotedUrl(url) if !url_is_safe(url) => return false,
            // A browser drops it; judged all the same, as an older one may not.
            Token::BadUrl(url) if !url_is_safe(url) => return false,
            Token::QuotedString(s) if (strings_are_urls || import) && !url_is_safe(s) => return false,
            Token::AtKeyword(k) => {
                import = k.eq_ignore_ascii_case("import");
                None
            }
            Token::Semicolon => {
                import = false;
                None
            }
            Token::Function(name) => {
                let name = name.to_ascii_lowercase();
                // A substitution inside a URL's place could bring a string from elsewhere.
                let substitutes = matches!(name.as_str(), "var" | "env" | "attr" | "if");
                if name == "expression" || (strings_are_urls && substitutes) {
                    return false;
                }
                let takes_urls =
                    name == "url" || name == "src" || name.contains("image") || name.contains("cross-fade");
                Some(strings_are_urls || takes_urls)
            }
            Token::ParenthesisBlock | Token::SquareBracketBlock | Token::CurlyBracketBlock => Some(strings_are_urls),
            _ => None,
        };
        if let Some(urls) = nested {
            let safe = parser.parse_nested_block(|p| Ok::<_, cssparser::ParseError<()>>(css_tokens_safe(p, urls)));
            if !safe.unwrap_or(false) {
                return false;
            }
        }
    }
}

/// `value` with its character references decoded, numeric and named (the
/// whole HTML table: `&quot;`, `&colon;`, `&lpar;`, …, with or without
/// their `;`), as a browser decodes an attribute's value.
fn decode_references(value: &str) -> String {
    if !value.contains('&') {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(num) = rest.strip_prefix('#') {
            let (radix, digits) = match num.strip_prefix(['x', 'X']) {
                Some(hex) => (16, hex),
                None => (10, num),
            };
            let len = digits.find(|c: char| !c.is_digit(radix)).unwrap_or(digits.len());
            let code = u32::from_str_radix(&digits[..len], radix).ok().and_then(char::from_u32);
            match code {
                Some(c) => {
                    out.push(c);
                    let used = num.len() - digits.len() + len;
                    rest = &num[used..];
                    rest = rest.strip_prefix(';').unwrap_or(rest);
                }
                None => out.push('&'),
            }
            continue;
        }
        // The longest name the table has (names are ASCII, at most 32 bytes with the `;`).
        // A name without its `;` before a letter, a digit or `=` is text in an attribute.
        let ends_a_reference = |n: usize| {
            rest[..n].ends_with(';') || !rest[n..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '=')
        };
        let longest = (1..=rest.len().min(32)).rev().filter(|n| rest.is_char_boundary(*n)).find_map(|n| {
            web_atoms::NAMED_ENTITIES
                .get(&rest[..n])
                .filter(|(first, _)| *first != 0 && ends_a_reference(n))
                .map(|chars| (n, *chars))
        });
        match longest {
            Some((n, (first, second))) => {
                out.extend(char::from_u32(first));
                if second != 0 {
                    out.extend(char::from_u32(second));
                }
                rest = &rest[n..];
            }
            None => out.push('&'),
        }
    }
    out.push_str(rest);
    out
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b[from..].windows(needle.len()).position(|w| w == needle).map(|at| from + at)
}

fn find_ignore_case(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b[from..].windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle)).map(|at| from + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_schemes_pass() {
        for safe in ["https://shop.example/o/1", "HTTP://x", "/relative", "?q=1", "#top", "page.html", ""] {
            assert!(is_safe(safe), "{safe}");
        }
        let schemes =
            ["javascript:alert(1)", " JavaScript:x", "java\tscript:x", "java&#x09;script:x", "java&Tab;script:x"];
        let others = ["&#106;avascript:x", "javascript&colon;x", "data:text/html,x", "vbscript:x", "mailto:a@b.c"];
        for bad in schemes.iter().chain(&others) {
            assert!(!is_safe(bad), "{bad}");
        }
    }

    #[test]
    fn unsafe_url_attributes_become_a_hash_and_the_rest_is_untouched() {
        let html = r#"<!-- <a href="javascript:kept"> --><p class=x><a title="javascript:ok" href="javascript:alert(1)">a</a>
<IMG SRC=data:image/png;base64,xx alt=''><a href = 'https://ok.example/?a=1&amp;b=2'>b</a>
<script>var s = '<a href="javascript:in-script">';</script><a href="/r" hidden>c</a>"#;
        let (out, replaced) = neutralise(html.to_string());
        assert_eq!(replaced, ["javascript:alert(1)", "data:image/png;base64,xx"]);
        let expected = r##"<!-- <a href="javascript:kept"> --><p class=x><a title="javascript:ok" href="#">a</a>
<IMG SRC=# alt=''><a href = 'https://ok.example/?a=1&amp;b=2'>b</a>
<script>var s = '<a href="javascript:in-script">';</script><a href="/r" hidden>c</a>"##;
        assert_eq!(out, expected);
        let clean = "<p>no links</p>".to_string();
        assert_eq!(neutralise(clean.clone()), (clean, vec![]));
    }

    #[test]
    fn every_place_a_browser_reads_a_url_is_checked() {
        let long_scheme = format!("<a href=\"{}:x\">", "a".repeat(40));
        let cases = [
            r#"<object data="javascript:alert(1)"></object>"#,
            r#"<embed src="data:text/html,x">"#,
            r#"<img srcset="https://ok.example/a.png 1x, javascript:alert(1) 2x">"#,
            r#"<img srcset="data:image/svg+xml,&lt;svg onload=alert(1)&gt; 1x">"#,
            r#"<source srcset='/a.png 1x,vbscript:x 2x'>"#,
            r#"<a ping="https://ok.example javascript:x">"#,
            r#"<meta http-equiv="refresh" content="0;url=javascript:alert(1)">"#,
            r#"<meta http-equiv="refresh" content="0; URL = 'data:text/html,x'">"#,
            r#"<meta http-equiv="refresh" content="5, javascript:alert(1)">"#,
            r#"<p style="background:url(javascript:alert(1))">"#,
            r#"<p style="background:URL( 'java&#x09;script:x' )">"#,
            r#"<p style="background:u\72 l(javascript:x)">"#,
            r#"<p style="width:expression(alert(1))">"#,
            r#"<p style="background-image:image-set('data:image/png,x' 1x)">"#,
            r#"<svg><a><animate attributeName="href" to="javascript:alert(1)"/></a></svg>"#,
            r#"<svg><animate attributeName=href values="https://ok.example;javascript:x"/></svg>"#,
            r#"<svg:set attributeName="href" to="javascript:x"/>"#,
            r#"<iframe srcdoc="&lt;script&gt;alert(1)&lt;/script&gt;"></iframe>"#,
            r#"<object><param name="movie" value="javascript:x"></object>"#,
            r#"<p style="background:url(/*);} *{background:url(javascript:alert(1))} x{x:url(*/)">"#,
            r#"<p style="font-family:'/*'; background:url(data:text/html,x); x:'*/'">"#,
            r#"<p style="background-image:image-set(url(/a.png) 1x,'data:image/svg+xml,x' 2x)">"#,
            r#"<svg><rect fill="url(data:image/svg+xml,x)"/></svg>"#,
            // Data's own quotes, escaped, are still quotes to a browser.
            r#"<p style="background-image:url(&quot;data:image/png,x&quot;)">"#,
            r#"<meta http-equiv="refresh" content="0;url=&quot;javascript:alert(1)">"#,
            "<p style=\"background:url('data\t:image/png,x')\">",
            "<p style=\"background:url('data\\\x0c:x')\">",
            r#"<p style="background:image-set(')' 1x, 'data:image/png,x' 2x)">"#,
            r#"<p style="font-family:'/*';background:image-set(/**/'data:image/png,x' 1x)">"#,
            r#"<svg><set attributeName="cursor" to="url(data:image/png;base64,xx),auto"/></svg>"#,
            r#"<a href="java&Tab;script&colon;x&lpar;1&rpar;">"#,
            r#"<p style="background-image:image-set(var(--n,&quot;data:image/png;base64,AAAA&quot;) 1x)">"#,
            r#"<p style="--x:&quot;data:image/png,x&quot;;background-image:image-set(var(--x) 1x)">"#,
            r#"<svg><style>.a{background:url(&quot;data:image/png,x&quot;)}</style></svg>"#,
            r#"<meta http-equiv="refresh" content="0;url=&#x27; javascript:alert(1)">"#,
            r#"<p style="x:&quotA; background:url(data:image/png,x)">"#,
            r#"<applet codebase="javascript:x"></applet>"#,
            &long_scheme,
        ];
        for html in cases {
            let (out, replaced) = neutralise(html.to_string());
            assert_eq!(replaced.len(), 1, "{html} -> {out}");
            assert!(!out.to_ascii_lowercase().contains("javascript:"), "{html} -> {out}");
        }
        let style = "<style>.a{background:url(\"javascript:x\")}</style><p>b</p>";
        assert_eq!(neutralise(style.to_string()).0, "<style>#</style><p>b</p>");
        let style = "<style>@import 'data:text/css,x';</style>";
        assert_eq!(neutralise(style.to_string()).0, "<style>#</style>");
        let style = "<style>.h{background:url(/*);} *{background:url(javascript:alert(1))} x{x:url(*/)}</style>";
        assert_eq!(neutralise(style.to_string()).0, "<style>#</style>");
        let style = r#"<style>@import "/*"; @import/**/ "data:text/css,x";</style>"#;
        assert_eq!(neutralise(style.to_string()).0, "<style>#</style>");
    }

    #[test]
    fn safe_urls_lists_styles_and_refreshes_are_left_alone() {
        let html = r#"<img srcset="https://ok.example/a.png 1x, /b.png 2x" src="/a.png">
<meta http-equiv="refresh" content="30"><meta http-equiv="refresh" content="0; url=https://ok.example/">
<meta name="description" content="Orders: shipped today">
<p style="color:red;background:url('https://ok.example/bg.png') no-repeat">x</p>
<svg><animate attributeName="opacity" from="0" to="1" values="0;0.5;1"/></svg>
<iframe srcdoc=""></iframe><style>@import url(https://ok.example/a.css); p{font:12px/1.4 sans-serif}</style>
<meta itemprop="description" content="3 items: shipped"><svg><set attributeName="style" to="display:none"/>
<rect fill="url(#grad)" style="/* a: b */ color: red; font-family: &quot;Helvetica Neue&quot;"/></svg>
<meta name="viewport" content="width=device-width, initial-scale=1"><a href="/o?a=1&copy=2&amp;b">x</a>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8"><p style="content: 'note: x'">"#;
        let (out, replaced) = neutralise(html.to_string());
        assert!(replaced.is_empty(), "{replaced:?}");
        assert_eq!(out, html);
    }

    #[test]
    fn broken_markup_does_not_panic() {
        for html in [
            "<",
            "<a",
            "<a href",
            "<a href=",
            "<a href='java",
            "<a href=\"x\" /",
            "<!--",
            "<script>",
            "<a =x>",
            "<p style='url(",
            "<style>url(",
            "<style>\\",
            "<meta content='5",
            "<img srcset=",
        ] {
            let _ = neutralise(html.to_string());
        }
    }
}
