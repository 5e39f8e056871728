//! A callback answered is never lost with the role: a "provider" sends
//! 10,000 signed Twilio callbacks (8,000 delivery receipts, 2,000 STOPs)
//! to a `tidings callbacks` process at 400 a second, 32 at a time, sending
//! again whatever is not answered 200 (as providers do), while the process
//! is SIGKILLed three times, each time while it is applying what it read,
//! and started again. Every receipt becomes its `delivered` record once (a
//! copy written again in a crash window would be the same, byte for byte)
//! and every number that texted STOP is listed.

use crate::harness::{self, Infra, StatusWatch};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidings_core::channel::STATUS_TOPIC;
use tidings_core::suppression::Cause;
use tidings_core::{State, StatusRecord};
use tidings_providers::twilio::callback::signature;

const TOKEN: &str = "5f0e8c2b9a7d4e1f3c6b8a0d2e4f6a8c";
const RECEIPTS: usize = 8_000;
const STOPS: usize = 2_000;
const USERS: usize = 100;
const AT_ONCE: usize = 32;
/// Between two callbacks sent: 400 a second, so that a killed process's
/// partitions, held until its session times out (10 s), leave a backlog
/// for the next one to apply, and the next kill comes in the middle of it.
const PACE: Duration = Duration::from_micros(2_500);
const WAIT: Duration = Duration::from_secs(180);

enum Callback {
    Receipt(usize),
    Stop(usize),
}

fn nid(i: usize) -> String {
    format!("n-{i}")
}

fn user(i: usize) -> String {
    format!("u-{}", i % USERS)
}

fn number(i: usize) -> String {
    format!("+1555{:07}", 1_000_000 + i)
}

/// The outcome a worker recorded for receipt `i`'s notification: sent by Twilio.
fn outcome(i: usize) -> String {
    let status = serde_json::json!({
        "notification_id": nid(i), "event_id": format!("evt-{i}"), "event_type": "order.confirmed",
        "user_id": user(i), "state": "sent", "channel": "sms", "priority": "normal",
        "provider": "twilio", "provider_message_id": format!("SM{i}"), "at": "2026-12-01T10:00:00Z",
    });
    serde_json::json!({ "status": status }).to_string()
}

/// Sends `callback` until it is answered 200.
async fn deliver(http: &reqwest::Client, base: &str, callback: &Callback, retries: &AtomicUsize) {
    let (url, form) = match callback {
        Callback::Receipt(i) => (
            format!("{base}/callbacks/twilio/status?n={}", nid(*i)),
            vec![
                ("MessageSid".to_string(), format!("SM{i}")),
                ("MessageStatus".to_string(), "delivered".to_string()),
                ("To".to_string(), number(*i)),
                ("AccountSid".to_string(), "AC123".to_string()),
            ],
        ),
        Callback::Stop(i) => (
            format!("{base}/callbacks/twilio/inbound"),
            vec![
                ("From".to_string(), number(RECEIPTS + i)),
                ("To".to_string(), "+15550001111".to_string()),
                ("Body".to_string(), "STOP".to_string()),
                ("MessageSid".to_string(), format!("SMin{i}")),
            ],
        ),
    };
    let signed = signature(TOKEN, &url, &form);
    loop {
        let sent = http.post(&url).header("X-Twilio-Signature", &signed).form(&form).send().await;
        if sent.is_ok_and(|r| r.status().as_u16() == 200) {
            return;
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callbacks_answered_survive_the_role_being_killed() {
    let infra = Infra::start();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let twilio = format!(
        "\n[providers.twilio]\nkind = \"twilio\"\nbase_url = \"http://127.0.0.1:9\"\naccount_sid = \"AC123\"\n\
         auth_token = \"{TOKEN}\"\nfrom = \"+15550001111\"\n"
    );
    let replace = [
        ("listen = \"0.0.0.0:8080\"", format!("listen = \"127.0.0.1:{port}\"")),
        ("# public_url = \"https://hooks.shop.example\"", format!("public_url = \"{base}\"")),
    ];
    let replace: Vec<(&str, &str)> = replace.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let file = harness::config_file(dir.path(), &twilio, "\n[channels.sms]\nproviders = [\"twilio\"]\n", &replace);
    let mut config = tidings_core::Config::load(Some(&file)).unwrap();
    config.kafka.bootstrap_servers = infra.kafka.bootstrap_servers().to_string();
    config.redis.url = infra.redis.url();
    let config = Arc::new(config);
    let store = tidings::fleet::open_store(&config).await.unwrap();
    for i in 0..RECEIPTS {
        store.claim(&nid(i), "worker", Duration::from_secs(60)).await.unwrap();
        assert!(store.finish(&nid(i), "worker", &outcome(i), Duration::from_secs(3600)).await.unwrap());
    }
    let watch = StatusWatch::start(&config);

    let mut role = infra.spawn(&file, &["callbacks"]);
    let (tx, rx) = tokio::sync::mpsc::channel::<Callback>(1);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let dispatcher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(PACE);
        for job in (0..RECEIPTS).map(Callback::Receipt).chain((0..STOPS).map(Callback::Stop)) {
            tick.tick().await;
            tx.send(job).await.unwrap();
        }
    });
    let (answered, retries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut senders = Vec::new();
    for _ in 0..AT_ONCE {
        let (rx, answered, retries, http, base) =
            (rx.clone(), answered.clone(), retries.clone(), http.clone(), base.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let Some(job) = rx.lock().await.recv().await else { break };
                deliver(&http, &base, &job, &retries).await;
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // SIGKILLed once a quarter, a half and three quarters are answered, each
    // time as soon as the process applies what it read (a status record
    // came from it), and started again at once.
    let total = RECEIPTS + STOPS;
    for quarter in 1..=3 {
        let at = total * quarter / 4;
        harness::eventually("callbacks to be answered", WAIT, Duration::from_millis(5), || {
            let answered = answered.load(Ordering::Relaxed);
            async move { answered >= at }
        })
        .await;
        let before = watch.records().len();
        watch.wait_until("the process to apply", WAIT, |rs| rs.len() > before).await;
        role.kill().unwrap();
        role.wait().unwrap();
        role = infra.spawn(&file, &["callbacks"]);
    }
    dispatcher.await.unwrap();
    for s in senders {
        s.await.unwrap();
    }
    assert_eq!(answered.load(Ordering::Relaxed), total);

    // Everything answered is applied by the last process.
    let numbers: Vec<String> = (0..STOPS).map(|i| number(RECEIPTS + i)).collect();
    harness::eventually("every STOP to be listed", WAIT, Duration::from_millis(200), || async {
        let listed = store.listed(&numbers).await.unwrap();
        listed.iter().all(|e| e.as_ref().is_some_and(|e| e.cause == Cause::Stop))
    })
    .await;
    watch
        .wait_until("every receipt to be recorded", WAIT, |rs| {
            let delivered: std::collections::HashSet<&str> =
                rs.iter().filter(|r| r.state == State::Delivered).map(|r| r.notification_id.as_str()).collect();
            delivered.len() >= RECEIPTS
        })
        .await;
    drop(role);
    // Everything the role wrote has been read once a marker written after it came back.
    let producer = tidings_core::kafka::command_producer(&config.kafka).unwrap();
    for u in 0..USERS {
        let marker = serde_json::json!({"notification_id": format!("marker-{u}"), "event_id": "-",
            "event_type": "-", "user_id": format!("u-{u}"), "state": "sent", "at": chrono::Utc::now()})
        .to_string();
        let key = format!("u-{u}");
        let record = rdkafka::producer::FutureRecord::to(STATUS_TOPIC).key(&key).payload(&marker);
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }
    let records = watch
        .wait_until("the markers", WAIT, |rs| {
            (0..USERS).all(|u| rs.iter().any(|r| r.notification_id == format!("marker-{u}")))
        })
        .await;
    let mut delivered: HashMap<&str, Vec<&StatusRecord>> = HashMap::new();
    for r in records.iter().filter(|r| r.state == State::Delivered) {
        delivered.entry(r.notification_id.as_str()).or_default().push(r);
    }
    assert_eq!(delivered.len(), RECEIPTS, "one notification each");
    let mut again = 0;
    for (id, copies) in &delivered {
        assert!(copies.iter().all(|c| c == &copies[0]), "{id}: records that differ: {copies:#?}");
        again += copies.len() - 1;
    }
    assert!(records.iter().all(|r| r.state != State::Undelivered), "nothing else recorded");
    // A copy needs a kill between a status's acknowledgement and the note
    // that its record was applied: at most the 32 keys applied at once, per kill.
    assert!(again <= 3 * 32, "{again} copies");
    eprintln!(
        "callbacks_killed: {total} callbacks answered through 3 SIGKILLs ({} sent again after no answer); \
         {RECEIPTS} receipts recorded, {again} of them written again byte for byte; {STOPS} numbers listed",
        retries.load(Ordering::Relaxed)
    );
}
