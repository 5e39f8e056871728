//! The adapter against a wiremock server speaking the Vonage SMS API.

use super::config::VonageConfig;
use super::Vonage;
use crate::{Content, ErrorKind, Outgoing, Provider};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn vonage(server: &MockServer) -> Vonage {
    let config: VonageConfig = serde_json::from_value(serde_json::json!({
        "base_url": server.uri(), "api_key": "k1", "api_secret": "s3cret", "from": "Shop", "timeout": "2s"
    }))
    .unwrap();
    Vonage::new("vonage", &config).unwrap()
}

fn sms(body: &str) -> Outgoing {
    Outgoing {
        notification_id: "n1".into(),
        priority: tidings_core::Priority::Normal,
        content: Content::Sms { to: "+447700900123".into(), body: body.into() },
    }
}

fn answer(parts: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({"message-count": "1", "messages": parts}))
}

/// A configured receipt URL goes with each message (our id is its `client-ref`).
#[tokio::test]
async fn a_configured_receipt_callback_goes_with_each_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .and(body_string_contains("callback=https%3A%2F%2Fhooks.example%2Fcallbacks%2Fvonage%2Freceipts"))
        .and(body_string_contains("client-ref=n1"))
        .respond_with(answer(serde_json::json!([{"status": "0", "message-id": "0A1"}])))
        .expect(1)
        .mount(&server)
        .await;
    let config: VonageConfig = serde_json::from_value(serde_json::json!({
        "base_url": server.uri(), "api_key": "k1", "api_secret": "s3cret", "from": "Shop",
        "receipt_callback": "https://hooks.example/callbacks/vonage/receipts"
    }))
    .unwrap();
    Vonage::new("vonage", &config).unwrap().send(&sms("hi")).await.unwrap();
}

#[tokio::test]
async fn sends_the_documented_form_and_reads_the_message_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .and(body_string_contains("api_key=k1"))
        .and(body_string_contains("api_secret=s3cret"))
        .and(body_string_contains("to=447700900123"))
        .and(body_string_contains("from=Shop"))
        .and(body_string_contains("text=Bonjour+%C3%A7a+va"))
        .and(body_string_contains("client-ref=n1"))
        .and(body_string_contains("type=unicode"))
        .respond_with(answer(serde_json::json!([{"to": "447700900123", "message-id": "0A0000001", "status": "0"}])))
        .expect(1)
        .mount(&server)
        .await;
    let receipt = vonage(&server).send(&sms("Bonjour ça va")).await.unwrap();
    assert_eq!(receipt.provider_message_id.as_deref(), Some("0A0000001"));
}

async fn failure(status: &str) -> crate::ProviderError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(answer(serde_json::json!([{"status": status, "error-text": "nope"}])))
        .mount(&server)
        .await;
    vonage(&server).send(&sms("hello")).await.unwrap_err()
}

#[tokio::test]
async fn a_200_with_a_failed_status_is_a_failure_classified_by_its_code() {
    assert_eq!(failure("1").await.kind, ErrorKind::Transient);
    assert_eq!(failure("5").await.kind, ErrorKind::Transient);
    let e = failure("7").await;
    assert!(e.invalid_recipient && e.kind == ErrorKind::Permanent);
    assert!(failure("33").await.invalid_recipient);
    assert_eq!(failure("4").await.kind, ErrorKind::ProviderDown);
    assert_eq!(failure("9").await.kind, ErrorKind::ProviderDown);
    let e = failure("12").await;
    assert_eq!((e.kind, e.invalid_recipient), (ErrorKind::Permanent, false));
}

#[tokio::test]
async fn every_part_of_a_long_text_must_go() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(answer(
            serde_json::json!([{"status": "0", "message-id": "a"}, {"status": "1", "error-text": "Throttled"}]),
        ))
        .mount(&server)
        .await;
    assert_eq!(vonage(&server).send(&sms("hello")).await.unwrap_err().kind, ErrorKind::Transient);
}

/// A 307 or 308 would send the form, secret and all, again to wherever it
/// points: it is not followed, and the provider counts as down.
#[tokio::test]
async fn a_redirect_is_not_followed_and_the_secret_goes_nowhere_else() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST")).respond_with(answer(serde_json::json!([{"status": "0"}]))).mount(&elsewhere).await;
    for status in [307, 308] {
        let server = MockServer::start().await;
        let to = format!("{}/collect", elsewhere.uri());
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).insert_header("location", to.as_str()))
            .mount(&server)
            .await;
        let e = vonage(&server).send(&sms("hi")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ProviderDown, "{e}");
        assert!(e.message.contains("not followed"), "{e}");
    }
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
}
