//! Where a benchmark runs: librdkafka's mock cluster in the process, or an
//! external cluster (`--brokers host:port`), on which the benchmark makes
//! its topics for the run and removes them after.
//!
//! The topics' names are Tidings' own (`tidings.email.normal`, …), so an
//! external cluster must not hold them already: the benchmark refuses to
//! start rather than mix its records with anyone's, or delete them after.
//! Point it at a cluster kept for testing.

use crate::embedded::EmbeddedKafka;
use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::time::{Duration, Instant};

pub enum BenchCluster {
    Mock(EmbeddedKafka),
    External { bootstrap: String, topics: Vec<String> },
}

impl BenchCluster {
    /// The mock cluster, or `brokers`; with `topics` made, of `partitions`
    /// partitions each (`replication` replicas on an external cluster).
    pub async fn start(
        brokers: Option<&str>,
        topics: &[String],
        partitions: i32,
        replication: i32,
    ) -> anyhow::Result<Self> {
        let Some(bootstrap) = brokers else {
            let kafka = EmbeddedKafka::start(1).map_err(|e| anyhow::anyhow!("mock cluster: {e}"))?;
            for topic in topics {
                kafka.create_topic(topic, partitions).map_err(|e| anyhow::anyhow!("create {topic}: {e}"))?;
            }
            return Ok(BenchCluster::Mock(kafka));
        };
        let admin = admin(bootstrap)?;
        let present = existing(&admin, topics)?;
        anyhow::ensure!(
            present.is_empty(),
            "the cluster at {bootstrap} already has {} of the benchmark's topics ({}): the benchmark makes its own \
             and removes them after, so it runs only on a cluster without them",
            present.len(),
            present.join(", ")
        );
        let new: Vec<NewTopic> =
            topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication))).collect();
        for result in admin.create_topics(&new, &options()).await? {
            result.map_err(|(t, e)| anyhow::anyhow!("cannot create {t} on {bootstrap}: {e}"))?;
        }
        let cluster = BenchCluster::External { bootstrap: bootstrap.to_string(), topics: topics.to_vec() };
        // Created is not yet known to every broker: wait until the metadata lists every partition.
        let deadline = Instant::now() + Duration::from_secs(60);
        while existing(&admin, topics)?.len() < topics.len() {
            anyhow::ensure!(Instant::now() < deadline, "the topics made on {bootstrap} did not appear within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(cluster)
    }

    pub fn bootstrap_servers(&self) -> String {
        match self {
            BenchCluster::Mock(kafka) => kafka.bootstrap_servers().to_string(),
            BenchCluster::External { bootstrap, .. } => bootstrap.clone(),
        }
    }

    /// What the figures were measured on.
    pub fn describe(&self) -> String {
        match self {
            BenchCluster::Mock(_) => "librdkafka's mock cluster".to_string(),
            BenchCluster::External { bootstrap, .. } => format!("the cluster at {bootstrap}"),
        }
    }

    /// Removes the topics the benchmark made (an external cluster's), and
    /// waits until they are gone, so that the next run can make them again.
    pub async fn remove(self) -> anyhow::Result<()> {
        let BenchCluster::External { bootstrap, topics } = self else { return Ok(()) };
        let admin = admin(&bootstrap)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        for result in admin.delete_topics(&names, &options()).await? {
            match result {
                // Gone already is what was asked (tansu's SQLite storage answers so for an empty topic).
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((t, e)) => anyhow::bail!("cannot remove {t} from {bootstrap}: {e}"),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !existing(&admin, &topics)?.is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "the benchmark's topics were not removed within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

fn admin(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new().set("bootstrap.servers", bootstrap).create()?)
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))).request_timeout(Some(Duration::from_secs(30)))
}

/// Which of `topics` the cluster lists, with partitions.
fn existing(admin: &AdminClient<DefaultClientContext>, topics: &[String]) -> anyhow::Result<Vec<String>> {
    let metadata =
        admin.inner().fetch_metadata(None, Duration::from_secs(30)).context("cannot read the cluster's metadata")?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty() && topics.iter().any(|w| w == t.name()))
        .map(|t| t.name().to_string())
        .collect())
}
