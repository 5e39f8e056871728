//! `tidings dlq list | inspect | replay`.
//!
//! `list` and `inspect` read dead-letter topics from the start without
//! joining a group or committing; `replay` is in [`replay`].

pub(crate) mod letters;
mod replay;

use crate::cli::{DlqCommand, LetterFilter};
use crate::fleet;
use chrono::Utc;
use letters::{Letter, Start};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use tidings_core::Config;

pub async fn run(command: DlqCommand, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List { from, filter, json } => list(&config, from.as_deref(), &filter, json).await?,
        DlqCommand::Inspect { what, from } => return inspect(&config, &what, from.as_deref()).await,
        DlqCommand::Replay { from, filter, dry_run, limit, rate } => {
            let store = fleet::open_store(&config).await?;
            replay::run(replay::Replay { from, filter, dry_run, limit, rate }, &config, store).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every letter of `topic`, from the beginning.
async fn read_all(config: &Config, topic: &str, start: Start) -> anyhow::Result<Vec<Letter>> {
    let consumer = letters::reader(config, topic, &start)?;
    let mut out = Vec::new();
    letters::read_to_end(&consumer, |l| {
        out.push(l);
        true
    })
    .await?;
    Ok(out)
}

/// How long ago a letter last failed, in a few bands.
fn age(letter: &Letter) -> &'static str {
    let Some(at) = letter.last_failure() else { return "unknown" };
    let hours = (Utc::now() - at).num_minutes() as f64 / 60.0;
    match hours {
        h if h < 1.0 => "< 1 h",
        h if h < 24.0 => "< 1 day",
        h if h < 24.0 * 7.0 => "< 1 week",
        _ => "older",
    }
}

/// `list`: counts grouped by source, error class, event type, error and age.
async fn list(config: &Config, from: Option<&str>, filter: &LetterFilter, json: bool) -> anyhow::Result<()> {
    let mut groups: BTreeMap<(String, String, String, String, &'static str), usize> = BTreeMap::new();
    for topic in letters::topics_of(from)? {
        for letter in read_all(config, &topic, Start::Beginning).await? {
            if !letter.matches(filter) {
                continue;
            }
            let (class, error) = match &letter.read {
                Ok(l) => (l.error_class.as_str().to_string(), l.error.chars().take(60).collect()),
                Err(e) => ("unreadable".to_string(), e.clone()),
            };
            let event_type = letter.event_type.clone().unwrap_or_else(|| "-".into());
            *groups.entry((letter.source().to_string(), class, event_type, error, age(&letter))).or_default() += 1;
        }
    }
    if json {
        for ((source, class, event_type, error, age), n) in &groups {
            let line = serde_json::json!({
                "from": source, "error_class": class, "event_type": event_type, "error": error, "age": age, "letters": n,
            });
            println!("{line}");
        }
        return Ok(());
    }
    println!("{:<8} {:<10} {:<28} {:<9} {:>7}  error", "from", "class", "event type", "age", "letters");
    // A letter's text came from outside (an event, a provider): printed as text.
    let shown = tidings_core::redact::printable;
    for ((source, class, event_type, error, age), n) in &groups {
        let (source, event_type, error) = (shown(source), shown(event_type), shown(error));
        println!("{source:<8} {class:<10} {event_type:<28} {age:<9} {n:>7}  {error}");
    }
    println!("{} dead letters", groups.values().sum::<usize>());
    Ok(())
}

/// `inspect`: every letter of a notification or event id, or the one at
/// `topic:partition:offset`, in full.
async fn inspect(config: &Config, what: &str, from: Option<&str>) -> anyhow::Result<ExitCode> {
    let place = what.rsplitn(3, ':').collect::<Vec<_>>();
    let found = match place.as_slice() {
        [offset, partition, topic] if offset.parse::<i64>().is_ok() && partition.parse::<i32>().is_ok() => {
            let start = Start::At(partition.parse()?, offset.parse()?);
            let mut one = Vec::new();
            let consumer = letters::reader(config, topic, &start)?;
            letters::read_to_end(&consumer, |l| {
                one.push(l);
                false
            })
            .await?;
            one
        }
        _ => {
            let filter = LetterFilter { id: Some(what.to_string()), ..LetterFilter::default() };
            let mut found = Vec::new();
            for topic in letters::topics_of(from)? {
                found.extend(
                    read_all(config, &topic, Start::Beginning).await?.into_iter().filter(|l| l.matches(&filter)),
                );
            }
            found
        }
    };
    if found.is_empty() {
        eprintln!("no dead letter of {what}");
        return Ok(ExitCode::FAILURE);
    }
    for letter in &found {
        println!("{}", serde_json::to_string_pretty(&describe(letter))?);
    }
    Ok(ExitCode::SUCCESS)
}

/// A letter in full, as JSON: where it is, the original record, every header, the failure.
fn describe(letter: &Letter) -> serde_json::Value {
    let text = |bytes: &Option<Vec<u8>>| bytes.as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
    let value = letter.value.as_deref().and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok());
    let headers: serde_json::Map<String, serde_json::Value> =
        letter.headers.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into())).collect();
    let failure = match &letter.read {
        Ok(l) => serde_json::json!({
            "original": format!("{}:{}:{}", l.original_topic, l.original_partition, l.original_offset),
            "error_class": l.error_class.as_str(),
            "error": l.error,
            "attempts": l.attempts,
            "providers_tried": l.providers_tried,
            "first_failure": l.first_failure,
            "last_failure": l.last_failure,
        }),
        Err(e) => serde_json::json!({ "unreadable": e }),
    };
    serde_json::json!({
        "letter": letter.place(),
        "key": text(&letter.key),
        "value": value.unwrap_or_else(|| text(&letter.value).into()),
        "headers": headers,
        "failure": failure,
    })
}
