//! The secondary email provider is down (its breaker opens and stays open
//! or half-open) while the primary keeps failing one message transiently:
//! that message must still end, dead-lettered after its bounded passes,
//! instead of retrying for as long as the secondary is away; the rest flows.

use super::{all_ended, Expected, Tally};
use crate::harness::{self, fakes, order_event, Infra, StatusWatch};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::fleet;
use tidings_core::notification::notification_id;
use tidings_core::status::ErrorClass;
use tidings_core::{Channel, Clock, State};

const USERS: usize = 20;
const EVENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_failing_on_the_primary_ends_while_the_secondary_is_down() {
    let infra = Infra::start();
    let primary = fakes::sendgrid().await;
    let secondary = fakes::sendgrid().await;
    let far = Instant::now() + Duration::from_secs(3600);
    *secondary.state.down_until.lock().unwrap() = Some(far);
    let failing = notification_id("/test", "evt-7", Channel::Email, "u-7");
    primary.state.refuse_ids.lock().unwrap().insert(failing.clone());

    let providers = harness::sendgrid_provider(&primary.server.uri(), "5s")
        + &harness::sendgrid_provider(&secondary.server.uri(), "5s")
            .replace("[providers.sendgrid]", "[providers.backup]");
    let mut config = infra.config(&providers, &[(Channel::Email, &["sendgrid", "backup"])]);
    let b = &mut config.worker.breaker;
    b.min_calls = 2;
    b.reset_timeout = Duration::from_millis(500);
    let r = &mut config.worker.retry;
    r.attempts = 2;
    r.passes = 3;
    r.max_backoff = Duration::from_millis(200);
    let config = Arc::new(config);
    let store = harness::store_with_email_users(&config, USERS).await;
    let watch = StatusWatch::start(&config);
    let roles = fleet::Roles { intake: true, scheduler: false, callbacks: false, channels: vec![Channel::Email] };
    let running = fleet::spawn_fleet(config.clone(), store, Clock::system(), roles).unwrap();

    let events: String = (0..EVENTS).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect();
    let start = Instant::now();
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    let expected = Expected::orders(0, EVENTS, USERS, Channel::Email);
    let records = watch.wait_until("every notification to end", Duration::from_secs(60), all_ended(&expected)).await;
    let mut tally = Tally::of(&expected, &primary.state.accepted(), &records);
    tally.recovery = Some(start.elapsed());
    tally.assert_kept("secondary-down");
    assert_eq!(tally.dead_lettered, 1, "only the failing message");
    let ended = records.iter().find(|r| r.notification_id == failing && r.state.is_terminal()).unwrap();
    assert_eq!((ended.state, ended.error_class), (State::DeadLettered, Some(ErrorClass::Exhausted)), "{ended:?}");
    assert!(
        secondary.state.accepted().is_empty() && secondary.state.refused() > 0,
        "the secondary was tried, and down"
    );
    running.shutdown().await.unwrap();
}
