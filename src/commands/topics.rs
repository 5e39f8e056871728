//! `tidings topics create|list`.

use crate::cli::TopicsCommand;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::process::ExitCode;
use std::sync::Arc;
use tidings_core::channel::all_topics;
use tidings_core::Config;

/// Every topic of the configuration: Tidings' own and the input topics.
pub fn topics(config: &Config) -> Vec<String> {
    let mut t = all_topics();
    t.extend(config.intake.topics.iter().cloned());
    t
}

pub async fn run(command: TopicsCommand, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    match command {
        TopicsCommand::List => {
            for t in topics(&config) {
                println!("{t}");
            }
        }
        TopicsCommand::Create => {
            let admin: AdminClient<DefaultClientContext> =
                tidings_core::kafka::client_config(&config.kafka).create()?;
            let names = topics(&config);
            let new: Vec<NewTopic> = names
                .iter()
                .map(|t| {
                    NewTopic::new(t, config.kafka.partitions, TopicReplication::Fixed(config.kafka.replication_factor))
                })
                .collect();
            let mut failed = false;
            for result in admin.create_topics(&new, &AdminOptions::new()).await? {
                match result {
                    Ok(t) => println!("created {t}"),
                    Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => println!("exists  {t}"),
                    Err((t, e)) => {
                        eprintln!("failed  {t}: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
