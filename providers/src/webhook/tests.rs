//! The adapter against a wiremock endpoint, verifying the signature the way
//! a receiver would, with the Standard Webhooks reference library.

use super::config::WebhookConfig;
use super::Webhook;
use crate::{Content, ErrorKind, Outgoing, Provider};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(allow_private: bool, server: &MockServer) -> WebhookConfig {
    serde_json::from_value(serde_json::json!({
        "secret": SECRET, "allow_private": allow_private, "timeout": "2s",
        "allowed_ports": [80, 443, server.address().port()],
    }))
    .unwrap()
}

fn webhook(allow_private: bool, server: &MockServer) -> Webhook {
    Webhook::new("webhook", &config(allow_private, server)).unwrap()
}

/// The key the owner of `url` verifies with, as `tidings prefs webhook-secret` prints it.
fn key_of(server: &MockServer, url: &str) -> String {
    super::keys::endpoint_secrets(&config(true, server), url).unwrap().remove(0)
}

fn hook(url: String) -> Outgoing {
    Outgoing {
        notification_id: "n1".into(),
        priority: tidings_core::Priority::Normal,
        content: Content::Webhook {
            url,
            body: serde_json::json!({"type": "order.confirmed", "data": {"order_id": "o-1"}}),
        },
    }
}

#[tokio::test]
async fn posts_json_signed_per_standard_webhooks() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/tidings"))
        .and(header("content-type", "application/json"))
        .and(header("webhook-id", "n1"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let url = format!("{}/hooks/tidings", server.uri());
    webhook(true, &server).send(&hook(url.clone())).await.unwrap();
    let request = &server.received_requests().await.unwrap()[0];
    let headers = signed_headers(request);
    standardwebhooks::Webhook::new(&key_of(&server, &url))
        .unwrap()
        .verify(&request.body, &headers)
        .expect("a receiver accepts the signature");
    let master = standardwebhooks::Webhook::new(SECRET).unwrap();
    assert!(master.verify(&request.body, &headers).is_err(), "signed with the endpoint's key, not the master");
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["data"]["order_id"], "o-1");
}

fn signed_headers(request: &wiremock::Request) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let value = request.headers.get(name).unwrap().to_str().unwrap();
        assert!(name != "webhook-signature" || value.starts_with("v1,"), "{value}");
        headers.insert(name, value.parse().unwrap());
    }
    headers
}

/// Each endpoint's owner holds only its own key: the same payload to two
/// endpoints carries different signatures, and neither key verifies the other's.
#[tokio::test]
async fn two_endpoints_get_different_signatures_for_the_same_payload() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).mount(&server).await;
    let (a, b) = (format!("{}/hooks/a", server.uri()), format!("{}/hooks/b", server.uri()));
    let provider = webhook(true, &server);
    provider.send(&hook(a.clone())).await.unwrap();
    provider.send(&hook(b.clone())).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    let (ha, hb) = (signed_headers(&requests[0]), signed_headers(&requests[1]));
    assert_eq!(requests[0].body, requests[1].body);
    assert_ne!(ha["webhook-signature"], hb["webhook-signature"]);
    let (ka, kb) = (key_of(&server, &a), key_of(&server, &b));
    assert_ne!(ka, kb);
    let receiver = |key: &str| standardwebhooks::Webhook::new(key).unwrap();
    assert!(receiver(&ka).verify(&requests[0].body, &ha).is_ok());
    assert!(receiver(&kb).verify(&requests[1].body, &hb).is_ok());
    assert!(receiver(&ka).verify(&requests[1].body, &hb).is_err(), "a's key cannot vouch for b's deliveries");
}

/// During a rotation each delivery carries both signatures: a receiver
/// holding either its old or its new key accepts it.
#[tokio::test]
async fn a_rotation_sends_both_signatures_until_it_ends() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).mount(&server).await;
    let url = format!("{}/hooks/a", server.uri());
    let old_key = key_of(&server, &url);
    let mut rotating = config(true, &server);
    rotating.previous_secret = Some(SECRET.into());
    rotating.previous_until = Some(chrono::Utc::now() + chrono::Duration::days(7));
    rotating.secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into();
    let new_key = super::keys::endpoint_secrets(&rotating, &url).unwrap().remove(0);
    Webhook::new("webhook", &rotating).unwrap().send(&hook(url.clone())).await.unwrap();
    let request = &server.received_requests().await.unwrap()[0];
    let headers = signed_headers(request);
    assert_eq!(headers["webhook-signature"].to_str().unwrap().split(' ').count(), 2);
    for key in [&old_key, &new_key] {
        assert!(standardwebhooks::Webhook::new(key).unwrap().verify(&request.body, &headers).is_ok());
    }
}

#[tokio::test]
async fn internal_destinations_are_refused_without_a_request() {
    let server = MockServer::start().await;
    let e = webhook(false, &server).send(&hook(format!("{}/x", server.uri()))).await.unwrap_err();
    assert!(e.invalid_recipient, "{e}");
    let e = webhook(false, &server).send(&hook("http://localhost:80/x".into())).await.unwrap_err();
    assert!(e.invalid_recipient, "a name resolving to loopback is refused too: {e}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

async fn answer(status: u16) -> crate::ProviderError {
    let server = MockServer::start().await;
    let mut response = ResponseTemplate::new(status);
    if status == 302 {
        response = response.insert_header("location", "http://169.254.169.254/latest/meta-data");
    }
    Mock::given(method("POST")).respond_with(response).mount(&server).await;
    webhook(true, &server).send(&hook(format!("{}/x", server.uri()))).await.unwrap_err()
}

#[tokio::test]
async fn endpoint_answers_are_classified_as_the_endpoints_fault() {
    let e = answer(302).await;
    assert_eq!(e.kind, ErrorKind::Permanent, "redirects are not followed");
    assert!(answer(410).await.invalid_recipient);
    let e = answer(503).await;
    assert_eq!((e.kind, e.recipient_fault), (ErrorKind::Transient, true));
    let e = answer(429).await;
    assert_eq!((e.kind, e.recipient_fault), (ErrorKind::Transient, true));
    assert_eq!(answer(400).await.kind, ErrorKind::Permanent);
}

#[tokio::test(start_paused = true)]
async fn a_destination_takes_at_most_its_share_of_calls_and_others_are_not_kept_waiting() {
    let config: WebhookConfig = serde_json::from_value(
        serde_json::json!({"secret": SECRET, "allow_private": true, "timeout": "2s", "max_per_destination": 2}),
    )
    .unwrap();
    let hooks = Webhook::new("webhook", &config).unwrap();
    let (a, b) = ("http://127.0.0.1:8001", "http://127.0.0.1:8002");
    let first = hooks.slot(a).await;
    let _second = hooks.slot(a).await;
    let soon = std::time::Duration::from_secs(1);
    assert!(tokio::time::timeout(soon, hooks.slot(a)).await.is_err(), "a third call to a waits");
    assert!(tokio::time::timeout(soon, hooks.slot(b)).await.is_ok(), "b has places of its own");
    drop(first);
    assert!(tokio::time::timeout(soon, hooks.slot(a)).await.is_ok(), "a place freed is taken");
}
