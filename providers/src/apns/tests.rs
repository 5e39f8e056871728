//! The adapter against a wiremock server speaking APNs over HTTP/2.

use super::config::ApnsConfig;
use super::Apns;
use crate::{Content, ErrorKind, Outgoing, Provider};
use tidings_core::notification::PushToken;
use tidings_core::Priority;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = include_str!("../../tests/keys/apns-test-key.p8");
const PUBLIC: &str = include_str!("../../tests/keys/apns-test-key.pub.pem");
const ID: &str = "0123456789abcdef0123456789abcdef";

fn apns(server: &MockServer) -> Apns {
    let config: ApnsConfig = serde_json::from_value(serde_json::json!({
        "base_url": server.uri(), "key_pem": KEY, "key_id": "KEY123", "team_id": "TEAM42", "topic": "com.shop.app", "timeout": "2s"
    }))
    .unwrap();
    Apns::new("apns", &config).unwrap()
}

fn push(priority: Priority) -> Outgoing {
    Outgoing {
        notification_id: ID.into(),
        priority,
        content: Content::Push {
            tokens: vec![
                PushToken { platform: "apns".into(), token: "devtoken".into() },
                PushToken { platform: "fcm".into(), token: "x".into() },
            ],
            title: "Delivered".into(),
            body: "Order o-1".into(),
        },
    }
}

#[tokio::test]
async fn sends_over_http2_with_a_provider_jwt_and_apns_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/3/device/devtoken"))
        .and(header("apns-topic", "com.shop.app"))
        .and(header("apns-push-type", "alert"))
        .and(header("apns-priority", "10"))
        .and(header("apns-collapse-id", ID))
        .and(header("apns-id", "01234567-89ab-cdef-0123-456789abcdef"))
        .and(body_partial_json(serde_json::json!({"aps": {"alert": {"title": "Delivered", "body": "Order o-1"}}})))
        .respond_with(ResponseTemplate::new(200).insert_header("apns-id", "01234567-89ab-cdef-0123-456789abcdef"))
        .expect(1)
        .mount(&server)
        .await;
    let provider = apns(&server);
    let receipt = provider.send(&push(Priority::Critical)).await.unwrap();
    assert_eq!(receipt.provider_message_id.as_deref(), Some("01234567-89ab-cdef-0123-456789abcdef"));
    let request = &server.received_requests().await.unwrap()[0];
    // The client speaks HTTP/2 only (prior knowledge over cleartext): an answer at all means HTTP/2.
    let jwt = request.headers.get("authorization").unwrap().to_str().unwrap().strip_prefix("Bearer ").unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!((header.alg, header.kid.as_deref()), (jsonwebtoken::Algorithm::ES256, Some("KEY123")));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_ec_pem(PUBLIC.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["iss"], "TEAM42");
}

#[tokio::test]
async fn bulk_goes_at_priority_5_and_the_token_is_reused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("apns-priority", "5"))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&server)
        .await;
    let provider = apns(&server);
    provider.send(&push(Priority::Bulk)).await.unwrap();
    provider.send(&push(Priority::Bulk)).await.unwrap();
    let auth: std::collections::HashSet<_> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers.get("authorization").unwrap().clone())
        .collect();
    assert_eq!(auth.len(), 1, "one provider token for both");
}

async fn failure(status: u16, reason: &str) -> crate::ProviderError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status).set_body_json(serde_json::json!({"reason": reason})))
        .mount(&server)
        .await;
    apns(&server).send(&push(Priority::Normal)).await.unwrap_err()
}

#[tokio::test]
async fn classifies_documented_errors() {
    assert!(failure(410, "Unregistered").await.invalid_recipient);
    assert!(failure(400, "BadDeviceToken").await.invalid_recipient);
    assert_eq!(failure(429, "TooManyRequests").await.kind, ErrorKind::Transient);
    assert_eq!(failure(403, "ExpiredProviderToken").await.kind, ErrorKind::ProviderDown);
    assert_eq!(failure(503, "ServiceUnavailable").await.kind, ErrorKind::Transient);
    let e = failure(413, "PayloadTooLarge").await;
    assert_eq!((e.kind, e.invalid_recipient), (ErrorKind::Permanent, false));
}

#[test]
fn a_redirect_means_the_base_url_is_wrong() {
    let e = super::response::classify("apns", 307, "");
    assert_eq!(e.kind, ErrorKind::ProviderDown, "{e}");
}
