//! `tidings templates preview [--out DIR] [--watch]` and `templates render
//! … --out DIR`: renderings as a reader would see them, in a static folder.
//!
//! For every template folder with a `sample.json`, every channel it has and
//! every locale it is written in: each email as `.html` and as the `.eml`
//! the SMTP adapter would send (open it in a mail client), each SMS as text
//! with its segment count and encoding, each push as its title and body
//! with the payload's size. `index.html` lists them all, with the files
//! each used and what `templates check` says of it.
//!
//! `--watch` renders again whenever a file under the templates folder
//! changes, found by looking at every file's size and modification time
//! twice a second: editors that save by writing a new file and renaming it
//! over the old one, and folders mounted from another machine, are seen
//! the same way, and a few dozen small files cost nothing to look at.

use anyhow::Context as _;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tidings_core::Channel;
use tidings_providers::{rules, Content, Outgoing};
use tidings_workers::render::{self, escape_html, CheckOptions, Renderer};

/// What a preview renders with.
pub struct Preview {
    pub dir: PathBuf,
    pub out: PathBuf,
    pub options: CheckOptions,
    /// The `From:` of the `.eml` files.
    pub from: String,
}

/// One rendering, as the index lists it.
struct Entry {
    template: String,
    channel: Channel,
    locale: String,
    files: Vec<String>,
    /// (label, path relative to the output folder).
    links: Vec<(&'static str, String)>,
    facts: String,
    warnings: Vec<String>,
}

impl Preview {
    /// Renders every template folder; returns how many renderings were written.
    pub fn all(&self) -> anyhow::Result<usize> {
        let renderer = Renderer::load(&self.dir)?;
        let mut entries = Vec::new();
        let mut folders: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("{}", self.dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.join("sample.json").exists())
            .collect();
        folders.sort();
        for folder in folders {
            let template = folder.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(folder.join("sample.json"))?)
                .with_context(|| format!("{template}/sample.json"))?;
            for channel in
                Channel::ALL.into_iter().filter(|c| renderer.has_channel(&template, *c) && *c != Channel::Webhook)
            {
                for locale in render::locales(&folder) {
                    entries.push(self.one(&renderer, &template, channel, &locale, data.clone())?);
                }
            }
        }
        self.index(&entries)?;
        Ok(entries.len())
    }

    /// Renders one template for one channel and locale, and an index of it alone.
    pub fn single(
        &self,
        template: &str,
        channel: Channel,
        locale: &str,
        data: serde_json::Value,
    ) -> anyhow::Result<()> {
        let renderer = Renderer::load(&self.dir)?;
        let entry = self.one(&renderer, template, channel, locale, data)?;
        self.index(std::slice::from_ref(&entry))
    }

    fn one(
        &self,
        renderer: &Renderer,
        template: &str,
        channel: Channel,
        locale: &str,
        data: serde_json::Value,
    ) -> anyhow::Result<Entry> {
        let n = render::sample_notification(template, channel, locale, data);
        let mut entry = Entry {
            template: template.to_string(),
            channel,
            locale: locale.to_string(),
            files: vec![],
            links: vec![],
            facts: String::new(),
            warnings: vec![],
        };
        let rendering = match renderer.render_reporting(&n) {
            Ok(r) => r,
            Err(e) => {
                entry.warnings.push(render::located(&e.to_string()));
                return Ok(entry);
            }
        };
        entry.warnings = render::problems(&self.dir, &self.options, template, &rendering);
        entry.files = rendering.files.clone();
        let folder = self.out.join(template);
        std::fs::create_dir_all(&folder)?;
        let stem = format!("{channel}.{locale}");
        let mut write = |label: &'static str, extension: &str, bytes: &[u8]| -> anyhow::Result<()> {
            let relative = format!("{template}/{stem}.{extension}");
            std::fs::write(self.out.join(&relative), bytes)?;
            entry.links.push((label, relative));
            Ok(())
        };
        match &rendering.content {
            Content::Email { subject, html, .. } => {
                write("HTML", "html", html.as_bytes())?;
                let outgoing = Outgoing {
                    notification_id: format!("preview-{template}-{locale}"),
                    priority: tidings_core::Priority::Normal,
                    content: rendering.content.clone(),
                };
                let eml = tidings_providers::smtp::mime(&self.from, &outgoing)?;
                write(".eml", "eml", &eml)?;
                entry.facts = format!("Subject: {subject}");
            }
            Content::Sms { body, .. } => {
                write("text", "txt", body.as_bytes())?;
                let s = rules::sms_segments(body);
                let encoding = if s.unicode { "UCS-2" } else { "GSM-7" };
                entry.facts = format!(
                    "{} {}, {encoding}, {} characters: {body}",
                    s.count,
                    plural(s.count, "segment"),
                    body.chars().count()
                );
            }
            Content::Push { title, body, .. } => {
                let size = rules::push_payload_size(title, body);
                let json = serde_json::json!({"title": title, "body": body, "payload_bytes": size});
                write("JSON", "json", serde_json::to_string_pretty(&json)?.as_bytes())?;
                entry.facts = format!("{title} — {body} ({size} bytes of {})", rules::PUSH_PAYLOAD_MAX);
            }
            Content::Webhook { .. } => {}
        }
        Ok(entry)
    }

    fn index(&self, entries: &[Entry]) -> anyhow::Result<()> {
        let mut html = String::from(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Tidings templates</title>\n<style>\
             body{font-family:system-ui,sans-serif;margin:24px}table{border-collapse:collapse}\
             td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}\
             .warn{color:#a00}.files{color:#555;font-size:90%}</style></head><body>\n<h1>Tidings templates</h1>\n",
        );
        let warnings: usize = entries.iter().map(|e| e.warnings.len()).sum();
        let _ = writeln!(
            html,
            "<p>Rendered at <time id=\"rendered\">{}</time> from <code>{}</code>: {} renderings, {warnings} warnings.</p>",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            escape_html(&self.dir.display().to_string()),
            entries.len()
        );
        html.push_str("<table>\n<tr><th>template</th><th>channel</th><th>locale</th><th>files</th><th>open</th><th>what it says</th><th>warnings</th></tr>\n");
        for e in entries {
            let links: Vec<String> =
                e.links.iter().map(|(label, path)| format!("<a href=\"{}\">{label}</a>", escape_html(path))).collect();
            let warnings: Vec<String> =
                e.warnings.iter().map(|w| format!("<div class=\"warn\">{}</div>", escape_html(w))).collect();
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"files\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape_html(&e.template),
                e.channel,
                escape_html(&e.locale),
                escape_html(&e.files.join(", ")),
                links.join(" "),
                escape_html(&e.facts),
                warnings.join("")
            );
        }
        html.push_str("</table>\n</body></html>\n");
        std::fs::create_dir_all(&self.out)?;
        std::fs::write(self.out.join("index.html"), html)?;
        Ok(())
    }

    /// Renders everything, then again on every change, until `stop`.
    pub async fn watch(&self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(stop);
        let mut seen = None;
        loop {
            let now = fingerprint(&self.dir);
            if seen.as_ref() != Some(&now) {
                match self.all() {
                    Ok(n) => eprintln!("rendered {n} into {}", self.out.display()),
                    // A file half-written, a syntax error: said, and rendered again on the next change.
                    Err(e) => eprintln!("error: {e:#}"),
                }
                seen = Some(now);
            }
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// Every file under `dir`, with its size and modification time.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => folders.push(path),
                Ok(m) => out.push((path, m.len(), m.modified().ok())),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
