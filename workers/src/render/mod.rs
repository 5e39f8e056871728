//! Templates: `templates/<template>/<channel>.<part>[.<lang>].hbs`, shared
//! `partials/` and `layouts/` (registered as `layouts/<name>`).
//!
//! Strict: a variable the data lacks is a render error, which dead-letters the
//! message, never a blank in a customer's inbox. HTML parts escape HTML; text,
//! SMS and push parts do not. A locale variant (`email.subject.fr.hbs`) wins
//! over the plain file when the user's locale starts with its language.

mod check;
mod helpers;

pub use check::{check, sample_notification, CheckReport};

use handlebars::Handlebars;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
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
    html: Handlebars<'static>,
    text: Handlebars<'static>,
}

impl Renderer {
    /// Loads every template, partial and layout under `dir`.
    pub fn load(dir: &Path) -> Result<Self, RenderError> {
        let mut html = Handlebars::new();
        let mut text = Handlebars::new();
        text.register_escape_fn(handlebars::no_escape);
        for hb in [&mut html, &mut text] {
            hb.set_strict_mode(true);
            helpers::register(hb);
        }
        for (name, source, is_partial) in sources(dir)? {
            for hb in [&mut html, &mut text] {
                let registered = if is_partial {
                    hb.register_partial(&name, &source)
                } else {
                    hb.register_template_string(&name, &source)
                };
                registered.map_err(|e| RenderError::Failed { name: name.clone(), reason: e.to_string() })?;
            }
        }
        Ok(Renderer { html, text })
    }

    /// Renders `n` into the content its channel's providers send.
    pub fn render(&self, n: &Notification) -> Result<Content, RenderError> {
        let ctx = context(n);
        let part = |p: &str| self.part(n, p, &ctx);
        Ok(match (&n.recipient, n.channel) {
            (Recipient::Email { address }, Channel::Email) => Content::Email {
                to: address.clone(),
                subject: part("email.subject")?.trim().to_string(),
                text: part("email.text")?,
                html: part("email.html")?,
            },
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
                Content::Webhook { url: url.clone(), body: Value::Object(body) }
            }
            (_, channel) => return Err(RenderError::Recipient(channel)),
        })
    }

    /// Whether `template` has the parts `channel` needs.
    pub fn has_channel(&self, template: &str, channel: Channel) -> bool {
        channel == Channel::Webhook || parts(channel).iter().all(|p| self.text.has_template(&format!("{template}/{p}")))
    }

    fn part(&self, n: &Notification, part: &str, ctx: &Value) -> Result<String, RenderError> {
        let lang = n.locale.split(['-', '_']).next().unwrap_or("").to_lowercase();
        let localized = format!("{}/{part}.{lang}", n.template);
        let plain = format!("{}/{part}", n.template);
        let name = if !lang.is_empty() && self.text.has_template(&localized) { localized } else { plain };
        let hb = if part.ends_with(".html") { &self.html } else { &self.text };
        if !hb.has_template(&name) {
            return Err(RenderError::Missing(name));
        }
        hb.render(&name, ctx).map_err(|e| RenderError::Failed { name, reason: e.to_string() })
    }
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
/// user's time zone and locale (read by the date helper).
fn context(n: &Notification) -> Value {
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
}
