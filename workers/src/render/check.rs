//! `tidings templates check`: every template folder with a `sample.json`
//! renders every channel and locale it has, strictly, and what would bite
//! later is said now, with the file (and line where there is one):
//!
//! - a template that does not compile, a variable the sample lacks, a
//!   partial that does not exist (from handlebars, with file and line);
//! - a partial or layout no template uses;
//! - an SMS over `channels.sms.max_segments`, or made UCS-2 by a character
//!   of the template's own text (70 characters a segment instead of 160);
//! - a push payload over 4 KB;
//! - an email subject with a line break;
//! - an email of an unsubscribe category (`[unsubscribe] categories`)
//!   whose parts do not use `unsubscribe_url`;
//! - unescaped output (`{{{x}}}`, `{{&x}}`) in what renders HTML (email
//!   HTML parts, partials, layouts): the one way event data can write
//!   markup (a `<script>`, an attribute the link filter does not read).

use super::{parts, Renderer};
use std::collections::HashSet;
use std::path::Path;
use tidings_core::{Channel, Notification, Priority, Recipient};
use tidings_providers::{rules, Content};

#[derive(Debug, Default)]
pub struct CheckReport {
    /// Each rendering: `<template> <channel> <locale>: <the files it used>`.
    pub rendered: Vec<String>,
    /// What is wrong, one line each, starting with the file.
    pub errors: Vec<String>,
}

/// What the checks hold templates to, from the configuration.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// `channels.sms.max_segments`.
    pub max_segments: u32,
    /// Template folders whose email must carry the unsubscribe link.
    pub unsubscribe_templates: HashSet<String>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { max_segments: 4, unsubscribe_templates: HashSet::new() }
    }
}

impl CheckOptions {
    /// The options `config` sets: its SMS limit, and the template folders
    /// of the event types whose category carries unsubscribe links.
    pub fn from_config(config: &tidings_core::Config) -> Self {
        let max_segments = config.channels.get(&Channel::Sms).map_or(4, |c| c.max_segments);
        let unsubscribe_templates = config
            .events
            .iter()
            .filter(|(_, r)| config.unsubscribe.categories.contains(&r.category))
            .map(|(ty, r)| r.template.clone().unwrap_or_else(|| ty.clone()))
            .collect();
        CheckOptions { max_segments, unsubscribe_templates }
    }
}

/// Renders every template under `dir` with its sample data, and checks it.
pub fn check(dir: &Path, options: &CheckOptions) -> Result<CheckReport, super::RenderError> {
    let renderer = Renderer::load(dir)?;
    let mut report = CheckReport::default();
    report.errors.extend(unused_partials(dir));
    report.errors.extend(unescaped_output(dir));
    let mut folders: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| super::RenderError::Load { path: dir.into(), reason: e.to_string() })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    for folder in folders {
        let name = folder.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if name == "partials" || name == "layouts" {
            continue;
        }
        let sample = match std::fs::read_to_string(folder.join("sample.json")) {
            Ok(s) => s,
            Err(_) => {
                report.errors.push(format!("{name}: no sample.json"));
                continue;
            }
        };
        let data: serde_json::Value = match serde_json::from_str(&sample) {
            Ok(d) => d,
            Err(e) => {
                report.errors.push(format!("{name}/sample.json: {e}"));
                continue;
            }
        };
        let mut channels = 0;
        for channel in Channel::ALL.into_iter().filter(|c| *c != Channel::Webhook) {
            if !parts(channel).iter().any(|p| folder.join(format!("{p}.hbs")).exists()) {
                continue;
            }
            channels += 1;
            for locale in locales(&folder) {
                let n = sample_notification(&name, channel, &locale, data.clone());
                match renderer.render_reporting(&n) {
                    Ok(rendering) => {
                        for problem in problems(dir, options, &name, &rendering) {
                            let at = if problem.starts_with("link") {
                                format!("{name} {channel} {locale}: ")
                            } else {
                                String::new()
                            };
                            report.errors.push(format!("{at}{problem}"));
                        }
                        report.rendered.push(format!("{name} {channel} {locale}: {}", rendering.files.join(", ")));
                    }
                    Err(e) => report.errors.push(located(&format!("{name} {channel} {locale}: {e}"))),
                }
            }
        }
        if channels == 0 {
            report.errors.push(format!("{name}: no channel templates"));
        }
    }
    Ok(report)
}

/// What is wrong with `rendering` of `template` (from the templates in `dir`).
pub fn problems(dir: &Path, options: &CheckOptions, template: &str, rendering: &super::Rendering) -> Vec<String> {
    let mut out: Vec<String> = rendering
        .replaced
        .iter()
        .map(|value| format!("link `{value}` is not http or https; it renders as #"))
        .collect();
    out.extend(Problems { dir, options, template, files: &rendering.files }.of(&rendering.content));
    out
}

/// What is wrong with one rendering, by the files it used.
struct Problems<'a> {
    dir: &'a Path,
    options: &'a CheckOptions,
    template: &'a str,
    /// Registered names, `<folder>/<part>[.<lang>]`.
    files: &'a [String],
}

impl Problems<'_> {
    fn of(&self, content: &Content) -> Vec<String> {
        let mut out = Vec::new();
        match content {
            Content::Sms { body, .. } => {
                let file = self.file("sms");
                let segments = rules::sms_segments(body);
                if segments.count > self.options.max_segments as usize {
                    out.push(format!(
                        "{file}: the sample takes {} {} segments, more than channels.sms.max_segments ({})",
                        segments.count,
                        if segments.unicode { "UCS-2" } else { "GSM-7" },
                        self.options.max_segments
                    ));
                }
                if segments.unicode {
                    for (line, c) in self.literal_chars(&file).filter(|(_, c)| !rules::is_gsm7(*c)) {
                        out.push(format!(
                            "{file}:{line}: `{c}` is not in the GSM-7 alphabet: the SMS goes as UCS-2, 70 characters a segment instead of 160"
                        ));
                    }
                }
            }
            Content::Push { title, body, .. } => {
                let size = rules::push_payload_size(title, body);
                if size > rules::PUSH_PAYLOAD_MAX {
                    out.push(format!(
                        "{} and {}: the sample's push payload is {size} bytes, over the 4 KB FCM and APNs take",
                        self.file("push.title"),
                        self.file("push.body")
                    ));
                }
            }
            Content::Email { subject, .. } => {
                if subject.contains(['\n', '\r']) {
                    out.push(format!("{}: the subject renders with a line break", self.file("email.subject")));
                }
                if self.options.unsubscribe_templates.contains(self.template) {
                    for part in ["email.text", "email.html"] {
                        let file = self.file(part);
                        let source = std::fs::read_to_string(self.dir.join(&file)).unwrap_or_default();
                        if !source.contains("unsubscribe_url") {
                            out.push(format!(
                                "{file}: an email of an unsubscribe category without {{{{unsubscribe_url}}}}"
                            ));
                        }
                    }
                }
            }
            Content::Webhook { .. } => {}
        }
        out
    }

    /// The file (relative to the templates folder) `part` rendered from.
    fn file(&self, part: &str) -> String {
        let prefix = format!("{}/{part}", self.template);
        let name =
            self.files.iter().find(|f| **f == prefix || f.strip_prefix(&prefix).is_some_and(|r| r.starts_with('.')));
        format!("{}.hbs", name.map_or(prefix.as_str(), String::as_str))
    }

    /// Each character of `file`'s own text (outside `{{…}}`), with its line.
    fn literal_chars(&self, file: &str) -> impl Iterator<Item = (usize, char)> {
        let source = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        let mut out = Vec::new();
        let (mut line, mut depth) = (1, 0usize);
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\n' => line += 1,
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    depth += 1;
                }
                '}' if depth > 0 && chars.peek() == Some(&'}') => {
                    chars.next();
                    depth -= 1;
                }
                c if depth == 0 => out.push((line, c)),
                _ => {}
            }
        }
        out.into_iter()
    }
}

/// `text` starting with the file and line handlebars names in it
/// (`Error rendering "order.confirmed/email.text" line 2, col 1: …` leads
/// with `order.confirmed/email.text.hbs:2:1:`), else as it is.
pub fn located(text: &str) -> String {
    let Some(open) = text.find("Error rendering \"") else { return text.to_string() };
    let rest = &text[open + "Error rendering \"".len()..];
    let Some((name, rest)) = rest.split_once("\" line ") else { return text.to_string() };
    let Some((line, rest)) = rest.split_once(", col ") else { return text.to_string() };
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    format!("{}:{line}:{col}: {text}", file_of(name))
}

/// The file, relative to the templates folder, of a registered name.
pub fn file_of(name: &str) -> String {
    if name.contains('/') {
        format!("{name}.hbs")
    } else {
        format!("partials/{name}.hbs")
    }
}

/// Partials and layouts that no template, partial or layout names.
fn unused_partials(dir: &Path) -> Vec<String> {
    let mut named = HashSet::new();
    let mut partials = Vec::new();
    for (folder, file, source) in hbs_files(dir) {
        named.extend(super::localize::named(&source).into_iter().map(str::to_string));
        match folder.as_str() {
            "partials" => partials.push((file.clone(), file.trim_end_matches(".hbs").to_string())),
            "layouts" => partials.push((file.clone(), format!("layouts/{}", file.trim_end_matches(".hbs")))),
            _ => {}
        }
    }
    let mut out: Vec<String> = partials
        .into_iter()
        .filter(|(_, name)| {
            // `footer.fr` is used where `footer` is.
            let base = name.rsplit_once('.').map_or(name.as_str(), |(b, _)| b);
            !named.contains(name) && !named.contains(base)
        })
        .map(|(file, name)| {
            let folder = if name.starts_with("layouts/") { "layouts" } else { "partials" };
            format!("{folder}/{file}: never used by a template")
        })
        .collect();
    out.sort();
    out
}

/// Each `{{{…}}}` or `{{&…}}` in a file the HTML engine renders, with its
/// file and line. Text parts are not HTML (nothing is escaped there).
fn unescaped_output(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (folder, file, source) in hbs_files(dir) {
        if !(folder == "partials" || folder == "layouts" || file.starts_with("email.html")) {
            continue;
        }
        // Handlebars takes `~` and spaces before the `{` or `&`, and a tag over several lines.
        for (at, _) in source.match_indices("{{") {
            let rest = source[at + 2..].trim_start_matches(|c: char| c == '~' || c.is_whitespace());
            if !(rest.starts_with('{') || rest.starts_with('&')) || source[..at].ends_with('{') {
                continue;
            }
            let end = source[at..].find("}}").map_or(source.len(), |e| at + e + 2);
            let end = if source[end..].starts_with('}') { end + 1 } else { end };
            let line = source[..at].matches('\n').count() + 1;
            let tag: String = source[at..end].split_whitespace().collect::<Vec<_>>().join(" ");
            out.push(format!(
                "{folder}/{file}:{line}: `{tag}` writes its value without HTML escaping, so event data could write markup; use `{{{{…}}}}`"
            ));
        }
    }
    out.sort();
    out
}

/// `(folder, file name, source)` of every `.hbs` file one level under `dir`.
fn hbs_files(dir: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for folder in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let folder_name = folder.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(folder.path()).into_iter().flatten().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.ends_with(".hbs") {
                if let Ok(source) = std::fs::read_to_string(file.path()) {
                    out.push((folder_name.clone(), name, source));
                }
            }
        }
    }
    out
}

/// `en` plus every language that has a variant file in `folder`.
pub fn locales(folder: &Path) -> Vec<String> {
    let mut out = vec!["en".to_string()];
    for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".hbs") else {
            continue;
        };
        let pieces: Vec<&str> = stem.split('.').collect();
        // channel.part.lang or sms.lang
        let lang = match pieces.as_slice() {
            [_, _, lang] => Some(*lang),
            ["sms", lang] => Some(*lang),
            _ => None,
        };
        if let Some(lang) = lang {
            if !out.iter().any(|l| l == lang) {
                out.push(lang.to_string());
            }
        }
    }
    out
}

/// A notification as intake would make it, for previews and checks.
pub fn sample_notification(template: &str, channel: Channel, locale: &str, data: serde_json::Value) -> Notification {
    let recipient = match channel {
        Channel::Email => Recipient::Email { address: "preview@example.com".into() },
        Channel::Sms => Recipient::Sms { phone: "+15550100000".into() },
        Channel::Push => Recipient::Push { tokens: vec![] },
        Channel::Webhook => Recipient::Webhook { url: "https://example.com/hook".into() },
    };
    Notification {
        notification_id: "preview".into(),
        source: "/preview".into(),
        event_id: "preview".into(),
        event_type: template.into(),
        user_id: "preview".into(),
        channel,
        priority: Priority::Normal,
        template: template.into(),
        category: "transactional".into(),
        locale: locale.into(),
        timezone: "Europe/Paris".into(),
        recipient,
        data: serde_json::value::to_raw_value(&data).expect("JSON values serialize"),
        created_at: chrono::Utc::now(),
        not_before: None,
        fallback: vec![],
        attempt: 0,
    }
}
