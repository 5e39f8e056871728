//! The request: `apns-*` headers and the `aps` payload.

use tidings_core::Priority;

/// `apns-id` must be a UUID: the notification id (32 hex digits) in UUID form.
pub fn apns_id(notification_id: &str) -> Option<String> {
    let h = notification_id;
    (h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

pub fn headers(
    request: reqwest::RequestBuilder,
    jwt: &str,
    topic: &str,
    priority: Priority,
    notification_id: &str,
) -> reqwest::RequestBuilder {
    // 10: deliver now; 5: may be delayed to save power (bulk).
    let apns_priority = if priority == Priority::Bulk { "5" } else { "10" };
    let mut request = request
        .bearer_auth(jwt)
        .header("apns-topic", topic)
        .header("apns-push-type", "alert")
        .header("apns-priority", apns_priority)
        .header("apns-collapse-id", notification_id);
    if let Some(id) = apns_id(notification_id) {
        request = request.header("apns-id", id);
    }
    request
}

pub fn body(title: &str, text: &str, notification_id: &str) -> serde_json::Value {
    serde_json::json!({
        "aps": {"alert": {"title": title, "body": text}, "sound": "default"},
        "notification_id": notification_id,
    })
}
