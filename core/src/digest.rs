//! Digests: a user's events of one type (and key) within a window, sent as
//! one notification.
//!
//! Intake adds each event to its digest in Redis ([`Store::digest_add`]):
//! one atomic step that opens a window when none is open (the window's end
//! given, from the route), appends the event's data, and remembers which
//! window the event went to, so an event read again (a redelivery, a
//! second intake process, a replay) is answered with its window and added
//! nowhere else. The window's release waits on the deferral schedule under
//! a member made from the window alone ([`Release`]), so every read of its
//! first event holds the same member. At the window's end the scheduler
//! takes the window ([`Store::digest_take`]: atomically closed, so an event
//! read after goes in the next one) and writes one event back to intake,
//! marked as a digest ([`RELEASE_HEADER`]), whose id is made from the window:
//! written twice (a scheduler that died before it removed the member), it
//! becomes the same notifications, which the workers' dedupe sends once.
//!
//! [`Store::digest_add`]: crate::store::Store::digest_add
//! [`Store::digest_take`]: crate::store::Store::digest_take

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The Kafka header that marks an event as a digest's release: intake
/// routes it as it is, instead of adding it to a digest.
pub const RELEASE_HEADER: &str = "tidings-digest";

/// The `source` of the events digests are released as.
pub const RELEASE_SOURCE: &str = "tidings/digest";

/// How long after its window was taken an event's digest is remembered (an
/// event read again that late is known, not added to a new window).
pub const REMEMBER: Duration = Duration::from_secs(7 * 24 * 3600);

/// One event to add to its digest.
#[derive(Debug, Clone)]
pub struct DigestAdd {
    pub user: String,
    /// The digest: event type, and the key's value (see [`name`]).
    pub name: String,
    /// The event, as `source` and `id` (see [`event_ref`]).
    pub event: String,
    /// The event's data (JSON).
    pub item: String,
    pub now: DateTime<Utc>,
    /// When a window this event opens closes.
    pub closes: DateTime<Utc>,
    pub max_items: u32,
}

/// Where an event went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The window (counted from 1 per user and digest).
    pub window: u64,
    /// When it is released: its end, or now when it filled up.
    pub closes: DateTime<Utc>,
    /// This event opened the window.
    pub opened: bool,
    /// The window is full with this event: it is released now.
    pub full: bool,
    /// Read before, and its window is released already.
    pub taken: bool,
    /// Items in the window so far.
    pub count: u32,
    /// When the window opened: with its number, what makes its release's id
    /// (numbers start again once a digest is forgotten).
    pub opened_at: DateTime<Utc>,
    /// Added by this call; false: added before (a second read).
    pub fresh: bool,
}

/// A window taken for release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub opened: DateTime<Utc>,
    pub closed: DateTime<Utc>,
    /// Each event's data (JSON), in the order added.
    pub items: Vec<String>,
}

/// A window open now ([`crate::store::Store::open_digests`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenDigest {
    pub name: String,
    pub window: u64,
    pub count: u32,
    pub closes: DateTime<Utc>,
}

/// A digest's latest window as the store holds it
/// (`window,closes,count,opened,taken`), if it is not taken.
pub fn open_of(name: String, value: &str) -> Option<OpenDigest> {
    let mut parts = value.split(',');
    let window = parts.next()?.parse().ok()?;
    let closes = DateTime::from_timestamp_millis(parts.next()?.parse().ok()?)?;
    let count = parts.next()?.parse().ok()?;
    let taken = parts.nth(1)?;
    taken.is_empty().then_some(OpenDigest { name, window, count, closes })
}

/// Sets the string at JSON `pointer` in `value` to `to`, making the objects
/// on the way: where a digest's release puts its user, for intake to read.
pub fn set_at(value: &mut serde_json::Value, pointer: &str, to: &str) {
    let mut here = value;
    let tokens: Vec<String> = pointer.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
    for (i, token) in tokens.iter().enumerate() {
        if !here.is_object() {
            *here = serde_json::Value::Object(Default::default());
        }
        let map = here.as_object_mut().expect("an object");
        if i + 1 == tokens.len() {
            map.insert(token.clone(), serde_json::Value::String(to.to_string()));
            return;
        }
        here = map.entry(token.clone()).or_insert(serde_json::Value::Null);
    }
}

/// The name of the digest of events of type `ty` whose key is `key`.
pub fn name(ty: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("{ty}:{k}"),
        None => ty.to_string(),
    }
}

/// An event, as a digest remembers it.
pub fn event_ref(source: &str, id: &str) -> String {
    format!("{source}\u{1f}{id}")
}

/// How long a window taken for release is kept after it was first taken:
/// its scheduler may die before publishing, and the next one takes it again.
pub const KEEP_TAKEN: Duration = Duration::from_secs(24 * 3600);

/// A window's release, as it waits on the deferral schedule: the same JSON
/// for every read of the events in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub digest: ReleaseOf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseOf {
    pub user_id: String,
    pub event_type: String,
    pub name: String,
    /// The key's value, if the digest has a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub window: u64,
    /// When the window opened (ms).
    pub opened: i64,
}

impl Release {
    pub fn member(&self) -> String {
        serde_json::to_string(self).expect("a release serializes")
    }

    /// The lane its member waits on: its own, so it holds back nothing else.
    pub fn lane(&self) -> String {
        format!("digest:{}:{}", self.digest.user_id, self.digest.name)
    }

    /// The id of the event it is released as.
    pub fn event_id(&self) -> String {
        use sha2::Digest as _;
        let d = &self.digest;
        let mut hash = sha2::Sha256::new();
        for part in [d.user_id.as_bytes(), d.name.as_bytes(), d.window.to_string().as_bytes(), &d.opened.to_be_bytes()]
        {
            hash.update(part);
            hash.update([0]);
        }
        format!("digest-{}", hex::encode(&hash.finalize()[..16]))
    }
}
