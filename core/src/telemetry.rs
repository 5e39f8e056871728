//! What a process tells its orchestrator and its operators about itself.
//!
//! - [`Health`]: liveness (every loop still turns) and readiness (each
//!   role's conditions: joined its group, Redis answers, a provider of its
//!   channel not open; never while draining), served at `/healthz` and
//!   `/readyz` beside `/metrics`.
//! - [`Outcomes`]: `tidings_notifications_total`, by channel, priority,
//!   state and reason class ([`Reason`]), counted where a status record is written.
//! - [`Watched`]: the consumer context every role's consumers use: consumer
//!   lag per partition from librdkafka's statistics, client errors, and
//!   whether the consumer has joined its group.
//!
//! Labels are bounded: channels, priorities, states, reason classes,
//! providers, topics and partitions; never a user, an address or an id.

use crate::kafka::Hold;
use crate::status::Reason;
use crate::{Channel, Priority, State, StatusRecord};
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The process's loops and readiness conditions.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    draining: AtomicBool,
    loops: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    checks: Mutex<Vec<(String, Arc<AtomicBool>)>>,
}

/// A loop's heartbeat: [`Beat::beat`] each time it turns.
#[derive(Debug, Clone)]
pub struct Beat {
    started: Instant,
    last: Arc<AtomicU64>,
}

impl Beat {
    pub fn beat(&self) {
        self.last.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// One readiness condition, set by whoever watches it.
#[derive(Debug, Clone)]
pub struct Check(Arc<AtomicBool>);

impl Check {
    pub fn set(&self, ok: bool) {
        self.0.store(ok, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Health {
    pub fn shared() -> Arc<Self> {
        Arc::new(Health {
            started: Instant::now(),
            draining: AtomicBool::new(false),
            loops: Mutex::default(),
            checks: Mutex::default(),
        })
    }

    /// Registers a loop named `name`, beating from now.
    pub fn beat(&self, name: impl Into<String>) -> Beat {
        let beat = Beat { started: self.started, last: Arc::default() };
        beat.beat();
        lock(&self.loops).push((name.into(), beat.last.clone()));
        beat
    }

    /// Registers a readiness condition named `name`, met or not at first.
    pub fn check(&self, name: impl Into<String>, ok: bool) -> Check {
        let check = Check(Arc::new(AtomicBool::new(ok)));
        lock(&self.checks).push((name.into(), check.0.clone()));
        check
    }

    /// The process is shutting down: never ready again.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Alive unless a loop has not turned for `stale`: the loops that have not.
    pub fn live(&self, stale: Duration) -> Result<(), Vec<String>> {
        self.live_at(self.started.elapsed(), stale)
    }

    /// [`Health::live`] as it is `now` after the process started.
    fn live_at(&self, now: Duration, stale: Duration) -> Result<(), Vec<String>> {
        let (now, stale) = (now.as_millis() as u64, stale.as_millis() as u64);
        let stuck: Vec<String> = lock(&self.loops)
            .iter()
            .map(|(name, last)| (name, now.saturating_sub(last.load(Ordering::Relaxed))))
            .filter(|(_, idle)| *idle > stale)
            .map(|(name, idle)| format!("{name}: no turn for {} s", idle / 1000))
            .collect();
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(stuck)
        }
    }

    /// Ready unless draining or a condition is unmet: the conditions unmet.
    pub fn ready(&self) -> Result<(), Vec<String>> {
        let mut unmet: Vec<String> =
            lock(&self.checks).iter().filter(|(_, ok)| !ok.load(Ordering::Relaxed)).map(|(n, _)| n.clone()).collect();
        if self.draining.load(Ordering::Relaxed) {
            unmet.insert(0, "draining".to_string());
        }
        if unmet.is_empty() {
            Ok(())
        } else {
            Err(unmet)
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `tidings_notifications_total{channel, priority, state, reason}`: each
/// counter registered the first time it is counted (a registration per
/// message costs a lookup and an allocation; registering all of them at
/// start would export hundreds of series that stay at zero).
pub struct Outcomes {
    cells: Vec<OnceLock<metrics::Counter>>,
}

impl Default for Outcomes {
    fn default() -> Self {
        // A status about an event that made no notification has no channel or priority: one more of each.
        let n = (Channel::ALL.len() + 1) * (Priority::ALL.len() + 1) * State::ALL.len() * Reason::ALL.len();
        Outcomes { cells: (0..n).map(|_| OnceLock::new()).collect() }
    }
}

impl Outcomes {
    /// Counts the outcome `status` records.
    pub fn count(&self, status: &StatusRecord) {
        let (channel, priority, reason) = (status.channel, status.priority, status.reason());
        let c = channel.map_or(Channel::ALL.len(), |c| c as usize);
        let p = priority.map_or(Priority::ALL.len(), |p| p as usize);
        let at = ((c * (Priority::ALL.len() + 1) + p) * State::ALL.len() + status.state as usize) * Reason::ALL.len()
            + reason as usize;
        self.cells[at]
            .get_or_init(|| {
                metrics::counter!(
                    "tidings_notifications_total",
                    "channel" => channel.map_or("none", Channel::as_str),
                    "priority" => priority.map_or("none", Priority::as_str),
                    "state" => status.state.as_str(),
                    "reason" => reason.as_str(),
                )
            })
            .increment(1);
    }
}

/// A consumer's context: exports its lag per partition from librdkafka's
/// statistics (`statistics.interval.ms`), counts client errors, marks
/// `joined` once the group gave it an assignment (empty or not), and gives
/// each assignment the consumer's [`Hold`] (paused or not).
pub struct Watched {
    role: &'static str,
    joined: Check,
    hold: Hold,
}

impl Watched {
    pub fn new(role: &'static str, joined: Check) -> Self {
        Watched { role, joined, hold: Hold::default() }
    }

    /// Whether the consumer's reading is paused; pausing goes through it.
    pub fn hold(&self) -> &Hold {
        &self.hold
    }

    /// Notes a rebalance: an assignment means the consumer is in its group,
    /// and its partitions take the hold's state.
    pub fn rebalanced<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            self.joined.set(true);
            self.hold.assigned(consumer, partitions);
        }
    }
}

impl ClientContext for Watched {
    fn stats(&self, statistics: Statistics) {
        export_lag(self.role, &statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        kafka_error(self.role);
        tracing::warn!(role = self.role, error = %error, "kafka: {reason}");
    }
}

impl ConsumerContext for Watched {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalanced(consumer, rebalance);
    }
}

/// `tidings_consumer_lag{role, topic, partition}`: records behind the end
/// of each partition of the consumer's topics; 0 for a partition it does not
/// own now (another member's gauge carries its lag), so a sum over the
/// fleet counts each partition once.
pub fn export_lag(role: &'static str, statistics: &Statistics) {
    for (topic, t) in &statistics.topics {
        for (partition, p) in &t.partitions {
            if *partition < 0 {
                continue; // librdkafka's internal "unassigned" partition
            }
            metrics::gauge!(
                "tidings_consumer_lag",
                "role" => role,
                "topic" => topic.clone(),
                "partition" => partition.to_string(),
            )
            .set(p.consumer_lag.max(0) as f64);
        }
    }
}

/// `tidings_kafka_errors_total{role}`: a client error a role's consumer saw
/// (a broker down, authentication refused).
pub fn kafka_error(role: &'static str) {
    metrics::counter!("tidings_kafka_errors_total", "role" => role).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_every_check_and_no_drain() {
        let health = Health::shared();
        assert_eq!(health.ready(), Ok(()));
        let redis = health.check("redis", false);
        assert_eq!(health.ready(), Err(vec!["redis".to_string()]));
        redis.set(true);
        assert_eq!(health.ready(), Ok(()));
        health.drain();
        assert_eq!(health.ready(), Err(vec!["draining".to_string()]));
    }

    #[test]
    fn a_loop_that_stops_turning_is_not_live() {
        let health = Health::shared();
        let beat = health.beat("worker-email-bulk");
        assert_eq!(health.live(Duration::from_secs(60)), Ok(()));
        // Seen from 90 s on, the loop's last turn is over a minute old.
        let later = health.started.elapsed() + Duration::from_secs(90);
        let stuck = health.live_at(later, Duration::from_secs(60)).unwrap_err();
        assert!(stuck[0].starts_with("worker-email-bulk: no turn for 9"), "{stuck:?}");
        // A turn taken then makes it live again.
        beat.last.store(later.as_millis() as u64, Ordering::Relaxed);
        assert_eq!(health.live_at(later, Duration::from_secs(60)), Ok(()));
        beat.beat();
        assert_eq!(health.live(Duration::from_secs(60)), Ok(()));
    }
}
