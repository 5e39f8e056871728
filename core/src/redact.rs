//! Keeping secrets and personal data out of logs, status records, dead-letter
//! headers and command output: addresses, numbers, tokens and URLs are
//! masked, credentials in URLs replaced, before any text leaves the process.
//!
//! Masks keep enough to tell which one it was to someone who already knows
//! it (`a***@example.com`, `+3361****678`), never enough to use it.

/// `alice@example.com` → `a***@example.com`.
pub fn email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => token(address),
    }
}

/// `+33612345678` → `+3361****678`: the country code and the operator
/// prefix stay, the subscriber number goes.
pub fn phone(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() < 9 {
        return "*".repeat(chars.len().max(4));
    }
    let (head, tail) = (5, 3);
    let hidden = chars.len() - head - tail;
    format!(
        "{}{}{}",
        chars[..head].iter().collect::<String>(),
        "*".repeat(hidden),
        chars[chars.len() - tail..].iter().collect::<String>()
    )
}

/// A push token or other opaque secret: its first four characters.
pub fn token(value: &str) -> String {
    let head: String = value.chars().take(4).collect();
    format!("{head}***")
}

/// `https://user:pw@hooks.example.com/t/abc?k=v` → `https://hooks.example.com/***`:
/// where it goes, without what identifies or authorises the call.
pub fn url(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else { return token(value) };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let more = if rest.len() > authority.len() { "/***" } else { "" };
    format!("{scheme}://{host}{more}")
}

/// `redis://:S3cret@10.0.0.5:6379/0` → `redis://:***@10.0.0.5:6379/0`: a
/// URL with its password replaced, and the rest as it was (what an
/// operator needs to see which server it is). A list of node URLs
/// (a Redis Cluster's) has every node's replaced. A password is whatever
/// comes before a URL's last `@`, so one written with `/`, `?`, `#`, `@` or
/// `,` unencoded goes too.
pub fn credentials(value: &str) -> String {
    let mut nodes: Vec<String> = Vec::new();
    for part in value.split(',') {
        // A comma not followed by another URL belongs to a password.
        match nodes.last_mut() {
            Some(last) if !starts_with_scheme(part) => {
                last.push(',');
                last.push_str(part);
            }
            _ => nodes.push(part.to_string()),
        }
    }
    nodes.iter().map(|node| node_credentials(node)).collect::<Vec<_>>().join(",")
}

fn starts_with_scheme(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

fn node_credentials(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else { return value.to_string() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return query_credentials(value) };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    format!("{scheme}://{user}:***@{host}")
}

/// `…?db=2&pass=S3cret` → `…?db=2&pass=***`: a password given as a query
/// parameter (`pass`, `password`), as a Unix socket's URL has it.
fn query_credentials(value: &str) -> String {
    let Some((base, query)) = value.split_once('?') else { return value.to_string() };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if matches!(name.to_ascii_lowercase().as_str(), "pass" | "password") => {
                format!("{name}=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// `text` with each control character (an escape sequence's ESC, a bell,
/// a line break) written as its escape (`\u{1b}`): what came from outside
/// the process, made safe to store and print on a terminal or in a line
/// of a log.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// `text` with every email address and phone number in it masked: for the
/// free text of a provider's answer, which often quotes the recipient.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.find(|c: char| !is_separator(c)).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(is_separator).unwrap_or(rest.len());
        let word = &rest[..end];
        // Trailing punctuation belongs to the sentence, not the word.
        let core = word.trim_end_matches(['.', ',', ';', ':', '!', '?', ')']);
        let masked = if is_email(core) {
            Some(email(core))
        } else if is_phone(core) {
            Some(phone(core))
        } else {
            None
        };
        match masked {
            Some(m) => {
                out.push_str(&m);
                out.push_str(&word[core.len()..]);
            }
            None => out.push_str(word),
        }
        rest = &rest[end..];
    }
    out
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '`' | '\'' | '"' | '(' | '<' | '>' | '[' | ']' | '=')
}

fn is_email(word: &str) -> bool {
    word.rsplit_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
}

/// `+` and at least eight digits, or eleven digits or more alone (long enough
/// not to be a code, a count or a status).
fn is_phone(word: &str) -> bool {
    let digits = word.chars().filter(char::is_ascii_digit).count();
    let plain = word.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    plain && ((word.starts_with('+') && digits >= 8) || (digits >= 11 && !word.contains(['-', '.'])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_which_but_not_what() {
        assert_eq!(email("alice@example.com"), "a***@example.com");
        assert_eq!(phone("+33612345678"), "+3361****678");
        assert_eq!(phone("+1555"), "*****");
        assert_eq!(token("f0e1d2c3b4a5"), "f0e1***");
        assert_eq!(url("https://u:pw@hooks.example.com:8443/t/abc?k=v"), "https://hooks.example.com:8443/***");
        assert_eq!(url("https://hooks.example.com"), "https://hooks.example.com");
        assert_eq!(credentials("redis://:S3cretRedisPw@127.0.0.1:1/0"), "redis://:***@127.0.0.1:1/0");
        assert_eq!(credentials("redis://app:pw@h:6379"), "redis://app:***@h:6379");
        assert_eq!(credentials("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
    }

    #[test]
    fn credentials_go_from_every_node_and_whatever_the_password_holds() {
        assert_eq!(
            credentials("redis://:FirstPw@10.0.0.1:7000,redis://:SecondNodePw@10.0.0.2:7000/0"),
            "redis://:***@10.0.0.1:7000,redis://:***@10.0.0.2:7000/0"
        );
        for raw in ["p/w", "p?w", "p#w", "p@w", "p,w", "a/b?c#d@e,f"] {
            let masked = credentials(&format!("rediss://app:{raw}@cache.example:6380/2"));
            assert_eq!(masked, "rediss://app:***@cache.example:6380/2", "{raw}");
        }
        assert_eq!(credentials("redis://h1:7000,redis://h2:7000"), "redis://h1:7000,redis://h2:7000");
        // A password in the query (a Unix socket's URL has no user part).
        assert_eq!(
            credentials("redis+unix:///run/redis.sock?db=2&pass=S3cret&x=1"),
            "redis+unix:///run/redis.sock?db=2&pass=***&x=1"
        );
        assert_eq!(credentials("rediss://h:6380/?password=S3cret"), "rediss://h:6380/?password=***");
        assert_eq!(credentials("not a url"), "not a url");
    }

    #[test]
    fn control_characters_are_written_as_escapes() {
        assert_eq!(printable("550 no such user"), "550 no such user");
        assert_eq!(printable("a\u{1b}[2J\u{1b}]0;pwned\u{7}b\nc"), "a\\u{1b}[2J\\u{1b}]0;pwned\\u{7}b\\u{a}c");
        assert!(!printable("\u{9b}31m\r\t").chars().any(char::is_control));
    }

    #[test]
    fn scrub_masks_what_a_provider_quotes() {
        let said = "The 'To' number +15551234567 is not valid. Mail to bob.smith@example.org, (+33612345678) refused";
        assert_eq!(
            scrub(said),
            "The 'To' number +1555****567 is not valid. Mail to b***@example.org, (+3361****678) refused"
        );
        for kept in ["HTTP 503 code 21211", "at 2026-11-26T10:00:00Z", "message-id 0A0000001234ABCD", "v1.2.3"] {
            assert_eq!(scrub(kept), kept);
        }
    }
}
