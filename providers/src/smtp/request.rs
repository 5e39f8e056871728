//! Building the MIME message: multipart text + HTML, a stable Message-ID, and
//! header values that cannot carry CR/LF from template data.

use crate::{Content, Outgoing, ProviderError};
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;

pub fn build(from: &Mailbox, message: &Outgoing) -> Result<Message, ProviderError> {
    let Content::Email { to, subject, text, html, unsubscribe } = &message.content else {
        return Err(ProviderError::permanent("not an email"));
    };
    let to: Mailbox = to.parse().map_err(|e| {
        ProviderError::invalid_recipient(format!("invalid address `{}`: {e}", tidings_core::redact::email(to)))
    })?;
    let mut builder = Message::builder();
    if let Some(u) = unsubscribe {
        builder = builder.header(ListUnsubscribeHeader(u.header())).header(ListUnsubscribePost);
    }
    builder
        .from(from.clone())
        .to(to)
        .subject(one_line(subject))
        // The same notification always carries the same Message-ID, so a
        // receiving system can drop a copy sent twice in the crash window.
        .message_id(Some(format!("<{}@tidings>", message.notification_id)))
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text.clone()))
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html.clone())),
        )
        .map_err(|e| ProviderError::permanent(format!("cannot build email: {e}")))
}

/// `List-Unsubscribe` (RFC 2369): the one-click URL, and a mailto when configured.
#[derive(Clone)]
struct ListUnsubscribeHeader(String);

impl Header for ListUnsubscribeHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribeHeader(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), one_line(&self.0))
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), tidings_core::unsubscribe::ONE_CLICK.to_string())
    }
}

/// Header text on one line: CR, LF and other controls become spaces.
pub fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_cannot_inject_headers() {
        let from: Mailbox = "Shop <no-reply@shop.example>".parse().unwrap();
        let msg = Outgoing {
            notification_id: "n1".into(),
            priority: tidings_core::Priority::Normal,
            content: Content::Email {
                to: "ana@example.com".into(),
                subject: "Hello\r\nBcc: victim@example.com".into(),
                text: "t".into(),
                html: "<p>h</p>".into(),
                unsubscribe: None,
            },
        };
        let raw = String::from_utf8(build(&from, &msg).unwrap().formatted()).unwrap();
        assert!(!raw.contains("\r\nBcc:"), "{raw}");
        assert!(raw.contains("Message-ID: <n1@tidings>"));
        assert!(raw.contains("multipart/alternative"));
    }

    #[test]
    fn an_unsubscribe_link_becomes_the_two_rfc_8058_headers() {
        let from: Mailbox = "no-reply@shop.example".parse().unwrap();
        let unsubscribe = tidings_core::unsubscribe::ListUnsubscribe {
            url: "https://hooks.example/u/k1.abc.def.ghi".into(),
            mailto: Some("mailto:leave@shop.example?subject=unsubscribe".into()),
        };
        let msg = Outgoing {
            notification_id: "n1".into(),
            priority: tidings_core::Priority::Bulk,
            content: Content::Email {
                to: "ana@example.com".into(),
                subject: "s".into(),
                text: "t".into(),
                html: "h".into(),
                unsubscribe: Some(unsubscribe),
            },
        };
        // A long header is folded (RFC 5322): read it unfolded.
        let raw = String::from_utf8(build(&from, &msg).unwrap().formatted()).unwrap().replace("\r\n ", " ");
        assert!(
            raw.contains("List-Unsubscribe: <https://hooks.example/u/k1.abc.def.ghi>, <mailto:leave@shop.example?subject=unsubscribe>\r\n"),
            "{raw}"
        );
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"), "{raw}");
    }

    #[test]
    fn an_unparseable_address_is_an_invalid_recipient() {
        let from: Mailbox = "no-reply@shop.example".parse().unwrap();
        let msg = Outgoing {
            notification_id: "n1".into(),
            priority: tidings_core::Priority::Normal,
            content: Content::Email {
                to: "not an address".into(),
                subject: "s".into(),
                text: "t".into(),
                html: "h".into(),
                unsubscribe: None,
            },
        };
        let err = build(&from, &msg).unwrap_err();
        assert!(err.invalid_recipient);
    }
}
