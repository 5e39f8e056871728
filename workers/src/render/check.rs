//! `tidings templates check`: every template folder with a `sample.json`
//! renders every channel and locale variant it has, strictly.

use super::{parts, Renderer};
use std::path::Path;
use tidings_core::{Channel, Notification, Priority, Recipient};

#[derive(Debug, Default)]
pub struct CheckReport {
    /// (template, channel, locale) combinations that rendered.
    pub rendered: Vec<String>,
    /// What failed, one line each.
    pub errors: Vec<String>,
}

/// Renders every template under `dir` with its sample data.
pub fn check(dir: &Path) -> Result<CheckReport, super::RenderError> {
    let renderer = Renderer::load(dir)?;
    let mut report = CheckReport::default();
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
                        for value in rendering.replaced {
                            report.errors.push(format!(
                                "{name} {channel} {locale}: link `{value}` is not http or https; it renders as #"
                            ));
                        }
                        report.rendered.push(format!("{name} {channel} {locale}"))
                    }
                    Err(e) => report.errors.push(format!("{name} {channel} {locale}: {e}")),
                }
            }
        }
        if channels == 0 {
            report.errors.push(format!("{name}: no channel templates"));
        }
    }
    Ok(report)
}

/// `en` plus every language that has a variant file in `folder`.
fn locales(folder: &Path) -> Vec<String> {
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
