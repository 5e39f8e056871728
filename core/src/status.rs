//! The status record on `tidings.status` (key = user id). Every notification
//! ends in exactly one terminal state; `deferred` precedes the terminal record
//! and `duplicate` is added by each redelivered or replayed copy.

use crate::{Channel, Notification, Priority};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Sent,
    Suppressed,
    Deferred,
    FailedOver,
    DeadLettered,
    Duplicate,
    /// The provider may or may not have taken it: the request was written and
    /// no answer came. Under `at_most_once` this ends the notification, with
    /// the reason, instead of risking a second copy.
    Unconfirmed,
    /// Feedback after `sent`, from the provider's callback: it reached the
    /// handset or the receiving mail server.
    Delivered,
    /// Feedback: the mail server refused it (hard or soft; `error` says which).
    Bounced,
    /// Feedback: the recipient marked it as spam.
    Complained,
    /// Feedback: the SMS could not be delivered (failed, expired, rejected).
    Undelivered,
}

impl State {
    pub const ALL: [State; 11] = [
        State::Sent,
        State::Suppressed,
        State::Deferred,
        State::FailedOver,
        State::DeadLettered,
        State::Duplicate,
        State::Unconfirmed,
        State::Delivered,
        State::Bounced,
        State::Complained,
        State::Undelivered,
    ];

    /// Terminal states end a notification; there is exactly one per
    /// notification. Feedback comes after its `sent` and ends nothing.
    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Deferred | State::Duplicate) && !self.is_feedback()
    }

    /// What a provider said later, through the callbacks role: one record
    /// per notification and state, after the notification's `sent`.
    pub fn is_feedback(self) -> bool {
        matches!(self, State::Delivered | State::Bounced | State::Complained | State::Undelivered)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Sent => "sent",
            State::Suppressed => "suppressed",
            State::Deferred => "deferred",
            State::FailedOver => "failed_over",
            State::DeadLettered => "dead_lettered",
            State::Duplicate => "duplicate",
            State::Unconfirmed => "unconfirmed",
            State::Delivered => "delivered",
            State::Bounced => "bounced",
            State::Complained => "complained",
            State::Undelivered => "undelivered",
        }
    }
}

/// Why something failed, in the words operators filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The message can never succeed (invalid recipient, rejected content).
    Permanent,
    /// Every retry and provider was tried.
    Exhausted,
    /// The input could not be decoded or routed.
    Poison,
    /// The template could not be rendered (missing variable, syntax).
    Render,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 4] =
        [ErrorClass::Permanent, ErrorClass::Exhausted, ErrorClass::Poison, ErrorClass::Render];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Permanent => "permanent",
            ErrorClass::Exhausted => "exhausted",
            ErrorClass::Poison => "poison",
            ErrorClass::Render => "render",
        }
    }
}

impl std::str::FromStr for ErrorClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ErrorClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown error class `{s}` (one of permanent, exhausted, poison, render)"))
    }
}

/// How the reason of an event collected into a digest starts.
pub const DIGESTED_PREFIX: &str = "digested";

/// How the reason of a notification dropped over a frequency cap starts.
pub const FREQUENCY_CAP_PREFIX: &str = "frequency cap";

/// The class of a status record's reason ([`StatusRecord::reason`]): a
/// bounded label for metrics, where the reason itself is free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No reason: sent, deferred, a duplicate.
    None,
    /// The user's preferences: muted, opted out of the category, channel disabled.
    Preferences,
    /// The user has no address for the channel.
    NoAddress,
    /// The user has no usable preferences.
    NoPreferences,
    /// The event's type has no route (`intake.unknown_types = "suppress"`).
    UnknownType,
    /// The address is on the suppression list.
    SuppressionList,
    /// Over a frequency cap whose category drops.
    FrequencyCap,
    /// Collected into a digest, which is sent instead.
    Digested,
    Permanent,
    Exhausted,
    Poison,
    Render,
    Other,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::None,
        Reason::Preferences,
        Reason::NoAddress,
        Reason::NoPreferences,
        Reason::UnknownType,
        Reason::SuppressionList,
        Reason::FrequencyCap,
        Reason::Digested,
        Reason::Permanent,
        Reason::Exhausted,
        Reason::Poison,
        Reason::Render,
        Reason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::Preferences => "preferences",
            Reason::NoAddress => "no_address",
            Reason::NoPreferences => "no_preferences",
            Reason::UnknownType => "unknown_type",
            Reason::SuppressionList => "suppression_list",
            Reason::FrequencyCap => "frequency_cap",
            Reason::Digested => "digested",
            Reason::Permanent => "permanent",
            Reason::Exhausted => "exhausted",
            Reason::Poison => "poison",
            Reason::Render => "render",
            Reason::Other => "other",
        }
    }
}

/// The status in a notification's dedupe record (`{"status": …, …}`, as
/// a worker writes it once the notification has an outcome); `None` for a
/// claim or anything else.
pub fn recorded_status(record: &str) -> Option<StatusRecord> {
    #[derive(Deserialize)]
    struct Recorded {
        status: StatusRecord,
    }
    serde_json::from_str::<Recorded>(record).ok().map(|r| r.status)
}

/// The longest reason a status record carries, in characters.
pub const MAX_ERROR_CHARS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub notification_id: String,
    pub event_id: String,
    pub event_type: String,
    pub user_id: String,
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// The notification's priority (records written before it was carried have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// Feedback: the provider's own code (`30005`, `5.1.1`, `err-code 3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// A reason for people: why it was suppressed, dead-lettered or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// For `failed_over`: the notification on the next channel that carries on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_notification_id: Option<String>,
    /// When the notification was created by intake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// When this outcome happened.
    pub at: DateTime<Utc>,
    /// The event's correlation id (its `correlationid`, else its id), on
    /// every record of every notification it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The W3C trace id the notification's spans share (see [`crate::trace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl StatusRecord {
    /// A record about `notification` in `state`; fill the other fields with the builders.
    pub fn of(notification: &Notification, state: State, at: DateTime<Utc>) -> Self {
        StatusRecord {
            notification_id: notification.notification_id.clone(),
            event_id: notification.event_id.clone(),
            event_type: notification.event_type.clone(),
            user_id: notification.user_id.clone(),
            state,
            channel: Some(notification.channel),
            priority: Some(notification.priority),
            provider: None,
            provider_message_id: None,
            provider_code: None,
            attempts: notification.attempt,
            error_class: None,
            error: None,
            not_before: notification.not_before,
            fallback_notification_id: None,
            created_at: Some(notification.created_at),
            at,
            correlation_id: None,
            trace_id: None,
        }
    }

    /// Sets the correlation id and the trace id of the hop that wrote it.
    pub fn traced(mut self, correlation_id: &str, hop: &crate::trace::Hop) -> Self {
        self.correlation_id = Some(correlation_id.to_string());
        self.trace_id = Some(hop.trace_id());
        self
    }

    /// The class of why it ended as it did, for metrics: its error class,
    /// or for a suppression the kind of reason it gives.
    pub fn reason(&self) -> Reason {
        match (self.error_class, self.state) {
            (Some(ErrorClass::Permanent), _) => Reason::Permanent,
            (Some(ErrorClass::Exhausted), _) => Reason::Exhausted,
            (Some(ErrorClass::Poison), _) => Reason::Poison,
            (Some(ErrorClass::Render), _) => Reason::Render,
            (None, State::Suppressed) => {
                let said = self.error.as_deref().unwrap_or_default();
                let preferences = ["user is muted", "user opted out", "user disabled", "user has none of"];
                if preferences.iter().any(|p| said.starts_with(p)) {
                    Reason::Preferences
                } else if said.starts_with("user has no") {
                    Reason::NoAddress
                } else if said.starts_with("no preferences") || said.starts_with("stored preferences") {
                    Reason::NoPreferences
                } else if said.starts_with("unknown event type") {
                    Reason::UnknownType
                } else if said.starts_with(DIGESTED_PREFIX) {
                    Reason::Digested
                } else if said.starts_with(FREQUENCY_CAP_PREFIX) {
                    Reason::FrequencyCap
                } else if said.starts_with(crate::suppression::SUPPRESSED_PREFIX) {
                    Reason::SuppressionList
                } else {
                    Reason::Other
                }
            }
            (None, _) => Reason::None,
        }
    }

    /// Sets the class and reason; a reason longer than [`MAX_ERROR_CHARS`]
    /// (a provider's whole answer, say) is cut there, so a status stays small.
    pub fn with_error(mut self, class: Option<ErrorClass>, error: impl Into<String>) -> Self {
        self.error_class = class;
        self.error = Some(cut_reason(error.into()));
        self
    }
}

/// `reason`, cut at [`MAX_ERROR_CHARS`] characters: what a status or dead
/// letter says about a failure stays small whatever the failure quoted.
pub fn cut_reason(mut reason: String) -> String {
    if let Some((cut, _)) = reason.char_indices().nth(MAX_ERROR_CHARS) {
        reason.truncate(cut);
        reason.push('…');
    }
    reason
}
