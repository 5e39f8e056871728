//! Dead-letter records: the original key and value unchanged, plus headers
//! that say where the record came from and why it could not be delivered.

use crate::status::{cut_reason, ErrorClass};
use chrono::{DateTime, Utc};

pub const ORIGINAL_TOPIC: &str = "dlq_original_topic";
pub const ORIGINAL_PARTITION: &str = "dlq_original_partition";
pub const ORIGINAL_OFFSET: &str = "dlq_original_offset";
pub const ERROR_CLASS: &str = "dlq_error_class";
pub const ERROR: &str = "dlq_error";
pub const ATTEMPTS: &str = "dlq_attempts";
pub const PROVIDERS_TRIED: &str = "dlq_providers_tried";
pub const FIRST_FAILURE: &str = "dlq_first_failure_at";
pub const LAST_FAILURE: &str = "dlq_last_failure_at";

/// The original "topic" of a dead letter that came off the deferral schedule
/// in Redis rather than from a Kafka topic; such a letter is not replayed.
pub const SCHEDULE: &str = "tidings:schedule";

/// Everything a dead-letter record says about its failure.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    pub error_class: ErrorClass,
    pub error: String,
    pub attempts: u32,
    pub providers_tried: Vec<String>,
    pub first_failure: DateTime<Utc>,
    pub last_failure: DateTime<Utc>,
}

impl DeadLetter {
    /// Input that cannot be read: one attempt, no provider, failing now; the
    /// reason cut as a status's is.
    pub fn poison(original_topic: &str, partition: i32, offset: i64, error: String, now: DateTime<Utc>) -> Self {
        DeadLetter {
            original_topic: original_topic.to_string(),
            original_partition: partition,
            original_offset: offset,
            error_class: ErrorClass::Poison,
            error: cut_reason(error),
            attempts: 1,
            providers_tried: Vec::new(),
            first_failure: now,
            last_failure: now,
        }
    }

    /// The headers, as (name, value) pairs.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (ORIGINAL_TOPIC, self.original_topic.clone()),
            (ORIGINAL_PARTITION, self.original_partition.to_string()),
            (ORIGINAL_OFFSET, self.original_offset.to_string()),
            (ERROR_CLASS, self.error_class.as_str().to_string()),
            (ERROR, self.error.clone()),
            (ATTEMPTS, self.attempts.to_string()),
            (PROVIDERS_TRIED, self.providers_tried.join(",")),
            (FIRST_FAILURE, self.first_failure.to_rfc3339()),
            (LAST_FAILURE, self.last_failure.to_rfc3339()),
        ]
    }
}
