//! Templates: `templates/<template>/<channel>.<part>[.<lang>].hbs`, shared
//! `partials/` and `layouts/` (registered as `layouts/<name>`).
//!
//! Strict: a variable the data lacks is a render error, which dead-letters the
//! message, never a blank in a customer's inbox. HTML parts escape HTML; text,
//! SMS and push parts do not. Each part falls back on its own, from the
//! user's locale to its language to the plain file: a `fr-CA` user gets
//! `email.subject.fr-CA.hbs` if there is one, else `email.subject.fr.hbs`,
//! else `email.subject.hbs` ([`Renderer::render_reporting`] says which).
//! Links in HTML parts must be `http` or `https`; others render as `#`.
//! An HTML part's `<style>` rules are inlined onto its elements (mail
//! clients drop `<style>`), and an email whose text part renders empty gets
//! the text of its HTML part instead.

mod check;
mod helpers;
mod inline;
mod links;
pub mod locale;
mod localize;

pub use check::{check, file_of, locales, located, problems, sample_notification, CheckOptions, CheckReport};
pub use helpers::escape_html;

use handlebars::Handlebars;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use tidings_core::unsubscribe::{Links, ListUnsubscribe};
use tidings_core::{Channel, Notification, Recipient};
use tidings_providers::Content;

/// Why a notification could not be rendered. Dead-lettered with class `render`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    #[error("no template `{0}` (looked for {0}.hbs under the templates folder)")]
    Missing(String),
    #[error("template `{name}`: {reason}")]
    Failed { name: String, reason: String },
    #[error("templates folder {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("recipient does not fit the {0} channel")]
    Recipient(Channel),
}

/// The loaded templates, ready to render any notification.
pub struct Renderer {
    html: Engine,
    text: Engine,
    /// Each template folder's files.
    files: HashMap<String, Vec<File>>,
    /// One-click unsubscribe links, when configured.
    links: Option<Links>,
}

/// One template file: the part it renders, its language (`None`: the plain
/// file), its registered name, and the length of its last rendering (the
/// next one's buffer starts that large instead of growing to it).
struct File {
    part: String,
    lang: Option<String>,
    name: String,
    size: AtomicUsize,
}

impl File {
    /// `<folder>/<part>[.<lang>]`, split where `part` is a part some channel renders.
    fn of(name: &str) -> Option<(String, File)> {
        let (folder, rest) = name.split_once('/')?;
        let known = Channel::ALL.iter().flat_map(|c| parts(*c));
        let (part, lang) = match known.clone().find(|p| **p == rest) {
            Some(part) => (part.to_string(), None),
            None => match known.filter_map(|p| Some((p, rest.strip_prefix(p)?.strip_prefix('.')?))).next() {
                Some((part, lang)) => (part.to_string(), Some(lang.to_string())),
                None => (rest.to_string(), None),
            },
        };
        Some((folder.to_string(), File { part, lang, name: name.to_string(), size: AtomicUsize::new(0) }))
    }
}

/// One escaping's templates: as written, and with their partials written in
/// ([`inline`]), which renders the same without copying the data per partial.
struct Engine {
    written: Handlebars<'static>,
    quick: Handlebars<'static>,
}

impl Engine {
    fn new(written: Handlebars<'static>, templates: &[&str], safe: &HashSet<String>) -> Self {
        let quick = inline::inlined(&written, templates.iter().copied(), safe);
        Engine { written, quick }
    }

    /// Renders with the rewritten templates into a buffer of `size` bytes;
    /// a failure is rendered again as written, so its error names the file
    /// and line that caused it.
    fn render(&self, name: &str, ctx: &handlebars::Context, size: usize) -> Result<String, handlebars::RenderError> {
        let mut out = Vec::with_capacity(size);
        match self.quick.render_with_context_to_write(name, ctx, &mut out) {
            // Handlebars writes text: the bytes are UTF-8.
            Ok(()) => String::from_utf8(out).map_err(|e| handlebars::RenderErrorReason::Other(e.to_string()).into()),
            Err(_) => self.written.render_with_context(name, ctx),
        }
    }
}

impl Renderer {
    /// Loads every template, partial and layout under `dir`.
    pub fn load(dir: &Path) -> Result<Self, RenderError> {
        let mut html = Handlebars::new();
        let mut text = Handlebars::new();
        text.register_escape_fn(handlebars::no_escape);
        html.register_escape_fn(helpers::escape_html);
        for hb in [&mut html, &mut text] {
            hb.set_strict_mode(true);
            helpers::register(hb);
        }
        let mut templates = Vec::new();
        let mut safe = HashSet::new();
        let lang_of = |name: &str| File::of(name).and_then(|(_, f)| f.lang);
        for (name, source, is_partial) in localize::localized(sources(dir)?, lang_of) {
            if !is_partial {
                templates.push(name.clone());
            } else if inline::can_inline(&source) {
                safe.insert(name.clone());
            }
            for hb in [&mut html, &mut text] {
                let registered = if is_partial {
                    hb.register_partial(&name, &source)
                } else {
                    hb.register_template_string(&name, &source)
                };
                registered.map_err(|e| RenderError::Failed { name: name.clone(), reason: e.to_string() })?;
            }
        }
        let mut files: HashMap<String, Vec<File>> = HashMap::new();
        for (folder, file) in templates.iter().filter_map(|name| File::of(name)) {
            files.entry(folder).or_default().push(file);
        }
        let templates: Vec<&str> = templates.iter().map(String::as_str).collect();
        Ok(Renderer {
            html: Engine::new(html, &templates, &safe),
            text: Engine::new(text, &templates, &safe),
            files,
            links: None,
        })
    }

    /// With email of the linked categories carrying an unsubscribe link:
    /// in its headers, and as `unsubscribe_url` for its templates (in place
    /// of any the event gave), so the body's link and the header's agree.
    pub fn with_links(mut self, links: Option<Links>) -> Self {
        self.links = links;
        self
    }

    /// Renders `n` into the content its channel's providers send. A link
    /// that is not `http`/`https` renders as `#` and is logged (its scheme only).
    pub fn render(&self, n: &Notification) -> Result<Content, RenderError> {
        let (content, replaced) = self.render_with(n, None)?;
        for value in replaced {
            let scheme: String = value.chars().take_while(|c| *c != ':').take(20).collect();
            tracing::warn!(template = %n.template, notification_id = %n.notification_id, %scheme,
                "a link that is not http or https was replaced by #");
        }
        Ok(content)
    }

    /// [`render`](Self::render), and what an author wants to know of it.
    pub fn render_reporting(&self, n: &Notification) -> Result<Rendering, RenderError> {
        let mut used = Vec::new();
        let (content, replaced) = self.render_with(n, Some(&mut used))?;
        Ok(Rendering { content, replaced, files: used.into_iter().map(str::to_string).collect() })
    }

    /// The content, the link values replaced by `#`, and (when `used` is
    /// given) the file each part came from.
    fn render_with<'r>(
        &'r self,
        n: &Notification,
        mut used: Option<&mut Vec<&'r str>>,
    ) -> Result<(Content, Vec<String>), RenderError> {
        let unsubscribe = match n.channel {
            Channel::Email => self.links.as_ref().and_then(|l| l.for_message(&n.user_id, &n.category)),
            _ => None,
        };
        // One context for every part: the registry's `render` would copy the data into one each time.
        let ctx = handlebars::Context::from(context(n, unsubscribe.as_ref()));
        let mut replaced = Vec::new();
        let mut part = |p: &str| self.part(n, p, &ctx, &mut replaced, used.as_deref_mut());
        let content = match (&n.recipient, n.channel) {
            (Recipient::Email { address }, Channel::Email) => {
                let subject = part("email.subject")?.trim().to_string();
                let text = part("email.text")?;
                let html = part("email.html")?;
                // A mail client that shows text only never shows an empty message.
                let text = if text.trim().is_empty() { text_of(&html) } else { text };
                Content::Email { to: address.clone(), subject, text, html, unsubscribe }
            }
            (Recipient::Sms { phone }, Channel::Sms) => {
                Content::Sms { to: phone.clone(), body: part("sms")?.trim().to_string() }
            }
            (Recipient::Push { tokens }, Channel::Push) => Content::Push {
                tokens: tokens.clone(),
                title: part("push.title")?.trim().to_string(),
                body: part("push.body")?.trim().to_string(),
            },
            (Recipient::Webhook { url }, Channel::Webhook) => {
                // Read with serde_json's depth limit: data nested deeper is a render
                // error (dead-lettered), never a panic.
                let data: Value = serde_json::from_str(n.data.get()).map_err(|e| RenderError::Failed {
                    name: format!("{}/webhook", n.template),
                    reason: format!("the event data cannot be sent as JSON: {e}"),
                })?;
                let mut body = serde_json::Map::new();
                body.insert("notification_id".into(), n.notification_id.clone().into());
                body.insert("event_id".into(), n.event_id.clone().into());
                body.insert("type".into(), n.event_type.clone().into());
                body.insert("user_id".into(), n.user_id.clone().into());
                body.insert("created_at".into(), json!(n.created_at));
                body.insert("data".into(), data);
                // Signed with the user's keys, which the worker adds.
                Content::Webhook { url: url.clone(), body: Value::Object(body), keys: Default::default() }
            }
            (_, channel) => return Err(RenderError::Recipient(channel)),
        };
        Ok((content, replaced))
    }

    /// Whether `template` has the parts `channel` needs.
    pub fn has_channel(&self, template: &str, channel: Channel) -> bool {
        let files = self.files.get(template).map_or(&[][..], Vec::as_slice);
        parts(channel).iter().all(|p| files.iter().any(|f| f.part == *p && f.lang.is_none()))
    }

    /// The file `part` of `template` renders from for `locale`: the
    /// locale's own (`fr-CA`), else its language's (`fr`), else the plain one.
    pub fn file_for(&self, template: &str, part: &str, locale: &str) -> Option<&str> {
        self.file(template, part, locale).map(|f| f.name.as_str())
    }

    fn file(&self, template: &str, part: &str, locale: &str) -> Option<&File> {
        let files = self.files.get(template)?.iter().filter(|f| f.part == part);
        let lang = locale.split(['-', '_']).next().unwrap_or("");
        let same = |f: &&File, tag: &str| !tag.is_empty() && f.lang.as_deref().is_some_and(|l| same_tag(l, tag));
        files
            .clone()
            .find(|f| same(f, locale))
            .or_else(|| files.clone().find(|f| same(f, lang)))
            .or_else(|| files.clone().find(|f| f.lang.is_none()))
    }

    fn part<'r>(
        &'r self,
        n: &Notification,
        part: &str,
        ctx: &handlebars::Context,
        replaced: &mut Vec<String>,
        used: Option<&mut Vec<&'r str>>,
    ) -> Result<String, RenderError> {
        let file = self
            .file(&n.template, part, &n.locale)
            .ok_or_else(|| RenderError::Missing(format!("{}/{part}", n.template)))?;
        if let Some(used) = used {
            used.push(&file.name);
        }
        let engine = if part.ends_with(".html") { &self.html } else { &self.text };
        let out = engine
            .render(&file.name, ctx, file.size.load(Ordering::Relaxed))
            .map_err(|e| RenderError::Failed { name: file.name.clone(), reason: e.to_string() })?;
        file.size.store(out.len(), Ordering::Relaxed);
        if !part.ends_with(".html") {
            return Ok(out);
        }
        let (out, mut unsafe_links) = links::neutralise(out);
        replaced.append(&mut unsafe_links);
        // Mail clients drop `<style>`: its rules go onto the elements. Only
        // HTML that has one is parsed for it.
        if !out.to_ascii_lowercase().contains("<style") {
            return Ok(out);
        }
        let inlined = css_inline::inline(&out)
            .map_err(|e| RenderError::Failed { name: file.name.clone(), reason: format!("inlining CSS: {e}") })?;
        // The rules now sit in style attributes: read once more, as they are sent.
        let (inlined, mut unsafe_links) = links::neutralise(inlined);
        replaced.append(&mut unsafe_links);
        Ok(inlined)
    }
}

/// Whether two language tags are one, case and `-`/`_` aside (`fr-CA`,
/// `fr_ca`). Asked for every part of every message: it compares in place.
fn same_tag(a: &str, b: &str) -> bool {
    let dash = |c: u8| c == b'-' || c == b'_';
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x.eq_ignore_ascii_case(&y) || (dash(x) && dash(y)))
}

/// The text of an HTML part, for a text part that rendered empty.
fn text_of(html: &str) -> String {
    html2text::from_read(html.as_bytes(), 78).unwrap_or_default()
}

/// A rendering as an author sees it.
#[derive(Debug)]
pub struct Rendering {
    pub content: Content,
    /// Link values of HTML parts that are not `http`/`https`, rendered as `#`.
    pub replaced: Vec<String>,
    /// The file each part rendered from, in part order (`order.confirmed/email.subject.fr`).
    pub files: Vec<String>,
}

/// The parts a channel's template folder must have.
pub fn parts(channel: Channel) -> &'static [&'static str] {
    match channel {
        Channel::Email => &["email.subject", "email.text", "email.html"],
        Channel::Sms => &["sms"],
        Channel::Push => &["push.title", "push.body"],
        Channel::Webhook => &[],
    }
}

/// The data a template sees: the event's `data`, plus `tidings` with the
/// user's time zone and locale (read by the date helper), and the message's
/// own `unsubscribe_url` when it has one.
fn context(n: &Notification, unsubscribe: Option<&ListUnsubscribe>) -> Value {
    let mut ctx = match serde_json::from_str::<Value>(n.data.get()) {
        Ok(Value::Object(m)) => Value::Object(m),
        Ok(other) => json!({ "data": other }),
        Err(_) => json!({}),
    };
    ctx["tidings"] = json!({
        "timezone": n.timezone,
        "locale": n.locale,
        "notification_id": n.notification_id,
        "event_type": n.event_type,
    });
    if let Some(u) = unsubscribe {
        ctx["unsubscribe_url"] = u.url.clone().into();
    }
    ctx
}

/// (name, source, is_partial) for every `.hbs` file under `dir`.
fn sources(dir: &Path) -> Result<Vec<(String, String, bool)>, RenderError> {
    let load = |path: &Path, reason: String| RenderError::Load { path: path.to_path_buf(), reason };
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| load(dir, e.to_string()))?;
    for entry in entries {
        let folder = entry.map_err(|e| load(dir, e.to_string()))?.path();
        if !folder.is_dir() {
            continue;
        }
        let folder_name = folder.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        for file in std::fs::read_dir(&folder).map_err(|e| load(&folder, e.to_string()))? {
            let path = file.map_err(|e| load(&folder, e.to_string()))?.path();
            let Some(stem) = path.file_name().and_then(|f| f.to_str()).and_then(|f| f.strip_suffix(".hbs")) else {
                continue;
            };
            let source = std::fs::read_to_string(&path).map_err(|e| load(&path, e.to_string()))?;
            let (name, is_partial) = match folder_name.as_str() {
                "partials" => (stem.to_string(), true),
                "layouts" => (format!("layouts/{stem}"), true),
                _ => (format!("{folder_name}/{stem}"), false),
            };
            out.push((name, source, is_partial));
        }
    }
    // Partials first, so templates that use them parse against them.
    out.sort_by_key(|(_, _, is_partial)| !is_partial);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_nested_past_the_depth_limit_is_a_render_error_not_a_panic() {
        let renderer = Renderer::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../templates"))).unwrap();
        let mut n = check::sample_notification("order.confirmed", Channel::Webhook, "en", json!({"a": 1}));
        n.recipient = Recipient::Webhook { url: "https://hooks.example.com/x".into() };
        let Content::Webhook { body, .. } = renderer.render(&n).unwrap() else { panic!("a webhook") };
        assert_eq!((body["data"]["a"].as_i64(), body["type"].as_str()), (Some(1), Some("order.confirmed")));
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        n.data = serde_json::value::RawValue::from_string(deep).unwrap();
        let e = renderer.render(&n).unwrap_err().to_string();
        assert!(e.contains("cannot be sent as JSON") && e.contains("recursion limit"), "{e}");
    }

    fn templates() -> Renderer {
        Renderer::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../templates"))).unwrap()
    }

    fn order(url: &str) -> Notification {
        let sample = include_str!("../../../templates/order.confirmed/sample.json");
        let mut data: Value = serde_json::from_str(sample).unwrap();
        data["order_url"] = url.into();
        check::sample_notification("order.confirmed", Channel::Email, "en", data)
    }

    /// Every shipped template, channel and locale, rendered with its sample:
    /// a change of copy shows as a reviewable diff of its snapshot
    /// (`workers/src/render/snapshots/`; `INSTA_UPDATE=always cargo test`
    /// writes them anew, then review with `git diff`).
    #[test]
    fn shipped_templates_render_as_their_snapshots() {
        let renderer = templates();
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../templates"));
        let mut folders: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("sample.json").exists())
            .collect();
        folders.sort();
        let mut snapshots = 0;
        for folder in folders {
            let template = folder.file_name().unwrap().to_string_lossy().into_owned();
            let data: Value =
                serde_json::from_str(&std::fs::read_to_string(folder.join("sample.json")).unwrap()).unwrap();
            for channel in
                Channel::ALL.into_iter().filter(|c| *c != Channel::Webhook && renderer.has_channel(&template, *c))
            {
                for locale in check::locales(&folder) {
                    let n = check::sample_notification(&template, channel, &locale, data.clone());
                    let rendering = renderer.render_reporting(&n).unwrap();
                    let shown = match rendering.content {
                        Content::Email { subject, text, html, .. } => {
                            format!("Subject: {subject}\n\n--- text ---\n{text}\n--- html ---\n{html}")
                        }
                        Content::Sms { body, .. } => body,
                        Content::Push { title, body, .. } => format!("{title}\n{body}"),
                        Content::Webhook { .. } => unreachable!("not rendered here"),
                    };
                    let name = format!("{template}.{channel}.{locale}");
                    insta::with_settings!({ snapshot_suffix => name.clone(), prepend_module_to_snapshot => false }, {
                        insta::assert_snapshot!("template", shown);
                    });
                    snapshots += 1;
                }
            }
        }
        assert_eq!(snapshots, 46, "a template was added or removed: its snapshots follow");
    }

    /// Data is text: `<script>` is escaped in an email's HTML and left as
    /// written in its text part and in an SMS; a line break in data cannot
    /// add a header to the message the SMTP adapter sends.
    #[test]
    fn data_stays_text_in_every_part_and_header() {
        let renderer = templates();
        let hostile = "<script>alert(1)</script>";
        let data = json!({"campaign_id": "c", "headline": format!("Sale\r\nBcc: victim@example.com {hostile}"),
            "body": hostile, "cta_url": "https://shop.example/sale", "unsubscribe_url": "https://shop.example/u"});
        let n = check::sample_notification("marketing.campaign", Channel::Email, "en", data.clone());
        let content = renderer.render(&n).unwrap();
        let Content::Email { html, text, .. } = &content else { panic!("an email") };
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains(hostile), "{html}");
        assert!(text.contains(hostile), "{text}");
        let outgoing = tidings_providers::Outgoing {
            notification_id: "n".into(),
            priority: tidings_core::Priority::Bulk,
            content: content.clone(),
        };
        let mime = String::from_utf8(tidings_providers::smtp::mime("shop@example.com", &outgoing).unwrap()).unwrap();
        let headers = mime.split("\r\n\r\n").next().unwrap();
        assert!(!headers.to_ascii_lowercase().contains("\r\nbcc:"), "{headers}");
        assert!(headers.contains("Subject: Sale  Bcc: victim@example.com"), "one line: {headers}");
        let mut sms = check::sample_notification("order.confirmed", Channel::Sms, "en", json!({}));
        let sample = include_str!("../../../templates/order.confirmed/sample.json");
        let mut order: Value = serde_json::from_str(sample).unwrap();
        order["order_id"] = hostile.into();
        sms.data = serde_json::value::to_raw_value(&order).unwrap();
        let Content::Sms { body, .. } = renderer.render(&sms).unwrap() else { panic!("an SMS") };
        assert!(body.contains(hostile), "{body}");
    }

    /// A `fr-CA` reader: the French file of every part, the French footer
    /// and signature through the plain layout, money and dates as French
    /// writes them, in the reader's zone.
    #[test]
    fn a_canadian_french_reader_gets_french_everywhere() {
        let renderer = templates();
        let mut n = order("https://shop.example/o/1");
        n.locale = "fr-CA".into();
        let Rendering { content, files, .. } = renderer.render_reporting(&n).unwrap();
        assert_eq!(
            files,
            ["order.confirmed/email.subject.fr", "order.confirmed/email.text.fr", "order.confirmed/email.html.fr"]
        );
        let Content::Email { subject, text, html, .. } = content else { panic!("an email") };
        assert_eq!(subject, "Commande o-1042 confirmée");
        assert!(text.contains("passée le 26 novembre 2026 à 10:15") && text.contains("Total : 89,90 €"), "{text}");
        assert!(text.ends_with("— L’équipe Shop"), "{text}");
        assert!(html.contains("Vous recevez cet e-mail") && !html.contains("You receive"), "{html}");
    }

    #[test]
    fn a_javascript_url_from_data_renders_as_a_hash_and_is_reported() {
        let renderer = templates();
        let Rendering { content, replaced, .. } =
            renderer.render_reporting(&order("javascript:alert(document.cookie)")).unwrap();
        let Content::Email { html, .. } = content else { panic!("an email") };
        assert!(html.contains(r##"<a href="#">Follow your order</a>"##), "{html}");
        assert!(!html.contains("javascript"), "{html}");
        assert_eq!(replaced, ["javascript:alert(document.cookie)"]);

        let Rendering { content, replaced, .. } =
            renderer.render_reporting(&order("https://shop.example/o/1")).unwrap();
        let Content::Email { html, .. } = content else { panic!("an email") };
        assert!(html.contains(r#"href="https://shop.example/o/1""#) && replaced.is_empty(), "{html}");
    }

    /// Every shipped part renders its sample the same with its partials
    /// written in as through handlebars' partials, and the emails (layout,
    /// footer, signature) are the ones rewritten.
    #[test]
    fn shipped_templates_render_the_same_with_partials_written_in() {
        let renderer = templates();
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../templates"));
        let mut rewritten = Vec::new();
        for engine in [&renderer.html, &renderer.text] {
            for name in engine.written.get_templates().keys() {
                let Some((folder, _)) = name.split_once('/').filter(|(f, _)| *f != "layouts") else { continue };
                let sample = std::fs::read_to_string(dir.join(folder).join("sample.json")).unwrap();
                let n =
                    check::sample_notification(folder, Channel::Email, "en", serde_json::from_str(&sample).unwrap());
                let ctx = handlebars::Context::from(context(&n, None));
                let written = engine.written.render_with_context(name, &ctx).unwrap();
                assert_eq!(engine.quick.render_with_context(name, &ctx).unwrap(), written, "{name}");
                if engine.quick.get_template(name) != engine.written.get_template(name) {
                    rewritten.push(name.clone());
                }
            }
        }
        assert!(rewritten.iter().any(|n| n == "order.confirmed/email.html"), "{rewritten:?}");
        assert!(rewritten.iter().any(|n| n == "order.confirmed/email.text"), "{rewritten:?}");
    }

    /// A variable missing in a partial is reported in the partial's file and
    /// line, as handlebars reports it, though the partial was written in.
    #[test]
    fn an_error_in_a_partial_names_the_partial() {
        let dir = std::env::temp_dir().join(format!("tidings-partial-error-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("partials")).unwrap();
        std::fs::create_dir_all(dir.join("promo")).unwrap();
        std::fs::write(dir.join("partials/footer.hbs"), "<hr>\n<p>{{shop_name}}</p>\n").unwrap();
        std::fs::write(dir.join("promo/email.subject.hbs"), "Hi").unwrap();
        std::fs::write(dir.join("promo/email.text.hbs"), "Hi {{name}}").unwrap();
        std::fs::write(dir.join("promo/email.html.hbs"), "<p>Hi {{name}}</p>\n{{> footer}}").unwrap();
        let renderer = Renderer::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_ne!(
            renderer.html.quick.get_template("promo/email.html"),
            renderer.html.written.get_template("promo/email.html")
        );
        let n = check::sample_notification("promo", Channel::Email, "en", json!({"name": "Ann"}));
        let e = renderer.render(&n).unwrap_err().to_string();
        assert!(e.contains("\"footer\" line 2") && e.contains("shop_name"), "{e}");
    }

    /// A layout's `<style>` ends on the elements, and an empty text part
    /// gets the HTML part's text.
    #[test]
    fn style_rules_are_inlined_and_the_text_part_is_never_empty() {
        let dir = std::env::temp_dir().join(format!("tidings-style-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("layouts")).unwrap();
        std::fs::create_dir_all(dir.join("promo")).unwrap();
        let layout = "<html><head><style>h1 { color: #c00; } .small { font-size: 12px; }</style></head>\n<body>{{> @partial-block}}</body></html>";
        std::fs::write(dir.join("layouts/email.hbs"), layout).unwrap();
        std::fs::write(dir.join("promo/email.subject.hbs"), "Hi").unwrap();
        std::fs::write(dir.join("promo/email.text.hbs"), "{{!-- no text version written --}}\n").unwrap();
        let html =
            "{{#> layouts/email}}<h1>Winter sale</h1><p class=\"small\">{{name}}, 30% off.</p>{{/layouts/email}}";
        std::fs::write(dir.join("promo/email.html.hbs"), html).unwrap();
        let renderer = Renderer::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let n = check::sample_notification("promo", Channel::Email, "en", json!({"name": "<Ann>"}));
        let Content::Email { html, text, .. } = renderer.render(&n).unwrap() else { panic!("an email") };
        assert!(html.contains(r#"<h1 style="color: #c00;">Winter sale</h1>"#), "{html}");
        assert!(html.contains(r#"<p class="small" style="font-size: 12px;">&lt;Ann&gt;, 30% off.</p>"#), "{html}");
        assert!(!html.contains("<style"), "{html}");
        assert!(text.contains("Winter sale") && text.contains("<Ann>, 30% off."), "{text}");
    }

    #[test]
    fn templates_check_reports_a_link_that_is_not_http() {
        let dir = std::env::temp_dir().join(format!("tidings-check-{}", std::process::id()));
        let folder = dir.join("promo");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("email.subject.hbs"), "Hi").unwrap();
        std::fs::write(folder.join("email.text.hbs"), "{{url}}").unwrap();
        std::fs::write(folder.join("email.html.hbs"), r#"<a href="{{url}}">go</a> <a href="vbscript:x">x</a>"#)
            .unwrap();
        std::fs::write(folder.join("sample.json"), r#"{"url": "https://ok.example"}"#).unwrap();
        let report = check(&dir, &CheckOptions::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(report.errors, ["promo email en: link `vbscript:x` is not http or https; it renders as #"]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use tidings_core::testing::arbitrary_json;

        proptest! {
            /// Any data, in place of a template's sample or with some of the
            /// sample's variables given odd values, renders or fails with an
            /// error, in every channel; never a panic.
            #[test]
            fn rendering_never_panics(
                data in arbitrary_json(),
                odd in prop::collection::vec((0..7usize, arbitrary_json()), 0..4),
                replace in any::<bool>(),
                channel in 0..4usize,
            ) {
                let renderer = templates();
                let channel = Channel::ALL[channel];
                let keys = ["order_id", "total", "currency", "items", "item_count", "placed_at", "order_url"];
                let mut sample: Value = serde_json::from_str(include_str!("../../../templates/order.confirmed/sample.json")).unwrap();
                for (key, value) in odd {
                    sample[keys[key]] = value;
                }
                let data = if replace { data } else { sample };
                let n = check::sample_notification("order.confirmed", channel, "en", data);
                let _ = renderer.render(&n);
            }
        }
    }
}
