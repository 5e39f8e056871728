//! Partials and layouts in the reader's language. A template file in a
//! language (`email.html.fr.hbs`) uses that language's version of each
//! partial and layout it names, at any depth: `partials/footer.fr.hbs` if
//! there is one (for `fr-CA`: `footer.fr-CA.hbs`, else `footer.fr.hbs`),
//! else the plain one, whose own partials are chosen the same way. So a
//! French email never ends with an English footer just because the layout
//! that includes the footer has no French file of its own.
//!
//! Done once at load, by rewriting names: every partial `P` gets a version
//! `P.<lang>` for each language some file is written in, and the files of
//! a language name those versions.

use std::collections::{BTreeSet, HashMap, HashSet};

/// `(name, source, is_partial)` as loaded, rewritten and completed so that
/// each language's files name each partial in their language.
pub fn localized(
    sources: Vec<(String, String, bool)>,
    lang_of: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String, bool)> {
    let partials: HashMap<&str, &str> =
        sources.iter().filter(|(_, _, p)| *p).map(|(n, s, _)| (n.as_str(), s.as_str())).collect();
    // A partial `footer.fr` is the French version of `footer` when `footer` exists.
    fn variant<'a>(partials: &HashMap<&str, &str>, name: &'a str) -> Option<(&'a str, &'a str)> {
        let (base, lang) = name.rsplit_once('.')?;
        (partials.contains_key(base) && is_tag(lang)).then_some((base, lang))
    }
    let bases: HashSet<String> =
        partials.keys().filter(|n| variant(&partials, n).is_none()).map(|n| n.to_string()).collect();
    let mut langs: BTreeSet<String> =
        sources.iter().filter(|(_, _, p)| !p).filter_map(|(n, _, _)| lang_of(n)).collect();
    langs.extend(partials.keys().filter_map(|n| variant(&partials, n)).map(|(_, l)| l.to_string()));
    let mut out: Vec<(String, String, bool)> = Vec::with_capacity(sources.len() + bases.len() * langs.len());
    for base in &bases {
        out.push((base.clone(), partials[base.as_str()].to_string(), true));
        for lang in &langs {
            let language = lang.split('-').next().unwrap_or(lang);
            let source = [format!("{base}.{lang}"), format!("{base}.{language}")]
                .iter()
                .find_map(|n| partials.get(n.as_str()).copied())
                .unwrap_or(partials[base.as_str()]);
            out.push((format!("{base}.{lang}"), rewrite(source, lang, &bases), true));
        }
    }
    for (name, source, is_partial) in &sources {
        if *is_partial {
            continue;
        }
        let source = match lang_of(name) {
            Some(lang) => rewrite(source, &lang, &bases),
            None => source.clone(),
        };
        out.push((name.clone(), source, false));
    }
    out
}

/// A language tag as a file name carries it: `fr`, `fr-CA`, `pt-BR`.
fn is_tag(s: &str) -> bool {
    let mut parts = s.split('-');
    let lang = parts.next().unwrap_or_default();
    (2..=3).contains(&lang.len())
        && lang.bytes().all(|b| b.is_ascii_lowercase())
        && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// `source` with every partial of `bases` it names (`{{> p}}`, `{{#> p}}`,
/// `{{/p}}`, with or without `~`) named in `lang` instead.
pub fn rewrite(source: &str, lang: &str, bases: &HashSet<String>) -> String {
    let mut out = String::with_capacity(source.len() + 32);
    let mut from = 0;
    for (start, end) in references(source) {
        out.push_str(&source[from..end]);
        if bases.contains(&source[start..end]) {
            out.push('.');
            out.push_str(lang);
        }
        from = end;
    }
    out.push_str(&source[from..]);
    out
}

/// The partials `source` names (and the helpers its blocks close: `each`,
/// `if`; harmless where partials are looked up).
pub fn named(source: &str) -> Vec<&str> {
    references(source).into_iter().map(|(start, end)| &source[start..end]).collect()
}

/// Where each name after `{{>`, `{{#>` or `{{/` (with or without `~`) is, as byte ranges.
fn references(source: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = source[at..].find("{{") {
        at += open + 2;
        let rest = &source[at..];
        let tilde = usize::from(rest.starts_with('~'));
        let after = &rest[tilde..];
        let sigil = if after.starts_with("#>") {
            2
        } else if after.starts_with('>') || after.starts_with('/') {
            1
        } else {
            continue;
        };
        let name = &rest[tilde + sigil..];
        let start = at + tilde + sigil + (name.len() - name.trim_start().len());
        let len =
            source[start..].find(|c: char| c.is_whitespace() || c == '}' || c == '~').unwrap_or(source.len() - start);
        out.push((start, start + len));
        at = start + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_take_the_language_and_nothing_else_does() {
        let bases: HashSet<String> = ["footer", "layouts/email"].map(String::from).into();
        let source =
            "{{#> layouts/email}}{{#each items}}{{> footer}}{{~> footer ~}}{{/each}}{{> other}}{{/layouts/email}}";
        assert_eq!(
            rewrite(source, "fr", &bases),
            "{{#> layouts/email.fr}}{{#each items}}{{> footer.fr}}{{~> footer.fr ~}}{{/each}}{{> other}}{{/layouts/email.fr}}"
        );
        assert_eq!(rewrite("{{> footer name=x}} {{footer}}", "fr-CA", &bases), "{{> footer.fr-CA name=x}} {{footer}}");
    }

    #[test]
    fn each_language_gets_every_partial_from_its_nearest_file() {
        let sources = vec![
            ("layouts/email".to_string(), "<body>{{> @partial-block}}{{> footer}}</body>".to_string(), true),
            ("footer".to_string(), "Shop".to_string(), true),
            ("footer.fr".to_string(), "Boutique".to_string(), true),
            ("t/email.html".to_string(), "{{#> layouts/email}}Hi{{/layouts/email}}".to_string(), false),
            ("t/email.html.fr-CA".to_string(), "{{#> layouts/email}}Allô{{/layouts/email}}".to_string(), false),
        ];
        let lang_of = |n: &str| n.strip_prefix("t/email.html.").map(str::to_string);
        let out: HashMap<String, String> = localized(sources, lang_of).into_iter().map(|(n, s, _)| (n, s)).collect();
        assert_eq!(out["layouts/email.fr-CA"], "<body>{{> @partial-block}}{{> footer.fr-CA}}</body>");
        assert_eq!(out["footer.fr-CA"], "Boutique", "fr-CA falls back to the fr file");
        assert_eq!(out["footer.fr"], "Boutique");
        assert_eq!(out["t/email.html.fr-CA"], "{{#> layouts/email.fr-CA}}Allô{{/layouts/email.fr-CA}}");
        assert_eq!(out["t/email.html"], "{{#> layouts/email}}Hi{{/layouts/email}}");
        assert_eq!(out["footer"], "Shop");
    }
}
