//! What a user's endpoint answered. Its failures are its own, not the
//! provider's: they are retried but do not count against the breaker.

use crate::error::retry_after;
use crate::{ProviderError, Receipt};

pub fn read(name: &str, response: reqwest::Response) -> Result<Receipt, ProviderError> {
    let status = response.status().as_u16();
    let wait = retry_after(response.headers());
    let what = format!("webhook {name}: endpoint answered HTTP {status}");
    match status {
        200..=299 => Ok(Receipt { provider_message_id: None }),
        300..=399 => Err(ProviderError::permanent(format!("{what}: redirects are not followed"))),
        // The endpoint is gone for good: the owner should remove it.
        410 => Err(ProviderError::invalid_recipient(what)),
        408 | 429 | 500..=599 => Err(ProviderError::transient(what).retry_after(wait).at_recipient()),
        _ => Err(ProviderError::permanent(what)),
    }
}

/// A failure to reach the endpoint at all.
pub fn transport(err: &reqwest::Error) -> ProviderError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<super::guard::Refused>() {
            return ProviderError::invalid_recipient(format!("webhook destination refused: {refused}"));
        }
        cause = e.source();
    }
    if err.is_connect() {
        return ProviderError::transient(format!("webhook endpoint unreachable: {}", crate::error::http_cause(err)))
            .at_recipient();
    }
    // Written and unanswered: the endpoint may have it (it can fold a second
    // copy by the `webhook-id` header, which stays the notification id).
    ProviderError::ambiguous(format!("webhook endpoint gave no answer: {}", crate::error::http_cause(err)))
        .at_recipient()
}
