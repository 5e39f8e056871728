//! The state Tidings keeps in Redis: preferences, dedupe records, and the
//! deferred-notification schedule.
//!
//! [`RedisStore`] is what every deployment uses. [`MemoryStore`] has the same
//! semantics inside one process, for `tidings dev` on a machine without
//! `redis-server`; tests always run against a real `redis-server`.

mod memory;
mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

use crate::caps::{Admission, CapAsk};
use crate::digest::{Added, DigestAdd, OpenDigest, Taken};
use crate::suppression::{Cause, Suppression};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A store failure: the operation may succeed if tried again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(::redis::RedisError),
    /// A batch of requests failed as one (the text of its error), or cannot be sent.
    #[error("redis: {0}")]
    Batch(String),
    /// A Redis Cluster that does not serve every slot.
    #[error("redis cluster: {0}")]
    Cluster(String),
    /// A write that must be on replicas before it counts is on fewer of them.
    #[error("redis: written on the primary, but on {on} of the {wanted} replicas it must reach (WAIT)")]
    NotReplicated { on: u32, wanted: u32 },
}

/// Every Redis error the store meets is counted (`tidings_redis_errors_total`).
impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        metrics::counter!("tidings_redis_errors_total").increment(1);
        StoreError::Redis(e)
    }
}

/// One cap's count for one user and channel ([`Store::cap_counts`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CapCount {
    pub cap: String,
    pub channel: crate::Channel,
    /// Admitted for an instant inside the window that ends now.
    pub in_window: u64,
    /// Admitted for a later instant (held by the cap, or deferred).
    pub ahead: u64,
}

/// What [`Store::hydrate`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hydrated {
    /// Raw preferences JSON per user, in the order asked.
    pub prefs: Vec<Option<String>>,
    /// Per lane, in the order asked: when the last member held on it is
    /// released, if any member is held.
    pub holds: Vec<Option<DateTime<Utc>>>,
}

/// Users' caps as read or written (user -> the stored value, `None`: none).
pub type CapsRead = HashMap<String, Option<String>>;

/// A user's caps as [`Store::admit_from`] left them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsSeen {
    /// The value stored (`None`: none).
    pub value: Option<String>,
    /// Written by the call: the version of the value it replaced (see
    /// [`caps_version`]). `None`: only read.
    pub replaced: Option<String>,
}

/// The version at the head of a stored caps value: its first 16 bytes, if
/// they are hex digits (`""`: none stored; `"!"`: a value not written so,
/// as the ADMIT script reads it too, so that it is replaced, not read again
/// for ever).
pub fn caps_version(value: Option<&str>) -> &str {
    match value {
        None => "",
        Some(v) if v.len() >= 16 && v.as_bytes()[..16].iter().all(u8::is_ascii_hexdigit) => &v[..16],
        Some(_) => "!",
    }
}

/// Where [`Store::place`] put a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// When it is released.
    pub at: DateTime<Utc>,
    /// Another member of the same notification was waiting (held by another
    /// read of its event): that one stands, released at `at`, and nothing
    /// was added. A member held or claimed already is this read's own (a
    /// retry), not joined.
    pub joined: bool,
}

/// The lane of a user's notifications on one channel: deferred members of a
/// lane leave in order.
pub fn lane(user_id: &str, channel: crate::Channel) -> String {
    // Sized at once: intake makes one per user and channel of every batch.
    [user_id, ":", channel.as_str()].concat()
}

/// A deferred member's sort score: release time in microseconds-of-millis, plus
/// its place in the lane, so members due at the same millisecond keep order.
fn score(due_ms: i64, seq: i64) -> i64 {
    due_ms * 1000 + seq
}

/// The most members one [`Store::claim_due`] claims: a claim's members keep
/// their order in the lease score's last three digits.
pub const MAX_CLAIM: usize = 999;

/// The notification id a deferred member holds, read from the member itself.
fn id_of(member: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Member {
        notification: Id,
    }
    #[derive(serde::Deserialize)]
    struct Id {
        notification_id: String,
    }
    Some(serde_json::from_str::<Member>(member).ok()?.notification.notification_id)
}

/// The lane a deferred member is held on, read from the member itself; none
/// for a member that does not read (it blocks nothing).
fn lane_of(member: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Member {
        notification: Fields,
    }
    #[derive(serde::Deserialize)]
    struct Fields {
        user_id: String,
        channel: String,
    }
    let m: Member = serde_json::from_str(member).ok()?;
    Some(format!("{}:{}", m.notification.user_id, m.notification.channel))
}

/// What [`Store::claim`] found for a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This worker may send it now.
    Acquired,
    /// It already has an outcome; the stored record is returned.
    Done(String),
    /// Another worker holds a live claim on it.
    Held,
    /// This worker may send it now, but it takes over a claim whose holder
    /// stopped (died, or lost Redis) without an outcome: that holder may
    /// have been in its provider call, so the notification may be out
    /// already. The worker's ambiguity policy decides what happens.
    /// `pinned`: the provider an ambiguous answer tied it to, when the
    /// holder gave the claim up so ([`Store::pin`]) or had itself taken
    /// over a pinned claim: it may go through no other. The claim is held
    /// as [`holder`]`(owner, &claim)`, and a claim of the same owner again
    /// (a retry whose first answer was lost) answers `TakenOver` again.
    TakenOver { pinned: Option<String> },
}

/// The owner a claim is held as once `owner` had `claim`: `owner` itself,
/// or for a claim taken over, `owner` marked with the pin it carries, so
/// that the claim says it was taken over for as long as it is held.
/// [`Store::renew`], [`Store::finish`], [`Store::release`] and
/// [`Store::pin`] name the claim by it.
pub fn holder(owner: &str, claim: &Claim) -> String {
    match claim {
        Claim::TakenOver { pinned } => format!("{owner}{TAKEN_MARK}{}", pinned.as_deref().unwrap_or_default()),
        _ => owner.to_string(),
    }
}

/// How long a claim is remembered after its lease runs out, so that whoever
/// claims the notification next knows a delivery stopped part-way (a claim
/// lives `lease + CLAIM_MEMORY` in Redis and is live for its first `lease`).
/// Long enough for a record to be redelivered after its worker died; a
/// claim ends in an outcome or is released otherwise, so only the claims of
/// deliveries that died are kept this long.
pub const CLAIM_MEMORY: Duration = Duration::from_secs(24 * 3600);

pub type SharedStore = Arc<dyn Store>;

#[async_trait]
pub trait Store: Send + Sync {
    /// The raw preferences JSON of each user, in order, in one round trip.
    async fn prefs_many(&self, users: &[String]) -> Result<Vec<Option<String>>, StoreError>;

    async fn set_prefs(&self, user: &str, json: &str) -> Result<(), StoreError>;

    /// Claims notification `id` for `owner` for `lease`, unless it already has
    /// an outcome or another live claim. A claim by the same owner is renewed;
    /// one whose lease ran out is taken over ([`Claim::TakenOver`]). Owners
    /// are one delivery each, never a whole process.
    async fn claim(&self, id: &str, owner: &str, lease: Duration) -> Result<Claim, StoreError>;

    /// [`claim`](Self::claim), and when the claim is had, what a delivery
    /// needs first: `user`'s raw preferences as they are now, and the
    /// suppression-list entry of `address` (see [`crate::suppression`]), in
    /// one round trip.
    async fn claim_for_delivery(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
        user: &str,
        address: Option<&str>,
    ) -> Result<Claimed, StoreError> {
        let claim = self.claim(id, owner, lease).await?;
        let (prefs, suppressed) = match claim {
            Claim::Acquired | Claim::TakenOver { .. } => {
                let prefs = self.prefs_many(&[user.to_string()]).await?.pop().flatten();
                let suppressed = match address {
                    Some(a) => self.suppression(a).await?,
                    None => None,
                };
                (prefs, suppressed)
            }
            Claim::Done(_) | Claim::Held => (None, None),
        };
        Ok(Claimed { claim, prefs, suppressed })
    }

    /// Sets notification `id`'s dedupe value to `new` for `ttl` (deletes it
    /// when `new` is `None`), only if it is `expected` now; says whether it
    /// did. One atomic compare-and-set, so only a claim's holder renews,
    /// records or releases it.
    async fn swap(&self, id: &str, expected: &str, new: Option<&str>, ttl: Duration) -> Result<bool, StoreError>;

    /// For many notifications `(id, tail, new tail)`, each on its own: where
    /// the dedupe value ends with `tail`, that end becomes `new tail`, and
    /// the value keeps its time to live. One atomic change each, in one
    /// round trip where the store allows; a value that does not end so is
    /// left as it is.
    async fn swap_tails(&self, swaps: &[(String, String, String)]) -> Result<(), StoreError>;

    /// Extends `owner`'s claim on `id` to `lease` from now; false when the
    /// claim is no longer `owner`'s.
    async fn renew(&self, id: &str, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        let mine = claim_value(owner);
        self.swap(id, &mine, Some(&mine), lease + CLAIM_MEMORY).await
    }

    /// Replaces `owner`'s claim on `id` with the outcome `record`, kept for
    /// `ttl`; false (and nothing written) when the claim is no longer `owner`'s.
    async fn finish(&self, id: &str, owner: &str, record: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.swap(id, &claim_value(owner), Some(record), ttl).await
    }

    /// Gives `owner`'s claim on `id` up, so another delivery may take it at once.
    async fn release(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        self.swap(id, &claim_value(owner), None, Duration::ZERO).await
    }

    /// Gives `owner`'s claim on `id` up, pinned to `provider` by an
    /// ambiguous answer: the next claim takes it over at once
    /// ([`Claim::TakenOver`] with the pin), and sends through that provider
    /// only. The pin is kept as long as a claim is remembered. With
    /// `provider` empty, a claim that was itself taken over is handed on as
    /// one (`TakenOver` without a pin): the next holder knows a delivery of
    /// it stopped part-way.
    async fn pin(&self, id: &str, owner: &str, provider: &str) -> Result<bool, StoreError> {
        self.swap(id, &claim_value(owner), Some(&pin_value(provider)), CLAIM_MEMORY).await
    }

    /// Notification `id`'s dedupe value as it is now: a claim ([`CLAIM_MARK`]
    /// and its owner, kept a while after its lease ran out), an outcome
    /// record, or nothing.
    async fn dedupe_value(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// Preferences of `users` and the hold on each of `lanes`, in one round
    /// trip: what intake needs for a consumed batch.
    async fn hydrate(&self, users: &[String], lanes: &[String]) -> Result<Hydrated, StoreError>;

    /// Holds `member` (a notification JSON) on `lane` (user and channel) until
    /// `due`, or later: never before a member already held on the same lane,
    /// so a user's messages leave in the order they were deferred. Answers
    /// when it will be released. Holding a member already held changes
    /// nothing, so a retry after a timeout cannot count a lane twice; nor
    /// does holding another member of a notification that waits already
    /// (another read of its event): its release time is answered, and
    /// [`Placed::joined`] says so. `exact` holds it at `due` itself, before
    /// members of the lane due later (a copy of a notification another read
    /// counted at `due`, and placed there before the lane grew).
    async fn place(&self, lane: &str, member: &str, due: DateTime<Utc>, exact: bool) -> Result<Placed, StoreError>;

    /// [`Self::place`] behind the lane, answering only when `member` is released.
    async fn defer(&self, lane: &str, member: &str, due: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.place(lane, member, due, false).await?.at)
    }

    /// Atomically claims up to `limit` (at most [`MAX_CLAIM`]) members due at
    /// `now` (and claims whose lease ran out), in release order, for `lease`.
    /// Two schedulers never claim the same member at once; a claimed member
    /// is not lost if its scheduler dies, and while its claim is live no later
    /// member of its lane is claimed.
    async fn claim_due(&self, now: DateTime<Utc>, limit: usize, lease: Duration) -> Result<Vec<String>, StoreError>;

    /// Takes the member that holds `member`'s notification (whichever read
    /// of its event made it) off the schedule while it waits (not once
    /// claimed), releasing its place on the lane: intake holding it again
    /// elsewhere.
    async fn undefer(&self, lane: &str, member: &str) -> Result<(), StoreError>;

    /// Removes a member once it is back on its channel topic, releasing its lane.
    async fn remove_deferred(&self, lane: &str, member: &str) -> Result<(), StoreError>;

    /// Admits each of `asks` under its caps (see [`crate::caps`]), in order,
    /// each atomically (in Redis: the users' values read, admitted in the
    /// process, and written back, or checked when unchanged, by one script
    /// that fails a value replaced since it was read; that one is read and
    /// admitted again).
    async fn admit(&self, asks: &[CapAsk]) -> Result<Vec<Admission>, StoreError> {
        Ok(self.admit_from(asks, &CapsRead::new()).await?.0)
    }

    /// [`Self::admit`], starting from the users' caps as `read` has them
    /// (user -> the value [`Self::caps_values`] read, or the one an earlier
    /// call saw), so that a batch read ahead costs no read here. Every
    /// answer from a value read ahead is checked against the value stored
    /// when the script runs, changed or not (one the call reads itself is
    /// as current as a read can be). Answers the admissions and, per user,
    /// what the call read itself or wrote (a value read ahead and found
    /// current is not repeated).
    async fn admit_from(
        &self,
        asks: &[CapAsk],
        read: &CapsRead,
    ) -> Result<(Vec<Admission>, HashMap<String, CapsSeen>), StoreError>;

    /// The stored caps of `users` (raw, for [`Self::admit_from`]; a store
    /// that admits without reading answers none).
    async fn caps_values(&self, users: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        Ok(vec![None; users.len()])
    }

    /// For `user`: per cap `(name, per)` and channel, the notifications the
    /// cap admitted in the window ending at `now` and those admitted for
    /// later (deferred), as `tidings prefs get` shows them.
    async fn cap_counts(
        &self,
        user: &str,
        caps: &[(String, Duration)],
        channels: &[crate::Channel],
        now: DateTime<Utc>,
    ) -> Result<Vec<CapCount>, StoreError>;

    /// Adds each event to its digest (see [`crate::digest`]), in order, each
    /// atomically, in one round trip where the store allows.
    async fn digest_add(&self, adds: &[DigestAdd]) -> Result<Vec<Added>, StoreError>;

    /// Takes `user`'s window `window` of digest `name`, opened at `opened`,
    /// for release: closed (an event added after goes in the next window),
    /// and its items. Taking it again answers the same; `None` for a window
    /// not known, forgotten since, or of that number but opened at another
    /// instant (numbers start again once a digest is forgotten): that one is
    /// left as it is.
    async fn digest_take(
        &self,
        user: &str,
        name: &str,
        window: u64,
        opened: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Taken>, StoreError>;

    /// `user`'s digest windows open now.
    async fn open_digests(&self, user: &str) -> Result<Vec<OpenDigest>, StoreError>;

    /// Marks `provider`'s breaker open for the fleet, for `open_for`.
    async fn open_breaker(&self, provider: &str, open_for: Duration) -> Result<(), StoreError>;

    /// Whether each of `providers` has a breaker opened by some worker of the fleet.
    async fn open_breakers(&self, providers: &[String]) -> Result<Vec<bool>, StoreError>;

    /// Members waiting or claimed.
    async fn deferred_len(&self) -> Result<u64, StoreError>;

    /// Members due at `now` and not yet back on their channel topic: those
    /// waiting, and those a scheduler has claimed.
    async fn deferred_due(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Whether the store answers (every node of a cluster holding slots).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Takes up to `want` calls of `provider`'s fleet-wide budget of
    /// `per_second` with a `burst` (GCRA, on the store's clock): how many it
    /// got, and when it got none, how long until one is free.
    async fn lease_calls(
        &self,
        provider: &str,
        per_second: f64,
        burst: u32,
        want: u32,
    ) -> Result<(u32, Duration), StoreError>;

    /// Halves `provider`'s fleet-wide rate for `period` (it answered 429
    /// with a `Retry-After`).
    async fn slow_down(&self, provider: &str, period: Duration) -> Result<(), StoreError>;

    /// Replaces `user`'s preferences with `new` if they are `old` still
    /// (compare-and-set); says whether it did.
    async fn swap_prefs(&self, user: &str, old: &str, new: &str) -> Result<bool, StoreError>;

    /// `user`'s webhook signing keys (stored JSON); `fresh` is stored first
    /// when the user has none, so every caller gets the same keys.
    async fn webhook_keys(&self, user: &str, fresh: &str) -> Result<String, StoreError>;

    /// Replaces `user`'s webhook keys with `new` if they are `old` still.
    async fn swap_webhook_keys(&self, user: &str, old: &str, new: &str) -> Result<bool, StoreError>;

    /// Puts `entry` on the suppression list, in place of any entry of its
    /// address, except an operator's ([`Cause::Manual`]), which only another
    /// operator's entry replaces: a provider's word never lifts or rewrites
    /// what an operator decided. False when such an entry kept its place.
    async fn suppress(&self, entry: &Suppression) -> Result<bool, StoreError>;

    /// Takes `address` (listed form) off the suppression list; says whether it was on it.
    async fn unsuppress(&self, address: &str) -> Result<bool, StoreError>;

    /// Takes `address` off the suppression list only while it is listed for
    /// `cause` (START lifts a STOP, never a bounce, a complaint or an
    /// operator's entry) by an entry made at `at` or before (a START
    /// applied late never lifts a later STOP); says whether it did. One
    /// atomic step.
    async fn lift(&self, address: &str, cause: Cause, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// The suppression-list entry of `address` (listed form), if any.
    async fn suppression(&self, address: &str) -> Result<Option<Suppression>, StoreError>;

    /// The suppression-list entries of `addresses`, in order, in one round
    /// trip where the store allows.
    async fn listed(&self, addresses: &[String]) -> Result<Vec<Option<Suppression>>, StoreError> {
        let mut entries = Vec::with_capacity(addresses.len());
        for address in addresses {
            entries.push(self.suppression(address).await?);
        }
        Ok(entries)
    }

    /// One page of the suppression list from `cursor` (0 to start) and the
    /// cursor of the next page (0 after the last). Pages hold about a
    /// hundred entries, none twice in one pass over an unchanging list.
    async fn suppressions(&self, cursor: u64) -> Result<(u64, Vec<Suppression>), StoreError>;

    /// Counts the soft bounce `by` (what told of it: counted once however
    /// often it is told) of `address`; answers the soft bounces counted
    /// since the first of a window of `window` (a fixed window, started by
    /// that first).
    async fn soft_bounce(&self, address: &str, by: &str, window: Duration) -> Result<u64, StoreError>;

    /// Marks `key` seen by `by` for `ttl`, unless it was seen within it;
    /// true when `by` is the first to see it: it was not seen, or `by` saw
    /// it first (the same callback read again after a crash, where a copy
    /// of it is another `by`).
    async fn first_sighting(&self, key: &str, by: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Notes that `by`, first to see `key`, is done with it: from now on
    /// `by` is not first either (what it did is not done again when it is
    /// read again), for the rest of the sighting's time.
    async fn sighting_done(&self, key: &str, by: &str) -> Result<(), StoreError>;
}

/// What [`Store::claim_for_delivery`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub claim: Claim,
    /// The user's raw preferences, when the claim was had.
    pub prefs: Option<String>,
    /// The address's suppression-list entry, when the claim was had.
    pub suppressed: Option<Suppression>,
}

/// An entry of the suppression list as stored; one that does not read is
/// no entry (logged), so a bad write cannot stop deliveries.
fn entry(json: &str) -> Option<Suppression> {
    serde_json::from_str(json).inspect_err(|e| tracing::warn!(error = %e, "an unreadable suppression entry")).ok()
}

/// The key names, under a configurable prefix. On a Redis Cluster the keys
/// a script touches together carry one hash tag, so they share a slot: the
/// deferred schedule's three keys `{<prefix>:deferred}`, a provider's rate
/// keys `{<prefix>:rate:<provider>}`. One Redis keeps the names it always
/// had, so an upgrade finds what was deferred before it.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    cluster: bool,
}

impl Keys {
    /// The names on one Redis.
    pub fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.to_string(), cluster: false }
    }
    /// The names on a Redis Cluster.
    pub fn clustered(prefix: &str) -> Self {
        Keys { prefix: prefix.to_string(), cluster: true }
    }
    pub fn prefs(&self, user: &str) -> String {
        format!("{}:prefs:{user}", self.prefix)
    }
    pub fn webhook_keys(&self, user: &str) -> String {
        format!("{}:webhook-keys:{user}", self.prefix)
    }
    pub fn dedupe(&self, id: &str) -> String {
        format!("{}:dedupe:{id}", self.prefix)
    }
    /// `<prefix>:<name>`, or on a cluster `{<prefix>:<name>}`: a hash tag
    /// the keys that start with it share.
    fn tagged(&self, name: &str) -> String {
        if self.cluster {
            format!("{{{}:{name}}}", self.prefix)
        } else {
            format!("{}:{name}", self.prefix)
        }
    }
    pub fn deferred(&self) -> String {
        self.tagged("deferred")
    }
    pub fn deferred_claimed(&self) -> String {
        self.tagged("deferred") + ":claimed"
    }
    /// Notification id -> the member that holds it on the schedule.
    pub fn deferred_ids(&self) -> String {
        self.tagged("deferred") + ":ids"
    }
    pub fn lanes(&self) -> String {
        // One Redis keeps the name the lanes always had.
        if self.cluster {
            self.tagged("deferred") + ":lanes"
        } else {
            format!("{}:lanes", self.prefix)
        }
    }
    pub fn rate(&self, provider: &str) -> String {
        self.tagged(&format!("rate:{provider}"))
    }
    pub fn slowed(&self, provider: &str) -> String {
        format!("{}:slowed", self.rate(provider))
    }
    pub fn breaker(&self, provider: &str) -> String {
        format!("{}:breaker:{provider}", self.prefix)
    }
    /// The suppression list: a hash of listed address to entry.
    pub fn suppressions(&self) -> String {
        format!("{}:suppressions", self.prefix)
    }
    pub fn soft_bounces(&self, address: &str) -> String {
        // A set of the bounces counted (the counter of earlier versions was `softbounce:`).
        format!("{}:softbounces:{address}", self.prefix)
    }
    /// What every cap admitted and dropped of `user`: a version and a
    /// [`crate::caps::State`] (as [`crate::caps::State::encode`] writes it), replaced whole.
    pub fn caps(&self, user: &str) -> String {
        format!("{{{}:caps:{user}}}", self.prefix)
    }
    /// Digest `name` of `user`: its windows, their items and its events'
    /// marks, in one hash. (Named apart from the layout before it, `:d:`
    /// with a key per event, so the two never read each other's fields.)
    pub fn digest(&self, user: &str, name: &str) -> String {
        format!("{{{}:digest:{user}}}:win:{name}", self.prefix)
    }
    /// `user`'s open windows: digest name -> window.
    pub fn digests_open(&self, user: &str) -> String {
        format!("{{{}:digest:{user}}}:open-windows", self.prefix)
    }
    /// A callback or other sighting, remembered a while.
    pub fn seen(&self, key: &str) -> String {
        format!("{}:seen:{key}", self.prefix)
    }
}

/// How a claim's dedupe value starts; an outcome record never does.
pub const CLAIM_MARK: &str = "inflight:";

/// The dedupe value of `owner`'s claim.
pub fn claim_value(owner: &str) -> String {
    format!("{CLAIM_MARK}{owner}")
}

/// How the owner of a claim given up pinned starts; a delivery's owner never does.
const PIN_MARK: &str = "pin:";

/// The dedupe value of a claim given up pinned to `provider`: a claim
/// whose lease ran out, so the next claim takes it over at once.
fn pin_value(provider: &str) -> String {
    claim_value(&format!("{PIN_MARK}{provider}"))
}

/// What ends the owner of a claim taken over, before the pin it carries
/// (empty for none). Owners never hold it.
const TAKEN_MARK: char = '~';

/// Whether dedupe `value` is a claim `owner` took over.
fn is_taken_by(value: &str, owner: &str) -> bool {
    value.strip_prefix(CLAIM_MARK).and_then(|v| v.strip_prefix(owner)).is_some_and(|rest| rest.starts_with(TAKEN_MARK))
}

/// The provider a claim's dedupe `value` is pinned to: given up pinned, or
/// taken over with a pin.
pub fn pinned_to(value: &str) -> Option<String> {
    let claim = value.strip_prefix(CLAIM_MARK)?;
    let pin = match claim.strip_prefix(PIN_MARK) {
        Some(provider) => provider,
        None => claim.split_once(TAKEN_MARK)?.1,
    };
    (!pin.is_empty()).then(|| pin.to_string())
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}
