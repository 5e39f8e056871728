//! A backlog of 100,000 events on 12 partitions, produced before intake
//! starts: intake routes every one and the worker delivers each once, in
//! per-user order, with no partition left behind. (An intake that paused and
//! resumed every partition per batch stopped for good here at about 37,000,
//! some partitions paused forever.)

use crate::harness::StatusWatch;
use crate::{check_each_once_in_order, tansu, wait_for_all, Real};
use std::time::Duration;
use tidings_core::State;

const EVENTS: usize = 100_000;
const USERS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_events_each_delivered_once_in_order_without_stall() {
    // A send writes no file: 100,000 files in one folder would measure the disk.
    let real = Real::start(tansu(), "latency = \"5ms\"\ndiscard = true", &[]);
    real.users(USERS).await;
    real.feed(0..EVENTS, USERS).await;
    let watch = StatusWatch::start(&real.config);
    let _intake = real.spawn(&["intake"]);
    let _worker = real.spawn(&["worker", "--channel", "email"]);

    let records = wait_for_all(&watch, EVENTS, Duration::from_secs(60)).await;
    check_each_once_in_order(&records, EVENTS, &[State::Sent]);
}
