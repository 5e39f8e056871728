//! Links in rendered HTML: every URL attribute (`href`, `src`, …) that
//! names a scheme must name `http` or `https`. Anything else (`javascript:`,
//! `data:`, `vbscript:`, `mailto:` from event data) is replaced by `#`.
//!
//! Checked on the rendered output, so it holds however the value was put
//! together (a variable, a helper, a partial, several pieces) and whoever
//! wrote it. Data cannot open or close a tag or an attribute (the
//! registry escapes `<`, `>`, quotes and `=`), so the tags are the
//! template author's and a small scanner reads them reliably; an HTML
//! sanitiser would also rewrite the author's markup, which is not wanted.

/// Attributes whose value a mail client treats as a URL.
const URL_ATTRIBUTES: [&str; 8] = ["href", "src", "action", "formaction", "background", "poster", "cite", "xlink:href"];

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
        // Attributes, up to the end of the tag.
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
            if URL_ATTRIBUTES.iter().any(|a| a.eq_ignore_ascii_case(attr)) && !is_safe(&html[start..end]) {
                found.push((start, end));
            }
            i = next;
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
            i = find_ignore_case(b, i, close).unwrap_or(b.len());
        }
    }
    found
}

/// Whether a URL attribute value, as written in HTML, is relative or an
/// `http`/`https` URL. Character references are decoded and the characters
/// a browser drops (tabs, newlines, leading controls and spaces) removed
/// first, so `java&#x09;script:` is seen as what it is.
pub fn is_safe(value: &str) -> bool {
    let decoded = decode_references(value);
    let url: String = decoded
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .take(32)
        .collect();
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

/// `value` with numeric character references and the named ones that can
/// spell a scheme (`&colon;`, `&Tab;`, `&NewLine;`, `&amp;`) decoded.
fn decode_references(value: &str) -> String {
    if !value.contains('&') {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let named = [("colon;", ':'), ("tab;", '\t'), ("newline;", '\n'), ("amp;", '&')];
        if let Some((len, c)) = named
            .iter()
            .find_map(|(n, c)| rest.get(..n.len()).filter(|r| r.eq_ignore_ascii_case(n)).map(|_| (n.len(), *c)))
        {
            out.push(c);
            rest = &rest[len..];
        } else if let Some(num) = rest.strip_prefix('#') {
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
        } else {
            out.push('&');
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
    fn broken_markup_does_not_panic() {
        for html in ["<", "<a", "<a href", "<a href=", "<a href='java", "<a href=\"x\" /", "<!--", "<script>", "<a =x>"]
        {
            let _ = neutralise(html.to_string());
        }
    }
}
