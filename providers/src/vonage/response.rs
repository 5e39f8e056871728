//! `{"message-count": "1", "messages": [{"status": "0", "message-id": "...", "error-text": "..."}]}`.

use crate::error::retry_after;
use crate::{ProviderError, Receipt};
use serde::Deserialize;

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    messages: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    status: String,
    #[serde(rename = "message-id", default)]
    message_id: Option<String>,
    #[serde(rename = "error-text", default)]
    error_text: Option<String>,
}

pub async fn read(name: &str, response: reqwest::Response) -> Result<Receipt, ProviderError> {
    let status = response.status().as_u16();
    let wait = retry_after(response.headers());
    if status == 429 || status >= 500 {
        return Err(ProviderError::transient(format!("vonage {name}: HTTP {status}")).retry_after(wait));
    }
    if (300..400).contains(&status) {
        return Err(crate::error::redirected(format!("vonage {name}: HTTP {status}")));
    }
    if status == 401 || status == 403 {
        tracing::error!(provider = name, status, "vonage rejected our credentials");
        return Err(ProviderError::down(format!("vonage {name}: HTTP {status}")));
    }
    let answer: Answer = response.json().await.map_err(|e| {
        ProviderError::transient(format!("vonage {name}: unreadable answer: {}", crate::error::http_cause(&e)))
    })?;
    if answer.messages.is_empty() {
        return Err(ProviderError::transient(format!("vonage {name}: answer has no messages")));
    }
    // A long text is split into parts; every part must have gone.
    if let Some(bad) = answer.messages.iter().find(|p| p.status != "0") {
        return Err(classify(name, &bad.status, bad.error_text.as_deref().unwrap_or("")));
    }
    Ok(Receipt { provider_message_id: answer.messages[0].message_id.clone() })
}

/// Maps a Vonage per-message status code to what the worker does next.
pub fn classify(name: &str, status: &str, text: &str) -> ProviderError {
    let what = format!("vonage {name}: status {status} {text}");
    match status {
        // Throttled, internal error, too many binds.
        "1" | "5" | "10" => ProviderError::transient(what),
        // Number barred, non-whitelisted destination, number de-activated.
        "7" | "29" | "33" => ProviderError::invalid_recipient(what),
        // Invalid credentials, account barred, quota, HTTP not enabled, signature.
        "4" | "8" | "9" | "11" | "14" | "32" => {
            tracing::error!(provider = name, status, "vonage refused our account");
            ProviderError::down(what)
        }
        _ => ProviderError::permanent(what),
    }
}
