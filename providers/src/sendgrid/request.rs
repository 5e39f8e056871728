//! The `mail/send` body: one personalization, text and HTML content, and the
//! notification id as a custom argument (it comes back on SendGrid's events).

use crate::{Content, Outgoing, ProviderError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Address {
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Address {
    /// `Name <email>` or a bare address.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        match s.rsplit_once('<') {
            Some((name, rest)) => {
                let email = rest.strip_suffix('>')?.trim().to_string();
                let name = name.trim().trim_matches('"').trim();
                tidings_core::prefs::is_email(&email)
                    .then(|| Address { email, name: (!name.is_empty()).then(|| name.to_string()) })
            }
            None => tidings_core::prefs::is_email(s).then(|| Address { email: s.to_string(), name: None }),
        }
    }
}

pub fn body(from: &Address, message: &Outgoing) -> Result<serde_json::Value, ProviderError> {
    let Content::Email { to, subject, text, html, unsubscribe } = &message.content else {
        return Err(ProviderError::permanent("not an email"));
    };
    if !tidings_core::prefs::is_email(to) {
        return Err(ProviderError::invalid_recipient(format!("invalid address `{to}`")));
    }
    let mut body = serde_json::json!({
        "personalizations": [{"to": [{"email": to}]}],
        "from": from,
        "subject": crate::smtp::one_line(subject),
        "content": [
            {"type": "text/plain", "value": text},
            {"type": "text/html", "value": html},
        ],
        "custom_args": {"notification_id": message.notification_id},
    });
    if let Some(u) = unsubscribe {
        body["headers"] = serde_json::json!({
            "List-Unsubscribe": crate::smtp::one_line(&u.header()),
            "List-Unsubscribe-Post": tidings_core::unsubscribe::ONE_CLICK,
        });
    }
    Ok(body)
}
