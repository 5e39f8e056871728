//! Dead-letter records: the original key, value and headers unchanged, plus
//! headers that say where the record came from and why it could not be
//! delivered. Intake, the scheduler and the workers all write them through
//! [`DeadLetter`], and `tidings dlq` reads them back with [`DeadLetter::read`].

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

/// Every header a dead letter adds; a record's own headers never start so.
const PREFIX: &str = "dlq_";

/// On a record `tidings dlq replay` sent back: the letter it came from,
/// `<dead-letter topic>:<partition>:<offset>`.
pub const REPLAYED_FROM: &str = "tidings_replayed_from";

/// The original "topic" of a dead letter that came off the deferral schedule
/// in Redis rather than from a Kafka topic; such a letter is not replayed.
pub const SCHEDULE: &str = "tidings:schedule";

/// Everything a dead-letter record says about its failure.
#[derive(Debug, Clone, PartialEq)]
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
    /// The original record's headers (`correlation_id`, `traceparent`,
    /// CloudEvents attributes in binary mode), carried unchanged.
    pub original_headers: Vec<(String, Vec<u8>)>,
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
            original_headers: Vec::new(),
        }
    }

    /// The letter, carrying the original record's `headers`.
    pub fn with_headers(mut self, headers: &[(String, Vec<u8>)]) -> Self {
        self.original_headers = headers.iter().filter(|(k, _)| !k.starts_with(PREFIX)).cloned().collect();
        self
    }

    /// Every header of the record: the original's, then the letter's own.
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        let own = [
            (ORIGINAL_TOPIC, self.original_topic.clone()),
            (ORIGINAL_PARTITION, self.original_partition.to_string()),
            (ORIGINAL_OFFSET, self.original_offset.to_string()),
            (ERROR_CLASS, self.error_class.as_str().to_string()),
            (ERROR, self.error.clone()),
            (ATTEMPTS, self.attempts.to_string()),
            (PROVIDERS_TRIED, self.providers_tried.join(",")),
            (FIRST_FAILURE, self.first_failure.to_rfc3339()),
            (LAST_FAILURE, self.last_failure.to_rfc3339()),
        ];
        let mut out = self.original_headers.clone();
        out.extend(own.into_iter().map(|(k, v)| (k.to_string(), v.into_bytes())));
        out
    }

    /// The letter a record's `headers` describe, as [`headers`](Self::headers)
    /// wrote it; or what is missing or unreadable.
    pub fn read(headers: &[(String, Vec<u8>)]) -> Result<DeadLetter, String> {
        let text = |name: &str| -> Result<&str, String> {
            let (_, value) = headers.iter().find(|(k, _)| k == name).ok_or_else(|| format!("no {name} header"))?;
            std::str::from_utf8(value).map_err(|_| format!("header {name} is not UTF-8"))
        };
        let parsed = |name: &str| -> Result<i64, String> {
            text(name)?.parse().map_err(|_| format!("header {name} is not a number"))
        };
        let time = |name: &str| -> Result<DateTime<Utc>, String> {
            let value = text(name)?;
            DateTime::parse_from_rfc3339(value)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("header {name} is not an RFC 3339 time"))
        };
        Ok(DeadLetter {
            original_topic: text(ORIGINAL_TOPIC)?.to_string(),
            original_partition: parsed(ORIGINAL_PARTITION)? as i32,
            original_offset: parsed(ORIGINAL_OFFSET)?,
            error_class: text(ERROR_CLASS)?.parse()?,
            error: text(ERROR)?.to_string(),
            attempts: parsed(ATTEMPTS)?.max(0) as u32,
            providers_tried: text(PROVIDERS_TRIED)?.split(',').filter(|p| !p.is_empty()).map(str::to_string).collect(),
            first_failure: time(FIRST_FAILURE)?,
            last_failure: time(LAST_FAILURE)?,
            original_headers: Vec::new(),
        }
        .with_headers(headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_reads_back_as_written_with_the_original_headers() {
        let now: DateTime<Utc> = "2026-11-27T10:00:00Z".parse().unwrap();
        let mut letter = DeadLetter::poison("tidings.email.normal", 3, 42, "bad".into(), now)
            .with_headers(&[("correlation_id".into(), b"c-1".to_vec()), ("dlq_error".into(), b"old".to_vec())]);
        letter.providers_tried = vec!["smtp".into(), "sendgrid".into()];
        letter.attempts = 4;
        let headers = letter.headers();
        assert_eq!(
            headers[0],
            ("correlation_id".to_string(), b"c-1".to_vec()),
            "an older letter's own headers are not carried"
        );
        assert_eq!(DeadLetter::read(&headers).unwrap(), letter);

        let without: Vec<_> = headers.iter().filter(|(k, _)| k != ATTEMPTS).cloned().collect();
        assert_eq!(DeadLetter::read(&without).unwrap_err(), "no dlq_attempts header");
        let mut odd = headers.clone();
        odd.iter_mut().find(|(k, _)| k == ERROR_CLASS).unwrap().1 = b"weird".to_vec();
        assert!(DeadLetter::read(&odd).unwrap_err().contains("unknown error class `weird`"));
    }
}
