//! The Redis implementation of [`Store`].

use super::{claim_value, millis, Claim, Keys, Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::Script;
use std::time::Duration;

/// Claims a notification unless it has an outcome or a live claim by someone else.
const CLAIM: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, ''}
end
if string.sub(cur, 1, 9) == 'inflight:' then return {2, ''} end
return {0, cur}
"#;

/// Moves due members (and those whose claim ran out) into the claimed set with a new lease.
const CLAIM_DUE: &str = r#"
local out = {}
local limit = tonumber(ARGV[2])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, limit)
for _, m in ipairs(stale) do
  redis.call('ZADD', KEYS[2], ARGV[3], m)
  table.insert(out, m)
end
if #out < limit then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit - #out)
  for _, m in ipairs(due) do
    redis.call('ZREM', KEYS[1], m)
    redis.call('ZADD', KEYS[2], ARGV[3], m)
    table.insert(out, m)
  end
end
return out
"#;

pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    claim: Script,
    claim_due: Script,
}

impl RedisStore {
    /// Connects (and reconnects on its own later) to `url`.
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_connection_manager().await?;
        Ok(RedisStore {
            conn,
            keys: Keys::new(key_prefix),
            claim: Script::new(CLAIM),
            claim_due: Script::new(CLAIM_DUE),
        })
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn prefs_many(&self, users: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        if users.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = users.iter().map(|u| self.keys.prefs(u)).collect();
        let mut conn = self.conn.clone();
        // MGET of one key answers a single value, not a list.
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&keys);
        if keys.len() == 1 {
            let v: Option<String> = redis::cmd("GET")
                .arg(&keys[0])
                .query_async(&mut conn)
                .await?;
            return Ok(vec![v]);
        }
        Ok(cmd.query_async(&mut conn).await?)
    }

    async fn set_prefs(&self, user: &str, json: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(self.keys.prefs(user))
            .arg(json)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn claim(&self, id: &str, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
        let mut conn = self.conn.clone();
        let (code, value): (i64, String) = self
            .claim
            .key(self.keys.dedupe(id))
            .arg(claim_value(owner))
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(match code {
            1 => Claim::Acquired,
            2 => Claim::Held,
            _ => Claim::Done(value),
        })
    }

    async fn finish(&self, id: &str, record: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(self.keys.dedupe(id))
            .arg(record)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn forget(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.keys.dedupe(id))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn defer(&self, member: &str, due: DateTime<Utc>) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("ZADD")
            .arg(self.keys.deferred())
            .arg(millis(due))
            .arg(member)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let until = millis(now) + lease.as_millis() as i64;
        Ok(self
            .claim_due
            .key(self.keys.deferred())
            .key(self.keys.deferred_claimed())
            .arg(millis(now))
            .arg(limit)
            .arg(until)
            .invoke_async(&mut conn)
            .await?)
    }

    async fn remove_deferred(&self, member: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("ZREM")
            .arg(self.keys.deferred_claimed())
            .arg(member)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn deferred_len(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let (a, b): (u64, u64) = redis::pipe()
            .cmd("ZCARD")
            .arg(self.keys.deferred())
            .cmd("ZCARD")
            .arg(self.keys.deferred_claimed())
            .query_async(&mut conn)
            .await?;
        Ok(a + b)
    }
}
