//! One notification, end to end: claim it (dedupe), re-check the user's
//! preferences, render, send through the chain, and make the outcome durable.
//!
//! The order of writes is what makes redelivery safe:
//!
//! 1. claim `notification_id` in Redis for this delivery (a lease, renewed
//!    every third of it while the delivery runs, so a dead worker's claim
//!    expires and a live one's does not);
//! 2. send, checking before every provider call that the claim is still held;
//! 3. replace the claim with the outcome record (the dedupe record), only if
//!    this delivery still holds it (compare-and-set);
//! 4. write the dead letter (when it ends dead-lettered) and the status
//!    record, and wait for Kafka's acknowledgements;
//! 5. mark the dedupe record published, in the background ([`Marks`]); the
//!    caller stores the offset without waiting for the mark.
//!
//! A copy that arrives after step 3 finds the dedupe record and becomes a
//! `duplicate`. If step 5 has not happened and the recording delivery may
//! have stopped before step 4 was acknowledged (one of this process that
//! never acknowledged it, or another worker's whose mark did not come
//! within [`MARK_WAIT`]), the copy first re-writes the letter and the
//! status, byte for byte: a crash can lose a mark, never a letter or a
//! status. A notification so has one dead letter and one terminal status,
//! and a second only if a worker dies between writing them and its mark, or
//! its mark takes longer than that. A copy that arrives while another
//! delivery holds the claim waits for its outcome.
//! A delivery that loses its claim (Redis unreachable longer than two thirds
//! of the lease, or the claim taken over) stops before its next call, gives
//! the claim up and claims again; one whose partition moved away stops the
//! same way and leaves the message to the partition's new owner.
//!
//! Where a customer can still get a second copy: a crash between the provider
//! accepting (2) and the dedupe record (3), after which the claim expires and
//! the message is sent again; a call that outlives its claim while Redis is
//! unreachable; and an ambiguous answer retried under `at_least_once`. Email
//! carries a stable `Message-ID` and webhooks a stable `webhook-id` so a
//! receiving system can fold such a copy.

use crate::chain::{Chain, Failed, Outcome, WhenDown};
use crate::render::Renderer;
use crate::retry::{Ending, Policy};
use chrono::{DateTime, Utc};
use rdkafka::producer::FutureProducer;
use rdkafka::producer::FutureRecord;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::channel::STATUS_TOPIC;
use tidings_core::config::Ambiguity;
use tidings_core::dead_letter::DeadLetter;
use tidings_core::kafka::{self, delivered, enqueue_json};
use tidings_core::notification::{headers, notification_id, Deferred};
use tidings_core::persist::until_ok;
use tidings_core::quiet_hours::opening;
use tidings_core::status::{cut_reason, ErrorClass};
use tidings_core::store::{holder, lane, Claim, Claimed, SharedStore};
use tidings_core::suppression::{address_of, Cause, Suppression};
use tidings_core::telemetry::Outcomes;
use tidings_core::trace::{self, Hop};
use tidings_core::{Channel, Clock, Config, Notification, Preferences, Priority, Recipient, State, StatusRecord};
use tidings_providers::webhook::keys::EndpointKeys;
use tidings_providers::{rules, Content, Outgoing};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A consumed channel-topic record, detached from the consumer.
#[derive(Debug, Clone)]
pub struct Input {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Its headers: `correlation_id` and `traceparent` are passed on to a
    /// fallback notification, and every one to a dead letter.
    pub headers: Vec<(String, Vec<u8>)>,
    /// This delivery's hop of the notification's trace.
    pub trace: Hop,
}

impl Input {
    /// The value of header `name`, if it is there and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The span of delivering this record, child of its `traceparent`;
    /// sets [`Input::trace`] to it.
    pub fn span(&mut self, channel: Channel) -> tracing::Span {
        let span = tracing::info_span!(
            "worker.deliver",
            %channel,
            offset = self.offset,
            notification_id = tracing::field::Empty,
            correlation_id = self.header(headers::CORRELATION_ID).unwrap_or_default(),
        );
        self.trace = trace::hop(&span, self.header(headers::TRACEPARENT));
        span
    }

    /// Stamps `status` with the record's correlation id and this delivery's trace.
    fn stamp(&self, mut status: StatusRecord) -> StatusRecord {
        status.correlation_id = self.header(headers::CORRELATION_ID).map(str::to_string);
        status.trace_id = Some(self.trace.trace_id());
        status
    }
}

/// What the dedupe record holds once a notification has an outcome.
#[derive(Debug, Serialize, Deserialize)]
struct DedupeRecord {
    status: StatusRecord,
    /// The dead letter the notification goes out with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    letter: Option<Letter>,
    /// The delivery that recorded it: with `published` it ends the record,
    /// so the mark compares the end of the record only ([`dedupe_tail`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<String>,
    /// The dead letter, if any, and the status record are acknowledged.
    published: bool,
}

/// A [`DedupeRecord`] as JSON, around its status and letter already
/// serialized, ending with `tail` ([`dedupe_tail`]).
fn dedupe_json(status: &str, letter: Option<&str>, tail: &str) -> String {
    let mut json = String::with_capacity(status.len() + letter.map_or(0, |l| l.len() + 10) + tail.len() + 12);
    json.push_str(r#"{"status":"#);
    json.push_str(status);
    if let Some(letter) = letter {
        json.push_str(r#","letter":"#);
        json.push_str(letter);
    }
    json.push_str(tail);
    json
}

/// How a [`DedupeRecord`] recorded by delivery `by` ends: a delivery's
/// owner is unique in the fleet, so a record that ends with its unpublished
/// tail is the one it recorded, and the published mark changes that tail only.
fn dedupe_tail(by: &str, published: bool) -> String {
    let by = serde_json::to_string(by).expect("strings serialize to JSON");
    format!(r#","by":{by},"published":{published}}}"#)
}

/// How a notification ended: its status record, and the dead letter it
/// goes out with. Both are written after the outcome is recorded, so a
/// notification has one dead letter however often it is redelivered.
struct Ended {
    status: StatusRecord,
    letter: Option<Letter>,
}

impl From<StatusRecord> for Ended {
    fn from(status: StatusRecord) -> Self {
        Ended { status, letter: None }
    }
}

/// Published marks (step 5), written in the background: each batch is every
/// mark that came while the one before was written, in one round trip. A
/// delivery does not wait for its mark. A mark turns the end of the record
/// its delivery wrote from unpublished to published ([`dedupe_tail`]), if
/// the record is that one still.
pub struct Marks {
    tx: mpsc::UnboundedSender<(String, String, String)>,
    /// The notifications whose letter and status this process acknowledged
    /// and whose mark is not written yet: a copy of one needs not write
    /// them again, however late the mark.
    on_the_way: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Marks {
    /// Marks at most this many records a round trip.
    const BATCH: usize = 512;

    /// The marks, and the task that writes them, which ends once the marks
    /// are dropped and every mark sent was written.
    pub fn start(store: SharedStore) -> (Marks, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, String, String)>();
        let on_the_way = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let written = on_the_way.clone();
        let writer = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(Self::BATCH);
            while rx.recv_many(&mut batch, Self::BATCH).await > 0 {
                until_ok("mark published", || store.swap_tails(&batch)).await;
                let mut written = written.lock().unwrap_or_else(|p| p.into_inner());
                for (id, _, _) in &batch {
                    written.remove(id);
                }
                drop(written);
                batch.clear();
            }
        });
        (Marks { tx, on_the_way }, writer)
    }

    /// Whether this process acknowledged `id`'s letter and status and its mark is on its way.
    fn on_the_way(&self, id: &str) -> bool {
        self.on_the_way.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
    }

    /// Marks `id`'s dedupe record published: its `unpublished` tail becomes
    /// `published`, if it is the record the delivery wrote still.
    fn mark(&self, id: &str, unpublished: String, published: String) {
        self.on_the_way.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string());
        // Only closed once the writer ended, after every delivery did.
        let _ = self.tx.send((id.to_string(), unpublished, published));
    }
}

/// How long a copy waits for another worker's mark of an outcome it
/// recorded (marks are written within milliseconds) before taking that
/// worker for dead and writing its letter and status again.
const MARK_WAIT: Duration = Duration::from_secs(5);

/// Why a notification is dead-lettered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Letter {
    class: ErrorClass,
    error: String,
    attempts: u32,
    providers_tried: Vec<String>,
    first_failure: DateTime<Utc>,
    last_failure: DateTime<Utc>,
}

impl Letter {
    /// A record that cannot be delivered at all, failing `now`: read once,
    /// as intake counts a poison event.
    fn poison(error: String, now: DateTime<Utc>) -> Self {
        Letter {
            class: ErrorClass::Poison,
            error,
            attempts: 1,
            providers_tried: vec![],
            first_failure: now,
            last_failure: now,
        }
    }
}

pub struct Deliverer {
    pub channel: Channel,
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub producer: FutureProducer,
    pub renderer: Arc<Renderer>,
    pub chain: Chain,
    pub clock: Clock,
    /// This process's id; each claim attempt's owner is `<owner>.<n>.<attempt>` ([`Owners`]).
    pub owner: String,
    pub deliveries: std::sync::atomic::AtomicU64,
    pub marks: Marks,
    pub outcomes: Outcomes,
}

/// The claim owners of one delivery, unique in the fleet: one per claim
/// attempt, so that a release of an earlier attempt that arrives late (it
/// timed out, and its request went on) finds another owner's claim and
/// leaves it. The attempt running is the one a panic is recorded under.
pub struct Owners {
    delivery: String,
    attempts: std::sync::atomic::AtomicU32,
}

impl Owners {
    /// The owner of the next claim attempt.
    fn next(&self) -> String {
        let attempt = self.attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        format!("{}.{attempt}", self.delivery)
    }

    /// Whether claim owner `by` was an attempt of this delivery.
    fn own(&self, by: &str) -> bool {
        by.strip_prefix(self.delivery.as_str()).is_some_and(|rest| rest.starts_with('.'))
    }

    /// The owner of the attempt running (or of a first one, before any).
    fn current(&self) -> String {
        let attempt = self.attempts.load(std::sync::atomic::Ordering::Relaxed).max(1);
        format!("{}.{attempt}", self.delivery)
    }
}

/// What a delivery's claim said of the deliveries of it before.
#[derive(Clone, Copy)]
struct Prior<'a> {
    /// The provider an ambiguous answer tied the message to.
    pin: Option<&'a str>,
    /// A delivery of it stopped part-way: it may be out already.
    taken_over: bool,
}

/// Why a delivery ends without an outcome.
enum NotNow {
    /// Told to stop before anything went out. `pinned`: the provider an
    /// ambiguous answer tied the message to, if one did.
    Stopped { pinned: Option<String> },
    /// The user's quiet hours began since intake routed it (a backlog held
    /// through an outage): it is held until `until`.
    Quiet { until: DateTime<Utc> },
}

impl Deliverer {
    /// `content` with the user's webhook signing keys when it is a webhook
    /// (made and stored the first time the user has a webhook sent).
    async fn signed(&self, mut content: Content, user: &str) -> Result<Content, tidings_providers::ProviderError> {
        if let Content::Webhook { keys, .. } = &mut content {
            let fresh = EndpointKeys::fresh().to_json();
            let stored = until_ok("read the webhook keys", || self.store.webhook_keys(user, &fresh)).await;
            *keys = EndpointKeys::parse(&stored)
                .and_then(|k| k.signing(self.clock.now()))
                .map_err(tidings_providers::ProviderError::permanent)?;
        }
        Ok(content)
    }

    /// The claim owners of one delivery.
    pub fn owners(&self) -> Owners {
        let n = self.deliveries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Owners { delivery: format!("{}.{n}", self.owner), attempts: Default::default() }
    }

    /// Handles one record as the delivery `owners` name; returns once its
    /// outcome is durable, or once `revoked` fired (the partition moved: its
    /// new owner delivers the record).
    pub async fn process(&self, input: &Input, owners: &Owners, revoked: &CancellationToken) {
        let n = match self.read(input) {
            Ok(n) => n,
            Err(letter) => return until_ok("dead-letter", || self.dead_letter(input, &letter)).await,
        };
        tracing::Span::current().record("notification_id", n.notification_id.as_str());
        let lease = self.config.worker.claim_lease;
        // An outcome reached whose recording found the claim gone: recorded
        // once the claim is back, never reached a second time by sending again.
        let mut reached: Option<Ended> = None;
        // The provider an attempt of this delivery was pinned to, for the
        // next attempt should its claim not say so (it was lost, not given up).
        let mut pinned_before: Option<String> = None;
        // An attempt that stopped and could not give its claim up (Redis was
        // unreachable), and its pin: given up before the next claim, which
        // would otherwise wait out its lease and take it over as a delivery
        // that stopped part-way, though nothing went out.
        let mut not_given_up: Option<(String, Option<String>, bool)> = None;
        let address = address_of(&n.recipient);
        loop {
            // A record of a partition gone before it was begun asks Redis nothing.
            if revoked.is_cancelled() {
                return;
            }
            if let Some((earlier, pinned, taken_over)) = not_given_up.take() {
                let id = &n.notification_id;
                tokio::select! {
                    _ = until_ok("give the claim up", || self.give_up(id, &earlier, pinned.as_deref(), taken_over)) => {}
                    _ = revoked.cancelled() => return,
                }
            }
            let owner = &owners.next();
            // When the last claim request went out: the lease runs from when
            // Redis takes it, at the earliest then.
            let asked = std::sync::Mutex::new(None);
            let claiming = until_ok("claim", || {
                *asked.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                self.store.claim_for_delivery(&n.notification_id, owner, lease, &n.user_id, address.as_deref())
            });
            tokio::pin!(claiming);
            let Claimed { claim, prefs, suppressed } = tokio::select! {
                biased;
                _ = revoked.cancelled() => {
                    // Only a request that went out can have taken the claim.
                    if asked.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                        self.give_back(claiming, &n.notification_id, owner).await;
                    }
                    return;
                }
                claimed = &mut claiming => claimed,
            };
            let asked = asked.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(Instant::now);
            let owner = &holder(owner, &claim);
            // A delivery of it stopped part-way: it may be out already, through the provider it was pinned to if it was.
            let (taken_over, pin) = match claim {
                Claim::Acquired => (false, pinned_before.clone()),
                Claim::TakenOver { pinned } => (true, pinned.or_else(|| pinned_before.clone())),
                Claim::Done(record) => return self.recorded(input, &n, owners, &record, revoked).await,
                // Another delivery is sending it (a rebalance moved the partition
                // mid-send): wait for its outcome or for its claim to expire.
                Claim::Held => {
                    tokio::select! {
                        _ = revoked.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200).min(lease)) => continue,
                    }
                }
            };
            let at_most_once = self.config.worker.ambiguous.of(n.priority) == Ambiguity::AtMostOnce;
            let ended = match reached.take() {
                Some(ended) => Ok(ended),
                None if taken_over && at_most_once => Ok(self.taken_over(&n).into()),
                None => {
                    let lost = revoked.child_token();
                    let ended = tokio::select! {
                        ended = self.deliver(input, &n, prefs, suppressed, Prior { pin: pin.as_deref(), taken_over }, &lost) => ended,
                        _ = self.keep_claim(&n.notification_id, owner, asked, &lost) => unreachable!("keeping a claim never ends"),
                    };
                    match ended {
                        Ok(mut e) if taken_over && e.status.state == State::Sent && e.status.error.is_none() => {
                            let why = "sent after a delivery of it stopped part-way: this may be a second copy";
                            e.status = e.status.with_error(None, why);
                            Ok(e)
                        }
                        other => other,
                    }
                }
            };
            match ended {
                Ok(ended) => match self.record(input, &n, owner, ended).await {
                    Ok(()) => return,
                    Err(ended) => {
                        metrics::counter!("tidings_claims_lost_total", "channel" => self.channel.as_str(), "when" => "recording").increment(1);
                        reached = Some(ended);
                    }
                },
                Err(NotNow::Quiet { until }) => return self.hold_quiet(input, &n, owner, until).await,
                Err(NotNow::Stopped { pinned }) => {
                    // Given up on purpose, so the next holder need not wait for it to
                    // expire; pinned, the next holder sends through that provider only;
                    // taken over, the next holder takes it over too.
                    let give_up = self.give_up(&n.notification_id, owner, pinned.as_deref(), taken_over);
                    let answered = tokio::time::timeout(Duration::from_secs(1), give_up).await;
                    if revoked.is_cancelled() {
                        if pinned.is_some() && !matches!(answered, Ok(Ok(true))) {
                            tracing::warn!("a claim pinned by an ambiguous answer may not be given up pinned: the partition's next owner may send it through another provider");
                        }
                        return;
                    }
                    if !matches!(answered, Ok(Ok(_))) {
                        not_given_up = Some((owner.clone(), pinned.clone(), taken_over));
                    }
                    pinned_before = pinned;
                    metrics::counter!("tidings_claims_lost_total", "channel" => self.channel.as_str(), "when" => "sending").increment(1);
                    tracing::warn!("the claim was lost before sending; claiming again");
                }
            }
        }
    }

    /// The partition moved while `claiming` was on its way: the request may
    /// take the claim all the same, and were it left, the new owner would
    /// wait a lease and then take it over as a delivery that stopped
    /// part-way (`unconfirmed` under `at_most_once`, though nothing was
    /// sent). So the answer is awaited, a few seconds at most, and a claim
    /// it acquired is released. One taken over is handed on as taken over
    /// (with its pin): its next holder learns at once that a delivery
    /// stopped part-way, as this one did.
    async fn give_back(&self, claiming: std::pin::Pin<&mut impl Future<Output = Claimed>>, id: &str, owner: &str) {
        const GIVE_BACK: Duration = Duration::from_secs(5);
        match tokio::time::timeout(GIVE_BACK, claiming).await {
            Ok(Claimed { claim: Claim::Acquired, .. }) => {
                if !matches!(tokio::time::timeout(GIVE_BACK, self.give_up(id, owner, None, false)).await, Ok(Ok(_))) {
                    tracing::warn!("a claim taken as the partition moved may not be released; it ends with its lease");
                }
            }
            // Handed on, not left to expire with this claim.
            Ok(Claimed { claim: Claim::TakenOver { pinned }, .. }) => {
                let owner = holder(owner, &Claim::TakenOver { pinned: pinned.clone() });
                let give_up = self.give_up(id, &owner, pinned.as_deref(), true);
                if !matches!(tokio::time::timeout(GIVE_BACK, give_up).await, Ok(Ok(_))) {
                    tracing::warn!(
                        "a claim taken over as the partition moved may not be handed on; it ends with its lease"
                    );
                }
            }
            Ok(_) => {}
            Err(_) => tracing::warn!("no answer to a claim as the partition moved; any claim ends with its lease"),
        }
    }

    /// Holds `n` until its user's quiet hours end, as intake would have: on
    /// its lane, through the scheduler, with a `deferred` status. The claim
    /// is given up first, so a worker that dies before the hold leaves the
    /// record to be read again, not a claim for the scheduled copy to take
    /// over hours later. Held twice (the record read again after a crash),
    /// it is held once: the member is the same.
    async fn hold_quiet(&self, input: &Input, n: &Notification, owner: &str, until: DateTime<Utc>) {
        until_ok("give the claim up", || self.store.release(&n.notification_id, owner)).await;
        let held = Deferred {
            notification: Notification { not_before: Some(until), ..n.clone() },
            correlation_id: input.header(headers::CORRELATION_ID).unwrap_or_default().to_string(),
            traceparent: input.header(headers::TRACEPARENT).map(str::to_string),
        };
        let member = serde_json::to_string(&held).expect("records serialize to JSON");
        let lane = lane(&n.user_id, n.channel);
        let released = until_ok("defer", || self.store.defer(&lane, &member, until)).await;
        tracing::debug!(until = %released, "held for the user's quiet hours");
        let mut status = self.status(n, State::Deferred);
        status.not_before = Some(released);
        let status = input.stamp(status);
        until_ok("write status", || self.publish(&status)).await;
        self.outcomes.count(&status);
    }

    /// Gives `owner`'s claim on `id` up: pinned to the provider an
    /// ambiguous answer tied the message to, handed on as taken over when
    /// it was (the next holder takes it over at once), or released. False
    /// if it was not `owner`'s.
    async fn give_up(
        &self,
        id: &str,
        owner: &str,
        pinned: Option<&str>,
        taken_over: bool,
    ) -> Result<bool, tidings_core::store::StoreError> {
        match (pinned, taken_over) {
            (Some(provider), _) => self.store.pin(id, owner, provider).await,
            (None, true) => self.store.pin(id, owner, "").await,
            (None, false) => self.store.release(id, owner).await,
        }
    }

    /// The outcome of a notification whose claim was taken over from a
    /// delivery that stopped without an outcome (its worker died, or lost
    /// Redis, between the claim and the recording): the provider may have
    /// accepted it, so under `at_most_once` it is not sent again.
    fn taken_over(&self, n: &Notification) -> StatusRecord {
        tracing::warn!("a delivery stopped part-way; the outcome is unconfirmed");
        metrics::counter!("tidings_claims_taken_over_total", "channel" => self.channel.as_str()).increment(1);
        let reason = "a delivery of it stopped part-way (its worker died or lost Redis between claiming and recording it): the provider may have accepted it";
        let mut s = self.status(n, State::Unconfirmed).with_error(None, reason);
        s.attempts = n.attempt + 1;
        s
    }

    /// The notification in a record, or the dead letter for a record that is none.
    fn read(&self, input: &Input) -> Result<Notification, Letter> {
        // Checked as UTF-8 at once, which is quicker than string by string as JSON is read.
        let text = input.payload.as_deref().map(std::str::from_utf8);
        let error = match text {
            Some(Ok(text)) => match serde_json::from_str(text) {
                Ok(n) => return Ok(n),
                Err(e) => format!("not a notification record: {e}"),
            },
            Some(Err(e)) => format!("not a notification record: {e}"),
            None => "empty record".to_string(),
        };
        Err(Letter::poison(error, self.clock.now()))
    }

    /// Renews `owner`'s claim until the delivery ends; fires `lost` when
    /// the claim is no longer surely held (see [`hold_claim`]).
    async fn keep_claim(&self, id: &str, owner: &str, asked: Instant, lost: &CancellationToken) {
        hold_claim(self.config.worker.claim_lease, asked, || {
            self.store.renew(id, owner, self.config.worker.claim_lease)
        })
        .await;
        lost.cancel();
        std::future::pending::<()>().await;
    }

    /// A delivery that panicked: the record is dead-lettered as poison and
    /// its notification ends `dead_lettered`, so its offset moves on.
    pub async fn panicked(&self, input: &Input, owners: &Owners, why: &str) {
        tracing::error!(offset = input.offset, panic = why, "a delivery panicked");
        metrics::counter!("tidings_delivery_panics_total", "channel" => self.channel.as_str()).increment(1);
        let error = format!("delivery panicked: {why}");
        let letter = Letter::poison(error.clone(), self.clock.now());
        let Ok(n) = self.read(input) else {
            return until_ok("dead-letter", || self.dead_letter(input, &letter)).await;
        };
        let lease = self.config.worker.claim_lease;
        // The claim of the attempt that panicked, if it was had: renewed, not waited out.
        let owner = &owners.current();
        match until_ok("claim", || self.store.claim(&n.notification_id, owner, lease)).await {
            claim @ (Claim::Acquired | Claim::TakenOver { .. }) => {
                let status = self.status(&n, State::DeadLettered).with_error(Some(ErrorClass::Poison), error);
                let _ = self.record(input, &n, &holder(owner, &claim), Ended { status, letter: Some(letter) }).await;
            }
            // It has an outcome already, or another delivery owns it now.
            Claim::Done(_) | Claim::Held => {}
        }
    }

    /// Everything between the claim and the outcome; [`NotNow`] when `stop`
    /// fired before anything went out, or the user's quiet hours hold it.
    /// `prefs` are the user's preferences and `listed` the address's
    /// suppression-list entry, as read with the claim; `prior` what the
    /// claim said of the deliveries before.
    async fn deliver(
        &self,
        input: &Input,
        n: &Notification,
        prefs: Option<String>,
        listed: Option<Suppression>,
        prior: Prior<'_>,
        stop: &CancellationToken,
    ) -> Result<Ended, NotNow> {
        let pin = prior.pin;
        let prefs = match prefs.map(|json| Preferences::parse(&json)) {
            None => return Ok(self.suppressed(n, format!("no preferences for user {}", n.user_id)).into()),
            Some(Err(e)) => return Ok(self.suppressed(n, format!("stored preferences are unusable: {e}")).into()),
            Some(Ok(p)) => p,
        };
        if let Some(reason) = prefs.suppression(n.channel, &n.category) {
            return Ok(self.suppressed(n, reason).into());
        }
        if let Some(entry) = listed {
            return Ok(self.suppressed(n, entry.why()).into());
        }
        // A message that may be out already is not held: its claim carries what says so.
        let may_hold = n.priority != Priority::Critical && !prior.taken_over && pin.is_none();
        // Quiet hours, and its category's send window: a backlog held past
        // the window's end waits for its next opening, as intake would have.
        let window = self.config.categories.get(&n.category).and_then(|c| c.send_window.as_ref());
        if may_hold && (prefs.quiet_hours.is_some() || window.is_some()) {
            let tz = prefs.timezone.parse().unwrap_or(chrono_tz::Tz::UTC);
            let now = self.clock.now();
            let open = opening(prefs.quiet_hours.as_ref(), window, tz, now);
            let until = (open > now).then_some(open);
            // Held for this window already, and released at its end by a clock a little ahead.
            let released = |until| n.not_before.is_some_and(|held| until <= held + chrono::Duration::minutes(1));
            if let Some(until) = until.filter(|until| !released(*until)) {
                return Err(NotNow::Quiet { until });
            }
        }
        let content = match self.renderer.render(n) {
            Ok(c) => c,
            Err(e) => {
                let now = self.clock.now();
                let letter = Letter {
                    class: ErrorClass::Render,
                    error: e.to_string(),
                    attempts: n.attempt,
                    providers_tried: vec![],
                    first_failure: now,
                    last_failure: now,
                };
                let status = self.status(n, State::DeadLettered).with_error(Some(ErrorClass::Render), e.to_string());
                return Ok(Ended { status, letter: Some(letter) });
            }
        };
        let max_segments = self.config.channels.get(&n.channel).map_or(u32::MAX, |c| c.max_segments);
        let checked = match rules::check(&content, max_segments) {
            Ok(()) => self.signed(content, &n.user_id).await,
            Err(error) => Err(error),
        };
        let content = match checked {
            Ok(content) => content,
            Err(error) => {
                let now = self.clock.now();
                let refused = Failed {
                    error,
                    ending: Ending::Permanent,
                    attempts: 0,
                    providers_tried: vec![],
                    first_failure: now,
                    last_failure: now,
                };
                return Ok(self.failed(input, n, &prefs, refused).await);
            }
        };
        let outgoing = Outgoing { notification_id: n.notification_id.clone(), priority: n.priority, content };
        // A critical message that can go another way does not wait out an outage.
        let can_fall_back = n.priority == Priority::Critical && !n.fallback.is_empty();
        let when_down = if can_fall_back { WhenDown::GiveUp } else { WhenDown::Hold };
        let policy = Policy::new(&self.config.worker.retry, self.config.worker.ambiguous.of(n.priority));
        // A push to devices on several platforms goes through each platform's provider.
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        let parts = by_platform(outgoing);
        let several = parts.len() > 1;
        let never = CancellationToken::new();
        for part in parts {
            // Once one part went out (or may have), the others go too: stopping
            // half-way would resend the first part with the whole message.
            let out =
                !sent.is_empty() || failed.iter().any(|(_, f): &(Outgoing, Failed)| f.ending == Ending::Unconfirmed);
            let stop = if out { &never } else { stop };
            match self.chain.send(&part, &policy, when_down, pin, stop).await {
                Outcome::Sent(s) => sent.push(s),
                Outcome::Failed(f) => failed.push((part, f)),
                Outcome::Abandoned { pinned } => return Err(NotNow::Stopped { pinned }),
            }
        }
        if sent.is_empty() {
            let (_, first) = failed.into_iter().next().expect("a message has at least one part");
            return Ok(self.failed(input, n, &prefs, first).await);
        }
        let mut s = self.status(n, State::Sent);
        s.provider = Some(sent.iter().map(|p| p.provider.as_str()).collect::<Vec<_>>().join("+"));
        s.provider_message_id = sent.iter().find_map(|p| p.receipt.provider_message_id.clone());
        s.attempts = n.attempt + sent.iter().map(|p| p.attempts).sum::<u32>();
        if several && !failed.is_empty() {
            let mut why = Vec::new();
            for (part, f) in &failed {
                why.push(self.part_failed(input, n, part, f).await);
            }
            let class = failed.iter().any(|(_, f)| f.error.invalid_recipient).then_some(ErrorClass::Permanent);
            s = s.with_error(class, format!("not every device took it: {}", why.join("; ")));
        }
        Ok(s.into())
    }

    /// The outcome of one platform's part of a push whose other parts went
    /// out: invalid tokens are reported (suppressed), an unconfirmed part is
    /// said so, and any other failure is dead-lettered as a notification of
    /// its own (`<id>.<platform>`, only that platform's tokens), so a replay
    /// sends that part alone. Returns what the status record says of it.
    async fn part_failed(&self, input: &Input, n: &Notification, part: &Outgoing, f: &Failed) -> String {
        let Content::Push { tokens, .. } = &part.content else { return f.error.to_string() };
        let platform = tokens.first().map_or("push", |t| t.platform.as_str());
        if f.error.invalid_recipient || f.ending == Ending::Unconfirmed {
            let what = if f.ending == Ending::Unconfirmed { "unconfirmed" } else { "suppressed" };
            return format!("{platform} {what}: {}", f.error);
        }
        let mut alone = n.clone();
        alone.notification_id = format!("{}.{platform}", n.notification_id);
        alone.recipient = Recipient::Push { tokens: tokens.clone() };
        let letter = Letter {
            class: if f.ending == Ending::Exhausted { ErrorClass::Exhausted } else { ErrorClass::Permanent },
            error: f.error.to_string(),
            attempts: f.attempts,
            providers_tried: f.providers_tried.clone(),
            first_failure: f.first_failure,
            last_failure: f.last_failure,
        };
        let value = serde_json::to_vec(&alone).expect("records serialize to JSON");
        let part_input = Input { payload: Some(value), ..input.clone() };
        until_ok("dead-letter", || self.dead_letter(&part_input, &letter)).await;
        format!("{platform} dead-lettered as {}: {}", alone.notification_id, f.error)
    }

    fn suppressed(&self, n: &Notification, reason: String) -> StatusRecord {
        self.status(n, State::Suppressed).with_error(None, reason)
    }

    async fn failed(&self, input: &Input, n: &Notification, prefs: &Preferences, failed: Failed) -> Ended {
        let attempts = n.attempt + failed.attempts;
        let mut s = self.status(n, State::Suppressed);
        s.attempts = attempts;
        s.provider = failed.providers_tried.last().cloned();
        if failed.ending == Ending::Unconfirmed {
            // Never sent again, through this channel or another.
            s.state = State::Unconfirmed;
            let why = format!("no answer after the request was written, not sent again: {}", failed.error);
            return s.with_error(None, why).into();
        }
        let class = if failed.ending == Ending::Exhausted { ErrorClass::Exhausted } else { ErrorClass::Permanent };
        if failed.error.invalid_recipient {
            self.list(n, &failed).await;
        }
        if n.priority == Priority::Critical {
            if let Some(next) = self.fall_back(input, n, prefs).await {
                tracing::warn!(to = %next.channel, error = %failed.error, "critical notification falls back to another channel");
                s.state = State::FailedOver;
                s.fallback_notification_id = Some(next.notification_id);
                return s.with_error(Some(class), failed.error.to_string()).into();
            }
        }
        if failed.error.invalid_recipient {
            // Reported so the owning service can clean the address or token up.
            return s.with_error(Some(ErrorClass::Permanent), format!("invalid recipient: {}", failed.error)).into();
        }
        let letter = Letter {
            class,
            error: failed.error.to_string(),
            attempts,
            providers_tried: failed.providers_tried,
            first_failure: failed.first_failure,
            last_failure: failed.last_failure,
        };
        s.state = State::DeadLettered;
        Ended { status: s.with_error(Some(class), failed.error.to_string()), letter: Some(letter) }
    }

    /// Puts the address a provider refused as invalid on the suppression
    /// list, so no later message goes to it (an address our own checks
    /// refused is not listed: no provider has seen it).
    async fn list(&self, n: &Notification, failed: &Failed) {
        let (Some(address), Some(provider)) = (address_of(&n.recipient), failed.providers_tried.last()) else {
            return;
        };
        let entry = Suppression {
            address,
            channel: n.channel,
            // Opted out at the provider: a STOP, so the number's START lifts it.
            cause: if failed.error.opted_out { Cause::Stop } else { Cause::HardBounce },
            reason: failed.error.to_string(),
            source: provider.clone(),
            at: self.clock.now(),
        };
        if until_ok("list a refused address", || self.store.suppress(&entry)).await {
            metrics::counter!("tidings_suppressions_added_total", "cause" => entry.cause.as_str(), "source" => "send")
                .increment(1);
        }
    }

    /// Hands a critical notification that failed for good on this channel to
    /// the next channel of its fallback list that the user can receive. The
    /// copy has its own deterministic id, so a redelivery republishes the
    /// same one and its worker's dedupe absorbs it. A channel whose address
    /// is on the suppression list is passed over, as one the user turned off.
    async fn fall_back(&self, input: &Input, n: &Notification, prefs: &Preferences) -> Option<Notification> {
        let mut at = None;
        for (i, c) in n.fallback.iter().enumerate() {
            let Some(recipient) = prefs.recipient(*c).filter(|_| prefs.suppression(*c, &n.category).is_none()) else {
                continue;
            };
            if let Some(address) = address_of(&recipient) {
                if until_ok("read the suppression list", || self.store.suppression(&address)).await.is_some() {
                    continue;
                }
            }
            at = Some(i);
            break;
        }
        let at = at?;
        let channel = n.fallback[at];
        let next = Notification {
            notification_id: notification_id(&n.source, &n.event_id, channel, &n.user_id),
            channel,
            recipient: prefs.recipient(channel)?,
            fallback: n.fallback[at + 1..].to_vec(),
            attempt: 0,
            created_at: self.clock.now(),
            ..n.clone()
        };
        let topic = channel.topic(Priority::Critical);
        until_ok("publish the fallback", || async {
            let traceparent = input.trace.header();
            let mut passed_on = vec![(headers::TRACEPARENT, traceparent.as_str())];
            if let Some(correlation_id) = input.header(headers::CORRELATION_ID) {
                passed_on.push((headers::CORRELATION_ID, correlation_id));
            }
            let passed_on = tidings_core::kafka::headers(passed_on);
            delivered(enqueue_json(&self.producer, &topic, &next.user_id, &next, Some(passed_on)).await?).await
        })
        .await;
        Some(next)
    }

    /// Steps 3 to 5: dedupe record, status, published mark. When `owner` no
    /// longer holds the claim, nothing is written and the status comes back.
    async fn record(&self, input: &Input, n: &Notification, owner: &str, ended: Ended) -> Result<(), Ended> {
        let ttl = self.config.worker.dedupe_ttl;
        // The status is serialized once, for the dedupe record (a `DedupeRecord`, written
        // as text around it) and for `tidings.status` alike.
        let Ended { status, letter } = ended;
        let status = input.stamp(status);
        let json = serde_json::to_string(&status).expect("records serialize to JSON");
        let letter_json = letter.as_ref().map(|l| serde_json::to_string(l).expect("letters serialize to JSON"));
        let tails = (dedupe_tail(owner, false), dedupe_tail(owner, true));
        let unpublished = dedupe_json(&json, letter_json.as_deref(), &tails.0);
        if !until_ok("record outcome", || self.store.finish(&n.notification_id, owner, &unpublished, ttl)).await {
            tracing::error!(
                state = status.state.as_str(),
                "the claim was lost before the outcome was recorded; claiming it again to record it"
            );
            return Err(Ended { status, letter });
        }
        if let Some(letter) = &letter {
            until_ok("dead-letter", || self.dead_letter(input, letter)).await;
        }
        until_ok("write status", || async {
            let record = FutureRecord::<str, [u8]>::to(STATUS_TOPIC).key(&status.user_id).payload(json.as_bytes());
            delivered(kafka::enqueue(&self.producer, record).await?).await
        })
        .await;
        self.marks.mark(&n.notification_id, tails.0, tails.1);
        tracing::debug!(state = status.state.as_str(), "outcome recorded");
        self.outcomes.count(&status);
        Ok(())
    }

    /// A copy of a notification that already has an outcome. An outcome
    /// not yet marked published has its letter and status written again,
    /// byte for byte, only when the delivery that recorded it may have
    /// stopped before they were acknowledged: not when this process
    /// acknowledged them (its mark is on its way); at once when one of its
    /// deliveries recorded it and did not (it was revoked or panicked
    /// between the two); for another worker's, once it had [`MARK_WAIT`] to
    /// write its mark and did not. Returns without a status if `revoked`
    /// fires meanwhile (the partition's new owner reads the copy).
    async fn duplicate(&self, input: &Input, n: &Notification, raw: &str, revoked: &CancellationToken) {
        let mut raw = raw.to_string();
        let wait = MARK_WAIT.min(self.config.worker.claim_lease);
        let waited_from = Instant::now();
        // A record of this process is read once more: its mark may have landed since.
        let mut read_again = true;
        while let Ok(mut record) = serde_json::from_str::<DedupeRecord>(&raw) {
            if record.published || self.marks.on_the_way(&n.notification_id) {
                break;
            }
            let here = record.by.as_deref().is_some_and(|by| self.recorded_here(by));
            if (here && read_again) || (!here && waited_from.elapsed() < wait) {
                if !here {
                    tokio::select! {
                        _ = revoked.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                read_again = false;
                match until_ok("read the outcome", || self.store.dedupe_value(&n.notification_id)).await {
                    Some(now) => raw = now,
                    None => break,
                }
                continue;
            }
            self.publish_recorded(input, n, &raw, &mut record).await;
            break;
        }
        let status = input.stamp(self.status(n, State::Duplicate));
        until_ok("write status", || self.publish(&status)).await;
        self.outcomes.count(&status);
    }

    /// A notification found with an outcome: a copy's ([`Self::duplicate`]),
    /// or this delivery's own, recorded by an earlier attempt whose answer
    /// was lost (its `finish` went through, and was retried): then it is
    /// this delivery's to publish, and no copy.
    async fn recorded(&self, input: &Input, n: &Notification, owners: &Owners, raw: &str, revoked: &CancellationToken) {
        match serde_json::from_str::<DedupeRecord>(raw) {
            Ok(mut record) if record.by.as_deref().is_some_and(|by| owners.own(by)) => {
                if !record.published {
                    self.publish_recorded(input, n, raw, &mut record).await;
                }
                self.outcomes.count(&record.status);
            }
            _ => self.duplicate(input, n, raw, revoked).await,
        }
    }

    /// Writes the letter and status of the outcome recorded as `raw`, and
    /// marks it published.
    async fn publish_recorded(&self, input: &Input, n: &Notification, raw: &str, record: &mut DedupeRecord) {
        if let Some(letter) = &record.letter {
            until_ok("dead-letter", || self.dead_letter(input, letter)).await;
        }
        until_ok("write status", || self.publish(&record.status)).await;
        record.published = true;
        let json = serde_json::to_string(&record).expect("records serialize to JSON");
        let ttl = self.config.worker.dedupe_ttl;
        until_ok("mark published", || self.store.swap(&n.notification_id, raw, Some(&json), ttl)).await;
    }

    /// Whether claim owner `by` was a delivery of this process.
    fn recorded_here(&self, by: &str) -> bool {
        by.strip_prefix(self.owner.as_str()).is_some_and(|rest| rest.starts_with('.'))
    }

    fn status(&self, n: &Notification, state: State) -> StatusRecord {
        StatusRecord::of(n, state, self.clock.now())
    }

    async fn publish(&self, status: &StatusRecord) -> Result<(), rdkafka::error::KafkaError> {
        delivered(enqueue_json(&self.producer, STATUS_TOPIC, &status.user_id, status, None).await?).await
    }

    async fn dead_letter(&self, input: &Input, letter: &Letter) -> Result<(), rdkafka::error::KafkaError> {
        let dl = DeadLetter {
            original_topic: input.topic.clone(),
            original_partition: input.partition,
            original_offset: input.offset,
            error_class: letter.class,
            error: cut_reason(letter.error.clone()),
            attempts: letter.attempts,
            providers_tried: letter.providers_tried.clone(),
            first_failure: letter.first_failure,
            last_failure: letter.last_failure,
            original_headers: Vec::new(),
        }
        .with_headers(&input.headers);
        let topic = self.channel.dlq_topic();
        kafka::dead_letter(&self.producer, &topic, input.key.as_deref(), input.payload.as_deref(), &dl).await
    }
}

/// Splits a push to devices on several platforms into one message a platform.
fn by_platform(message: Outgoing) -> Vec<Outgoing> {
    let Content::Push { tokens, title, body } = &message.content else { return vec![message] };
    let mut platforms: Vec<&str> = tokens.iter().map(|t| t.platform.as_str()).collect();
    platforms.sort_unstable();
    platforms.dedup();
    if platforms.len() < 2 {
        return vec![message];
    }
    platforms
        .into_iter()
        .map(|platform| Outgoing {
            content: Content::Push {
                tokens: tokens.iter().filter(|t| t.platform == platform).cloned().collect(),
                title: title.clone(),
                body: body.clone(),
            },
            ..message.clone()
        })
        .collect()
}

/// Renews a claim of `lease` asked for at `asked` every third of the lease,
/// and a twelfth of a lease after a renewal failed; returns when it was
/// taken over, or two thirds of a lease after it was last surely held (asked
/// for, or a renewal sent that Redis confirmed), leaving a third for a call
/// to start in. No wait, for a renewal's answer or before the next one, goes
/// past that moment: a renewal that fails at once followed by one that
/// hangs gives up in time, and one failure alone does not give up.
async fn hold_claim<Fut>(lease: Duration, asked: Instant, mut renew: impl FnMut() -> Fut)
where
    Fut: Future<Output = Result<bool, tidings_core::store::StoreError>>,
{
    let mut held = asked;
    let mut every = lease / 3;
    loop {
        let deadline = held + lease * 2 / 3;
        tokio::time::sleep_until((Instant::now() + every).min(deadline)).await;
        if Instant::now() >= deadline {
            return;
        }
        // The renewed lease runs from when Redis takes it, at the earliest now.
        let sent = Instant::now();
        match tokio::time::timeout_at(deadline, renew()).await {
            Ok(Ok(true)) => (held, every) = (sent, lease / 3),
            Ok(Ok(false)) => return,
            Ok(Err(_)) | Err(_) => every = lease / 12,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `n`-th renewal's answer: the first fails at once, the later
    /// ones answer `later`, or hang when it is `None`.
    async fn renewal(n: u32, later: Option<bool>) -> Result<bool, tidings_core::store::StoreError> {
        match later {
            _ if n == 1 => Err(tidings_core::store::StoreError::Batch("connection refused".into())),
            Some(renewed) => Ok(renewed),
            None => std::future::pending().await,
        }
    }

    /// One renewal that fails at once and the next that hangs: the claim is
    /// given up two thirds of a lease after it was last surely held, not a
    /// whole lease later, when a call could start on an expired claim.
    #[tokio::test(start_paused = true)]
    async fn a_claim_is_given_up_a_third_of_a_lease_before_it_expires() {
        let lease = Duration::from_secs(30);
        let asked = Instant::now();
        let mut n = 0;
        hold_claim(lease, asked, || {
            n += 1;
            renewal(n, None)
        })
        .await;
        assert!(asked.elapsed() <= lease * 2 / 3, "given up {:?} after the claim was asked for", asked.elapsed());
    }

    /// A renewal that fails once, the next one answering: the claim is kept.
    #[tokio::test(start_paused = true)]
    async fn one_failed_renewal_does_not_give_the_claim_up() {
        let lease = Duration::from_secs(30);
        let mut n = 0;
        let kept = hold_claim(lease, Instant::now(), || {
            n += 1;
            renewal(n, Some(true))
        });
        assert!(tokio::time::timeout(lease * 10, kept).await.is_err(), "kept over ten leases");
    }

    /// Renewed, a claim is kept as long as the delivery lasts; taken over, it is given up at the next renewal.
    #[tokio::test(start_paused = true)]
    async fn a_renewed_claim_is_kept_and_a_taken_one_given_up() {
        let lease = Duration::from_secs(30);
        let kept = hold_claim(lease, Instant::now(), || async { Ok(true) });
        assert!(tokio::time::timeout(lease * 10, kept).await.is_err(), "kept over ten leases");
        let asked = Instant::now();
        hold_claim(lease, asked, || async { Ok(false) }).await;
        assert_eq!(asked.elapsed(), lease / 3, "given up at the first renewal");
    }

    /// Each claim attempt of a delivery has an owner of its own, so a late
    /// release of one attempt cannot delete the next one's claim; a panic is
    /// recorded under the attempt running, whose claim it renews.
    #[test]
    fn each_claim_attempt_has_its_own_owner() {
        let owners = Owners { delivery: "email-00ff.7".into(), attempts: Default::default() };
        assert_eq!(owners.current(), "email-00ff.7.1", "a panic before any claim");
        let (first, second) = (owners.next(), owners.next());
        assert_ne!(first, second);
        assert_eq!(owners.current(), second);
    }

    /// A state's counter is found by its discriminant.
    #[test]
    fn states_are_listed_in_declaration_order() {
        for (i, state) in State::ALL.into_iter().enumerate() {
            assert_eq!(state as usize, i, "{state:?}");
        }
    }

    /// The dedupe record written around a serialized status is what serde
    /// writes and reads for a `DedupeRecord`.
    #[test]
    fn a_dedupe_record_built_as_text_is_the_serialized_record() {
        let status = StatusRecord {
            notification_id: "n".into(),
            event_id: "e".into(),
            event_type: "order.confirmed".into(),
            user_id: "u-1".into(),
            state: State::Sent,
            channel: Some(Channel::Email),
            priority: Some(Priority::Normal),
            provider: Some("smtp".into()),
            provider_message_id: None,
            provider_code: None,
            attempts: 1,
            error_class: None,
            error: Some("a \"quoted\" reason".into()),
            not_before: None,
            fallback_notification_id: None,
            created_at: Some(Utc::now()),
            at: Utc::now(),
            correlation_id: Some("corr-1".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        };
        let json = serde_json::to_string(&status).unwrap();
        let now = Utc::now();
        let letter = Letter::poison("unreadable".into(), now);
        let letter_json = serde_json::to_string(&letter).unwrap();
        let by = "email-00ff.7";
        for published in [false, true] {
            let record = DedupeRecord { status: status.clone(), letter: None, by: Some(by.into()), published };
            let text = dedupe_json(&json, None, &dedupe_tail(by, published));
            assert_eq!(text, serde_json::to_string(&record).unwrap());
            assert!(text.ends_with(&dedupe_tail(by, published)), "{text}");
            let record =
                DedupeRecord { status: status.clone(), letter: Some(letter.clone()), by: Some(by.into()), published };
            let text = dedupe_json(&json, Some(&letter_json), &dedupe_tail(by, published));
            assert_eq!(text, serde_json::to_string(&record).unwrap());
            let read = serde_json::from_str::<DedupeRecord>(&text).unwrap();
            assert_eq!((read.letter.unwrap().error.as_str(), read.by.as_deref()), ("unreadable", Some(by)));
        }
        // Records written before `by` read as they did.
        let old = format!(r#"{{"status":{json},"published":false}}"#);
        assert_eq!(serde_json::from_str::<DedupeRecord>(&old).unwrap().by, None);
    }
}
