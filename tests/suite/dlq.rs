//! `tidings dlq`: replay that is idempotent and resumable, its filters and
//! dry run, `list` and `inspect`. Replays run as processes of their own (the
//! `tidings` binary), on the mock cluster and a private `redis-server`.

use crate::harness::smtp::SmtpServer;
use crate::harness::{self, smtp_and_twilio, Infra, StatusWatch, PARTITIONS};
use chrono::{DateTime, Duration as Span, Utc};
use rdkafka::producer::FutureRecord;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tidings::commands::dev::count_topic;
use tidings::fleet;
use tidings_core::dead_letter::{DeadLetter, REPLAYED_FROM};
use tidings_core::status::ErrorClass;
use tidings_core::{kafka, Channel, Clock, Config, Notification, State};

const EMAIL: &str = "tidings.email.normal";

fn email_dlq() -> String {
    Channel::Email.dlq_topic()
}

/// Notification `seq` for user `u-<seq % users>`, of `event_type`.
fn notification(seq: usize, users: usize, event_type: &str) -> Notification {
    let sample = serde_json::from_str(include_str!("../../templates/order.confirmed/sample.json")).unwrap();
    let (user, address) = (format!("u-{}", seq % users), format!("user{}@example.com", seq % users));
    Notification {
        event_type: event_type.into(),
        ..harness::email_notification(&format!("n-{seq}"), &format!("evt-{seq}"), &user, &address, sample)
    }
}

/// Writes the dead letters a worker writes for `ns`: class `class`, last failed `at`.
async fn dead_letters(config: &Config, ns: &[Notification], class: ErrorClass, at: DateTime<Utc>) {
    let producer = kafka::producer(&config.kafka).unwrap();
    let mut acks = Vec::new();
    for n in ns {
        acks.push(enqueue_letter(&producer, n, class, at).await);
    }
    for ack in acks {
        kafka::delivered(ack).await.unwrap();
    }
}

async fn enqueue_letter(
    producer: &rdkafka::producer::FutureProducer,
    n: &Notification,
    class: ErrorClass,
    at: DateTime<Utc>,
) -> rdkafka::producer::DeliveryFuture {
    let mut letter = DeadLetter::poison(EMAIL, 0, 0, format!("{} failure", class.as_str()), at)
        .with_headers(&[("correlation_id".into(), format!("c-{}", n.notification_id).into_bytes())]);
    letter.error_class = class;
    letter.providers_tried = vec!["smtp".into()];
    let value = serde_json::to_vec(n).unwrap();
    kafka::enqueue_dead_letter(producer, &email_dlq(), Some(n.user_id.as_bytes()), Some(&value), &letter).await.unwrap()
}

/// `count` letters of `order.confirmed`, `permanent`, failed a minute ago, over 50 users.
async fn letters(config: &Config, count: usize) -> Vec<Notification> {
    let out: Vec<_> = (0..count).map(|seq| notification(seq, 50, "order.confirmed")).collect();
    dead_letters(config, &out, ErrorClass::Permanent, Utc::now() - Span::minutes(1)).await;
    out
}

/// A config file for `tidings` processes of a test, with SMTP at `smtp_port`.
fn config_file(dir: &Path, smtp_port: u16) -> PathBuf {
    harness::config_file(
        dir,
        &smtp_and_twilio(smtp_port, "http://127.0.0.1:9"),
        "\n[channels.email]\nproviders = [\"smtp\"]\n",
        &[],
    )
}

/// Runs `tidings <args>` to its end; its stdout, and its stderr.
fn run(infra: &Infra, file: &Path, args: &[&str]) -> (String, String) {
    let out = infra.command(file, args).stdout(std::process::Stdio::piped()).output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "tidings {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// The notification ids of the records on `topic` (the first `n`).
fn ids_on(config: &Config, topic: &str, n: usize) -> Vec<String> {
    harness::read_topic(config, topic, n)
        .iter()
        .map(|r| serde_json::from_str::<Notification>(&r.value).unwrap().notification_id)
        .collect()
}

/// The email worker in this process, with `users` email users.
async fn email_worker(config: &Config, users: usize) -> fleet::Fleet {
    let store = harness::store_with_email_users(config, users).await;
    fleet::spawn_fleet(Arc::new(config.clone()), store, Clock::system(), harness::worker_only(Channel::Email)).unwrap()
}

/// How many times the relay took each notification (by its stable `Message-ID`).
fn sends(smtp: &SmtpServer) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in smtp.received() {
        let id = r.header("Message-ID").expect("every email has its notification's Message-ID");
        let id = id.trim().trim_start_matches('<').trim_end_matches("@tidings>").to_string();
        *out.entry(id).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sends_back_every_letter_of_every_partition_once_with_its_headers() {
    let infra = Infra::start();
    let config = infra.config(&smtp_and_twilio(9, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    let sent = letters(&config, 500).await;
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), 9);

    let (out, _) = run(&infra, &file, &["dlq", "replay", "--from", "email"]);
    assert!(out.contains("replayed 500 dead letters"), "{out}");
    let records = harness::read_topic(&config, EMAIL, 500);
    assert_eq!(records.len(), 500);
    let ids: HashSet<String> =
        records.iter().map(|r| serde_json::from_str::<Notification>(&r.value).unwrap().notification_id).collect();
    assert_eq!(ids, sent.iter().map(|n| n.notification_id.clone()).collect());
    let mut letter_partitions = HashSet::new();
    for r in &records {
        let n: Notification = serde_json::from_str(&r.value).unwrap();
        assert_eq!(r.headers["correlation_id"], format!("c-{}", n.notification_id), "the original's headers stay");
        let from = &r.headers[REPLAYED_FROM];
        assert!(from.starts_with(&format!("{}:", email_dlq())), "{from}");
        letter_partitions.insert(from.split(':').nth(1).unwrap().to_string());
    }
    assert_eq!(letter_partitions.len(), PARTITIONS as usize, "letters came from every partition");

    let (again, _) = run(&infra, &file, &["dlq", "replay", "--from", "email"]);
    assert!(again.contains("replayed 0 dead letters"), "{again}");
    assert_eq!(count_topic(&config, EMAIL).unwrap(), 500, "nothing sent back twice");
}

/// Notifications dead-lettered by a real worker (the relay refused them),
/// the relay mended, replayed: each delivered once; replayed again: nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn letters_replayed_once_the_cause_is_fixed_are_delivered_once() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let config = infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    let watch = StatusWatch::start(&config);
    *smtp.shared.mail_reply.lock().unwrap() = Some("554 5.7.1 sender refused".into());
    let worker = email_worker(&config, 10).await;
    let producer = kafka::producer(&config.kafka).unwrap();
    let count = 40;
    for seq in 0..count {
        let n = notification(seq, 10, "order.confirmed");
        let value = serde_json::to_vec(&n).unwrap();
        let record = FutureRecord::<str, [u8]>::to(EMAIL).key(&n.user_id).payload(&value);
        kafka::delivered(kafka::enqueue(&producer, record).await.unwrap()).await.unwrap();
    }
    watch
        .wait_until("every notification to be dead-lettered", Duration::from_secs(60), |rs| {
            rs.iter().filter(|r| r.state == State::DeadLettered).count() == count
        })
        .await;
    assert_eq!(count_topic(&config, &email_dlq()).unwrap(), count as i64, "one letter each");
    *smtp.shared.mail_reply.lock().unwrap() = None;

    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), smtp.port);
    let (out, _) = run(&infra, &file, &["dlq", "replay", "--from", "email"]);
    assert!(out.contains(&format!("replayed {count} dead letters")), "{out}");
    watch
        .wait_until("every notification to be sent", Duration::from_secs(60), |rs| {
            rs.iter().filter(|r| r.state == State::Sent).count() == count
        })
        .await;
    // A replay under another group (a filter) finds them all delivered since.
    let (again, _) = run(&infra, &file, &["dlq", "replay", "--from", "email", "--event-type", "order.confirmed"]);
    assert!(again.contains("replayed 0 dead letters"), "{again}");
    assert!(again.contains(&format!("already replayed: ended sent after the letter: {count}")), "{again}");
    worker.shutdown().await.unwrap();
    let sends = sends(&smtp);
    assert_eq!(sends.len(), count, "every notification delivered");
    assert!(sends.values().all(|n| *n == 1), "none twice: {sends:?}");
}

/// A replay killed half-way and run again, then two replays at once of
/// other letters: the worker behind them sends each notification once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_replay_and_two_replays_at_once_send_nothing_twice_and_miss_nothing() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let config = infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    let sent = letters(&config, 300).await;
    let worker = email_worker(&config, 50).await;
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), smtp.port);

    let mut replay = infra.spawn(&file, &["dlq", "replay", "--from", "email", "--rate", "100"]);
    let watch_config = config.clone();
    harness::eventually("the replay to send 100 back", Duration::from_secs(60), Duration::from_millis(20), || {
        let config = watch_config.clone();
        async move { count_topic(&config, EMAIL).unwrap() >= 100 }
    })
    .await;
    replay.kill().unwrap();
    replay.wait().unwrap();
    let before = count_topic(&config, EMAIL).unwrap();
    assert!(before < 300, "killed half-way ({before} sent back)");
    let (out, _) = run(&infra, &file, &["dlq", "replay", "--from", "email"]);
    assert!(out.contains("replayed"), "{out}");

    // Two replays at once, of 300 letters more, under one group.
    let more: Vec<_> = (300..600).map(|seq| notification(seq, 50, "order.confirmed")).collect();
    dead_letters(&config, &more, ErrorClass::Exhausted, Utc::now()).await;
    let both: Vec<_> = (0..2)
        .map(|_| {
            infra
                .command(&file, &["dlq", "replay", "--from", "email"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in both {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut expected: HashSet<String> = sent.iter().map(|n| n.notification_id.clone()).collect();
    expected.extend((300..600).map(|seq| format!("n-{seq}")));
    let watch_smtp = smtp.shared.clone();
    harness::eventually(
        "every notification to be delivered",
        Duration::from_secs(90),
        Duration::from_millis(50),
        || {
            let n = watch_smtp.received.lock().unwrap().len();
            async move { n >= 600 }
        },
    )
    .await;
    worker.shutdown().await.unwrap();
    let sends = sends(&smtp);
    let delivered: HashSet<String> = sends.keys().cloned().collect();
    assert_eq!(delivered, expected, "nothing missed");
    let twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    eprintln!("{before} sent back before the kill; {} records on {EMAIL} in all", count_topic(&config, EMAIL).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_take_exactly_what_they_say_and_a_dry_run_changes_nothing() {
    let infra = Infra::start();
    let config = infra.config(&smtp_and_twilio(9, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    let old = Utc::now() - Span::hours(3);
    let recent = Utc::now() - Span::minutes(5);
    // 0..10 render/old/order.confirmed, 10..20 exhausted/recent/order.confirmed, 20..30 exhausted/recent/payment.failed
    let of = |seqs: std::ops::Range<usize>, ty: &str| seqs.map(|seq| notification(seq, 50, ty)).collect::<Vec<_>>();
    dead_letters(&config, &of(0..10, "order.confirmed"), ErrorClass::Render, old).await;
    dead_letters(&config, &of(10..20, "order.confirmed"), ErrorClass::Exhausted, recent).await;
    dead_letters(&config, &of(20..30, "payment.failed"), ErrorClass::Exhausted, recent).await;
    // A record on the dead-letter topic with no headers at all.
    let producer = kafka::producer(&config.kafka).unwrap();
    let dlq = email_dlq();
    let bare = FutureRecord::<str, [u8]>::to(&dlq).key("u-1").payload(b"{}".as_slice());
    kafka::delivered(kafka::enqueue(&producer, bare).await.unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), 9);

    let (dry, _) = run(&infra, &file, &["dlq", "replay", "--from", "email", "--dry-run"]);
    assert!(dry.contains("dry run: nothing is changed; 31 letters"), "{dry}");
    assert_eq!(count_topic(&config, EMAIL).unwrap(), 0, "the dry run sent nothing back");
    let (dry_again, _) = run(&infra, &file, &["dlq", "replay", "--from", "email", "--dry-run"]);
    assert_eq!(dry, dry_again, "and moved no offset");

    let since = (Utc::now() - Span::hours(1)).to_rfc3339();
    let cases: [(&[&str], std::ops::Range<usize>); 5] = [
        (&["--error-class", "render"], 0..10),
        (&["--event-type", "payment.failed"], 20..30),
        (&["--since", &since], 10..30),
        (&["--until", "1h"], 0..10),
        (&["--id", "n-17"], 17..18),
    ];
    let mut total = 0;
    for (filter, expected) in cases {
        let mut args = vec!["dlq", "replay", "--from", "email"];
        args.extend_from_slice(filter);
        let (out, err) = run(&infra, &file, &args);
        total += expected.len();
        let replayed: HashSet<String> = ids_on(&config, EMAIL, total).into_iter().collect();
        assert!(out.contains(&format!("replayed {} dead letters", expected.len())), "{filter:?}: {out}");
        for seq in expected {
            assert!(replayed.contains(&format!("n-{seq}")), "{filter:?} takes n-{seq}");
        }
        assert!(err.contains("no dlq_original_topic header; skipped"), "{filter:?}: {err}");
    }
    assert_eq!(count_topic(&config, EMAIL).unwrap(), total as i64, "each filter took only its own");
    // The unfiltered replay's group is untouched by the filtered ones: it takes every letter
    // whose notification has not ended since (none has: no worker runs), the bare one skipped.
    let (all, err) = run(&infra, &file, &["dlq", "replay", "--from", "email"]);
    assert!(all.contains("replayed 30 dead letters") && all.contains("skipped: unreadable: 1"), "{all}");
    assert!(err.contains(&format!("{}:", email_dlq())) && err.contains("skipped"), "{err}");
}

/// A letter from each source (an unknown event type at intake, a deferred
/// entry that does not read at the scheduler, a missing template variable at
/// a worker), read back by `list` and `inspect`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_and_inspect_read_letters_from_intake_the_scheduler_and_a_worker() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let config = infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    let store = fleet::open_store(&config).await.unwrap();
    store.set_prefs("u-1", &harness::email_user(1)).await.unwrap();
    let watch = StatusWatch::start(&config);
    let roles = fleet::Roles::all(&config);
    let running = fleet::spawn_fleet(Arc::new(config.clone()), store.clone(), Clock::system(), roles).unwrap();

    let unknown =
        r#"{"specversion":"1.0","id":"evt-u","type":"loyalty.points_expired","source":"/t","data":{"user_id":"u-1"}}"#;
    tidings::commands::dev::feed(&config, unknown).await.unwrap();
    store.defer("u-3:email", "not json at all", Utc::now() - Span::seconds(1)).await.unwrap();
    let mut missing = notification(5, 10, "order.confirmed");
    missing.user_id = "u-1".into();
    missing.data = serde_json::value::RawValue::from_string(r#"{"order_id": "o-5"}"#.into()).unwrap();
    let value = serde_json::to_vec(&missing).unwrap();
    let headers = kafka::headers([("correlation_id", "c-missing")]);
    let producer = kafka::producer(&config.kafka).unwrap();
    let record = FutureRecord::<str, [u8]>::to(EMAIL).key("u-1").payload(&value).headers(headers);
    kafka::delivered(kafka::enqueue(&producer, record).await.unwrap()).await.unwrap();
    watch.wait_for_status("n-5", State::DeadLettered, Duration::from_secs(60)).await;
    harness::eventually("three letters", Duration::from_secs(60), Duration::from_millis(50), || {
        let (config, dlq) = (config.clone(), email_dlq());
        async move {
            count_topic(&config, tidings_core::channel::INTAKE_DLQ_TOPIC).unwrap() == 2
                && count_topic(&config, &dlq).unwrap() == 1
        }
    })
    .await;
    running.shutdown().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), smtp.port);

    let (table, _) = run(&infra, &file, &["dlq", "list"]);
    let row = |from: &str, class: &str, ty: &str| {
        table.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() > 4 && cells[0] == from && cells[1] == class && cells[2] == ty
        })
    };
    assert!(row("intake", "poison", "loyalty.points_expired"), "{table}");
    assert!(row("intake", "poison", "-"), "the schedule's letter: {table}");
    assert!(row("email", "render", "order.confirmed"), "{table}");
    assert!(table.contains("3 dead letters"), "{table}");
    let (json, _) = run(&infra, &file, &["dlq", "list", "--json", "--from", "email", "--error-class", "render"]);
    let lines: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{json}");
    assert_eq!((lines[0]["letters"].as_u64(), lines[0]["age"].as_str()), (Some(1), Some("< 1 h")));

    let (worker_letter, _) = run(&infra, &file, &["dlq", "inspect", "n-5"]);
    let letter: serde_json::Value = serde_json::from_str(&worker_letter).unwrap();
    assert_eq!(letter["value"]["notification_id"], "n-5", "the original message");
    assert_eq!(letter["headers"]["correlation_id"], "c-missing", "every header, the original's too");
    assert_eq!(letter["failure"]["error_class"], "render");
    assert!(letter["failure"]["error"].as_str().unwrap().contains("placed_at"), "{letter}");
    assert_eq!(letter["failure"]["original"].as_str().unwrap().split(':').next(), Some(EMAIL));

    let (intake_letter, _) = run(&infra, &file, &["dlq", "inspect", "evt-u", "--from", "intake"]);
    let letter: serde_json::Value = serde_json::from_str(&intake_letter).unwrap();
    assert_eq!(letter["failure"]["error"], "unknown event type `loyalty.points_expired`");
    let place = letter["letter"].as_str().unwrap().to_string();
    let (same, _) = run(&infra, &file, &["dlq", "inspect", &place]);
    assert_eq!(same, intake_letter, "a letter found by its place is the same letter");

    let out = infra.command(&file, &["dlq", "inspect", "n-nowhere"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no dead letter of n-nowhere"));
}

/// A worker killed after recording that a notification is dead-lettered,
/// while the cluster refused its writes (so neither its letter nor its
/// status went out): the next worker finds the outcome unpublished and
/// writes the one letter and the status. Before a letter came after its
/// outcome, the letter went first and the next worker, finding an abandoned
/// claim, ended the notification `unconfirmed` with no letter at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_before_its_letter_went_out_leaves_it_to_the_next_copy() {
    let infra = Infra::start();
    let config = infra.config(&smtp_and_twilio(9, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    let store = fleet::open_store(&config).await.unwrap();
    store.set_prefs("u-1", &harness::email_user(1)).await.unwrap();
    // A missing template variable: dead-lettered at once, without a provider.
    let mut n = notification(1, 10, "order.confirmed");
    n.data = serde_json::value::RawValue::from_string(r#"{"order_id": "o-1"}"#.into()).unwrap();
    let value = serde_json::to_vec(&n).unwrap();
    let producer = kafka::producer(&config.kafka).unwrap();
    let record = FutureRecord::<str, [u8]>::to(EMAIL).key(&n.user_id).payload(&value);
    kafka::delivered(kafka::enqueue(&producer, record).await.unwrap()).await.unwrap();

    infra.kafka.refuse_writes(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), 9);
    let mut worker = infra.spawn(&file, &["worker", "--channel", "email"]);
    harness::eventually("the outcome to be recorded", Duration::from_secs(60), Duration::from_millis(20), || {
        let store = store.clone();
        async move {
            let value = store.dedupe_value("n-1").await.unwrap();
            value.is_some_and(|v| !v.starts_with(tidings_core::store::CLAIM_MARK))
        }
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(count_topic(&config, &email_dlq()).unwrap(), 0, "the killed worker's letter never went out");

    infra.kafka.refuse_writes(false).unwrap();
    let watch = StatusWatch::start(&config);
    let _worker = infra.spawn(&file, &["worker", "--channel", "email"]);
    let ended = watch.wait_for_status("n-1", State::DeadLettered, Duration::from_secs(60)).await;
    assert_eq!(ended.error_class, Some(ErrorClass::Render));
    watch.wait_for_status("n-1", State::Duplicate, Duration::from_secs(60)).await;
    assert_eq!(count_topic(&config, &email_dlq()).unwrap(), 1, "one letter");
    let letters = harness::read_topic(&config, &email_dlq(), 1);
    assert!(letters[0].headers[tidings_core::dead_letter::ERROR].contains("placed_at"), "{:?}", letters[0].headers);
}
