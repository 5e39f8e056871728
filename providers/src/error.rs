//! What a failed send means for the message and for the provider.
//!
//! *Whether* to retry is decided here, by the adapter that understands the
//! provider's answer; *when* is the worker's retry policy.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Try again later, on this provider (throttling, a 5xx, a timeout).
    Transient,
    /// This message can never succeed here or anywhere: dead-letter it, or
    /// suppress it when the recipient itself is invalid.
    Permanent,
    /// The provider is unusable right now (refused connection, bad credentials):
    /// count it against the breaker and move to the next provider at once.
    ProviderDown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub message: String,
    /// The provider asked us to wait this long (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The address, number or token is invalid or unsubscribed: the owning
    /// service should clean it up.
    pub invalid_recipient: bool,
    /// The recipient opted out at the provider (a number that texted STOP
    /// to it): listed as a STOP, so the number's START lifts it.
    pub opted_out: bool,
    /// The failure belongs to the recipient's own endpoint (a user's webhook),
    /// not to the provider: it is retried, but does not count against the breaker.
    pub recipient_fault: bool,
    /// The request was written and no answer came (a timeout, a cut
    /// connection): the provider may have accepted the message. Never resent
    /// through another provider; the priority's ambiguity policy decides.
    pub ambiguous: bool,
}

impl ProviderError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }
    pub fn down(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ProviderDown, message)
    }
    /// The request went out and no answer came back.
    pub fn ambiguous(message: impl Into<String>) -> Self {
        ProviderError { ambiguous: true, ..Self::transient(message) }
    }
    pub fn invalid_recipient(message: impl Into<String>) -> Self {
        ProviderError { invalid_recipient: true, ..Self::permanent(message) }
    }
    /// The recipient opted out at the provider ([`Self::opted_out`]).
    pub fn opted_out(message: impl Into<String>) -> Self {
        ProviderError { opted_out: true, ..Self::invalid_recipient(message) }
    }
    pub fn at_recipient(mut self) -> Self {
        self.recipient_fault = true;
        self
    }
    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }
    /// Every message is scrubbed of email addresses and phone numbers (a
    /// provider's answer often quotes the recipient) and has its control
    /// characters written as text: the message goes into logs, status
    /// records, dead-letter headers and the suppression list.
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: tidings_core::redact::printable(&tidings_core::redact::scrub(&message.into())),
            retry_after: None,
            invalid_recipient: false,
            opted_out: false,
            recipient_fault: false,
            ambiguous: false,
        }
    }

    /// The failure happened before the message was handed over (fetching a
    /// token, say): whatever it was, the message was not sent.
    pub fn before_sending(mut self) -> Self {
        self.ambiguous = false;
        self
    }

    /// Classifies a transport-level HTTP client failure. Only a failure to
    /// connect proves the request never left; a timeout or a connection cut
    /// later may have come after the provider took it.
    pub fn from_http(err: &reqwest::Error) -> Self {
        let cause = http_cause(err);
        if err.is_connect() {
            Self::down(format!("cannot connect: {cause}"))
        } else if err.is_builder() {
            Self::permanent(format!("cannot build the request: {cause}"))
        } else if err.is_timeout() {
            Self::ambiguous(format!("no answer in time: {cause}"))
        } else {
            Self::ambiguous(format!("request failed with no answer: {cause}"))
        }
    }
}

/// A redirect from a provider's API (`what` says whose, and the status):
/// never followed, since the credentials would go along, and the provider
/// counts as down, since its base URL is wrong.
pub fn redirected(what: String) -> ProviderError {
    ProviderError::down(format!("{what}: a redirect, not followed"))
}

/// What an HTTP client error says, without the URL reqwest's own text
/// carries (a webhook URL holds a customer's token, an APNs path a device
/// token): the innermost cause, e.g. `Connection refused (os error 111)`.
pub fn http_cause(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if std::ptr::addr_eq(cause, err as &dyn std::error::Error) {
        // No cause below reqwest's own: say which kind it was.
        return if err.is_decode() { "the answer could not be decoded" } else { "HTTP client error" }.to_string();
    }
    cause.to_string()
}

/// What is wrong with a JSON document, without quoting any of it (it may
/// hold a private key): the kind of problem and where.
pub fn json_problem(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {} column {}", err.line(), err.column());
    match err.classify() {
        Category::Io => "it cannot be read".into(),
        Category::Syntax | Category::Eof => format!("it is not valid JSON ({at})"),
        Category::Data => {
            let text = err.to_string();
            if text.starts_with("missing field") || text.starts_with("unknown field") {
                text
            } else {
                format!("a field has the wrong type or value ({at})")
            }
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProviderError {}

/// Reads a `Retry-After` header given in seconds (the HTTP-date form is rare
/// from these providers and is treated as absent).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}
