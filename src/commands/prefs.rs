//! `tidings prefs set|get|import|webhook-secret`: preferences are validated
//! before anything is written; an invalid user is reported and nothing is
//! written for it. What is stored is the JSON as it was written, fields
//! Tidings does not use included.

use crate::cli::PrefsCommand;
use crate::fleet;
use std::process::ExitCode;
use std::sync::Arc;
use tidings_core::store::Store;
use tidings_core::{Config, Preferences};
use tidings_providers::registry::settings;
use tidings_providers::webhook::config::WebhookConfig;
use tidings_providers::webhook::keys;

pub async fn run(command: PrefsCommand, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    let store = fleet::open_store(&config).await?;
    match command {
        PrefsCommand::Set { json } => {
            let prefs = Preferences::parse(&json).map_err(|e| anyhow::anyhow!("rejected: {e}"))?;
            store.set_prefs(&prefs.user_id, json.trim()).await?;
            println!("stored preferences of {}", prefs.user_id);
        }
        PrefsCommand::Get { user_id } => {
            match store.prefs_many(std::slice::from_ref(&user_id)).await?.pop().flatten() {
                Some(json) => println!("{json}"),
                None => anyhow::bail!("no preferences for user {user_id}"),
            }
        }
        PrefsCommand::WebhookSecret { user_id } => {
            let Some(json) = store.prefs_many(std::slice::from_ref(&user_id)).await?.pop().flatten() else {
                anyhow::bail!("no preferences for user {user_id}");
            };
            let prefs = Preferences::parse(&json).map_err(|e| anyhow::anyhow!("stored preferences: {e}"))?;
            let Some(url) = prefs.webhook_url else { anyhow::bail!("user {user_id} has no webhook URL") };
            let mut printed = false;
            for (name, section) in config.providers.iter().filter(|(_, p)| p.kind == "webhook") {
                let c: WebhookConfig = settings(name, section)?;
                let secrets = keys::endpoint_secrets(&c, &url).map_err(|e| anyhow::anyhow!("providers.{name}: {e}"))?;
                for (i, secret) in secrets.iter().enumerate() {
                    let which = match (i, c.previous_until) {
                        (0, _) => "current".to_string(),
                        (_, Some(until)) => format!("previous, signs until {}", until.to_rfc3339()),
                        _ => "previous".to_string(),
                    };
                    println!("{name}\t{secret}\t{which}");
                }
                printed = true;
            }
            if !printed {
                anyhow::bail!("no webhook provider is configured");
            }
        }
        PrefsCommand::Import { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let (stored, rejected) = import(store.as_ref(), &text).await?;
            for r in &rejected {
                eprintln!("rejected {r}");
            }
            println!("stored {stored} users, rejected {}", rejected.len());
            if !rejected.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Stores every valid line of `text`; returns how many, and a reason per rejected line.
pub async fn import(store: &dyn Store, text: &str) -> anyhow::Result<(usize, Vec<String>)> {
    let mut stored = 0;
    let mut rejected = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match Preferences::parse(line) {
            Ok(p) => {
                store.set_prefs(&p.user_id, line.trim()).await?;
                stored += 1;
            }
            Err(e) => rejected.push(format!("line {}: {e}", i + 1)),
        }
    }
    Ok((stored, rejected))
}
