//! The adapter against wiremock servers speaking Google's token endpoint and FCM v1.

use super::config::FcmConfig;
use super::Fcm;
use crate::{Content, ErrorKind, Outgoing, Provider};
use tidings_core::notification::PushToken;
use wiremock::matchers::{body_partial_json, body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = include_str!("../../tests/keys/fcm-test-key.pem");
const PUBLIC: &str = include_str!("../../tests/keys/fcm-test-key.pub.pem");
const SEND: &str = "/v1/projects/shop-app/messages:send";

async fn fcm(server: &MockServer) -> Fcm {
    let account = serde_json::json!({"client_email": "tidings@shop-app.iam.gserviceaccount.com", "private_key": KEY, "project_id": "shop-app"});
    let config: FcmConfig = serde_json::from_value(serde_json::json!({
        "base_url": server.uri(), "credentials_json": account.to_string(), "token_url": format!("{}/token", server.uri()), "timeout": "2s"
    }))
    .unwrap();
    Fcm::new("fcm", &config).unwrap()
}

async fn grant(server: &MockServer, expires_in: u64) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"access_token": "ya29.token", "expires_in": expires_in, "token_type": "Bearer"}),
        ))
        .mount(server)
        .await;
}

async fn accept_sends(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(SEND))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"name": "m"})))
        .mount(server)
        .await;
}

fn push(tokens: &[(&str, &str)]) -> Outgoing {
    Outgoing {
        notification_id: "n1".into(),
        priority: tidings_core::Priority::Normal,
        content: Content::Push {
            tokens: tokens.iter().map(|(p, t)| PushToken { platform: p.to_string(), token: t.to_string() }).collect(),
            title: "Order confirmed".into(),
            body: "2 items".into(),
        },
    }
}

#[tokio::test]
async fn exchanges_a_signed_assertion_then_sends_one_message_per_fcm_token() {
    let server = MockServer::start().await;
    grant(&server, 3600).await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .and(header("authorization", "Bearer ya29.token"))
        .and(body_partial_json(serde_json::json!({"message": {"token": "t1", "notification": {"title": "Order confirmed", "body": "2 items"}, "data": {"notification_id": "n1"}}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"name": "projects/shop-app/messages/1"})))
        .expect(1)
        .mount(&server)
        .await;
    let provider = fcm(&server).await;
    let receipt = provider.send(&push(&[("fcm", "t1"), ("apns", "ios-token")])).await.unwrap();
    assert_eq!(receipt.provider_message_id.as_deref(), Some("projects/shop-app/messages/1"));

    // The assertion is a JWT signed with the service account's key, for FCM's scope.
    let requests = server.received_requests().await.unwrap();
    let exchange = requests.iter().find(|r| r.url.path() == "/token").unwrap();
    let form: std::collections::HashMap<String, String> = serde_urlencoded::from_bytes(&exchange.body).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[format!("{}/token", server.uri())]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &form["assertion"],
        &jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["iss"], "tidings@shop-app.iam.gserviceaccount.com");
    assert_eq!(claims["scope"], "https://www.googleapis.com/auth/firebase.messaging");
}

#[tokio::test]
async fn the_access_token_is_cached_and_refreshed_before_expiry() {
    let server = MockServer::start().await;
    // Ten minutes: cached (it is refreshed five minutes before expiry).
    grant(&server, 600).await;
    accept_sends(&server).await;
    let provider = fcm(&server).await;
    for _ in 0..3 {
        provider.send(&push(&[("fcm", "t1")])).await.unwrap();
    }
    let exchanges = |rs: &[wiremock::Request]| rs.iter().filter(|r| r.url.path() == "/token").count();
    assert_eq!(exchanges(&server.received_requests().await.unwrap()), 1);

    // Four minutes: inside the refresh margin, so every send fetches a new one.
    let server = MockServer::start().await;
    grant(&server, 240).await;
    accept_sends(&server).await;
    let provider = fcm(&server).await;
    provider.send(&push(&[("fcm", "t1")])).await.unwrap();
    provider.send(&push(&[("fcm", "t1")])).await.unwrap();
    assert_eq!(exchanges(&server.received_requests().await.unwrap()), 2);
}

async fn failure(status: u16, code: &str, retry_after: Option<&str>) -> crate::ProviderError {
    let server = MockServer::start().await;
    grant(&server, 3600).await;
    let mut response = ResponseTemplate::new(status).set_body_json(serde_json::json!({"error": {
        "code": status, "message": "nope", "status": "X",
        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]}}));
    if let Some(s) = retry_after {
        response = response.insert_header("Retry-After", s);
    }
    Mock::given(method("POST")).and(path(SEND)).respond_with(response).mount(&server).await;
    fcm(&server).await.send(&push(&[("fcm", "t1")])).await.unwrap_err()
}

#[tokio::test]
async fn classifies_documented_errors() {
    assert!(failure(404, "UNREGISTERED", None).await.invalid_recipient);
    assert!(failure(400, "INVALID_ARGUMENT", None).await.invalid_recipient);
    let e = failure(429, "QUOTA_EXCEEDED", Some("10")).await;
    assert_eq!((e.kind, e.retry_after), (ErrorKind::Transient, Some(std::time::Duration::from_secs(10))));
    assert_eq!(failure(503, "UNAVAILABLE", None).await.kind, ErrorKind::Transient);
    assert_eq!(failure(401, "THIRD_PARTY_AUTH_ERROR", None).await.kind, ErrorKind::ProviderDown);
}

#[test]
fn a_redirect_means_the_base_url_is_wrong() {
    let e = super::response::classify("fcm", 307, "", "");
    assert_eq!(e.kind, ErrorKind::ProviderDown, "{e}");
}
