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
use tidings_providers::webhook::keys::EndpointKeys;

/// What the frequency caps hold for `user` at `now`, a line per cap and
/// channel that counts anything: how many it admitted in the window that
/// ends now, of how many it allows, and how many it holds for later; then
/// a line per digest window open for the user.
pub async fn limits(
    config: &Config,
    store: &dyn Store,
    user: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<String>> {
    let caps: Vec<(String, std::time::Duration)> = config.caps.iter().map(|(n, c)| (n.clone(), c.per)).collect();
    let counts = store.cap_counts(user, &caps, &tidings_core::Channel::ALL, now).await?;
    let lines = counts.into_iter().filter(|c| c.in_window + c.ahead > 0).map(|c| {
        let cap = &config.caps[&c.cap];
        let per = humantime::format_duration(cap.per);
        format!(
            "cap {} on {}: {} of {} in the last {per}, {} held for later",
            c.cap, c.channel, c.in_window, cap.max, c.ahead
        )
    });
    let mut lines: Vec<String> = lines.collect();
    for d in store.open_digests(user).await? {
        let closes = d.closes.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        lines.push(format!("digest {} window {}: {} items, released at {closes}", d.name, d.window, d.count));
    }
    Ok(lines)
}

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
            // Beside the preferences (stdout stays the JSON alone): where the user stands.
            for line in limits(&config, store.as_ref(), &user_id, chrono::Utc::now()).await? {
                eprintln!("{line}");
            }
        }
        PrefsCommand::WebhookSecret { user_id, rotate, overlap } => {
            if store.prefs_many(std::slice::from_ref(&user_id)).await?.pop().flatten().is_none() {
                anyhow::bail!("no preferences for user {user_id}");
            }
            let keys = if rotate {
                rotated(store.as_ref(), &user_id, overlap).await?
            } else {
                keys(store.as_ref(), &user_id).await?
            };
            for (which, key) in keys.printable(chrono::Utc::now()) {
                println!("{key}\t{which}");
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

/// `user`'s webhook keys, made and stored if the user has none yet.
async fn keys(store: &dyn Store, user: &str) -> anyhow::Result<EndpointKeys> {
    let stored = store.webhook_keys(user, &EndpointKeys::fresh().to_json()).await?;
    EndpointKeys::parse(&stored).map_err(|e| anyhow::anyhow!("user {user}: {e}"))
}

/// Gives `user` a new webhook key, the old one signing beside it for
/// `overlap`; a rotation that raced another is made again on top of it.
async fn rotated(store: &dyn Store, user: &str, overlap: std::time::Duration) -> anyhow::Result<EndpointKeys> {
    loop {
        let fresh = EndpointKeys::fresh().to_json();
        let stored = store.webhook_keys(user, &fresh).await?;
        // Unreadable keys sign nothing: a new one alone replaces them.
        let new = EndpointKeys::parse(&stored)
            .map_or_else(|_| EndpointKeys::fresh(), |k| k.rotated(chrono::Utc::now(), overlap));
        if store.swap_webhook_keys(user, &stored, &new.to_json()).await? {
            return Ok(new);
        }
    }
}
