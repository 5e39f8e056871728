//! APNs answers: `200` with `apns-id`, or `{"reason": "BadDeviceToken"}`.

use crate::error::retry_after;
use crate::ProviderError;
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct Failure {
    #[serde(default)]
    reason: String,
}

pub async fn read(name: &str, response: reqwest::Response) -> Result<String, ProviderError> {
    let status = response.status().as_u16();
    let wait = retry_after(response.headers());
    if status == 200 {
        return Ok(response.headers().get("apns-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string());
    }
    let failure: Failure = response.json().await.unwrap_or_default();
    Err(classify(name, status, &failure.reason).retry_after(wait))
}

/// Maps an APNs status and reason to what the worker does next.
pub fn classify(name: &str, status: u16, reason: &str) -> ProviderError {
    let what = format!("apns {name}: HTTP {status} {reason}");
    match (status, reason) {
        (410, _) | (_, "BadDeviceToken" | "Unregistered" | "DeviceTokenNotForTopic") => {
            ProviderError::invalid_recipient(what)
        }
        (429, _) => ProviderError::transient(what),
        (403, _) => {
            tracing::error!(provider = name, status, reason, "apns refused our provider token");
            ProviderError::down(what)
        }
        (500..=599, _) => ProviderError::transient(what),
        (300..=399, _) => crate::error::redirected(what),
        _ => ProviderError::permanent(what),
    }
}
