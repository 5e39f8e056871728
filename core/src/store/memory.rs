//! An in-process [`Store`] with the same semantics as [`super::RedisStore`],
//! for `tidings dev` on a machine without `redis-server`. State lives only as
//! long as the process.

use super::{
    claim_value, entry, holder, id_of, is_taken_by, lane_of, millis, pinned_to, score, CapCount, CapsRead, CapsSeen,
    Claim, Hydrated, Placed, Store, StoreError, CLAIM_MARK, CLAIM_MEMORY, MAX_CLAIM,
};
use crate::caps::{self, Admission, CapAsk};
use crate::digest::{self, Added, DigestAdd, OpenDigest, Taken};

/// An instant in ms, read back.
fn ms(at: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at).unwrap_or_default()
}
use crate::suppression::{Cause, Suppression};
use crate::Channel;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    prefs: HashMap<String, String>,
    webhook_keys: HashMap<String, String>,
    dedupe: HashMap<String, (String, Instant)>,
    /// (score, member) in release order.
    deferred: BTreeSet<(i64, String)>,
    /// (lease end score, member).
    claimed: BTreeSet<(i64, String)>,
    lanes: HashMap<String, Lane>,
    /// Notification id -> the member that holds it on the schedule.
    held_ids: HashMap<String, String>,
    breakers: HashMap<String, Instant>,
    /// Per provider: theoretical arrival time of the next call, and until when its rate is halved.
    rates: HashMap<String, (Instant, Option<Instant>)>,
    /// Listed address -> entry (JSON), in address order.
    suppressions: std::collections::BTreeMap<String, String>,
    /// Per address: soft bounces counted, and when the window ends.
    soft_bounces: HashMap<String, (std::collections::HashSet<String>, Instant)>,
    /// Sightings: who saw each first, and when it is forgotten.
    seen: HashMap<String, (String, Instant)>,
    /// User -> what every cap admitted and dropped.
    caps: HashMap<String, caps::State>,
    /// (user, digest name) -> its windows, by number.
    digests: HashMap<(String, String), std::collections::BTreeMap<u64, DigestWindow>>,
    /// (user, digest name, event) -> the window it was added to.
    digest_events: HashMap<(String, String, String), u64>,
}

/// One window of a digest, as the Redis hash holds it.
#[derive(Default)]
struct DigestWindow {
    opened: i64,
    closes: i64,
    /// When it was first taken for release (ms).
    taken: Option<i64>,
    full: bool,
    /// Its items, forgotten a while after it was taken.
    items: Vec<String>,
    count: u32,
    /// Its events, forgotten a while later.
    events: Vec<String>,
}

/// As the Redis lane hash: release time of the last member, members held, sequence.
#[derive(Default)]
struct Lane {
    due: i64,
    pending: i64,
    seq: i64,
}

impl Inner {
    /// One event added to its digest, as the Redis script does it.
    fn digest_add(&mut self, add: &DigestAdd) -> Added {
        let inner = self;
        let now = millis(add.now);
        let key = (add.user.clone(), add.name.clone());
        let mark = |event: &str| (add.user.clone(), add.name.clone(), event.to_string());
        if let Some(&w) = inner.digest_events.get(&mark(&add.event)) {
            let window = inner.digests.get(&key).and_then(|d| d.get(&w));
            let (closes, count, taken, at) =
                window.map_or((0, 0, true, 0), |x| (x.closes, x.count, x.taken.is_some(), x.opened));
            let (closes, opened_at) = (ms(closes), ms(at));
            return Added { window: w, closes, opened: false, full: false, taken, count, opened_at, fresh: false };
        }
        let windows = inner.digests.entry(key).or_default();
        let last = windows.iter().next_back().map(|(n, w)| (*n, w));
        let open = last.filter(|(_, w)| w.taken.is_none() && w.closes > now && w.count < add.max_items);
        let (n, opened) = match open {
            Some((n, _)) => (n, false),
            None => {
                let n = last.map_or(1, |(n, _)| n + 1);
                // Windows taken long enough ago: their items, then their
                // events, forgotten, in order, as in Redis.
                let (keep, remember) = (digest::KEEP_TAKEN.as_millis() as i64, digest::REMEMBER.as_millis() as i64);
                // One never taken (its release lost) goes once closed that long.
                let since = |w: &DigestWindow, wait| w.taken.map_or((w.closes, remember), |at| (at, wait));
                for w in windows.values_mut() {
                    let (at, wait) = since(w, keep);
                    if w.items.is_empty() {
                        continue;
                    }
                    if now - at < wait {
                        break;
                    }
                    w.items.clear();
                }
                while let Some(first) = windows.first_entry() {
                    let forgotten = first.get().items.is_empty() && now - since(first.get(), remember).0 >= remember;
                    if !forgotten {
                        break;
                    }
                    for event in first.remove().events {
                        inner.digest_events.remove(&mark(&event));
                    }
                }
                let closes = millis(add.closes);
                let w = DigestWindow { opened: now, closes, taken: None, full: false, ..DigestWindow::default() };
                windows.insert(n, w);
                (n, true)
            }
        };
        let w = windows.get_mut(&n).expect("the window is there");
        w.items.push(add.item.clone());
        w.events.push(add.event.clone());
        w.count += 1;
        if w.count >= add.max_items {
            (w.full, w.closes) = (true, now);
        }
        let (closes, full, opened_at, count) = (ms(w.closes), w.full, ms(w.opened), w.count);
        inner.digest_events.insert(mark(&add.event), n);
        Added { window: n, closes, opened, full, taken: false, count, opened_at, fresh: true }
    }

    /// `member` left the schedule: its place on `lane` and in the index of notifications held go.
    fn released(&mut self, lane: &str, member: &str) {
        if let Some(id) = id_of(member).filter(|id| self.held_ids.get(id).map(String::as_str) == Some(member)) {
            self.held_ids.remove(&id);
        }
        if let Some(l) = self.lanes.get_mut(lane) {
            l.pending -= 1;
            if l.pending <= 0 {
                self.lanes.remove(lane);
            }
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn prefs_many(&self, users: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let inner = self.lock();
        Ok(users.iter().map(|u| inner.prefs.get(u).cloned()).collect())
    }

    async fn set_prefs(&self, user: &str, json: &str) -> Result<(), StoreError> {
        self.lock().prefs.insert(user.to_string(), json.to_string());
        Ok(())
    }

    async fn claim(&self, id: &str, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        let claim = match inner.dedupe.get(id) {
            // Taken over by this owner before (a retry): still taken over.
            Some((value, expires)) if *expires > now && is_taken_by(value, owner) => {
                Claim::TakenOver { pinned: pinned_to(value) }
            }
            Some((value, expires)) if *expires > now && *value != claim_value(owner) => {
                if !value.starts_with(CLAIM_MARK) {
                    return Ok(Claim::Done(value.clone()));
                }
                if *expires > now + CLAIM_MEMORY {
                    return Ok(Claim::Held);
                }
                Claim::TakenOver { pinned: pinned_to(value) }
            }
            _ => Claim::Acquired,
        };
        inner.dedupe.insert(id.to_string(), (claim_value(&holder(owner, &claim)), now + lease + CLAIM_MEMORY));
        Ok(claim)
    }

    async fn swap(&self, id: &str, expected: &str, new: Option<&str>, ttl: Duration) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        let current = inner.dedupe.get(id).filter(|(_, expires)| *expires > now).map(|(v, _)| v.as_str());
        if current != Some(expected) {
            return Ok(false);
        }
        match new {
            Some(v) => inner.dedupe.insert(id.to_string(), (v.to_string(), now + ttl)),
            None => inner.dedupe.remove(id),
        };
        Ok(true)
    }

    async fn swap_tails(&self, swaps: &[(String, String, String)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        for (id, tail, new_tail) in swaps {
            if let Some((value, _)) = inner.dedupe.get_mut(id).filter(|(_, expires)| *expires > now) {
                if let Some(head) = value.strip_suffix(tail.as_str()) {
                    *value = format!("{head}{new_tail}");
                }
            }
        }
        Ok(())
    }

    async fn dedupe_value(&self, id: &str) -> Result<Option<String>, StoreError> {
        let inner = self.lock();
        let now = Instant::now();
        Ok(inner.dedupe.get(id).filter(|(_, expires)| *expires > now).map(|(v, _)| v.clone()))
    }

    async fn hydrate(&self, users: &[String], lanes: &[String]) -> Result<Hydrated, StoreError> {
        let inner = self.lock();
        Ok(Hydrated {
            prefs: users.iter().map(|u| inner.prefs.get(u).cloned()).collect(),
            holds: lanes
                .iter()
                .map(|l| {
                    inner.lanes.get(l).filter(|l| l.pending > 0).and_then(|l| DateTime::from_timestamp_millis(l.due))
                })
                .collect(),
        })
    }

    async fn place(&self, lane: &str, member: &str, due: DateTime<Utc>, exact: bool) -> Result<Placed, StoreError> {
        let mut inner = self.lock();
        let at = |held: i64| DateTime::from_timestamp_millis(held / 1000).unwrap_or(due);
        // Held already: not counted twice (a scan, fine for the sizes `tidings dev` holds).
        if let Some((held, _)) = inner.deferred.iter().find(|(_, m)| m == member) {
            return Ok(Placed { at: at(*held), joined: false });
        }
        // Claimed by the scheduler meanwhile: on its way out, not held again.
        if inner.claimed.iter().any(|(_, m)| m == member) {
            return Ok(Placed { at: due, joined: false });
        }
        // Another member of the same notification waits: its release time.
        let id = id_of(member);
        if let Some(other) = id.as_ref().and_then(|id| inner.held_ids.get(id)) {
            if let Some((held, _)) = inner.deferred.iter().find(|(_, m)| m == other) {
                return Ok(Placed { at: at(*held), joined: true });
            }
        }
        let l = inner.lanes.entry(lane.to_string()).or_default();
        let mut due_ms = millis(due);
        if l.pending == 0 {
            (l.seq, l.due) = (0, due_ms);
        } else if !exact {
            due_ms = due_ms.max(l.due);
        }
        l.seq += 1;
        l.due = l.due.max(due_ms);
        l.pending += 1;
        let entry = (score(due_ms, l.seq), member.to_string());
        inner.deferred.insert(entry);
        if let Some(id) = id {
            inner.held_ids.insert(id, member.to_string());
        }
        Ok(Placed { at: DateTime::from_timestamp_millis(due_ms).unwrap_or(due), joined: false })
    }

    async fn claim_due(&self, now: DateTime<Utc>, limit: usize, lease: Duration) -> Result<Vec<String>, StoreError> {
        let mut inner = self.lock();
        let limit = limit.min(MAX_CLAIM);
        let bound = score(millis(now), 999);
        let until = score(millis(now) + lease.as_millis() as i64, 0);
        let stale: Vec<(i64, String)> =
            inner.claimed.iter().take_while(|(t, _)| *t <= bound).take(limit).cloned().collect();
        let blocked: HashSet<String> =
            inner.claimed.iter().filter(|(t, _)| *t > bound).filter_map(|(_, m)| lane_of(m)).collect();
        let due: Vec<(i64, String)> = inner
            .deferred
            .iter()
            .take_while(|(t, _)| *t <= bound)
            .filter(|(_, m)| lane_of(m).is_none_or(|l| !blocked.contains(&l)))
            .take(limit - stale.len())
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(stale.len() + due.len());
        for entry in stale {
            inner.claimed.remove(&entry);
            out.push(entry.1);
        }
        for entry in due {
            inner.deferred.remove(&entry);
            out.push(entry.1);
        }
        for (place, m) in out.iter().enumerate() {
            inner.claimed.insert((until + place as i64 + 1, m.clone()));
        }
        Ok(out)
    }

    async fn undefer(&self, lane: &str, member: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        // Whichever member holds its notification.
        let id = id_of(member);
        let member = id.as_ref().and_then(|id| inner.held_ids.get(id)).cloned().unwrap_or_else(|| member.to_string());
        let before = inner.deferred.len();
        inner.deferred.retain(|(_, m)| *m != member);
        if inner.deferred.len() < before {
            inner.released(lane, &member);
        }
        Ok(())
    }

    async fn remove_deferred(&self, lane: &str, member: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let before = inner.claimed.len();
        inner.claimed.retain(|(_, m)| m != member);
        if inner.claimed.len() < before {
            inner.released(lane, member);
        }
        Ok(())
    }

    async fn open_breaker(&self, provider: &str, open_for: Duration) -> Result<(), StoreError> {
        self.lock().breakers.insert(provider.to_string(), Instant::now() + open_for);
        Ok(())
    }

    async fn open_breakers(&self, providers: &[String]) -> Result<Vec<bool>, StoreError> {
        let inner = self.lock();
        let now = Instant::now();
        Ok(providers.iter().map(|p| inner.breakers.get(p).is_some_and(|until| *until > now)).collect())
    }

    async fn lease_calls(
        &self,
        provider: &str,
        per_second: f64,
        burst: u32,
        want: u32,
    ) -> Result<(u32, Duration), StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        let (tat, slowed) = inner.rates.entry(provider.to_string()).or_insert((now, None));
        let mut interval = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_micros(1));
        if slowed.is_some_and(|until| until > now) {
            interval *= 2;
        }
        let tolerance = interval * burst.max(1);
        *tat = (*tat).max(now);
        let free = ((now + tolerance).saturating_duration_since(*tat).as_nanos() / interval.as_nanos()) as u32;
        if free == 0 {
            return Ok((0, (*tat + interval).saturating_duration_since(now + tolerance)));
        }
        let granted = free.min(want.max(1));
        *tat += interval * granted;
        Ok((granted, Duration::ZERO))
    }

    async fn slow_down(&self, provider: &str, period: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        self.lock().rates.entry(provider.to_string()).or_insert((now, None)).1 = Some(now + period);
        Ok(())
    }

    async fn deferred_len(&self) -> Result<u64, StoreError> {
        let inner = self.lock();
        Ok((inner.deferred.len() + inner.claimed.len()) as u64)
    }

    async fn deferred_due(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let inner = self.lock();
        let bound = score(millis(now), 999);
        Ok((inner.deferred.iter().take_while(|(t, _)| *t <= bound).count() + inner.claimed.len()) as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn swap_prefs(&self, user: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.prefs.get(user).map(String::as_str) != Some(old) {
            return Ok(false);
        }
        inner.prefs.insert(user.to_string(), new.to_string());
        Ok(true)
    }

    async fn webhook_keys(&self, user: &str, fresh: &str) -> Result<String, StoreError> {
        Ok(self.lock().webhook_keys.entry(user.to_string()).or_insert_with(|| fresh.to_string()).clone())
    }

    async fn swap_webhook_keys(&self, user: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.webhook_keys.get(user).map(String::as_str) != Some(old) {
            return Ok(false);
        }
        inner.webhook_keys.insert(user.to_string(), new.to_string());
        Ok(true)
    }

    async fn suppress(&self, e: &Suppression) -> Result<bool, StoreError> {
        let json = serde_json::to_string(e).expect("entries serialize to JSON");
        let mut inner = self.lock();
        let operators =
            inner.suppressions.get(&e.address).and_then(|j| entry(j)).is_some_and(|old| old.cause == Cause::Manual);
        if operators && e.cause != Cause::Manual {
            return Ok(false);
        }
        inner.suppressions.insert(e.address.clone(), json);
        Ok(true)
    }

    async fn unsuppress(&self, address: &str) -> Result<bool, StoreError> {
        Ok(self.lock().suppressions.remove(address).is_some())
    }

    async fn lift(&self, address: &str, cause: Cause, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.suppressions.get(address).and_then(|j| entry(j)).is_some_and(|old| old.cause == cause && old.at <= at)
        {
            inner.suppressions.remove(address);
            return Ok(true);
        }
        Ok(false)
    }

    async fn suppression(&self, address: &str) -> Result<Option<Suppression>, StoreError> {
        Ok(self.lock().suppressions.get(address).and_then(|json| entry(json)))
    }

    async fn suppressions(&self, cursor: u64) -> Result<(u64, Vec<Suppression>), StoreError> {
        const PAGE: usize = 100;
        let inner = self.lock();
        let page: Vec<Suppression> =
            inner.suppressions.values().skip(cursor as usize).take(PAGE).filter_map(|j| entry(j)).collect();
        let next = cursor as usize + PAGE;
        Ok((if next < inner.suppressions.len() { next as u64 } else { 0 }, page))
    }

    async fn admit_from(
        &self,
        asks: &[CapAsk],
        _: &CapsRead,
    ) -> Result<(Vec<Admission>, HashMap<String, CapsSeen>), StoreError> {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(asks.len());
        for ask in asks {
            let state = inner.caps.entry(ask.user.clone()).or_default();
            out.push(state.admit(ask));
        }
        Ok((out, HashMap::new()))
    }

    async fn digest_add(&self, adds: &[DigestAdd]) -> Result<Vec<Added>, StoreError> {
        let mut inner = self.lock();
        Ok(adds.iter().map(|add| inner.digest_add(add)).collect())
    }

    async fn digest_take(
        &self,
        user: &str,
        name: &str,
        window: u64,
        opened: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Taken>, StoreError> {
        let mut inner = self.lock();
        let Some(w) = inner.digests.get_mut(&(user.to_string(), name.to_string())).and_then(|d| d.get_mut(&window))
        else {
            return Ok(None);
        };
        if w.items.is_empty() || w.opened != millis(opened) {
            // Its items are forgotten, or it is another window of that number.
            return Ok(None);
        }
        w.taken = w.taken.or(Some(millis(now)));
        let at = |ms| DateTime::from_timestamp_millis(ms).unwrap_or_default();
        Ok(Some(Taken { opened: at(w.opened), closed: at(w.closes), items: w.items.clone() }))
    }

    async fn open_digests(&self, user: &str) -> Result<Vec<OpenDigest>, StoreError> {
        let inner = self.lock();
        let mut open = Vec::new();
        for ((u, name), windows) in &inner.digests {
            let Some((n, w)) = windows.iter().next_back().filter(|(_, w)| u == user && w.taken.is_none() && !w.full)
            else {
                continue;
            };
            let closes = DateTime::from_timestamp_millis(w.closes).unwrap_or_default();
            open.push(OpenDigest { name: name.clone(), window: *n, count: w.count, closes });
        }
        open.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(open)
    }

    async fn cap_counts(
        &self,
        user: &str,
        caps: &[(String, Duration)],
        channels: &[Channel],
        now: DateTime<Utc>,
    ) -> Result<Vec<CapCount>, StoreError> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (cap, per) in caps {
            for &channel in channels {
                let (in_window, ahead) =
                    inner.caps.get(user).map_or((0, 0), |state| state.count(cap, *per, channel, now));
                out.push(CapCount { cap: cap.clone(), channel, in_window, ahead });
            }
        }
        Ok(out)
    }

    async fn soft_bounce(&self, address: &str, by: &str, window: Duration) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        let (counted, ends) =
            inner.soft_bounces.entry(address.to_string()).or_insert((Default::default(), now + window));
        if *ends <= now {
            (*counted, *ends) = (Default::default(), now + window);
        }
        counted.insert(by.to_string());
        Ok(counted.len() as u64)
    }

    async fn first_sighting(&self, key: &str, by: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.seen.get(key) {
            Some((first, until)) if *until > now => Ok(first == by),
            _ => {
                inner.seen.insert(key.to_string(), (by.to_string(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn sighting_done(&self, key: &str, by: &str) -> Result<(), StoreError> {
        if let Some((first, _)) = self.lock().seen.get_mut(key).filter(|(first, _)| first == by) {
            *first = "done".to_string();
        }
        Ok(())
    }
}
