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

/// A test-only DKIM key pair (RSA 2048, PKCS#1), made with
/// `openssl genrsa -traditional 2048`; its public half as DNS publishes it.
const DKIM_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEoQIBAAKCAQEAuC8/rdIRNp2BrFkno/m8/h/LWeCJpyWpWWcX2hpGT6i2xHko\nRjywd6RSxrhuecHL2qZK7zFfqY82V2IHJIB2xMAJuM7hqLj0K4bqW2TCaCeeTOnj\nJdMAiDruadEIYtuUxNrH23Q5yGgRasqP6YCCXHGK7kaiIHLYTm4o4lWO7se15PUU\nA2lZTMDG1pAEkGE+5M/viIUyAOh7wF+adyKDKRdxGCH+ZQ804mfpwepHwfSKURPj\nWyHyd11LhxG1rQLLyXWwhxXBKJcw9B3xjNQYXO8GCZt+CoHT7I7pXDD9P35nx1AT\nJCDHjFv9JSmoAN/aqKU/Avx41F3tNLMSQcOR6QIDAQABAoH/ZH5eWGpKcs9z7GBr\nbALlutpMCyNbI18XDFANBa/EQvrn1hFwkRwOWD35YBMkNAJFsKtYQRa0OFIgl9pF\nNt9LI1c6HVzz/OXoejfyXmkBBV9QCaJeb0TTJ1ETe94FmF60JC0d9vFRkOoVa0Js\nlTmXVj6J/ky8Al3Sj4lugZvC2bn6BGNE/WupXmpHCgwq7cAyxIZyKERPOpEE6vln\nw992Ma8V3+rgtwS+dYUGdwElrG6cbCotf42cVrKY+xKvz0BjGos60F0zUdXvYWTO\ngY5PQfixkoCzCDVRYUmoXX9mLECkkl9JO66eLFbN9uh05wBC0MDDUuZp/DpBZ6rF\nhtgtAoGBAPO86DStfZw0flCFRpY3lUx8Bdke//F5QmiTKz0zVb2XnVwBWT3CMc4U\ngKq5qJ6h6CqBX4OEkcuLf8TcT+yUFcruolAPtFau7bqrkddV1o8wHr4Rzw1zFhph\niM8EXPmK6yl0E9kEv6wWFR6/jy1FSHt42pFdwQizXr1eLEWgEmmvAoGBAMFzWx8i\n3DGRW8Qwq2YgKjAwNCKUIatFV9Bpsq7DypepLKDXvQimTjE6awtUAKsq6sJSPgLz\nK5l6QZ2GvWpR2tV2UpwwMohp7kKR198O3pQHeFzcZYyFTAewXhNwyY2yp5p1aGep\njW+epGF9IFRrUidCroHLeTH9hF1ugwSJ+1vnAoGAddfR1RZEcu+WWsv1Ms+w6YfV\nNAKe8FsWVoVBFJfrTn0tYbxtL0Ti26ZiByk4c2oIW/Ss/2NrMiRCJCX4poN6feEe\nrOLK6FYvLl+hZaFk2VoEoxTtLK2F9D9P6/dKFISr6iDrL7PyD/ulPnaTfOnQf5IQ\n6tOPbut6VMhhU1BvVpUCgYAvLyTNnmIY0PySCND1kujXYhqFSJ5BuSMnGXDUwbq7\nbS8OeDCKWI3/4eDUHYQgO9KQ3SB09bzvrWstsfynXxnCMR8LK5JXxYawxAPkSyss\n7fmEpNk8AhM+WN1JXpw6rJXGzdZOWoO98vLjOHLXRGoAW3pW/DsuX0iWxWq9g65E\nhwKBgQDlpEoodjzLq1zwqfZVQfeock29c8c/iBqxnlI6Uh9uPsPHkHd8aYFaSXS4\ndzaxWuMLMN8TVGNhY+96qrf0FC1t+aouPW8sGAwIa0E1bQWACdbsRN8TSnLJ/nUS\nOxFwQuhWEd56Z1ThhuuwjsVBQnlpShIQ6WiIX6xDLGGjiaBdhQ==\n-----END RSA PRIVATE KEY-----";
const DKIM_PUBLIC: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuC8/rdIRNp2BrFkno/m8/h/LWeCJpyWpWWcX2hpGT6i2xHkoRjywd6RSxrhuecHL2qZK7zFfqY82V2IHJIB2xMAJuM7hqLj0K4bqW2TCaCeeTOnjJdMAiDruadEIYtuUxNrH23Q5yGgRasqP6YCCXHGK7kaiIHLYTm4o4lWO7se15PUUA2lZTMDG1pAEkGE+5M/viIUyAOh7wF+adyKDKRdxGCH+ZQ804mfpwepHwfSKURPjWyHyd11LhxG1rQLLyXWwhxXBKJcw9B3xjNQYXO8GCZt+CoHT7I7pXDD9P35nx1ATJCDHjFv9JSmoAN/aqKU/Avx41F3tNLMSQcOR6QIDAQAB";

/// DKIM records served from memory to the verifier, by name.
#[derive(Default)]
struct Dns(std::sync::Mutex<std::collections::HashMap<Box<str>, mail_auth::Txt>>);

impl mail_auth::ResolverCache<Box<str>, mail_auth::Txt> for Dns {
    fn get<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: mail_auth::Txt, _: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// The DKIM results of a received message (CRLF restored), with the
/// configured public key as `sel1._domainkey.shop.example` publishes it.
async fn dkim_results(data: &str) -> Vec<mail_auth::DkimResult> {
    use mail_auth::common::parse::TxtRecordParser;
    let record = format!("v=DKIM1; k=rsa; p={DKIM_PUBLIC}");
    let key = mail_auth::common::verify::DomainKey::parse(record.as_bytes()).unwrap();
    let dns = Dns::default();
    dns.0.lock().unwrap().insert("sel1._domainkey.shop.example.".into(), mail_auth::Txt::from(key));
    let raw = data.replace("\r\n", "\n").replace('\n', "\r\n");
    let message = mail_auth::AuthenticatedMessage::parse(raw.as_bytes()).unwrap();
    // The resolver is never asked: the record is in the cache.
    let authenticator = mail_auth::MessageAuthenticator::new_cloudflare().unwrap();
    let results = authenticator.verify_dkim(mail_auth::Parameters::new(&message).with_txt_cache(&dns)).await;
    results.iter().map(|r| r.result().clone()).collect()
}

#[tokio::test]
async fn a_dkim_signed_message_verifies_against_the_published_key() {
    let server = SmtpServer::start().await;
    let config: SmtpConfig = serde_json::from_value(serde_json::json!({
        "host": "127.0.0.1", "port": server.port, "tls": "none", "allow_plaintext": true,
        "from": "Shop <no-reply@shop.example>", "timeout": "5s",
        "dkim": {"domain": "shop.example", "selector": "sel1", "private_key": DKIM_KEY}
    }))
    .unwrap();
    let smtp = Smtp::new("smtp", &config).unwrap();
    smtp.send(&email()).await.unwrap();
    let mut marketing = email();
    marketing.notification_id = "m1".into();
    if let Content::Email { unsubscribe, .. } = &mut marketing.content {
        *unsubscribe = Some(tidings_core::unsubscribe::ListUnsubscribe {
            url: "https://hooks.shop.example/u/k1.dS0x.bWFya2V0aW5n.abc".into(),
            mailto: None,
        });
    }
    smtp.send(&marketing).await.unwrap();
    let received = server.received();
    for m in &received {
        assert_eq!(dkim_results(&m.data).await, vec![mail_auth::DkimResult::Pass], "{}", m.data);
    }
    let signature = received[1].data.replace("\n ", " ").replace("\n\t", " ");
    let signed = signature.lines().find(|l| l.starts_with("DKIM-Signature:")).unwrap().to_ascii_lowercase();
    assert!(signed.contains("list-unsubscribe-post") && signed.contains("list-unsubscribe:"), "{signed}");
    // Changed on the way (the subject), it no longer verifies.
    let tampered = received[0].data.replace("Subject: Order o-1 confirmed", "Subject: Order o-1 refunded");
    assert!(matches!(dkim_results(&tampered).await[..], [mail_auth::DkimResult::Fail(_)]));
}

#[test]
fn a_dkim_key_that_is_not_one_is_a_configuration_error() {
    let config: SmtpConfig = serde_json::from_value(serde_json::json!({
        "host": "h", "from": "a@b.io", "dkim": {"domain": "shop.example", "selector": "s", "private_key": "not a key"}
    }))
    .unwrap();
    let problem = tidings_providers::registry::Settings::validate(&config).unwrap_err();
    assert_eq!(problem, "dkim: the private key is not usable (not shown)");
}
