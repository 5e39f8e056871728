//! SendGrid's answers: `202` with `X-Message-Id`, or
//! `{"errors": [{"message": "...", "field": "...", "help": ...}]}`.

use crate::error::retry_after;
use crate::{ProviderError, Receipt};
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct Failure {
    #[serde(default)]
    errors: Vec<Detail>,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    field: Option<String>,
}

pub async fn read(name: &str, response: reqwest::Response) -> Result<Receipt, ProviderError> {
    let status = response.status().as_u16();
    let wait = retry_after(response.headers());
    if (200..300).contains(&status) {
        let id = response.headers().get("x-message-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        return Ok(Receipt { provider_message_id: id });
    }
    let failure: Failure = response.json().await.unwrap_or_default();
    let fields: Vec<&str> = failure.errors.iter().filter_map(|e| e.field.as_deref()).collect();
    let messages: Vec<&str> = failure.errors.iter().filter_map(|e| e.message.as_deref()).collect();
    Err(classify(name, status, &fields, &messages.join("; ")).retry_after(wait))
}

/// Maps an HTTP status and the fields SendGrid blamed to what the worker does next.
pub fn classify(name: &str, status: u16, fields: &[&str], message: &str) -> ProviderError {
    let what = format!("sendgrid {name}: HTTP {status} {message}");
    match status {
        400 if fields.iter().any(|f| f.starts_with("personalizations") && f.contains(".to")) => {
            ProviderError::invalid_recipient(what)
        }
        429 => ProviderError::transient(what),
        401 | 403 => {
            tracing::error!(provider = name, status, "sendgrid rejected our API key");
            ProviderError::down(what)
        }
        500..=599 => ProviderError::transient(what),
        300..=399 => crate::error::redirected(what),
        _ => ProviderError::permanent(what),
    }
}
