//! The v1 message: one token, the notification, and our id in `data`.

pub fn body(token: &str, title: &str, text: &str, notification_id: &str) -> serde_json::Value {
    serde_json::json!({
        "message": {
            "token": token,
            "notification": {"title": title, "body": text},
            "data": {"notification_id": notification_id},
        }
    })
}
