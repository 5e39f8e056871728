//! The adapter against a wiremock endpoint, verifying the signature the way
//! a receiver would, with the Standard Webhooks reference library.

use super::config::WebhookConfig;
use super::keys::EndpointKeys;
use super::Webhook;
use crate::{Content, ErrorKind, Outgoing, Provider};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn config(allow_private: bool, server: &MockServer) -> WebhookConfig {
    serde_json::from_value(serde_json::json!({
        "allow_private": allow_private, "timeout": "2s",
        "allowed_ports": [80, 443, server.address().port()],
    }))
    .unwrap()
}

fn webhook(allow_private: bool, server: &MockServer) -> Webhook {
    Webhook::new("webhook", &config(allow_private, server)).unwrap()
}

fn hook(url: String) -> Outgoing {
    signed(url, &EndpointKeys::fresh())
}

fn signed(url: String, keys: &EndpointKeys) -> Outgoing {
    Outgoing {
        notification_id: "n1".into(),
        priority: tidings_core::Priority::Normal,
        content: Content::Webhook {
            url,
            body: serde_json::json!({"type": "order.confirmed", "data": {"order_id": "o-1"}}),
            keys: keys.signing(chrono::Utc::now()).unwrap(),
        },
    }
}

/// What the receiver holding `keys` verifies with, as `tidings prefs webhook-secret` prints it.
fn receiver(keys: &EndpointKeys, which: usize) -> standardwebhooks::Webhook {
    standardwebhooks::Webhook::new(&keys.printable(chrono::Utc::now())[which].1).unwrap()
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
    let keys = EndpointKeys::fresh();
    webhook(true, &server).send(&signed(url.clone(), &keys)).await.unwrap();
    let request = &server.received_requests().await.unwrap()[0];
    let headers = signed_headers(request);
    receiver(&keys, 0).verify(&request.body, &headers).expect("a receiver accepts the signature");
    let other = EndpointKeys::fresh();
    assert!(receiver(&other, 0).verify(&request.body, &headers).is_err(), "another user's key does not verify it");
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

/// A webhook without keys (content not from the worker) is never sent unsigned.
#[tokio::test]
async fn a_webhook_without_keys_is_not_sent() {
    let server = MockServer::start().await;
    let mut message = hook(format!("{}/hooks/a", server.uri()));
    let Content::Webhook { keys, .. } = &mut message.content else { unreachable!() };
    keys.0.clear();
    let e = webhook(true, &server).send(&message).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

/// During a rotation each delivery carries both signatures: a receiver
/// holding either its old or its new key accepts it.
#[tokio::test]
async fn a_rotation_sends_both_signatures_until_it_ends() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).mount(&server).await;
    let url = format!("{}/hooks/a", server.uri());
    let old = EndpointKeys::fresh();
    let rotating = old.rotated(chrono::Utc::now(), std::time::Duration::from_secs(7 * 86_400));
    webhook(true, &server).send(&signed(url.clone(), &rotating)).await.unwrap();
    let request = &server.received_requests().await.unwrap()[0];
    let headers = signed_headers(request);
    assert_eq!(headers["webhook-signature"].to_str().unwrap().split(' ').count(), 2);
    for receiver in [receiver(&old, 0), receiver(&rotating, 0), receiver(&rotating, 1)] {
        assert!(receiver.verify(&request.body, &headers).is_ok());
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
    let config: WebhookConfig =
        serde_json::from_value(serde_json::json!({"allow_private": true, "timeout": "2s", "max_per_destination": 2}))
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

/// A configuration of earlier versions (a master key) stops the worker with
/// what to do, instead of signing with a key no one holds any more.
#[test]
fn a_configured_master_key_is_refused_with_what_to_do() {
    use crate::registry::Settings;
    let c: WebhookConfig =
        serde_json::from_value(serde_json::json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})).unwrap();
    let e = c.validate().unwrap_err();
    assert!(e.contains("no longer read") && e.contains("prefs webhook-secret") && !e.contains("MfKQ9r8"), "{e}");
}
