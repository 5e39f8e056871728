//! `tidings topics create|check|list`.
//!
//! Every topic has a kind (input, channel, status, DLQ) and each kind its
//! partitions, replication and retention in `[kafka.topics.<kind>]`.
//! `create` makes the topics that are missing with those settings and
//! leaves existing ones alone: adding partitions to a keyed topic moves
//! users to other partitions, which may reorder their messages, so that is
//! an operator's decision, taken with the topic drained. `check` reports
//! every difference between the cluster and the configuration and exits
//! non-zero when there is one.

use crate::cli::TopicsCommand;
use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::channel::{CALLBACKS_TOPIC, INTAKE_DLQ_TOPIC, STATUS_TOPIC};
use tidings_core::config::TopicSettings;
use tidings_core::{Channel, Config, Priority};

/// A topic as the configuration wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    /// `input`, `channel`, `status` or `dlq`.
    pub kind: &'static str,
    pub partitions: i32,
    pub replication: i32,
    pub retention_ms: i64,
}

/// Every topic of the configuration: Tidings' own and the input topics.
pub fn topics(config: &Config) -> Vec<String> {
    planned(config).into_iter().map(|p| p.name).collect()
}

/// Every topic of the configuration with the settings its kind has.
pub fn planned(config: &Config) -> Vec<Planned> {
    let kafka = &config.kafka;
    let kinds = &kafka.topics;
    let plan = |name: String, kind: &'static str, s: &TopicSettings| Planned {
        name,
        kind,
        partitions: s.partitions.unwrap_or(kafka.partitions),
        replication: s.replication_factor.unwrap_or(kafka.replication_factor),
        retention_ms: s.retention.as_millis().min(i64::MAX as u128) as i64,
    };
    let mut out = vec![plan(STATUS_TOPIC.to_string(), "status", &kinds.status)];
    out.push(plan(INTAKE_DLQ_TOPIC.to_string(), "dlq", &kinds.dlq));
    out.push(plan(CALLBACKS_TOPIC.to_string(), "callbacks", &kinds.callbacks));
    for channel in Channel::ALL {
        for priority in Priority::ALL {
            out.push(plan(channel.topic(priority), "channel", &kinds.channel));
        }
        out.push(plan(channel.dlq_topic(), "dlq", &kinds.dlq));
    }
    for input in &config.intake.topics {
        out.push(plan(input.clone(), "input", &kinds.input));
    }
    out
}

/// A topic as the cluster has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub partitions: i32,
    /// Replicas of its first partition.
    pub replication: i32,
    /// `retention.ms`, when the cluster told it.
    pub retention_ms: Option<i64>,
}

/// How `found` differs from `planned`: one line each; none when it matches.
/// Fewer partitions than planned is drift (it limits how many workers can
/// share the load); more is not (a topic grown on purpose).
pub fn drift(planned: &Planned, found: Option<&Found>) -> Vec<String> {
    let name = &planned.name;
    let Some(found) = found else {
        return vec![format!("{name}: missing ({} topic)", planned.kind)];
    };
    let mut out = Vec::new();
    if found.partitions < planned.partitions {
        out.push(format!("{name}: {} partitions, {} configured", found.partitions, planned.partitions));
    }
    if found.replication < planned.replication {
        out.push(format!("{name}: replication {}, {} configured", found.replication, planned.replication));
    }
    if let Some(retention) = found.retention_ms.filter(|r| *r != planned.retention_ms) {
        out.push(format!("{name}: retention {}, {} configured", human_ms(retention), human_ms(planned.retention_ms)));
    }
    out
}

fn human_ms(ms: i64) -> String {
    if ms < 0 {
        "forever".to_string()
    } else {
        humantime::format_duration(Duration::from_millis(ms as u64)).to_string()
    }
}

pub async fn run(command: TopicsCommand, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    match command {
        TopicsCommand::List => {
            for t in planned(&config) {
                println!("{}\t{}\t{} partitions\treplication {}", t.name, t.kind, t.partitions, t.replication);
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicsCommand::Create => create(&config, true).await,
        TopicsCommand::Check => {
            let found = describe(&config).await?;
            let problems: Vec<String> = planned(&config).iter().flat_map(|p| drift(p, found.get(&p.name))).collect();
            for p in &problems {
                println!("{p}");
            }
            if problems.is_empty() {
                println!("every topic matches the configuration");
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

fn admin(config: &Config) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(tidings_core::kafka::client_config(&config.kafka).create()?)
}

/// How long an admin request may take: a broker answers in milliseconds.
fn options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(Duration::from_secs(10)))
}

/// The create-topic requests for `planned`, `retention` holding each one's
/// `retention.ms` as text.
pub fn new_topics<'a>(planned: &'a [Planned], retention: &'a [String]) -> Vec<NewTopic<'a>> {
    planned
        .iter()
        .zip(retention)
        .map(|(p, retention)| {
            NewTopic::new(&p.name, p.partitions, TopicReplication::Fixed(p.replication)).set("retention.ms", retention)
        })
        .collect()
}

/// Creates what is missing; `report` prints each topic's fate (failures always go to stderr).
pub(super) async fn create(config: &Config, report: bool) -> anyhow::Result<ExitCode> {
    let admin = admin(config)?;
    let planned = planned(config);
    let retention: Vec<String> = planned.iter().map(|p| p.retention_ms.to_string()).collect();
    let new = new_topics(&planned, &retention);
    let mut failed = false;
    for result in admin.create_topics(&new, &options()).await? {
        match result {
            Ok(t) if report => println!("created {t}"),
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) if report => {
                println!("exists  {t} (left as it is; see `topics check`)")
            }
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => {
                eprintln!("failed  {t}: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Every topic of the cluster that the configuration names, as it is there.
pub async fn describe(config: &Config) -> anyhow::Result<HashMap<String, Found>> {
    let admin = admin(config)?;
    let metadata =
        admin.inner().fetch_metadata(None, Duration::from_secs(30)).context("cannot read the cluster's metadata")?;
    let wanted: Vec<String> = topics(config);
    let mut found: HashMap<String, Found> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && wanted.iter().any(|w| w == t.name()))
        .map(|t| {
            let replication = t.partitions().first().map_or(0, |p| p.replicas().len() as i32);
            (t.name().to_string(), Found { partitions: t.partitions().len() as i32, replication, retention_ms: None })
        })
        .collect();
    let names: Vec<String> = found.keys().cloned().collect();
    let specifiers: Vec<ResourceSpecifier> = names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
    if specifiers.is_empty() {
        return Ok(found);
    }
    match admin.describe_configs(&specifiers, &options()).await {
        Ok(results) => {
            for resource in results.into_iter().flatten() {
                let rdkafka::admin::OwnedResourceSpecifier::Topic(name) = &resource.specifier else { continue };
                let retention = resource.get("retention.ms").and_then(|e| e.value.as_deref()?.parse().ok());
                if let Some(f) = found.get_mut(name) {
                    f.retention_ms = retention;
                }
            }
        }
        // A cluster that does not describe configurations (librdkafka's mock
        // cluster among them): retention is not checked, and `check` says so.
        Err(e) => eprintln!("retention not checked: the cluster does not describe topic configurations ({e})"),
    }
    Ok(found)
}
