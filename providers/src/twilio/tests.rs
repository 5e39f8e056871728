//! The adapter against a wiremock server speaking Twilio's Messages API.

use super::config::TwilioConfig;
use super::Twilio;
use crate::{Content, ErrorKind, Outgoing, Provider};
use std::time::Duration;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PATH: &str = "/2010-04-01/Accounts/AC123/Messages.json";

fn twilio(server: &MockServer) -> Twilio {
    twilio_at(&server.uri())
}

fn twilio_at(base_url: &str) -> Twilio {
    let config: TwilioConfig = serde_json::from_value(serde_json::json!({
        "base_url": base_url, "account_sid": "AC123", "auth_token": "secret", "from": "+15550001111", "timeout": "2s"
    }))
    .unwrap();
    Twilio::new("twilio", &config).unwrap()
}

fn sms(to: &str) -> Outgoing {
    Outgoing {
        notification_id: "n1".into(),
        priority: tidings_core::Priority::Normal,
        content: Content::Sms { to: to.into(), body: "Your order shipped & more".into() },
    }
}

/// With a status URL configured, each message's carries its notification id.
#[tokio::test]
async fn a_configured_status_callback_carries_the_notification_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(body_string_contains("StatusCallback=https%3A%2F%2Fhooks.example%2Fcallbacks%2Ftwilio%2Fstatus%3Fn%3Dn1"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"sid": "SM42"})))
        .expect(1)
        .mount(&server)
        .await;
    let config: TwilioConfig = serde_json::from_value(serde_json::json!({
        "base_url": server.uri(), "account_sid": "AC123", "auth_token": "secret", "from": "+15550001111",
        "status_callback": "https://hooks.example/callbacks/twilio/status"
    }))
    .unwrap();
    Twilio::new("twilio", &config).unwrap().send(&sms("+33612345678")).await.unwrap();
}

#[tokio::test]
async fn sends_the_documented_form_with_basic_auth_and_reads_the_sid() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        // base64("AC123:secret")
        .and(header("authorization", "Basic QUMxMjM6c2VjcmV0"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains("To=%2B33612345678"))
        .and(body_string_contains("From=%2B15550001111"))
        .and(body_string_contains("Body=Your+order+shipped+%26+more"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"sid": "SM42", "status": "queued"})))
        .expect(1)
        .mount(&server)
        .await;
    let receipt = twilio(&server).send(&sms("+33612345678")).await.unwrap();
    assert_eq!(receipt.provider_message_id.as_deref(), Some("SM42"));
}

async fn failure(status: u16, body: serde_json::Value, retry_after: Option<&str>) -> crate::ProviderError {
    let server = MockServer::start().await;
    let mut response = ResponseTemplate::new(status).set_body_json(body);
    if let Some(s) = retry_after {
        response = response.insert_header("Retry-After", s);
    }
    Mock::given(method("POST")).and(path(PATH)).respond_with(response).mount(&server).await;
    twilio(&server).send(&sms("+33612345678")).await.unwrap_err()
}

#[tokio::test]
async fn classifies_documented_errors() {
    for code in [21211, 21610, 21614] {
        let e = failure(400, serde_json::json!({"code": code, "message": "bad", "status": 400}), None).await;
        assert_eq!(e.kind, ErrorKind::Permanent, "{code}");
        assert!(e.invalid_recipient, "{code}");
        assert_eq!(e.opted_out, code == 21610, "only a STOP at Twilio is an opt-out: {code}");
    }
    let e = failure(429, serde_json::json!({"code": 20429, "message": "Too Many Requests"}), Some("7")).await;
    assert_eq!((e.kind, e.retry_after), (ErrorKind::Transient, Some(Duration::from_secs(7))));
    let e = failure(503, serde_json::json!({}), None).await;
    assert_eq!(e.kind, ErrorKind::Transient);
    let e = failure(401, serde_json::json!({"code": 20003, "message": "Authenticate"}), None).await;
    assert_eq!(e.kind, ErrorKind::ProviderDown);
    let e = failure(400, serde_json::json!({"code": 21602, "message": "Body required"}), None).await;
    assert_eq!((e.kind, e.invalid_recipient), (ErrorKind::Permanent, false));
}

/// Twilio's message quotes the number; what we keep of it is masked.
#[tokio::test]
async fn an_error_quoting_the_number_keeps_it_masked() {
    let said = "The 'To' number +33612345678 is not a valid phone number.";
    let e = failure(400, serde_json::json!({"code": 21211, "message": said, "status": 400}), None).await;
    assert_eq!(
        e.message,
        "twilio twilio: HTTP 400 code 21211 The 'To' number +3361****678 is not a valid phone number."
    );
}

/// A redirect is not followed (basic auth would go along): the base URL is wrong.
#[tokio::test]
async fn a_redirect_is_not_followed() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(201)).mount(&elsewhere).await;
    let server = MockServer::start().await;
    let to = format!("{}/collect", elsewhere.uri());
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", to.as_str()))
        .mount(&server)
        .await;
    let e = twilio(&server).send(&sms("+33612345678")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ProviderDown, "{e}");
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_connection_is_provider_down() {
    // Nothing listens on a port that was bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let provider = twilio_at(&format!("http://127.0.0.1:{port}"));
    let e = provider.send(&sms("+33612345678")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ProviderDown, "{e}");
}
