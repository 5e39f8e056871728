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
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const SENDGRID_KEY: &str = "SG.topsecret-sendgrid-key";
/// All digits: it must still be read as a string from the environment.
const TWILIO_TOKEN: &str = "918273645";
const WEBHOOK_KEY: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
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
secret = "whsec_{WEBHOOK_KEY}"
allow_private = true
allowed_ports = [{closed_port}]
timeout = "5s"
"#
    )
}

/// Every line of `text` that holds one of the secrets or raw personal data.
fn leaks(text: &str) -> Vec<String> {
    let needles = [SENDGRID_KEY, TWILIO_TOKEN, WEBHOOK_KEY, EMAIL, PHONE, URL_TOKEN];
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

    let mut leaked = Vec::new();
    for log in &logs {
        leaked.extend(leaks(&std::fs::read_to_string(log).unwrap()));
    }
    for r in &records {
        leaked.extend(leaks(&serde_json::to_string(r).unwrap()));
    }
    // The webhook's dead letter (the other two are suppressed as invalid recipients).
    let letters = harness::read_topic(&config, &Channel::Webhook.dlq_topic(), 1);
    assert_eq!(letters.len(), 1);
    leaked.extend(letters[0].headers.values().flat_map(|v| leaks(v)));
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

/// `tidings prefs webhook-secret` prints the key a user's endpoint verifies
/// with: the one the webhook provider signs that endpoint's deliveries with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_webhook_secret_verifies_that_endpoints_deliveries() {
    use tidings_providers::{Content, Outgoing, Provider};
    let infra = Infra::start();
    let endpoint = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).mount(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let port = endpoint.address().port();
    let file = harness::config_file(dir.path(), &providers("http://127.0.0.1:9", "http://127.0.0.1:9", port), "", &[]);
    let config = tidings_core::Config::load(Some(&file)).unwrap();
    let url = format!("{}/hooks/u-1", endpoint.uri());
    let mut store_config = config.clone();
    store_config.redis.url = infra.redis.url();
    let store = tidings::fleet::open_store(&store_config).await.unwrap();
    let user = serde_json::json!({"user_id": "u-1", "webhook_url": url, "channels": {"webhook": true}});
    store.set_prefs("u-1", &user.to_string()).await.unwrap();

    let out = infra.command(&file, &["prefs", "webhook-secret", "u-1"]).stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = printed.trim().split('\t').collect();
    assert_eq!((fields[0], fields[2]), ("webhook", "current"), "{printed}");
    assert!(!printed.contains(WEBHOOK_KEY), "the master key is never printed");

    let c: tidings_providers::webhook::config::WebhookConfig =
        tidings_providers::registry::settings("webhook", &config.providers["webhook"]).unwrap();
    let provider = tidings_providers::webhook::Webhook::new("webhook", &c).unwrap();
    let body = serde_json::json!({"type": "order.confirmed"});
    let message = Outgoing {
        notification_id: "n-1".into(),
        priority: tidings_core::Priority::Normal,
        content: Content::Webhook { url, body },
    };
    provider.send(&message).await.unwrap();
    let request = &endpoint.received_requests().await.unwrap()[0];
    standardwebhooks::Webhook::new(fields[1]).unwrap().verify(&request.body, &request.headers).unwrap();
}
