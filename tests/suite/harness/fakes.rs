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

/// A SendGrid v3 fake that can be down (503) until a given instant.
pub struct Sendgrid {
    pub server: MockServer,
    pub state: std::sync::Arc<SendgridState>,
}

#[derive(Default)]
pub struct SendgridState {
    /// Answers 503 until this instant.
    pub down_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// Notification ids of the messages it accepted, in order.
    pub accepted: std::sync::Mutex<Vec<String>>,
    /// Requests it refused.
    pub refused: std::sync::atomic::AtomicUsize,
    /// This many of the next requests are accepted, then answered only after
    /// [`SendgridState::stall_for`]: a provider that takes a message and stalls.
    pub stall_next: std::sync::atomic::AtomicUsize,
    pub stall_for: std::sync::Mutex<std::time::Duration>,
    /// Every request is answered after this long.
    pub latency: std::sync::Mutex<std::time::Duration>,
    /// Notification ids answered 503 every time (a message it keeps failing).
    pub refuse_ids: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl SendgridState {
    pub fn is_up(&self) -> bool {
        self.down_until.lock().unwrap().is_none_or(|t| std::time::Instant::now() >= t)
    }
    pub fn accepted(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }
    pub fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct SendgridResponder(std::sync::Arc<SendgridState>);

impl wiremock::Respond for SendgridResponder {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        if !self.0.is_up() {
            self.0.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return ResponseTemplate::new(503)
                .set_body_json(serde_json::json!({"errors": [{"message": "unavailable"}]}));
        }
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let id = body["custom_args"]["notification_id"].as_str().unwrap_or_default().to_string();
        if self.0.refuse_ids.lock().unwrap().contains(&id) {
            self.0.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return ResponseTemplate::new(503).set_body_json(serde_json::json!({"errors": [{"message": "try later"}]}));
        }
        let mut accepted = self.0.accepted.lock().unwrap();
        accepted.push(id);
        let stall = self
            .0
            .stall_next
            .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| {
                n.checked_sub(1)
            })
            .is_ok();
        let delay = if stall { *self.0.stall_for.lock().unwrap() } else { *self.0.latency.lock().unwrap() };
        ResponseTemplate::new(202).insert_header("X-Message-Id", format!("sg-{}", accepted.len())).set_delay(delay)
    }
}

pub async fn sendgrid() -> Sendgrid {
    let server = MockServer::start().await;
    let state = std::sync::Arc::new(SendgridState::default());
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(SendgridResponder(state.clone()))
        .mount(&server)
        .await;
    Sendgrid { server, state }
}
