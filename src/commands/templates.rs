//! `tidings templates check|render|preview`.

use crate::cli::TemplatesCommand;
use crate::commands::preview::Preview;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tidings_core::{Channel, Config};
use tidings_providers::Content;
use tidings_workers::render::{self, Renderer};

pub async fn run(command: TemplatesCommand, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let loaded = config.map(|c| Config::load(Some(c))).transpose()?;
    let dir_for = |dir: Option<PathBuf>| -> anyhow::Result<PathBuf> {
        Ok(match (dir, config) {
            (Some(d), _) => d,
            (None, Some(_)) => crate::fleet::templates_dir(loaded.as_ref().expect("loaded with the path")),
            (None, None) => PathBuf::from("templates"),
        })
    };
    match command {
        TemplatesCommand::Check { dir } => {
            let dir = dir_for(dir)?;
            let options = options(loaded.as_ref());
            let report = match render::check(&dir, &options) {
                Ok(report) => report,
                Err(render::RenderError::Failed { name, reason }) => {
                    // A template that does not compile: its file and line first.
                    let at = reason.split("\":").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("");
                    eprintln!("error: {}:{at} does not compile: {reason}", render::file_of(&name));
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            };
            for rendered in &report.rendered {
                println!("{rendered}");
            }
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            println!("{} renderings checked, {} errors", report.rendered.len(), report.errors.len());
            Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        TemplatesCommand::Render { template, channel, locale, data, dir, out } => {
            let dir = dir_for(dir)?;
            let data_path = data.unwrap_or_else(|| dir.join(&template).join("sample.json"));
            let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&data_path)?)?;
            if let Some(out) = out {
                let preview = Preview { dir, out, options: options(loaded.as_ref()), from: sender(loaded.as_ref()) };
                preview.single(&template, channel, &locale, data)?;
                println!("written to {}", preview.out.join("index.html").display());
                return Ok(ExitCode::SUCCESS);
            }
            let renderer = Renderer::load(&dir)?;
            let n = render::sample_notification(&template, channel, &locale, data);
            let rendering = renderer.render_reporting(&n)?;
            for value in &rendering.replaced {
                eprintln!("warning: link `{value}` is not http or https; it renders as #");
            }
            eprintln!("files: {}", rendering.files.join(", "));
            print!("{}", show(rendering.content, channel));
            Ok(ExitCode::SUCCESS)
        }
        TemplatesCommand::Preview { out, watch, dir } => {
            let preview =
                Preview { dir: dir_for(dir)?, out, options: options(loaded.as_ref()), from: sender(loaded.as_ref()) };
            if watch {
                preview.watch(crate::commands::terminated()).await?;
            } else {
                let n = preview.all()?;
                println!("{n} renderings: {}", preview.out.join("index.html").display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The checks' options, from the configuration when there is one.
fn options(config: Option<&Config>) -> render::CheckOptions {
    config.map(render::CheckOptions::from_config).unwrap_or_default()
}

/// The `From:` of previewed emails: the first email provider's.
fn sender(config: Option<&Config>) -> String {
    config
        .and_then(|c| {
            c.providers.values().find_map(|p| {
                let from = p.settings.get("from")?.as_str()?;
                matches!(p.kind.as_str(), "smtp" | "sendgrid").then(|| from.to_string())
            })
        })
        .unwrap_or_else(|| "Shop <no-reply@shop.example>".to_string())
}

fn show(content: Content, channel: Channel) -> String {
    match content {
        Content::Email { to, subject, text, html, .. } => {
            format!("To: {to}\nSubject: {subject}\n\n--- text ---\n{text}\n--- html ---\n{html}\n")
        }
        Content::Sms { to, body } => {
            format!("To: {to} ({} characters)\n{body}\n", body.chars().count())
        }
        Content::Push { title, body, .. } => format!("{title}\n{body}\n"),
        Content::Webhook { body, .. } => format!("{channel}: {body:#}\n"),
    }
}
