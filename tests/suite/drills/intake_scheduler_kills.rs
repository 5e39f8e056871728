//! Intake and the scheduler, each a process of its own, SIGKILLed three
//! times part-way through their batches and restarted, while a worker
//! delivers: the
//! schedule holds members for every user, and live events for the same
//! users queue behind them. Nothing is lost or sent twice, one terminal
//! state each, and every user's messages arrive in order (held ones first).

use super::{all_ended, Expected, Tally};
use crate::harness::{self, fakes, order_event, Infra, StatusWatch};
use crate::scheduler_crash::deferred;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::fleet;
use tidings_core::{Channel, Clock, State};

const USERS: usize = 200;
const HELD: usize = 1500;
const LIVE: usize = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intake_and_scheduler_killed_mid_batch_lose_reorder_and_repeat_nothing() {
    // Every wait inside has its own deadline; this one turns anything else into a failure.
    tokio::time::timeout(Duration::from_secs(420), drill()).await.expect("the drill finished within 7 minutes");
}

async fn drill() {
    let infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    *sendgrid.state.latency.lock().unwrap() = Duration::from_millis(20);
    let providers = harness::sendgrid_provider(&sendgrid.server.uri(), "5s");
    let config = Arc::new(infra.config(&providers, &[(Channel::Email, &["sendgrid"])]));
    let dir = tempfile::tempdir().unwrap();
    let file = harness::config_file(
        dir.path(),
        &providers,
        "\n[channels.email]\nproviders = [\"sendgrid\"]\n",
        &[(
            "poll_interval = \"500ms\"\nbatch = 500\nclaim_lease = \"30s\"",
            "poll_interval = \"50ms\"\nbatch = 50\nclaim_lease = \"5s\"",
        )],
    );
    let store = harness::store_with_email_users(&config, USERS).await;
    // Held members fall due over several seconds, so the scheduler is always part-way.
    let start = chrono::Utc::now() + chrono::Duration::seconds(2);
    let mut expected = Expected::default();
    for seq in 0..HELD {
        let (id, lane, member) = deferred(seq);
        store.defer(&lane, &member, start + chrono::Duration::milliseconds(5 * seq as i64)).await.unwrap();
        expected.per_user.entry(format!("u-{}", seq % USERS)).or_default().push(id);
        expected.total += 1;
    }
    let live = Expected::orders(HELD, HELD + LIVE, USERS, Channel::Email);
    for (user, ids) in live.per_user {
        expected.per_user.entry(user).or_default().extend(ids);
    }
    expected.total += LIVE;

    let watch = StatusWatch::start(&config);
    let worker =
        fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), harness::worker_only(Channel::Email))
            .unwrap();
    let mut intake = infra.spawn(&file, &["intake"]);
    let mut scheduler = infra.spawn(&file, &["scheduler"]);
    // Live events arrive in waves, so intake is always part-way too; they queue behind the held ones.
    // A wave comes once half the one before has been routed.
    let feeder = {
        let config = config.clone();
        let routed = StatusWatch::start(&config);
        tokio::spawn(async move {
            for wave in (HELD..HELD + LIVE).collect::<Vec<_>>().chunks(LIVE / 10) {
                let events: String =
                    wave.iter().map(|seq| order_event(*seq, &format!("u-{}", seq % USERS)) + "\n").collect();
                tidings::commands::dev::feed(&config, &events).await.unwrap();
                let ids: std::collections::HashSet<String> = wave.iter().map(|seq| format!("evt-{seq}")).collect();
                routed
                    .wait_until("half the wave to be routed", Duration::from_secs(120), |rs| {
                        let seen: std::collections::HashSet<&str> =
                            rs.iter().map(|r| r.event_id.as_str()).filter(|id| ids.contains(*id)).collect();
                        seen.len() * 2 >= ids.len()
                    })
                    .await;
            }
        })
    };

    // Progress, from the status topic: held ones sent (the scheduler's), live ones routed (intake's).
    let seq = |r: &tidings_core::StatusRecord| r.event_id.trim_start_matches("evt-").parse::<usize>().unwrap_or(0);
    let held_sent =
        move |rs: &[tidings_core::StatusRecord]| rs.iter().filter(|r| r.state == State::Sent && seq(r) < HELD).count();
    let live_routed = move |rs: &[tidings_core::StatusRecord]| rs.iter().filter(|r| seq(r) >= HELD).count();
    // Each kill comes once the process has done more since its restart (or has nothing left).
    for round in 0..3 {
        // The scheduler, part-way through moving the schedule.
        let before = held_sent(&watch.records());
        watch
            .wait_until("the scheduler to move some", Duration::from_secs(60), |rs| {
                held_sent(rs) > before + 100 || held_sent(rs) == HELD
            })
            .await;
        scheduler.kill().unwrap();
        scheduler.wait().unwrap();
        // Intake, part-way through routing.
        let before = live_routed(&watch.records());
        watch
            .wait_until("intake to route some", Duration::from_secs(60), |rs| {
                live_routed(rs) > before + 100 || live_routed(rs) >= LIVE
            })
            .await;
        intake.kill().unwrap();
        intake.wait().unwrap();
        println!("round {round}: killed the scheduler and intake");
        scheduler = infra.spawn(&file, &["scheduler"]);
        intake = infra.spawn(&file, &["intake"]);
    }
    let last = Instant::now();
    feeder.await.unwrap();
    let records = watch.wait_until("every notification to end", Duration::from_secs(180), all_ended(&expected)).await;
    let mut tally = Tally::of(&expected, &sendgrid.state.accepted(), &records);
    tally.recovery = Some(last.elapsed());
    for mut p in [intake, scheduler] {
        p.kill().unwrap();
        p.wait().unwrap();
    }
    worker.shutdown().await.unwrap();
    tally.assert_kept("intake-scheduler-kills");
    assert_eq!((tally.dead_lettered, tally.unconfirmed), (0, 0));
    assert_eq!(store.deferred_len().await.unwrap(), 0, "the schedule is empty");
}
