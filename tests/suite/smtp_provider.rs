//! The SMTP adapter against a real SMTP server in the test process.

use crate::harness::smtp::SmtpServer;
use tidings_providers::smtp::config::SmtpConfig;
use tidings_providers::smtp::Smtp;
use tidings_providers::{Content, ErrorKind, Outgoing, Provider};

fn smtp(port: u16) -> Smtp {
    let config: SmtpConfig = serde_json::from_value(serde_json::json!({
        "host": "127.0.0.1", "port": port, "tls": "none", "allow_plaintext": true,
        "from": "Shop <no-reply@shop.example>", "timeout": "5s", "pool_size": 2
    }))
    .unwrap();
    Smtp::new("smtp", &config).unwrap()
}

fn email() -> Outgoing {
    Outgoing {
        notification_id: "abc123".into(),
        priority: tidings_core::Priority::Normal,
        content: Content::Email {
            to: "ana@example.com".into(),
            subject: "Order o-1 confirmed".into(),
            text: "Thank you.".into(),
            html: "<p>Thank you.</p>".into(),
            unsubscribe: None,
        },
    }
}

#[tokio::test]
async fn sends_a_multipart_message_with_a_stable_message_id() {
    let server = SmtpServer::start().await;
    let receipt = smtp(server.port).send(&email()).await.unwrap();
    assert!(receipt.provider_message_id.unwrap().contains("queued as m1"));
    let received = server.received();
    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert_eq!(m.rcpt, vec!["<ana@example.com>"]);
    assert_eq!(server.shared.mail_from.lock().unwrap()[0], "MAIL FROM:<no-reply@shop.example>");
    assert_eq!(m.header("Message-ID").as_deref(), Some("<abc123@tidings>"));
    assert_eq!(m.header("Subject").as_deref(), Some("Order o-1 confirmed"));
    assert!(m.header("Content-Type").unwrap().starts_with("multipart/alternative"));
    assert!(m.data.contains("Thank you.") && m.data.contains("<p>Thank you.</p>"));
}

async fn refused(rcpt: Option<&str>, mail: Option<&str>) -> tidings_providers::ProviderError {
    let server = SmtpServer::start().await;
    *server.shared.rcpt_reply.lock().unwrap() = rcpt.map(String::from);
    *server.shared.mail_reply.lock().unwrap() = mail.map(String::from);
    smtp(server.port).send(&email()).await.unwrap_err()
}

#[tokio::test]
async fn reply_codes_and_enhanced_status_codes_are_classified() {
    let e = refused(Some("550 5.1.1 <ana@example.com>: Recipient address rejected: User unknown"), None).await;
    assert_eq!((e.kind, e.invalid_recipient), (ErrorKind::Permanent, true), "{e}");
    let e = refused(Some("452 4.2.2 Mailbox full"), None).await;
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    let e = refused(Some("554 5.7.1 Message rejected as spam"), None).await;
    assert_eq!((e.kind, e.invalid_recipient), (ErrorKind::Permanent, false), "{e}");
    let e = refused(None, Some("530 5.7.0 Authentication required")).await;
    assert_eq!(e.kind, ErrorKind::ProviderDown, "{e}");
}

#[tokio::test]
async fn a_refused_connection_is_provider_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = smtp(port).send(&email()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ProviderDown, "{e}");
}
