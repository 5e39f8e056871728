//! `tidings templates check|render`.

use crate::cli::TemplatesCommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tidings_core::{Channel, Config};
use tidings_providers::Content;
use tidings_workers::render::{self, Renderer};

pub fn run(command: TemplatesCommand, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let dir_for = |dir: Option<PathBuf>| -> anyhow::Result<PathBuf> {
        Ok(match (dir, config) {
            (Some(d), _) => d,
            (None, Some(c)) => crate::fleet::templates_dir(&Config::load(Some(c))?),
            (None, None) => PathBuf::from("templates"),
        })
    };
    match command {
        TemplatesCommand::Check { dir } => {
            let dir = dir_for(dir)?;
            let options = match config {
                Some(c) => render::CheckOptions::from_config(&Config::load(Some(c))?),
                None => render::CheckOptions::default(),
            };
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
        TemplatesCommand::Render { template, channel, locale, data, dir } => {
            let dir = dir_for(dir)?;
            let data_path = data.unwrap_or_else(|| dir.join(&template).join("sample.json"));
            let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&data_path)?)?;
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
    }
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
