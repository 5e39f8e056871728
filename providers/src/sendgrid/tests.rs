//! The adapter against a wiremock server speaking SendGrid's v3 API.

use super::config::SendgridConfig;
use super::Sendgrid;
use crate::{Content, ErrorKind, Outgoing, Provider};
use std::time::Duration;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn sendgrid(base_url: &str) -> Sendgrid {
    let config: SendgridConfig = serde_json::from_value(serde_json::json!({
        "base_url": base_url, "api_key": "SG.key", "from": "Shop <no-reply@shop.example>", "timeout": "2s"
    }))
    .unwrap();
    Sendgrid::new("sendgrid", &config).unwrap()
}

fn email(to: &str) -> Outgoing {
    Outgoing {
        notification_id: "n1".into(),
        priority: tidings_core::Priority::Normal,
        content: Content::Email {
            to: to.into(),
            subject: "Hi\r\nBcc: x@y.z".into(),
            text: "t".into(),
            html: "<p>h</p>".into(),
            unsubscribe: None,
        },
    }
}

#[tokio::test]
async fn sends_the_documented_body_with_the_bearer_key_and_reads_the_message_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .and(header("authorization", "Bearer SG.key"))
        .and(body_partial_json(serde_json::json!({
            "personalizations": [{"to": [{"email": "ana@example.com"}]}],
            "from": {"email": "no-reply@shop.example", "name": "Shop"},
            "subject": "Hi  Bcc: x@y.z",
            "content": [{"type": "text/plain", "value": "t"}, {"type": "text/html", "value": "<p>h</p>"}],
            "custom_args": {"notification_id": "n1"}
        })))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "sg-123"))
        .expect(1)
        .mount(&server)
        .await;
    let receipt = sendgrid(&server.uri()).send(&email("ana@example.com")).await.unwrap();
    assert_eq!(receipt.provider_message_id.as_deref(), Some("sg-123"));
}

async fn failure(status: u16, body: serde_json::Value, retry_after: Option<&str>) -> crate::ProviderError {
    let server = MockServer::start().await;
    let mut response = ResponseTemplate::new(status).set_body_json(body);
    if let Some(s) = retry_after {
        response = response.insert_header("Retry-After", s);
    }
    Mock::given(method("POST")).and(path("/v3/mail/send")).respond_with(response).mount(&server).await;
    sendgrid(&server.uri()).send(&email("ana@example.com")).await.unwrap_err()
}

#[tokio::test]
async fn classifies_documented_errors() {
    let e = failure(400, serde_json::json!({"errors": [{"message": "Does not contain a valid address.", "field": "personalizations.0.to.0.email"}]}), None).await;
    assert_eq!((e.kind, e.invalid_recipient), (ErrorKind::Permanent, true));
    let e = failure(
        400,
        serde_json::json!({"errors": [{"message": "The subject is required.", "field": "subject"}]}),
        None,
    )
    .await;
    assert_eq!((e.kind, e.invalid_recipient), (ErrorKind::Permanent, false));
    let e = failure(429, serde_json::json!({"errors": [{"message": "too many requests"}]}), Some("3")).await;
    assert_eq!((e.kind, e.retry_after), (ErrorKind::Transient, Some(Duration::from_secs(3))));
    let e = failure(503, serde_json::json!({}), None).await;
    assert_eq!(e.kind, ErrorKind::Transient);
    let e =
        failure(401, serde_json::json!({"errors": [{"message": "The provided authorization grant is invalid"}]}), None)
            .await;
    assert_eq!(e.kind, ErrorKind::ProviderDown);
    let e = failure(403, serde_json::json!({"errors": [{"message": "access forbidden"}]}), None).await;
    assert_eq!(e.kind, ErrorKind::ProviderDown);
}

#[tokio::test]
async fn an_invalid_address_never_leaves() {
    let server = MockServer::start().await;
    let e = sendgrid(&server.uri()).send(&email("not an address")).await.unwrap_err();
    assert!(e.invalid_recipient);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[test]
fn a_redirect_means_the_base_url_is_wrong() {
    let e = super::response::classify("sendgrid", 308, &[], "");
    assert_eq!(e.kind, ErrorKind::ProviderDown, "{e}");
}
