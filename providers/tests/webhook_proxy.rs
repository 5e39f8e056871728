//! A proxy set in the environment is never used for webhooks: through one,
//! the destination guard would only ever see the proxy's address. A test
//! binary of its own, since it sets the process's environment.

use tidings_providers::webhook::config::WebhookConfig;
use tidings_providers::webhook::keys::EndpointKeys;
use tidings_providers::webhook::Webhook;
use tidings_providers::{Content, Outgoing, Provider};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn webhooks_ignore_proxies_from_the_environment() {
    let proxy = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&proxy).await;
    let endpoint = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&endpoint).await;
    for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"] {
        // SAFETY: this binary's only test sets them before any client exists.
        unsafe { std::env::set_var(name, proxy.uri()) };
    }
    let config: WebhookConfig = serde_json::from_value(serde_json::json!({
        "allow_private": true, "timeout": "2s",
        "allowed_ports": [endpoint.address().port()],
    }))
    .unwrap();
    let hooks = Webhook::new("webhook", &config).unwrap();
    let message = Outgoing {
        notification_id: "n1".into(),
        priority: tidings_core::Priority::Normal,
        content: Content::Webhook {
            url: format!("{}/hook", endpoint.uri()),
            body: serde_json::json!({"a": 1}),
            keys: EndpointKeys::fresh().signing(chrono::Utc::now()).unwrap(),
        },
    };
    hooks.send(&message).await.unwrap();
    assert_eq!(endpoint.received_requests().await.unwrap().len(), 1, "straight to the endpoint");
    assert!(proxy.received_requests().await.unwrap().is_empty(), "never through the proxy");
}
