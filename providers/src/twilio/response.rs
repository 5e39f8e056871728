//! Twilio's answers: `201 Created` with the message `sid`, or an error body
//! `{"code": 21211, "message": "...", "status": 400}`.

use crate::error::retry_after;
use crate::{ProviderError, Receipt};
use serde::Deserialize;

#[derive(Deserialize)]
struct Created {
    sid: String,
}

#[derive(Deserialize, Default)]
struct Failure {
    #[serde(default)]
    code: Option<u32>,
    #[serde(default)]
    message: Option<String>,
}

pub async fn read(name: &str, response: reqwest::Response) -> Result<Receipt, ProviderError> {
    let status = response.status();
    let wait = retry_after(response.headers());
    if status.is_success() {
        let created: Created = response.json().await.map_err(|e| {
            ProviderError::transient(format!(
                "twilio {name}: unreadable success body: {}",
                crate::error::http_cause(&e)
            ))
        })?;
        return Ok(Receipt { provider_message_id: Some(created.sid) });
    }
    let failure: Failure = response.json().await.unwrap_or_default();
    Err(classify(name, status.as_u16(), failure.code, failure.message.as_deref().unwrap_or("")).retry_after(wait))
}

/// Maps an HTTP status and Twilio error code to what the worker does next.
pub fn classify(name: &str, status: u16, code: Option<u32>, message: &str) -> ProviderError {
    let what = format!("twilio {name}: HTTP {status} code {} {message}", code.map_or("-".into(), |c| c.to_string()));
    match (status, code) {
        // 21610: the number texted STOP to Twilio, which blocks it until its START.
        (_, Some(21610)) => ProviderError::opted_out(what),
        // 21211 invalid To, 21614 not a mobile number.
        (_, Some(21211 | 21614)) => ProviderError::invalid_recipient(what),
        (429, _) | (_, Some(20429)) => ProviderError::transient(what),
        (401 | 403, _) => {
            tracing::error!(provider = name, status, "twilio rejected our credentials");
            ProviderError::down(what)
        }
        (300..=399, _) => crate::error::redirected(what),
        (500..=599, _) => ProviderError::transient(what),
        _ => ProviderError::permanent(what),
    }
}
