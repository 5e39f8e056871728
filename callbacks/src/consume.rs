//! The applier reads `tidings.callbacks` (its group `<prefix>-callbacks`)
//! and applies each record ([`Applier::apply`]); a record's offset is
//! stored and committed once it is applied, so a role killed at any moment
//! reads again what it had not finished, and applying again changes nothing
//! more.
//!
//! Records are read in batches of what is ready (up to [`BATCH`]); in a
//! batch, the records of one key (a notification, a number) are applied one
//! after another in their order, [`CONCURRENCY`] keys at once. A record that
//! is not a callback (written by something else) is logged, counted and
//! passed over.

use crate::apply::{Applier, Callback};
use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::channel::CALLBACKS_TOPIC;
use tidings_core::redact::printable;
use tidings_core::telemetry::Watched;
use tokio_util::sync::CancellationToken;

/// Records read and applied together, at most.
const BATCH: usize = 512;
/// Keys applied at once.
const CONCURRENCY: usize = 32;

/// One record read.
struct Read {
    partition: i32,
    offset: i64,
    callback: Result<Callback, String>,
}

/// Applies what `consumer` reads until `stop`, then commits what was applied.
pub async fn consume(applier: Arc<Applier>, consumer: StreamConsumer<Watched>, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            m = consumer.recv() => m,
        };
        let mut keys: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut groups: Vec<Vec<Read>> = Vec::new();
        let mut next = Some(first);
        let mut read = 0;
        while let Some(m) = next.take() {
            match m {
                Ok(m) => {
                    let key = m.key().unwrap_or_default().to_vec();
                    let callback = serde_json::from_slice(m.payload().unwrap_or_default()).map_err(|e| e.to_string());
                    let r = Read { partition: m.partition(), offset: m.offset(), callback };
                    let group = *keys.entry(key).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[group].push(r);
                    read += 1;
                }
                // The client recovers by itself (and logs through its context).
                Err(e) => {
                    tracing::debug!(error = %e, "reading callbacks");
                    if read == 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    break;
                }
            }
            if read < BATCH {
                // What is ready now, without waiting.
                next = tokio::time::timeout(Duration::ZERO, consumer.recv()).await.ok();
            }
        }
        if groups.is_empty() {
            continue;
        }
        // Each partition's highest offset read (the keys end in any order).
        let mut highest: HashMap<i32, i64> = HashMap::new();
        for r in groups.iter().flatten() {
            let offset = highest.entry(r.partition).or_insert(r.offset);
            *offset = (*offset).max(r.offset);
        }
        futures::stream::iter(groups)
            .for_each_concurrent(CONCURRENCY, |reads| {
                let applier = applier.clone();
                async move {
                    for r in reads {
                        match r.callback {
                            Ok(callback) => {
                                let by = format!("{CALLBACKS_TOPIC}/{}/{}", r.partition, r.offset);
                                applier.apply(callback, &by).await;
                            }
                            Err(e) => {
                                metrics::counter!("tidings_callbacks_applied_total", "provider" => "", "outcome" => "unreadable")
                                    .increment(1);
                                tracing::error!(partition = r.partition, offset = r.offset, error = %printable(&e), "a record of tidings.callbacks is not a callback: passed over");
                            }
                        }
                    }
                }
            })
            .await;
        // Every record of the batch is applied before any offset is stored.
        for (partition, offset) in highest {
            // A partition revoked meanwhile: its new owner applies it again, to no effect.
            if let Err(e) = consumer.store_offset(CALLBACKS_TOPIC, partition, offset) {
                tracing::debug!(error = %e, "offset not stored");
            }
        }
        // At once, not at the next auto-commit: a restart reads again as little as it can.
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
            tracing::debug!(error = %e, "offsets not committed yet");
        }
    }
    tidings_core::kafka::close(consumer, tidings_core::kafka::CLOSE_WITHIN).await;
}
