//! An in-process [`Store`] with the same semantics as [`super::RedisStore`],
//! for `tidings dev` on a machine without `redis-server`. State lives only as
//! long as the process.

use super::{claim_value, millis, Claim, Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    prefs: HashMap<String, String>,
    dedupe: HashMap<String, (String, Instant)>,
    /// (due ms, member) ordered by due time.
    deferred: BTreeSet<(i64, String)>,
    /// (lease end ms, member).
    claimed: BTreeSet<(i64, String)>,
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
        let mine = claim_value(owner);
        match inner.dedupe.get(id) {
            Some((value, expires)) if *expires > now && *value != mine => {
                if value.starts_with("inflight:") {
                    Ok(Claim::Held)
                } else {
                    Ok(Claim::Done(value.clone()))
                }
            }
            _ => {
                inner.dedupe.insert(id.to_string(), (mine, now + lease));
                Ok(Claim::Acquired)
            }
        }
    }

    async fn finish(&self, id: &str, record: &str, ttl: Duration) -> Result<(), StoreError> {
        self.lock()
            .dedupe
            .insert(id.to_string(), (record.to_string(), Instant::now() + ttl));
        Ok(())
    }

    async fn forget(&self, id: &str) -> Result<(), StoreError> {
        self.lock().dedupe.remove(id);
        Ok(())
    }

    async fn defer(&self, member: &str, due: DateTime<Utc>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.deferred.retain(|(_, m)| m != member);
        inner.deferred.insert((millis(due), member.to_string()));
        Ok(())
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let mut inner = self.lock();
        let now = millis(now);
        let until = now + lease.as_millis() as i64;
        let mut out: Vec<String> = inner
            .claimed
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect();
        let due: Vec<(i64, String)> = inner
            .deferred
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(limit - out.len())
            .cloned()
            .collect();
        for entry in &due {
            inner.deferred.remove(entry);
        }
        out.extend(due.into_iter().map(|(_, m)| m));
        inner.claimed.retain(|(_, m)| !out.contains(m));
        for m in &out {
            inner.claimed.insert((until, m.clone()));
        }
        Ok(out)
    }

    async fn remove_deferred(&self, member: &str) -> Result<(), StoreError> {
        self.lock().claimed.retain(|(_, m)| m != member);
        Ok(())
    }

    async fn deferred_len(&self) -> Result<u64, StoreError> {
        let inner = self.lock();
        Ok((inner.deferred.len() + inner.claimed.len()) as u64)
    }
}
