//! wiremock servers that speak each provider's API.

use std::collections::HashMap;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const TWILIO_MESSAGES: &str = "/2010-04-01/Accounts/AC123/Messages.json";

/// Twilio's Messages API, accepting every message with `201 Created`.
pub async fn twilio() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_MESSAGES))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"sid": "SM1", "status": "queued"})))
        .mount(&server)
        .await;
    server
}

/// (To, Body) of every SMS the fake received, in arrival order.
pub async fn twilio_sent(server: &MockServer) -> Vec<(String, String)> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == TWILIO_MESSAGES)
        .map(|r| {
            let form: HashMap<String, String> = serde_urlencoded::from_bytes(&r.body).unwrap();
            (form["To"].clone(), form["Body"].clone())
        })
        .collect()
}
