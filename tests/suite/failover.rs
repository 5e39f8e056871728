//! Provider outages: the breaker opens, traffic moves to the next provider,
//! the breaker probes and closes; with every provider down nothing is burnt
//! into the dead-letter topic; a critical message falls back to SMS.

use crate::harness;
use crate::harness::smtp::SmtpServer;
use crate::harness::{fakes, order_event, Infra, StatusWatch};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::fleet::{self, Roles};
use tidings_core::notification::notification_id;
use tidings_core::{Channel, Clock, Config, State};

fn providers(sendgrid: &str, smtp_port: u16, twilio: &str) -> String {
    harness::sendgrid_provider(sendgrid, "5s") + &harness::smtp_and_twilio(smtp_port, twilio)
}

fn tuned(mut config: Config) -> Config {
    let b = &mut config.worker.breaker;
    b.window = Duration::from_secs(10);
    b.min_calls = 10;
    b.failure_rate = 0.5;
    b.reset_timeout = Duration::from_secs(2);
    b.half_open_probes = 3;
    let r = &mut config.worker.retry;
    r.attempts = 2;
    r.initial_backoff = Duration::from_millis(20);
    r.max_backoff = Duration::from_millis(200);
    config
}

fn users(n: usize) -> String {
    (0..n).map(|i| harness::email_user(i) + "\n").collect()
}

fn events(from: usize, to: usize, users: usize) -> String {
    (from..to).map(|seq| order_event(seq, &format!("u-{}", seq % users)) + "\n").collect()
}

/// How many times each notification reached either email provider.
fn deliveries(sendgrid: &fakes::SendgridState, smtp: &SmtpServer) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for id in sendgrid.accepted() {
        *seen.entry(id).or_default() += 1;
    }
    for m in smtp.received() {
        let id = m.header("Message-ID").unwrap().trim_matches(['<', '>']).trim_end_matches("@tidings").to_string();
        *seen.entry(id).or_default() += 1;
    }
    seen
}

/// The fleet with SendGrid then SMTP for email, `users` users with email on.
struct Rig {
    _infra: Infra,
    smtp: SmtpServer,
    sendgrid: fakes::Sendgrid,
    config: Arc<Config>,
    watch: StatusWatch,
    fleet: fleet::Fleet,
}

impl Rig {
    async fn start(users_with_email: usize) -> Self {
        let infra = Infra::start();
        let smtp = SmtpServer::start().await;
        let sendgrid = fakes::sendgrid().await;
        let providers = providers(&sendgrid.server.uri(), smtp.port, "http://127.0.0.1:9");
        let config = Arc::new(tuned(infra.config(&providers, &[(Channel::Email, &["sendgrid", "smtp"])])));
        let store = fleet::open_store(&config).await.unwrap();
        tidings::commands::prefs::import(store.as_ref(), &users(users_with_email)).await.unwrap();
        let watch = StatusWatch::start(&config);
        let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();
        Rig { _infra: infra, smtp, sendgrid, config, watch, fleet }
    }
}

fn sent(records: &[tidings_core::StatusRecord]) -> usize {
    records.iter().filter(|r| r.state == State::Sent).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_outage_fails_over_without_loss_then_the_breaker_closes() {
    const MESSAGES: usize = 2000;
    let Rig { _infra, smtp, sendgrid, config, watch, fleet } = Rig::start(100).await;

    // SendGrid answers 503 for 30 seconds.
    *sendgrid.state.down_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(30));
    tidings::commands::dev::feed(&config, &events(0, MESSAGES, 100)).await.unwrap();
    watch.wait_until("every message sent", Duration::from_secs(120), |rs| sent(rs) >= MESSAGES).await;
    let during = deliveries(&sendgrid.state, &smtp);
    assert_eq!(during.len(), MESSAGES, "every message reached a provider");
    assert!(during.values().all(|n| *n == 1), "no message reached the providers twice");
    let via_smtp = smtp.received().len();
    assert!(via_smtp > MESSAGES / 2, "traffic moved to the secondary ({via_smtp} of {MESSAGES})");
    // Without the breaker every message sent by SMTP would have cost two refused calls at SendGrid.
    assert!(
        sendgrid.state.refused() < via_smtp,
        "the open breaker spared SendGrid ({} refused)",
        sendgrid.state.refused()
    );

    // After the outage a probe succeeds and the breaker closes: SendGrid takes traffic again.
    harness::eventually("the outage to end", Duration::from_secs(60), Duration::from_millis(200), || async {
        sendgrid.state.is_up()
    })
    .await;
    let mut next = MESSAGES;
    let state = sendgrid.state.clone();
    harness::eventually("SendGrid to take traffic again", Duration::from_secs(60), Duration::from_millis(500), || {
        let (config, watch, state) = (config.clone(), &watch, state.clone());
        let from = next;
        next += 10;
        async move {
            let before = state.accepted().len();
            tidings::commands::dev::feed(&config, &events(from, from + 10, 100)).await.unwrap();
            watch.wait_until("the probe wave", Duration::from_secs(60), |rs| sent(rs) >= from + 10).await;
            state.accepted().len() > before
        }
    })
    .await;
    let before = sendgrid.state.accepted().len();
    let from = next;
    tidings::commands::dev::feed(&config, &events(from, from + 200, 100)).await.unwrap();
    watch.wait_until("the last wave", Duration::from_secs(60), |rs| sent(rs) >= from + 200).await;
    assert!(sendgrid.state.accepted().len() - before >= 190, "the closed breaker sends to the primary again");
    let all = deliveries(&sendgrid.state, &smtp);
    assert_eq!(all.len(), from + 200);
    assert!(all.values().all(|n| *n == 1), "every message exactly once");
    fleet.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_every_provider_down_nothing_is_dead_lettered_and_all_is_delivered_after() {
    const MESSAGES: usize = 300;
    let Rig { _infra, smtp, sendgrid, config, watch, fleet } = Rig::start(50).await;

    *sendgrid.state.down_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(3600));
    *smtp.shared.rcpt_reply.lock().unwrap() = Some("451 4.3.0 Try again later".into());
    tidings::commands::dev::feed(&config, &events(0, MESSAGES, 50)).await.unwrap();
    // Both are being tried and refusing.
    harness::eventually("both providers to refuse", Duration::from_secs(60), Duration::from_millis(100), || async {
        sendgrid.state.refused() >= 20
    })
    .await;
    assert_eq!(sent(&watch.records()), 0);

    // Both recover.
    *sendgrid.state.down_until.lock().unwrap() = None;
    *smtp.shared.rcpt_reply.lock().unwrap() = None;
    let records = watch
        .wait_until("every message sent after recovery", Duration::from_secs(120), |rs| sent(rs) >= MESSAGES)
        .await;
    assert!(records.iter().all(|r| r.state != State::DeadLettered), "nothing was dead-lettered");
    let all = deliveries(&sendgrid.state, &smtp);
    assert_eq!(all.len(), MESSAGES);
    assert!(all.values().all(|n| *n == 1));
    fleet.shutdown().await.unwrap();
    assert_eq!(tidings::commands::dev::count_topic(&config, &Channel::Email.dlq_topic()).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_critical_notification_falls_back_to_sms_when_email_is_down() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let sendgrid = fakes::sendgrid().await;
    let twilio = fakes::twilio().await;
    let config = infra.config(
        &providers(&sendgrid.server.uri(), smtp.port, &twilio.uri()),
        &[(Channel::Email, &["sendgrid", "smtp"]), (Channel::Sms, &["twilio"])],
    );
    let config = Arc::new(tuned(config));
    let store = fleet::open_store(&config).await.unwrap();
    store.set_prefs("u-1", &harness::user(1)).await.unwrap();
    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();

    *sendgrid.state.down_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(3600));
    *smtp.shared.rcpt_reply.lock().unwrap() = Some("421 4.3.2 Service not available".into());
    let reset = serde_json::json!({
        "specversion": "1.0", "id": "reset-1", "type": "account.password_reset", "source": "/auth",
        "data": {"user_id": "u-1", "reset_url": "https://shop.example/reset?t=1", "expires_in_minutes": 30, "requested_ip": "203.0.113.7"}
    });
    tidings::commands::dev::feed(&config, &reset.to_string()).await.unwrap();

    let email = notification_id("/auth", "reset-1", Channel::Email, "u-1");
    let sms = notification_id("/auth", "reset-1", Channel::Sms, "u-1");
    let over = watch.wait_for_status(&email, State::FailedOver, Duration::from_secs(60)).await;
    assert_eq!(over.fallback_notification_id.as_deref(), Some(sms.as_str()));
    let sent = watch.wait_for_status(&sms, State::Sent, Duration::from_secs(60)).await;
    assert_eq!(sent.channel, Some(Channel::Sms));
    // The fallback notification carries the event's correlation id on.
    let fallback = harness::read_topic(&config, &Channel::Sms.topic(tidings_core::Priority::Critical), 1);
    assert_eq!(fallback[0].headers.get("correlation_id").map(String::as_str), Some("reset-1"));
    let texts = fakes::twilio_sent(&twilio).await;
    assert_eq!(texts.len(), 1);
    assert!(texts[0].1.contains("https://shop.example/reset?t=1"), "{}", texts[0].1);
    let terminal = harness::terminal_counts(&watch.records());
    assert_eq!((terminal.get(&email), terminal.get(&sms)), (Some(&1), Some(&1)));
    fleet.shutdown().await.unwrap();
}
