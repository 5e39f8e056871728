//! `tidings topics create` and `check` against a cluster's metadata.
//!
//! librdkafka's mock cluster answers metadata but has no admin API (its
//! CreateTopics and DescribeConfigs time out). Covered here: `check` against
//! the mock's metadata (missing topics, too few partitions, replication),
//! the drift rules (retention too), and the create requests `create` sends.
//! Not covered: a real broker taking those requests and describing retention.

use std::process::Command;
use tidings::commands::topics::{self, drift, Found};
use tidings::embedded::EmbeddedKafka;
use tidings_core::Config;

fn config(kafka: &EmbeddedKafka) -> Config {
    let mut config = Config::from_toml(&crate::harness::example_toml()).unwrap();
    config.kafka.bootstrap_servers = kafka.bootstrap_servers().to_string();
    config.kafka.partitions = 3;
    config.kafka.replication_factor = 1;
    config.kafka.topics.dlq.partitions = Some(2);
    config
}

/// `tidings topics <what>` against `kafka`: exit code and what it printed.
fn topics_command(kafka: &EmbeddedKafka, what: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["topics", what])
        .env("TIDINGS_CONFIG", concat!(env!("CARGO_MANIFEST_DIR"), "/tidings.example.toml"))
        .env("TIDINGS_KAFKA__BOOTSTRAP_SERVERS", kafka.bootstrap_servers())
        .env("TIDINGS_KAFKA__PARTITIONS", "3")
        .env("TIDINGS_KAFKA__REPLICATION_FACTOR", "1")
        .env("TIDINGS_KAFKA__TOPICS__DLQ__PARTITIONS", "2")
        .env("TIDINGS_KAFKA__TOPICS__DLQ__RETENTION", "30d")
        .env("TIDINGS_LOG", "error")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn check_reports_missing_topics_and_too_few_partitions() {
    let kafka = EmbeddedKafka::start(1).unwrap();
    let config = config(&kafka);
    let planned = topics::planned(&config);
    let status = planned.iter().find(|p| p.name == "tidings.status").unwrap();
    assert_eq!((status.kind, status.partitions, status.replication), ("status", 3, 1));
    let dlq = planned.iter().find(|p| p.name == "tidings.email.dlq").unwrap();
    assert_eq!((dlq.kind, dlq.partitions, dlq.retention_ms), ("dlq", 2, 30 * 86_400_000));

    // Nothing yet: every topic is missing, and check fails.
    let (code, said) = topics_command(&kafka, "check");
    assert_eq!(code, 1, "{said}");
    for p in &planned {
        assert!(said.contains(&format!("{}: missing ({} topic)", p.name, p.kind)), "{said}");
    }

    // Every topic made as planned, but one with too few partitions.
    for p in &planned {
        let partitions = if p.name == "tidings.sms.bulk" { 1 } else { p.partitions };
        kafka.create_topic(&p.name, partitions).unwrap();
    }
    let found = topics::describe(&config).await.unwrap();
    assert_eq!(found.len(), planned.len(), "every topic exists");
    assert_eq!(found["tidings.sms.bulk"].partitions, 1);
    assert_eq!(found["tidings.email.dlq"].partitions, 2);
    assert_eq!(found["tidings.email.normal"].replication, 1);

    // Only the topic with too few partitions differs; retention is not described by the mock, and check says so.
    let (code, said) = topics_command(&kafka, "check");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("tidings.sms.bulk: 1 partitions, 3 configured"), "{said}");
    assert!(said.contains("retention not checked"), "{said}");
    assert!(!said.contains("missing"), "{said}");
    assert_eq!(said.lines().filter(|l| l.starts_with("tidings.") || l.contains(".events")).count(), 1, "{said}");
}

/// What `create` asks the cluster for: each topic with its kind's partitions, replication and retention.
#[test]
fn create_asks_for_each_kinds_settings() {
    let mut config = Config::from_toml("[kafka]\nbootstrap_servers = \"k:9092\"\n").unwrap();
    config.kafka.topics.channel.partitions = Some(24);
    let planned = topics::planned(&config);
    let retention: Vec<String> = planned.iter().map(|p| p.retention_ms.to_string()).collect();
    let new = topics::new_topics(&planned, &retention);
    let asked = |name: &str| new.iter().find(|t| t.name == name).unwrap();
    let critical = asked("tidings.email.critical");
    assert_eq!(critical.num_partitions, 24);
    assert!(matches!(critical.replication, rdkafka::admin::TopicReplication::Fixed(3)));
    assert_eq!(critical.config, vec![("retention.ms", "604800000")]);
    let dlq = asked("tidings.intake.dlq");
    assert_eq!((dlq.num_partitions, dlq.config.clone()), (12, vec![("retention.ms", "2592000000")]));
    assert_eq!(asked("orders.events").num_partitions, 12, "input topics have the input kind's settings");
}

#[test]
fn drift_names_each_difference() {
    let config = Config::from_toml("[kafka]\nbootstrap_servers = \"k:9092\"\n").unwrap();
    let planned = topics::planned(&config);
    let status = planned.iter().find(|p| p.name == "tidings.status").unwrap();
    let week = 7 * 86_400_000;
    let same = Found { partitions: 12, replication: 3, retention_ms: Some(week) };
    assert!(drift(status, Some(&same)).is_empty());
    assert!(drift(status, Some(&Found { partitions: 24, ..same.clone() })).is_empty(), "more partitions is a choice");
    let worse = Found { partitions: 6, replication: 1, retention_ms: Some(3_600_000) };
    assert_eq!(
        drift(status, Some(&worse)),
        vec![
            "tidings.status: 6 partitions, 12 configured",
            "tidings.status: replication 1, 3 configured",
            "tidings.status: retention 1h, 7days configured",
        ]
    );
    assert_eq!(drift(status, None), vec!["tidings.status: missing (status topic)"]);
}
