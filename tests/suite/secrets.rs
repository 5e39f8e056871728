//! Secrets and personal data stay out of output: the fleet runs as
//! processes logging at debug level, every provider fails in a way that
//! quotes the recipient or the URL, and no log line, status record or
//! dead-letter header holds a configured secret, an address, a number or a
//! webhook URL's token. Commands that fail print no password or key.

use crate::harness::{self, Infra, StatusWatch};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tidings_core::{Channel, State};
use tidings_providers::webhook::keys::EndpointKeys;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const SENDGRID_KEY: &str = "SG.topsecret-sendgrid-key";
/// All digits: it must still be read as a string from the environment.
const TWILIO_TOKEN: &str = "918273645";
const EMAIL: &str = "bob.secret@example.com";
const PHONE: &str = "33612345678";
const URL_TOKEN: &str = "tok_live_abcdef123456";

fn providers(sendgrid: &str, twilio: &str, closed_port: u16) -> String {
    format!(
        r#"
[providers.sendgrid]
kind = "sendgrid"
base_url = "{sendgrid}"
api_key = "{SENDGRID_KEY}"
from = "Shop <no-reply@shop.example>"
timeout = "5s"

[providers.twilio]
kind = "twilio"
base_url = "{twilio}"
account_sid = "AC123"
auth_token = "placeholder"
from = "+15550001111"
timeout = "5s"

[providers.webhook]
kind = "webhook"
allow_private = true
allowed_ports = [{closed_port}]
timeout = "5s"
"#
    )
}

/// Every line of `text` that holds one of the secrets (those configured,
/// and `stored`: the user's webhook key) or raw personal data.
fn leaks(text: &str, stored: &str) -> Vec<String> {
    let needles = [SENDGRID_KEY, TWILIO_TOKEN, stored, EMAIL, PHONE, URL_TOKEN];
    text.lines().filter(|l| needles.iter().any(|n| l.contains(n))).map(|l| l.chars().take(300).collect()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_log_line_status_or_dead_letter_holds_a_secret_or_raw_address() {
    let infra = Infra::start();
    let sendgrid = MockServer::start().await;
    let said = format!(
        r#"{{"errors":[{{"message":"The to email {EMAIL} does not contain a valid address.","field":"personalizations.0.to.0.email"}}]}}"#
    );
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(400).set_body_string(said)).mount(&sendgrid).await;
    let twilio = MockServer::start().await;
    let said = format!("The 'To' number +{PHONE} is not a valid phone number.");
    let body = serde_json::json!({"code": 21211, "message": said, "status": 400});
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(400).set_body_json(body)).mount(&twilio).await;
    // Nothing listens there: every webhook call fails to connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    let dir = tempfile::tempdir().unwrap();
    let file = harness::config_file(
        dir.path(),
        &providers(&sendgrid.uri(), &twilio.uri(), closed),
        "\n[channels.email]\nproviders = [\"sendgrid\"]\n[channels.sms]\nproviders = [\"twilio\"]\n\
         [channels.webhook]\nproviders = [\"webhook\"]\n",
        &[
            (r#"channels = ["email", "sms", "push"]"#, r#"channels = ["email", "sms", "webhook"]"#),
            ("passes = 3", "passes = 1"),
            (r#"initial_backoff = "200ms""#, r#"initial_backoff = "20ms""#),
        ],
    );
    let config = std::sync::Arc::new(
        tidings_core::Config::load(Some(&file))
            .map(|mut c| {
                c.kafka.bootstrap_servers = infra.kafka.bootstrap_servers().to_string();
                c.redis.url = infra.redis.url();
                c
            })
            .unwrap(),
    );
    let store = tidings::fleet::open_store(&config).await.unwrap();
    let user = serde_json::json!({
        "user_id": "u-1", "timezone": "UTC", "locale": "en", "email": EMAIL, "phone": format!("+{PHONE}"),
        "webhook_url": format!("http://127.0.0.1:{closed}/hooks/{URL_TOKEN}?sig=zzz"),
        "channels": {"email": true, "sms": true, "webhook": true}
    });
    store.set_prefs("u-1", &user.to_string()).await.unwrap();

    let watch = StatusWatch::start(&config);
    let roles: [&[&str]; 4] = [
        &["intake"],
        &["worker", "--channel", "email"],
        &["worker", "--channel", "sms"],
        &["worker", "--channel", "webhook"],
    ];
    let mut logs = Vec::new();
    let mut processes = Vec::new();
    for (i, args) in roles.iter().enumerate() {
        let log = dir.path().join(format!("role-{i}.log"));
        let child = infra
            .command(&file, args)
            .env("TIDINGS_LOG", "debug,librdkafka=info,rdkafka=info")
            .env("TIDINGS_PROVIDERS__TWILIO__AUTH_TOKEN", TWILIO_TOKEN)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        processes.push(harness::Process::from(child));
        logs.push(log);
    }
    tidings::commands::dev::feed(&config, &harness::order_event(1, "u-1")).await.unwrap();
    let records = watch
        .wait_until("every channel to end", Duration::from_secs(120), |rs| {
            [Channel::Email, Channel::Sms, Channel::Webhook].iter().all(|c| {
                rs.iter().any(|r| r.channel == Some(*c) && matches!(r.state, State::DeadLettered | State::Suppressed))
            })
        })
        .await;
    drop(processes);

    // The key the webhook worker made for the user and signed with.
    let stored = store.webhook_keys("u-1", "").await.unwrap();
    let (_, key) = EndpointKeys::parse(&stored).unwrap().printable(chrono::Utc::now()).remove(0);
    let key = key.trim_start_matches("whsec_");
    let mut leaked = Vec::new();
    for log in &logs {
        leaked.extend(leaks(&std::fs::read_to_string(log).unwrap(), key));
    }
    for r in &records {
        leaked.extend(leaks(&serde_json::to_string(r).unwrap(), key));
    }
    // The webhook's dead letter (the other two are suppressed as invalid recipients).
    let letters = harness::read_topic(&config, &Channel::Webhook.dlq_topic(), 1);
    assert_eq!(letters.len(), 1);
    leaked.extend(letters[0].headers.values().flat_map(|v| leaks(v, key)));
    assert!(leaked.is_empty(), "leaked: {leaked:#?}");
    // What was kept says enough to act on.
    let errors: Vec<&str> = records.iter().filter_map(|r| r.error.as_deref()).collect();
    assert!(errors.iter().any(|e| e.contains("b***@example.com")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("+3361****678")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("Connection refused")), "{errors:?}");
}

/// Runs `tidings <args>` to its end and returns what it printed.
fn output(infra: &Infra, file: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = infra.command(file, args).envs(env.iter().copied()).stdout(Stdio::piped()).output().unwrap();
    assert!(!out.status.success(), "{args:?} was meant to fail");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test]
async fn failing_commands_print_no_password_or_key() {
    let infra = Infra::start();
    let dir = tempfile::tempdir().unwrap();
    let folder = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        path
    };
    let file = harness::config_file(&folder("plain"), "", "", &[]);

    let printed = output(
        &infra,
        &file,
        &["prefs", "get", "u-1"],
        &[("TIDINGS_REDIS__URL", "redis://:S3cretRedisPw@127.0.0.1:1/0")],
    );
    assert!(printed.contains("cannot reach Redis at redis://:***@127.0.0.1:1/0"), "{printed}");
    assert!(!printed.contains("S3cretRedisPw"), "{printed}");

    // A secret written as a number in the file is refused without its value.
    let smtp =
        "\n[providers.smtp]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nusername = \"u\"\npassword = 918273645\n";
    let numeric = harness::config_file(&folder("numeric"), smtp, "", &[]);
    let printed = output(&infra, &numeric, &["prefs", "get", "u-1"], &[]);
    assert!(printed.contains("providers.smtp") && !printed.contains("918273645"), "{printed}");

    // A key file that is not what it should be: said so, never shown.
    let key = "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\\n-----END PRIVATE KEY-----\\n";
    let inner =
        format!(r#"{{"type":"service_account","project_id":"p","private_key":"{key}","client_email":"x@p.iam"}}"#);
    let key_file = dir.path().join("fcm.json");
    std::fs::write(&key_file, serde_json::to_string(&inner).unwrap()).unwrap();
    let fcm = format!("\n[providers.fcm]\nkind = \"fcm\"\ncredentials_file = \"{}\"\n", key_file.display());
    let with_fcm = harness::config_file(&folder("fcm"), &fcm, "\n[channels.push]\nproviders = [\"fcm\"]\n", &[]);
    let printed = output(&infra, &with_fcm, &["worker", "--channel", "push"], &[]);
    assert!(printed.contains("service-account key is not usable"), "{printed}");
    assert!(!printed.contains("MIIEvQIBADANBg") && !printed.contains("PRIVATE KEY"), "{printed}");
}

/// Each user's webhook key is random and their own: two users who register
/// the same URL get different keys, `tidings prefs webhook-secret` prints
/// the one the worker signs that user's deliveries with, and `--rotate`
/// signs with both keys until the overlap ends (with none, at once only
/// the new one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_user_has_a_webhook_key_of_their_own_and_can_rotate_it() {
    let infra = Infra::start();
    let endpoint = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).mount(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let port = endpoint.address().port();
    let file = harness::config_file(
        dir.path(),
        &providers("http://127.0.0.1:9", "http://127.0.0.1:9", port),
        "\n[channels.webhook]\nproviders = [\"webhook\"]\n",
        &[(r#"channels = ["email", "sms", "push"]"#, r#"channels = ["webhook"]"#)],
    );
    let mut config = tidings_core::Config::load(Some(&file)).unwrap();
    config.kafka.bootstrap_servers = infra.kafka.bootstrap_servers().to_string();
    config.redis.url = infra.redis.url();
    let config = std::sync::Arc::new(config);
    let store = tidings::fleet::open_store(&config).await.unwrap();
    // The same endpoint for both, as one customer may register another's.
    let url = format!("{}/hooks/shared", endpoint.uri());
    for user in ["u-a", "u-b"] {
        let prefs = serde_json::json!({"user_id": user, "webhook_url": url, "channels": {"webhook": true}});
        store.set_prefs(user, &prefs.to_string()).await.unwrap();
    }
    let secret = |args: &[&str]| -> Vec<(String, String)> {
        let out = infra.command(&file, args).stdout(Stdio::piped()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8(out.stdout).unwrap();
        printed.lines().map(|l| l.split_once('\t').map(|(k, w)| (k.to_string(), w.to_string())).unwrap()).collect()
    };
    let a = secret(&["prefs", "webhook-secret", "u-a"]);
    let b = secret(&["prefs", "webhook-secret", "u-b"]);
    assert_eq!((a.len(), a[0].1.as_str()), (1, "current"), "{a:?}");
    assert_ne!(a[0].0, b[0].0, "the same URL, a different key");
    assert_eq!(secret(&["prefs", "webhook-secret", "u-a"]), a, "printed again, the same key");

    let watch = StatusWatch::start(&config);
    let roles =
        tidings::fleet::Roles { intake: true, scheduler: false, callbacks: false, channels: vec![Channel::Webhook] };
    let running = tidings::fleet::spawn_fleet(config.clone(), store, tidings_core::Clock::system(), roles).unwrap();
    let sent = |n: usize| {
        let watch = &watch;
        async move {
            watch
                .wait_until("the webhooks to be sent", Duration::from_secs(60), |rs| {
                    rs.iter().filter(|r| r.state == State::Sent).count() >= n
                })
                .await;
        }
    };
    let feed = |seq: usize, user: &str| {
        let config = config.clone();
        let event = harness::order_event(seq, user);
        async move { tidings::commands::dev::feed(&config, &event).await.unwrap() }
    };
    feed(1, "u-a").await;
    feed(2, "u-b").await;
    sent(2).await;
    let verifies = |key: &str, request: &wiremock::Request| {
        standardwebhooks::Webhook::new(key).unwrap().verify(&request.body, &request.headers).is_ok()
    };
    let requests = endpoint.received_requests().await.unwrap();
    let user_of =
        |r: &wiremock::Request| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["user_id"].clone();
    let (to_a, to_b) =
        if user_of(&requests[0]) == "u-a" { (&requests[0], &requests[1]) } else { (&requests[1], &requests[0]) };
    assert!(verifies(&a[0].0, to_a) && verifies(&b[0].0, to_b), "each verifies with the key printed for them");
    assert!(!verifies(&a[0].0, to_b) && !verifies(&b[0].0, to_a), "and not with the other's");

    // A rotation: both signatures, so the receiver can move at its pace.
    let rotated = secret(&["prefs", "webhook-secret", "u-a", "--rotate", "--overlap", "1h"]);
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    assert_eq!(rotated[1].0, a[0].0, "the old key is the previous one");
    assert!(rotated[1].1.starts_with("previous until "), "{rotated:?}");
    feed(3, "u-a").await;
    sent(3).await;
    let third = &endpoint.received_requests().await.unwrap()[2];
    assert!(verifies(&rotated[0].0, third) && verifies(&a[0].0, third), "old and new keys both verify it");
    // A leaked key: rotated with no overlap, it stops signing at once.
    let leaked = secret(&["prefs", "webhook-secret", "u-a", "--rotate", "--overlap", "0s"]);
    assert_eq!(leaked.len(), 1, "{leaked:?}");
    feed(4, "u-a").await;
    sent(4).await;
    let fourth = &endpoint.received_requests().await.unwrap()[3];
    assert!(verifies(&leaked[0].0, fourth), "the newest key verifies it");
    assert!(!verifies(&rotated[0].0, fourth) && !verifies(&a[0].0, fourth), "no earlier key does");
    running.shutdown().await.unwrap();
}
