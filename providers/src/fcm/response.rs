//! FCM's answers: `{"name": "projects/p/messages/123"}`, or a Google API
//! error whose `details` carry the FCM `errorCode`.

use crate::error::retry_after;
use crate::ProviderError;
use serde::Deserialize;

#[derive(Deserialize)]
struct Sent {
    name: String,
}

#[derive(Deserialize, Default)]
struct Failure {
    #[serde(default)]
    error: ApiError,
}

#[derive(Deserialize, Default)]
struct ApiError {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

pub async fn read(name: &str, response: reqwest::Response) -> Result<String, ProviderError> {
    let status = response.status().as_u16();
    let wait = retry_after(response.headers());
    if (200..300).contains(&status) {
        let sent: Sent = response.json().await.map_err(|e| {
            ProviderError::transient(format!("fcm {name}: unreadable answer: {}", crate::error::http_cause(&e)))
        })?;
        return Ok(sent.name);
    }
    let failure: Failure = response.json().await.unwrap_or_default();
    let code =
        failure.error.details.iter().find_map(|d| d["errorCode"].as_str()).unwrap_or(&failure.error.status).to_string();
    Err(classify(name, status, &code, &failure.error.message).retry_after(wait))
}

/// Maps an HTTP status and FCM error code to what the worker does next.
pub fn classify(name: &str, status: u16, code: &str, message: &str) -> ProviderError {
    let what = format!("fcm {name}: HTTP {status} {code} {message}");
    match (status, code) {
        // The token is gone, malformed, or belongs to another sender.
        (_, "UNREGISTERED" | "INVALID_ARGUMENT" | "SENDER_ID_MISMATCH") => ProviderError::invalid_recipient(what),
        (_, "QUOTA_EXCEEDED") | (429, _) => ProviderError::transient(what),
        (401, _) | (_, "THIRD_PARTY_AUTH_ERROR") => {
            tracing::error!(provider = name, status, code, "fcm refused our credentials");
            ProviderError::down(what)
        }
        (403, _) => ProviderError::down(what),
        (500..=599, _) | (_, "UNAVAILABLE" | "INTERNAL") => ProviderError::transient(what),
        (300..=399, _) => crate::error::redirected(what),
        _ => ProviderError::permanent(what),
    }
}
