//! The whole fleet through its real roles: intake → mock cluster → workers →
//! a real SMTP server and a wiremock Twilio, with a real Redis (one server,
//! or a three-node Redis Cluster).

use crate::harness::smtp::SmtpServer;
use crate::harness::{fakes, order_event, terminal_counts, user, Infra, StatusWatch};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tidings::embedded::RedisCluster;
use tidings::fleet::{self, Roles};
use tidings_core::{Clock, Config, State};

const USERS: usize = 100;

/// The order ids in `text`, in order of appearance.
fn order_id(text: &str) -> String {
    let at = text.find("o-").expect("an order id");
    text[at..at + 8].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_events_are_sent_once_in_order_and_replays_send_nothing() {
    let infra = Infra::start();
    let (smtp, twilio, config) = infra.email_and_sms().await;
    sent_once_in_order_and_replays_send_nothing(config, 1000, &smtp, &twilio).await;
}

/// The same on a Redis Cluster: dedupe records, claims and preferences are
/// spread over three nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_redis_cluster_events_are_sent_once_in_order_and_replays_send_nothing() {
    let infra = Infra::start();
    let cluster = RedisCluster::start().unwrap();
    let (smtp, twilio, mut config) = infra.email_and_sms().await;
    config.redis.url = cluster.url();
    sent_once_in_order_and_replays_send_nothing(config, 400, &smtp, &twilio).await;
}

async fn sent_once_in_order_and_replays_send_nothing(
    config: Config,
    count: usize,
    smtp: &SmtpServer,
    twilio: &wiremock::MockServer,
) {
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    let users: String = (0..USERS).map(|i| user(i) + "\n").collect();
    let (stored, rejected) = tidings::commands::prefs::import(store.as_ref(), &users).await.unwrap();
    assert_eq!((stored, rejected.len()), (USERS, 0));

    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();
    let events: String = (0..count).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect();
    assert_eq!(tidings::commands::dev::feed(&config, &events).await.unwrap(), count);

    // Email and SMS enabled, push disabled: two notifications per event.
    let expected = 2 * count;
    let records = watch
        .wait_until("a terminal status for every notification", Duration::from_secs(120), |rs| {
            terminal_counts(rs).len() >= expected
        })
        .await;
    let terminal = terminal_counts(&records);
    assert_eq!(terminal.len(), expected);
    assert!(terminal.values().all(|n| *n == 1), "a notification has more than one terminal status");
    assert!(
        records.iter().filter(|r| r.state.is_terminal()).all(|r| r.state == State::Sent),
        "every notification is sent"
    );

    // Exactly one send per (event, channel), at the fakes themselves.
    let mail = smtp.received();
    let sms = fakes::twilio_sent(twilio).await;
    assert_eq!(mail.len(), count);
    assert_eq!(sms.len(), count);
    let message_ids: HashSet<_> = mail.iter().map(|m| m.header("Message-ID").unwrap()).collect();
    assert_eq!(message_ids.len(), count, "every email is a different notification");
    let sms_orders: HashSet<_> = sms.iter().map(|(_, body)| order_id(body)).collect();
    assert_eq!(sms_orders.len(), count, "every SMS is a different event");

    // Per-user order on each channel: order ids rise in arrival order.
    let mut last: HashMap<String, String> = HashMap::new();
    for m in &mail {
        let id = order_id(&m.header("Subject").unwrap());
        let prev = last.insert(m.rcpt[0].clone(), id.clone());
        assert!(prev.is_none_or(|p| p < id), "email out of order for {}", m.rcpt[0]);
    }
    last.clear();
    for (to, body) in &sms {
        let id = order_id(body);
        let prev = last.insert(to.clone(), id.clone());
        assert!(prev.is_none_or(|p| p < id), "SMS out of order for {to}");
    }

    // Replaying the same events sends nothing new: every copy is a duplicate.
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    watch
        .wait_until("a duplicate status for every replayed notification", Duration::from_secs(120), |rs| {
            rs.iter().filter(|r| r.state == State::Duplicate).count() >= expected
        })
        .await;
    assert_eq!(smtp.received().len(), count);
    assert_eq!(fakes::twilio_sent(twilio).await.len(), count);
    let terminal = terminal_counts(&watch.records());
    assert!(terminal.values().all(|n| *n == 1), "a replay added a terminal status");

    fleet.shutdown().await.unwrap();
}
