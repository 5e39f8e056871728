//! Channels, priorities and the Kafka topics named after them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A way of reaching a user. One worker deployment serves one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Email, Channel::Sms, Channel::Push, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Webhook => "webhook",
        }
    }

    /// `tidings.<channel>.<priority>`: where intake routes this channel's notifications.
    pub fn topic(self, priority: Priority) -> String {
        ["tidings.", self.as_str(), ".", priority.as_str()].concat()
    }

    /// `tidings.<channel>.dlq`: where this channel's workers dead-letter.
    pub fn dlq_topic(self) -> String {
        format!("tidings.{}.dlq", self.as_str())
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown channel `{s}` (expected email, sms, push or webhook)"))
    }
}

/// How urgently a notification goes out. Each priority has its own topic so that
/// a bulk backlog never sits in front of a password reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Bypasses quiet hours; falls back to other channels when its own is down.
    Critical,
    Normal,
    Bulk,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Critical, Priority::Normal, Priority::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Normal => "normal",
            Priority::Bulk => "bulk",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status topic: one record per outcome, keyed by user id.
pub const STATUS_TOPIC: &str = "tidings.status";
/// Poison input that intake could not turn into notifications.
pub const INTAKE_DLQ_TOPIC: &str = "tidings.intake.dlq";
/// Provider callbacks, written before they are answered and applied from
/// there; keyed by what each is about (a notification, a number).
pub const CALLBACKS_TOPIC: &str = "tidings.callbacks";

/// Every topic Tidings writes to, for `tidings topics create` and `tidings dev`.
pub fn all_topics() -> Vec<String> {
    let mut topics = vec![STATUS_TOPIC.to_string(), INTAKE_DLQ_TOPIC.to_string(), CALLBACKS_TOPIC.to_string()];
    for channel in Channel::ALL {
        topics.extend(Priority::ALL.iter().map(|p| channel.topic(*p)));
        topics.push(channel.dlq_topic());
    }
    topics
}
