//! The Redis implementation of [`Store`].

use super::{
    claim_value, entry, millis, score, CapCount, CapsRead, CapsSeen, Claim, Claimed, Hydrated, Keys, Placed, Store,
    StoreError, CLAIM_MARK, CLAIM_MEMORY, MAX_CLAIM,
};
use crate::caps::{self, Admission, CapAsk};
use crate::digest::{self, Added, DigestAdd, OpenDigest, Taken};
use crate::suppression::{Cause, Suppression};
use crate::Channel;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::{join_all, try_join, try_join_all};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Leases calls of a provider's fleet-wide budget (GCRA on the Redis
/// clock, in µs): KEYS[1] holds the theoretical arrival time, KEYS[2] exists
/// while the rate is halved. ARGV: interval (µs per call), burst, calls
/// wanted. Answers {calls granted, ms until one is free}.
const LEASE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then interval = interval * 2 end
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local free = math.floor((now + tolerance - tat) / interval)
if free < 1 then
  return {0, math.ceil((tat - tolerance + interval - now) / 1000)}
end
local granted = math.min(free, tonumber(ARGV[3]))
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {granted, 0}
"#;

/// Claims notifications, each unless it has an outcome or a live claim by
/// someone else. Per claim: KEYS dedupe key, preferences key and the
/// suppression list; ARGV claim value, ms it lives (lease + memory), whether
/// to read the preferences (`1`), and the address to look up on the list
/// (empty: none). After them, ARGV: the claim mark every claim value starts
/// with, and the memory in ms. A claim is live while more than the memory is
/// left; a claim past its lease is taken over (code 3), and is held as
/// the owner's value, a `~` and the pin it carries (see [`super::holder`]): the
/// same owner claiming again (a retry whose answer was lost) reads code 3
/// again. Answers, per claim: code, the value found (the outcome already
/// recorded, or for a claim taken over the pin it carries), preferences and
/// list entry (when asked and the claim had).
const CLAIM: &str = r#"
local n = #KEYS / 3
local mark, memory = ARGV[4 * n + 1], tonumber(ARGV[4 * n + 2])
local pinmark = mark .. 'pin:'
local out = {}
for i = 1, n do
  local key, owner, lives, read, address = KEYS[3 * i - 2], ARGV[4 * i - 3], ARGV[4 * i - 2], ARGV[4 * i - 1] == '1', ARGV[4 * i]
  local code, value, prefs, listed = 0, '', '', ''
  local cur = redis.call('GET', key)
  local taken = owner .. '~'
  local held = owner
  if (not cur) or cur == owner then
    code = 1
  elseif string.sub(cur, 1, #taken) == taken then
    code, value, held = 3, string.sub(cur, #taken + 1), cur
  elseif string.sub(cur, 1, #mark) == mark then
    if redis.call('PTTL', key) > memory then
      code = 2
    else
      -- The pin of a claim given up pinned, or carried by one taken over.
      if string.sub(cur, 1, #pinmark) == pinmark then
        value = string.sub(cur, #pinmark + 1)
      else
        local at = string.find(cur, '~', 1, true)
        if at then value = string.sub(cur, at + 1) end
      end
      code, held = 3, taken .. value
    end
  else
    value = cur
  end
  if code == 1 or code == 3 then
    redis.call('SET', key, held, 'PX', lives)
    -- pcall: a key of another type reads as absent instead of failing every claim of the batch.
    if read then
      local p = redis.pcall('GET', KEYS[3 * i - 1])
      if type(p) == 'string' then prefs = p end
    end
    if address ~= '' then
      local l = redis.pcall('HGET', KEYS[3 * i], address)
      if type(l) == 'string' then listed = l end
    end
  end
  out[4 * i - 3], out[4 * i - 2], out[4 * i - 1], out[4 * i] = code, value, prefs, listed
end
return out
"#;

/// Counts a soft bounce: KEYS[1] the address's counter; ARGV[1] the window
/// in ms, started by the first bounce. Answers the count.
const SOFT_BOUNCE: &str = r#"
local added = redis.call('SADD', KEYS[1], ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if added == 1 and n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
"#;

/// A sighting: KEYS the seen key; ARGV who sees it and for how many ms.
/// Answers 1 when it is the first to (or saw it first), else 0.
const SIGHTING: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then return 1 end
return 0
"#;

/// The end of a sighting: KEYS the seen key; ARGV who saw it first, whose
/// mark becomes `done` (its time to live kept).
const SIGHTING_DONE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'done', 'KEEPTTL')
end
return 0
"#;

/// Lists an address: KEYS[1] the list, ARGV the address, its entry (JSON),
/// and 1 when the entry is an operator's. An operator's entry (cause
/// `manual`) is replaced only by another. Answers 1 if written.
const LIST: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and ARGV[3] ~= '1' then
  local ok, e = pcall(cjson.decode, old)
  if ok and type(e) == 'table' and e.cause == 'manual' then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// Takes an address (ARGV[1]) off the list (KEYS[1]) only while it is
/// listed for the cause ARGV[2]. Answers 1 if removed.
const LIFT: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
local ok, e = pcall(cjson.decode, old)
if not (ok and type(e) == 'table' and e.cause == ARGV[2]) then return 0 end
if type(e.at) == 'string' then
  local frac = string.match(e.at, '^%d+%-%d+%-%d+T%d+:%d+:%d+%.(%d+)') or ''
  if string.sub(e.at, 1, 19) .. string.sub(frac .. '000000000', 1, 9) > ARGV[3] then return 0 end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"#;

/// Compare-and-set of a string: KEYS[1] to ARGV[2] if it is ARGV[1]. Answers 1 if set.
const SWAP_VALUE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Get-or-create: KEYS the key; ARGV the value to store when there is none.
const GET_OR_SET: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"#;

/// Compare-and-set of dedupe values. Per swap: KEYS its key; ARGV the value
/// it must have now, the value to set (deleted when empty), and for how
/// many ms. Answers 1 per swap done, 0 per value that was not the one expected.
const SWAP: &str = r#"
local out = {}
for i = 1, #KEYS do
  local key, expected, new, ttl = KEYS[i], ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  if redis.call('GET', key) ~= expected then
    out[i] = 0
  else
    if new == '' then redis.call('DEL', key) else redis.call('SET', key, new, 'PX', ttl) end
    out[i] = 1
  end
end
return out
"#;

/// Replaces the end of dedupe values, keeping their time to live. Per
/// value: KEYS its key; ARGV the end it must have, and the end to put there.
const SWAP_TAIL: &str = r#"
for i = 1, #KEYS do
  local cur, tail, new = redis.call('GET', KEYS[i]), ARGV[2 * i - 1], ARGV[2 * i]
  if cur and #cur >= #tail and string.sub(cur, -#tail) == tail then
    redis.call('SET', KEYS[i], string.sub(cur, 1, #cur - #tail) .. new, 'KEEPTTL')
  end
end
return 0
"#;

/// Holds a member on its lane, never before a member already held there. A
/// member already held is not counted again (a retry after a timeout whose
/// write had gone through): its release time is returned as it is; nor is
/// one the scheduler claimed meanwhile (KEYS[3]), which is on its way out.
/// Nor is another member of the same notification while one waits (another
/// read of its event, whose member differs in when it was made): KEYS[4]
/// maps each notification id held to its member. ARGV: member, due (ms),
/// lane, and `1` to hold it at due itself, before members due later.
/// Every lane is a field of one hash (so a batch reads all its lanes with one
/// HMGET) whose value is `due,pending,seq`: the release time of its last
/// member, how many members are held, and a sequence that orders members due
/// in the same millisecond (restarting when the lane empties). Answers
/// {release time, 1 when it joined another member of its notification}.
const DEFER: &str = r#"
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if held then return {math.floor(tonumber(held) / 1000), 0} end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return {tonumber(ARGV[2]), 0} end
local ok, v = pcall(cjson.decode, ARGV[1])
local id = ok and type(v) == 'table' and type(v.notification) == 'table' and v.notification.notification_id
if type(id) ~= 'string' then id = nil end
if id then
  local other = redis.call('HGET', KEYS[4], id)
  -- Only while it waits: one claimed is on its way out, and the worker may
  -- hold it again (quiet hours at delivery) before the scheduler removes it.
  local at = other and redis.call('ZSCORE', KEYS[1], other)
  if at then return {math.floor(tonumber(at) / 1000), 1} end
end
local due = tonumber(ARGV[2])
local last, pending, seq = due, 0, 0
local v = redis.call('HGET', KEYS[2], ARGV[3])
if v then
  local d, p, s = string.match(v, '^(%-?%d+),(%d+),(%d+)$')
  pending = tonumber(p)
  if pending > 0 then
    seq = tonumber(s)
    if tonumber(d) > due then
      last = tonumber(d)
      if ARGV[4] ~= '1' then due = last end
    end
  end
end
seq = seq + 1
redis.call('HSET', KEYS[2], ARGV[3], string.format('%.0f,%d,%d', last, pending + 1, seq))
redis.call('ZADD', KEYS[1], string.format('%.0f', due * 1000 + seq), ARGV[1])
if id then redis.call('HSET', KEYS[4], id, ARGV[1]) end
return {due, 0}
"#;

/// Moves due members into the claimed set with a new lease, in release
/// order, after claims whose lease ran out (in the order they were claimed:
/// a claim's members are scored lease end + their place). A lane with a live
/// claim releases nothing more until that member is published or its claim
/// runs out, so a scheduler that died holding a user's earlier message never
/// lets a later one overtake it. The lane is read from the member
/// (`notification.user_id` and `.channel`); a member whose lane does not
/// read blocks nothing. At most ten pages of due members are looked at.
/// ARGV: due bound, limit, new lease score, live bound.
const CLAIM_DUE: &str = r#"
local function lane_of(m)
  local ok, v = pcall(cjson.decode, m)
  if ok and type(v) == 'table' and type(v.notification) == 'table' then
    local n = v.notification
    if type(n.user_id) == 'string' and type(n.channel) == 'string' then return n.user_id .. ':' .. n.channel end
  end
  return nil
end
local limit = tonumber(ARGV[2])
local out = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, limit)
local blocked = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[4], '+inf')) do
  local l = lane_of(m)
  if l then blocked[l] = true end
end
local skipped, pages = 0, 0
while #out < limit and pages < 10 do
  local page = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', skipped, limit - #out)
  if #page == 0 then break end
  pages = pages + 1
  for _, m in ipairs(page) do
    local l = lane_of(m)
    if l and blocked[l] then
      skipped = skipped + 1
    else
      redis.call('ZREM', KEYS[1], m)
      table.insert(out, m)
    end
  end
end
for i, m in ipairs(out) do
  redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + i, m)
end
return out
"#;

/// Replaces users' caps ([`crate::caps::State`]) that no other process
/// replaced since they were read. KEYS: one user's caps each. ARGV, per
/// key: the version read (`''`: there was none), the value to write
/// (`''`: delete; `=`: none, only check the version), its lifetime (ms).
/// A value starts with its version (16 hex digits; one that does not reads
/// as version `!`, and is replaced like any other). Answers per key 1
/// written (or still the version read), 0 replaced since (read again).
const ADMIT: &str = r#"
local out = {}
for i = 1, #KEYS do
  local had, v = redis.call('GET', KEYS[i]), ''
  if had then
    v = string.sub(had, 1, 16)
    if not string.match(v, '^%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x$') then v = '!' end
  end
  if v == ARGV[3 * i - 2] then
    if ARGV[3 * i - 1] == '' then
      redis.call('DEL', KEYS[i])
    elseif ARGV[3 * i - 1] ~= '=' then
      redis.call('SET', KEYS[i], ARGV[3 * i - 1], 'PX', ARGV[3 * i])
    end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"#;

/// A user's caps as stored: the version and the state (none stored: `""`
/// and an empty state). A value that does not read is replaced by an empty
/// state: caps limit sends, they hold nothing that must be delivered.
fn caps_state<'v>(key: &str, value: Option<&'v str>) -> (&'v str, &'v str, caps::State) {
    let Some(value) = value else { return ("", "", caps::State::default()) };
    let version = super::caps_version(Some(value));
    let body = if version == "!" { "" } else { &value[16..] };
    let state = caps::State::decode(body).unwrap_or_else(|e| {
        tracing::error!(key, error = %e, "frequency caps unreadable: counting afresh");
        caps::State::default()
    });
    (version, body, state)
}

/// Adds events to their digests, in order, in one call (a call's own cost
/// is several times one event's). Per event, KEYS: the digest, one hash: `w`
/// the latest window's state (`window,closes,count,opened,taken`, times in
/// ms, `taken` empty until it is), `s:<window>` an earlier window's,
/// `i:<window>:<place>` its items and `r:<window>:<place>` their events,
/// `e:<event>` the window an event went to, `pruned` and `forgot` the
/// windows whose items and whose events are forgotten; and the user's open
/// windows (digest name -> window). ARGV, eight per event: item, now (ms),
/// when a window opened now closes (ms), max items, how long to remember an
/// event after its window was taken (ms), the digest's name, how long a
/// taken window's items are kept (ms), the event. Answers, eight per event,
/// one event after another: window, closes (ms), opened, taken, count, full,
/// when the window opened (ms), fresh (1: added now; 0: added before). A
/// window is open while it is not taken, not past its end and not full. An
/// event of an open window costs one read and one write; the rest happens
/// when a window opens.
const DIGEST_ADD: &str = r#"
local function state(v)
  if not v then return nil end
  local n, closes, count, opened, taken = string.match(v, '^(%d+),(%-?%d+),(%d+),(%-?%d+),(%d*)$')
  if not n then return nil end
  return {n = tonumber(n), closes = tonumber(closes), count = tonumber(count), opened = tonumber(opened), taken = taken}
end
local function ms(x) return string.format('%.0f', x) end
local function show(s) return s.n .. ',' .. ms(s.closes) .. ',' .. s.count .. ',' .. ms(s.opened) .. ',' .. s.taken end
local function add(K1, K2, A)
  local read = redis.call('HMGET', K1, 'e:' .. A[8], 'w')
  local cur = state(read[2]) or {n = 0, closes = 0, count = 0, opened = 0, taken = ''}
  if read[1] then
    local s = cur
    if tonumber(read[1]) ~= cur.n then
      s = state(redis.call('HGET', K1, 's:' .. read[1])) or {n = tonumber(read[1]), closes = 0, count = 0, opened = 0, taken = '0'}
    end
    local taken = 0
    if s.taken ~= '' then taken = 1 end
    return {s.n, s.closes, 0, taken, s.count, 0, s.opened, 0}
  end
  local now, max = tonumber(A[2]), tonumber(A[4])
  local opened, lives = 0, 0
  if not (cur.n > 0 and cur.taken == '' and cur.closes > now and cur.count < max) then
    if cur.n > 0 then redis.call('HSET', K1, 's:' .. cur.n, show(cur)) end
    -- Windows taken long enough ago: their items, then their events, forgotten.
    local keep, remember = tonumber(A[7]), tonumber(A[5])
    local marks = redis.call('HMGET', K1, 'pruned', 'forgot')
    local pruned, forgot = tonumber(marks[1] or '0'), tonumber(marks[2] or '0')
    -- A window never taken (its release lost) goes once closed that long.
    local function since(s, wait) if s.taken == '' then return s.closes, remember end return tonumber(s.taken), wait end
    while pruned < cur.n do
      local m = pruned + 1
      local s = state(redis.call('HGET', K1, 's:' .. m))
      if s then
        local at, wait = since(s, keep)
        if now - at < wait then break end
      end
      for i = 1, s and s.count or 0 do redis.call('HDEL', K1, 'i:' .. m .. ':' .. i) end
      pruned = m
    end
    while forgot < pruned do
      local m = forgot + 1
      local s = state(redis.call('HGET', K1, 's:' .. m))
      if s and now - since(s, remember) < remember then break end
      for i = 1, s and s.count or 0 do
        local r = redis.call('HGET', K1, 'r:' .. m .. ':' .. i)
        if r then redis.call('HDEL', K1, 'e:' .. r) end
        redis.call('HDEL', K1, 'r:' .. m .. ':' .. i)
      end
      redis.call('HDEL', K1, 's:' .. m)
      forgot = m
    end
    cur = {n = cur.n + 1, closes = tonumber(A[3]), count = 0, opened = now, taken = ''}
    redis.call('HSET', K1, 'pruned', pruned, 'forgot', forgot)
    lives = math.max(cur.closes - now, 0) + remember
    if redis.call('PTTL', K1) < lives then redis.call('PEXPIRE', K1, ms(lives)) end
    opened = 1
  end
  cur.count = cur.count + 1
  local full = 0
  if cur.count >= max then full, cur.closes = 1, now end
  local place = cur.n .. ':' .. cur.count
  redis.call('HSET', K1, 'i:' .. place, A[1], 'r:' .. place, A[8], 'e:' .. A[8], cur.n, 'w', show(cur))
  if full == 1 then
    redis.call('HDEL', K2, A[6])
  elseif opened == 1 then
    redis.call('HSET', K2, A[6], cur.n)
    if redis.call('PTTL', K2) < lives then redis.call('PEXPIRE', K2, ms(lives)) end
  end
  return {cur.n, cur.closes, opened, 0, cur.count, full, cur.opened, 1}
end
local out = {}
for i = 1, #KEYS / 2 do
  local a = {}
  for j = 1, 8 do a[j] = ARGV[8 * (i - 1) + j] end
  local r = add(KEYS[2 * i - 1], KEYS[2 * i], a)
  for j = 1, 8 do out[#out + 1] = r[j] end
end
return out
"#;

/// Takes a window for release. KEYS: the digest, the user's open windows.
/// ARGV: the window, the digest's name, now (ms: when it was first taken is
/// kept), when the window opened (ms). Answers {} for a window not known,
/// whose items are forgotten, or opened at another instant, else {opened
/// (ms), closes (ms), item, ...}.
const DIGEST_TAKE: &str = r#"
local n = ARGV[1]
local read = redis.call('HMGET', KEYS[1], 'w', 's:' .. n, 'pruned')
local field, v = 's:' .. n, read[2]
if read[1] and string.match(read[1], '^(%d+),') == n then field, v = 'w', read[1] end
if not v or tonumber(n) <= tonumber(read[3] or '0') then return {} end
local closes, count, opened, taken = string.match(v, '^%d+,(%-?%d+),(%d+),(%-?%d+),(%d*)$')
if not closes or opened ~= ARGV[4] then return {} end
if taken == '' then
  redis.call('HSET', KEYS[1], field, n .. ',' .. closes .. ',' .. count .. ',' .. opened .. ',' .. ARGV[3])
end
if redis.call('HGET', KEYS[2], ARGV[2]) == n then redis.call('HDEL', KEYS[2], ARGV[2]) end
local out = {opened, closes}
for i = 1, tonumber(count) do out[#out + 1] = redis.call('HGET', KEYS[1], 'i:' .. n .. ':' .. i) or 'null' end
return out
"#;

/// Removes a member (KEYS[1]: from the claimed set once published, or from
/// the schedule when intake takes it back, ARGV[3] `1`: then the member that
/// holds its notification, whichever read made it) and releases its place
/// on the lane and in the index of notifications held (KEYS[3]).
const REMOVE: &str = r#"
local member = ARGV[1]
local ok, v = pcall(cjson.decode, member)
local id = ok and type(v) == 'table' and type(v.notification) == 'table' and v.notification.notification_id
if type(id) ~= 'string' then id = nil end
local indexed = id and redis.call('HGET', KEYS[3], id)
-- Taken back by intake: whichever member holds its notification.
if ARGV[3] == '1' and indexed then member = indexed end
if redis.call('ZREM', KEYS[1], member) == 1 then
  if indexed == member then redis.call('HDEL', KEYS[3], id) end
  local v = redis.call('HGET', KEYS[2], ARGV[2])
  if v then
    local d, p, s = string.match(v, '^(%-?%d+),(%d+),(%d+)$')
    local pending = tonumber(p) - 1
    if pending <= 0 then
      redis.call('HDEL', KEYS[2], ARGV[2])
    else
      redis.call('HSET', KEYS[2], ARGV[2], d .. ',' .. pending .. ',' .. s)
    end
  end
end
return 0
"#;

/// A connection to one Redis, or to a Redis Cluster (which sends each
/// command to the node serving its keys' slot). Either reconnects on its own.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Connects to `url`: a cluster when it names several nodes or its one
    /// node says it is a cluster node.
    async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_answering_within(url, None).await
    }

    /// [`Self::open`], with requests answered within `answer` (the client's
    /// default when `None`).
    async fn open_answering_within(url: &str, answer: Option<Duration>) -> Result<Self, StoreError> {
        let nodes: Vec<&str> = url.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
        if nodes.len() == 1 {
            let client = redis::Client::open(nodes[0])?;
            let mut probe = client.get_multiplexed_async_connection().await?;
            let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut probe).await?;
            if !info.contains("cluster_enabled:1") {
                let manager = match answer {
                    None => client.get_connection_manager().await?,
                    Some(t) => {
                        let config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(Some(t));
                        client.get_connection_manager_with_config(config).await?
                    }
                };
                return Ok(Conn::Single(manager));
            }
        }
        let mut client = redis::cluster::ClusterClient::builder(nodes);
        if let Some(t) = answer {
            client = client.response_timeout(t);
        }
        Ok(Conn::Cluster(client.build()?.get_async_connection().await?))
    }

    fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

/// Runs `send` on `asks` as one script call on one Redis. On a cluster, a
/// script's keys must share a slot: the asks are grouped by their key's
/// slot and each group is sent on its own, all groups at once. Answers in
/// the asks' order, each on its own: a group that failed fails its asks
/// only, so what another group's script did (a claim taken over, an outcome
/// recorded) is answered, not retried into a different answer.
async fn by_slot<A, T, F, Fut>(
    cluster: bool,
    asks: Vec<A>,
    key: impl Fn(&A) -> &str,
    send: F,
) -> Vec<Result<T, StoreError>>
where
    F: Fn(Vec<A>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, StoreError>>,
{
    let n = asks.len();
    if !cluster {
        return each(send(asks).await, n);
    }
    let mut groups: HashMap<Slot, (Vec<usize>, Vec<A>)> = HashMap::new();
    for (i, ask) in asks.into_iter().enumerate() {
        let group = groups.entry(Slot::for_key(key(&ask))).or_default();
        group.0.push(i);
        group.1.push(ask);
    }
    let sent = groups.into_values().map(|(places, asks)| {
        let answers = send(asks);
        async move {
            let answers = each(answers.await, places.len());
            (places, answers)
        }
    });
    let mut out: Vec<Option<Result<T, StoreError>>> = std::iter::repeat_with(|| None).take(n).collect();
    for (places, answers) in join_all(sent).await {
        for (place, answer) in places.into_iter().zip(answers) {
            out[place] = Some(answer);
        }
    }
    out.into_iter().map(|a| a.unwrap_or_else(|| Err(StoreError::Batch("no answer".to_string())))).collect()
}

/// The answers of one script call for `n` asks, one per ask.
fn each<T>(answers: Result<Vec<T>, StoreError>, n: usize) -> Vec<Result<T, StoreError>> {
    let why = match answers {
        Ok(answers) if answers.len() == n => return answers.into_iter().map(Ok).collect(),
        Ok(answers) => format!("{} answers to a batch of {n}", answers.len()),
        Err(e) => e.to_string(),
    };
    (0..n).map(|_| Err(StoreError::Batch(why.clone()))).collect()
}

pub struct RedisStore {
    conn: Conn,
    keys: Keys,
    /// Claims and swaps of dedupe values go to Redis in batches ([`Batched`]).
    claims: Batched<ClaimAsk, Claimed>,
    swaps: Batched<SwapAsk, bool>,
    swap_tail: Script,
    defer: Script,
    claim_due: Script,
    remove: Script,
    lease: Script,
    soft_bounce: Script,
    sighting: Script,
    sighting_done: Script,
    swap_value: Script,
    get_or_set: Script,
    list: Script,
    lift: Script,
    admit: Script,
    digest_add: Script,
    digest_take: Script,
    /// Where deferrals go when they must reach replicas before they count.
    replicated: Option<Replicated>,
}

/// Deferrals that count only once `replicas` replicas hold them: written
/// and waited for (`WAIT`, at most `wait`) on a connection of their own,
/// since `WAIT` holds the connection it is sent on until it answers, and
/// covers what was written on that connection only.
struct Replicated {
    conn: Conn,
    replicas: u32,
    wait: Duration,
}

/// One claim: its dedupe key, the preferences key to read when it is had
/// (`None`: none read), the list and address to look up then, the claim
/// value, and how long the value lives.
struct ClaimAsk {
    key: String,
    prefs: Option<String>,
    list: Option<(String, String)>,
    value: String,
    lives: Duration,
}

/// One compare-and-set: key, value expected, value to set (`None`: delete), and its ttl.
struct SwapAsk {
    key: String,
    expected: String,
    new: Option<String>,
    ttl: Duration,
}

/// Requests of one kind on their way to Redis: every request that comes
/// while a batch is under way goes in the next one, one script call for
/// all of them. A worker makes two such requests a message, thousands at
/// once under load: a call each made the worker's per-message work (command
/// building, a round trip through the connection, a reply parsed) and
/// Redis's (a script run each) the largest part of both. A lone request
/// still goes at once, alone.
struct Batched<Ask, T> {
    tx: mpsc::UnboundedSender<(Ask, oneshot::Sender<Result<T, StoreError>>)>,
}

impl<Ask: Send + 'static, T: Send + 'static> Batched<Ask, T> {
    /// Requests a batch holds at most (one script call keeps Redis busy that long).
    const MAX: usize = 256;

    /// Starts the task that sends each batch with `send`, which answers each request, in order.
    fn start<F, Fut>(send: F) -> Self
    where
        F: Fn(Vec<Ask>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Result<T, StoreError>>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Ask, oneshot::Sender<Result<T, StoreError>>)>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(Self::MAX);
            while rx.recv_many(&mut batch, Self::MAX).await > 0 {
                let (asks, answers): (Vec<Ask>, Vec<_>) = batch.drain(..).unzip();
                let n = answers.len();
                let mut results = send(asks).await.into_iter();
                for answer in answers {
                    let result = results
                        .next()
                        .unwrap_or_else(|| Err(StoreError::Batch(format!("too few answers to a batch of {n}"))));
                    let _ = answer.send(result);
                }
            }
        });
        Batched { tx }
    }

    async fn ask(&self, ask: Ask) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let gone = || StoreError::Batch("the store is closed".to_string());
        self.tx.send((ask, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// The call of `script` by its hash, with `keys` keys to follow and then its
/// arguments. Written into the command directly: a `ScriptInvocation` copies
/// every key and argument once more, and a batch holds hundreds.
fn evalsha(script: &Script, keys: usize) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys);
    cmd
}

/// Runs an [`evalsha`] command, loading the script first when the server
/// does not know it (it restarted, or never saw it).
async fn run<T: redis::FromRedisValue>(conn: &mut Conn, script: &Script, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.prepare_invoke().load_async(conn).await?;
            cmd.query_async(conn).await
        }
        answer => answer,
    }
}

/// Runs one batch of claims.
async fn claim_batch(mut conn: Conn, script: &Script, asks: Vec<ClaimAsk>) -> Result<Vec<Claimed>, StoreError> {
    let mut cmd = evalsha(script, asks.len() * 3);
    for ask in &asks {
        // A key not read is given as the dedupe key, so every key of the
        // call is in its slot on a cluster.
        let list = ask.list.as_ref().map_or(&ask.key, |(list, _)| list);
        cmd.arg(&ask.key).arg(ask.prefs.as_deref().unwrap_or(&ask.key)).arg(list);
    }
    for ask in &asks {
        let address = ask.list.as_ref().map_or("", |(_, a)| a.as_str());
        cmd.arg(&ask.value).arg(ask.lives.as_millis() as u64).arg(u8::from(ask.prefs.is_some())).arg(address);
    }
    cmd.arg(CLAIM_MARK).arg(CLAIM_MEMORY.as_millis() as u64);
    let answers: Vec<redis::Value> = run(&mut conn, script, &cmd).await?;
    let mut answers = answers.into_iter();
    let mut claims = Vec::with_capacity(asks.len());
    while let (Some(code), Some(value), Some(prefs), Some(listed)) =
        (answers.next(), answers.next(), answers.next(), answers.next())
    {
        let unreadable = |e: redis::ParsingError| StoreError::Batch(format!("a claim's answer: {e}"));
        let code: i64 = redis::from_redis_value(code).map_err(unreadable)?;
        let value: String = redis::from_redis_value(value).map_err(unreadable)?;
        let prefs: String = redis::from_redis_value(prefs).map_err(unreadable)?;
        let listed: String = redis::from_redis_value(listed).map_err(unreadable)?;
        let claim = match code {
            1 => Claim::Acquired,
            2 => Claim::Held,
            3 => Claim::TakenOver { pinned: (!value.is_empty()).then_some(value) },
            _ => Claim::Done(value),
        };
        let suppressed = (!listed.is_empty()).then(|| entry(&listed)).flatten();
        claims.push(Claimed { claim, prefs: (!prefs.is_empty()).then_some(prefs), suppressed });
    }
    Ok(claims)
}

/// A ttl in whole ms, at least one (Redis refuses `PX 0`).
fn ttl_ms(ttl: Duration) -> u64 {
    ttl.as_millis().max(1) as u64
}

/// Runs one batch of compare-and-sets.
async fn swap_batch(mut conn: Conn, script: &Script, asks: Vec<SwapAsk>) -> Result<Vec<bool>, StoreError> {
    let mut cmd = evalsha(script, asks.len());
    for ask in &asks {
        cmd.arg(&ask.key);
    }
    for ask in &asks {
        cmd.arg(&ask.expected).arg(ask.new.as_deref().unwrap_or_default()).arg(ttl_ms(ask.ttl));
    }
    let done: Vec<i64> = run(&mut conn, script, &cmd).await?;
    Ok(done.into_iter().map(|d| d == 1).collect())
}

impl RedisStore {
    /// Adds events that share a slot to their digests, in one script call
    /// (loaded and sent again if the server lost the script).
    async fn digest_group(&self, group: Vec<(String, &DigestAdd)>) -> Result<Vec<Added>, StoreError> {
        let mut call = evalsha(&self.digest_add, group.len() * 2);
        for (open, add) in &group {
            call.arg(self.keys.digest(&add.user, &add.name)).arg(open);
        }
        for (_, add) in &group {
            call.arg(&add.item).arg(millis(add.now)).arg(millis(add.closes)).arg(add.max_items);
            call.arg(digest::REMEMBER.as_millis() as u64).arg(&add.name).arg(digest::KEEP_TAKEN.as_millis() as u64);
            call.arg(&add.event);
        }
        let mut conn = self.conn.clone();
        let flat: Vec<i64> = run(&mut conn, &self.digest_add, &call).await?;
        if flat.len() != group.len() * 8 {
            return Err(StoreError::Batch(format!("{} numbers answered {} digest adds", flat.len(), group.len())));
        }
        let answers = flat.chunks(8).map(|a| (a[0] as u64, a[1], a[2], a[3], a[4] as u32, a[5], a[6], a[7]));
        let added =
            group.iter().zip(answers).map(|((_, add), (n, closes, opened, taken, count, full, at, fresh))| Added {
                window: n,
                closes: DateTime::from_timestamp_millis(closes).unwrap_or(add.closes),
                opened: opened == 1,
                full: full == 1,
                taken: taken == 1,
                count,
                opened_at: DateTime::from_timestamp_millis(at).unwrap_or_default(),
                fresh: fresh == 1,
            });
        Ok(added.collect())
    }

    /// Removes a member from `set`: the claimed set (published), or the
    /// schedule (taken back by intake: whichever member holds its notification).
    async fn remove_from(&self, set: String, lane: &str, member: &str) -> Result<(), StoreError> {
        let taken_back = set == self.keys.deferred();
        let mut conn = self.conn.clone();
        let mut call = self.remove.key(set);
        call.key(self.keys.lanes()).key(self.keys.deferred_ids()).arg(member).arg(lane).arg(u8::from(taken_back));
        let _: i64 = call.invoke_async(&mut conn).await?;
        Ok(())
    }

    /// Admits asks whose users share a slot: reads their caps (those `read`
    /// lacks), admits each ask in order as [`caps::State::admit`] says, and
    /// writes every changed state back in one script call, which replaces
    /// only what no other process replaced since; those are read and
    /// admitted again. A state no ask changed, as `read` had it, is checked
    /// in the same call (still that version), so that no answer stands on a
    /// value read long before. What was read (by GET here) and written is
    /// added to `seen`.
    async fn admit_group(
        &self,
        group: Vec<(String, &CapAsk)>,
        read: &CapsRead,
        seen: &std::sync::Mutex<HashMap<String, CapsSeen>>,
    ) -> Result<Vec<Admission>, StoreError> {
        // Each user's key and its asks' places, in order.
        let mut users: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut place_of: HashMap<&str, usize> = HashMap::new();
        for (i, (key, _)) in group.iter().enumerate() {
            let u = *place_of.entry(key.as_str()).or_insert_with(|| {
                users.push((key.as_str(), Vec::new()));
                users.len() - 1
            });
            users[u].1.push(i);
        }
        let mut answers: Vec<Option<Admission>> = vec![None; group.len()];
        let mut todo: Vec<usize> = (0..users.len()).collect();
        let mut conn = self.conn.clone();
        // Those read ahead are used as read on the first pass.
        let mut known: Vec<Option<&Option<String>>> =
            users.iter().map(|(_, places)| read.get(&group[places[0]].1.user)).collect();
        for pass in 0u32.. {
            let mut get = redis::pipe();
            let unknown: Vec<usize> = todo.iter().copied().filter(|&u| known[u].is_none()).collect();
            for &u in &unknown {
                get.cmd("GET").arg(users[u].0);
            }
            let mut fetched: HashMap<usize, Option<String>> = match unknown.is_empty() {
                true => HashMap::new(),
                false => unknown.into_iter().zip(get.query_async::<Vec<Option<String>>>(&mut conn).await?).collect(),
            };
            let read_now: HashSet<usize> = fetched.keys().copied().collect();
            let values: Vec<Option<String>> =
                todo.iter().map(|u| fetched.remove(u).unwrap_or_else(|| known[*u].cloned().flatten())).collect();
            // What changed is written. Answers from a state no ask changed
            // (every one admitted or dropped before) stand as read when it
            // was read just now; one read ahead is checked first.
            let mut sent = Vec::with_capacity(todo.len());
            let mut args = Vec::with_capacity(todo.len() * 3);
            {
                let mut seen_now = seen.lock().unwrap_or_else(|e| e.into_inner());
                for (&u, value) in todo.iter().zip(&values) {
                    let (key, places) = &users[u];
                    let (version, read, mut state) = caps_state(key, value.as_deref());
                    for &i in places {
                        answers[i] = Some(state.admit(group[i].1));
                    }
                    let body = state.encode();
                    if body == read {
                        if read_now.contains(&u) {
                            let user = group[places[0]].1.user.clone();
                            seen_now.insert(user, CapsSeen { value: value.clone(), replaced: None });
                        } else {
                            sent.push(u);
                            args.extend([version.to_string(), "=".into(), "0".into()]);
                        }
                        continue;
                    }
                    sent.push(u);
                    args.push(version.to_string());
                    match state.lasts(group[places[0]].1.now) {
                        Some(ms) => args.extend([format!("{:016x}{body}", rand::random::<u64>()), ms.to_string()]),
                        None => args.extend([String::new(), "1".into()]),
                    }
                }
            }
            todo = match sent.is_empty() {
                true => sent,
                false => {
                    let mut write = evalsha(&self.admit, sent.len());
                    write.arg(sent.iter().map(|&u| users[u].0).collect::<Vec<_>>()).arg(&args);
                    let done: Vec<i64> = run(&mut conn, &self.admit, &write).await?;
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    let mut again = Vec::new();
                    for (k, (u, done)) in sent.into_iter().zip(done).enumerate() {
                        let user = group[users[u].1[0]].1.user.clone();
                        let (replaced, value) = (&args[3 * k], &args[3 * k + 1]);
                        if done == 0 {
                            // Replaced since: read on the next pass.
                            known[u] = None;
                            again.push(u);
                        } else if value != "=" {
                            let value = Some(value.clone()).filter(|v| !v.is_empty());
                            seen.insert(user, CapsSeen { value, replaced: Some(replaced.clone()) });
                        }
                    }
                    again
                }
            };
            if todo.is_empty() {
                break;
            }
            // Replaced by another process since read: read again, and two
            // processes that keep replacing the same users fall out of step.
            tokio::time::sleep(Duration::from_micros(rand::random_range(100..2_000) << pass.min(5))).await;
        }
        Ok(answers.into_iter().map(|a| a.expect("every ask answered")).collect())
    }

    /// Claims `id`, reading `user`'s preferences and the list entry of
    /// `address` in the same script when the claim is had.
    async fn claim_and_read(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
        user: Option<&str>,
        address: Option<&str>,
    ) -> Result<Claimed, StoreError> {
        // On a cluster the preferences and the list live in other slots
        // than the dedupe value: they are read after the claim is had.
        let cluster = self.conn.is_cluster();
        let ask = ClaimAsk {
            key: self.keys.dedupe(id),
            prefs: user.filter(|_| !cluster).map(|u| self.keys.prefs(u)),
            list: address.filter(|_| !cluster).map(|a| (self.keys.suppressions(), a.to_string())),
            value: claim_value(owner),
            lives: lease + CLAIM_MEMORY,
        };
        let mut claimed = self.claims.ask(ask).await?;
        if cluster && matches!(claimed.claim, Claim::Acquired | Claim::TakenOver { .. }) {
            if let Some(user) = user {
                claimed.prefs = self.mget(&[self.keys.prefs(user)]).await?.pop().flatten();
            }
            if let Some(address) = address {
                claimed.suppressed = self.suppression(address).await?;
            }
        }
        Ok(claimed)
    }

    /// Connects (and reconnects on its own later) to `url`: one Redis, or a
    /// Redis Cluster (see [`Conn::open`]).
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, StoreError> {
        let conn = Conn::open(url).await?;
        let cluster = conn.is_cluster();
        let (c, claim) = (conn.clone(), Arc::new(Script::new(CLAIM)));
        let claims = Batched::start(move |asks| {
            let (c, claim) = (c.clone(), claim.clone());
            async move { by_slot(cluster, asks, |a: &ClaimAsk| &a.key, |asks| claim_batch(c.clone(), &claim, asks)).await }
        });
        let (c, swap) = (conn.clone(), Arc::new(Script::new(SWAP)));
        let swaps = Batched::start(move |asks| {
            let (c, swap) = (c.clone(), swap.clone());
            async move { by_slot(cluster, asks, |a: &SwapAsk| &a.key, |asks| swap_batch(c.clone(), &swap, asks)).await }
        });
        Ok(RedisStore {
            conn,
            keys: if cluster { Keys::clustered(key_prefix) } else { Keys::new(key_prefix) },
            claims,
            swaps,
            swap_tail: Script::new(SWAP_TAIL),
            defer: Script::new(DEFER),
            claim_due: Script::new(CLAIM_DUE),
            remove: Script::new(REMOVE),
            lease: Script::new(LEASE),
            soft_bounce: Script::new(SOFT_BOUNCE),
            sighting: Script::new(SIGHTING),
            sighting_done: Script::new(SIGHTING_DONE),
            swap_value: Script::new(SWAP_VALUE),
            get_or_set: Script::new(GET_OR_SET),
            list: Script::new(LIST),
            lift: Script::new(LIFT),
            admit: Script::new(ADMIT),
            digest_add: Script::new(DIGEST_ADD),
            digest_take: Script::new(DIGEST_TAKE),
            replicated: None,
        })
    }

    /// Makes each deferral count only once `replicas` replicas of its
    /// primary hold it (see [`Replicated`]); 0 leaves deferrals as they are.
    pub async fn replicate_deferrals(mut self, url: &str, replicas: u32, wait: Duration) -> Result<Self, StoreError> {
        if replicas > 0 {
            // WAIT answers within `wait`: the connection waits longer than that for any answer.
            let conn = Conn::open_answering_within(url, Some(wait + Duration::from_secs(2))).await?;
            self.replicated = Some(Replicated { conn, replicas, wait });
        }
        Ok(self)
    }

    /// [`Store::defer`] when deferrals must reach replicas: the script, a
    /// write that always replicates, and `WAIT`, as one pipeline on one
    /// connection (on a cluster, the one to the primary of the schedule's
    /// slot). `WAIT` waits for the writes its connection made, and the
    /// script writes nothing when the member is held already (a retry, or
    /// another process that held it first): the counter makes every call a
    /// write, so `WAIT` covers all that came before it on the primary, the
    /// member included, however the server counts a new connection's writes.
    async fn defer_replicated(
        &self,
        r: &Replicated,
        lane: &str,
        member: &str,
        due: DateTime<Utc>,
        exact: bool,
    ) -> Result<(i64, u8), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL").arg(DEFER).arg(4).arg(self.keys.deferred()).arg(self.keys.lanes());
        pipe.arg(self.keys.deferred_claimed()).arg(self.keys.deferred_ids()).arg(member).arg(millis(due)).arg(lane);
        pipe.arg(u8::from(exact));
        pipe.cmd("INCR").arg(self.keys.deferred() + ":replicated").ignore();
        pipe.cmd("WAIT").arg(r.replicas).arg(r.wait.as_millis().max(1) as u64);
        let (released, on): ((i64, u8), u32) = match r.conn.clone() {
            Conn::Single(mut c) => pipe.query_async(&mut c).await?,
            Conn::Cluster(mut c) => {
                use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
                let primary = Route::with_key(self.keys.deferred(), SlotAddr::Master);
                let answers = c.route_pipeline(pipe, 0, 3, SingleNodeRoutingInfo::SpecificNode(primary)).await?;
                let unreadable = |e: redis::ParsingError| StoreError::Batch(format!("a deferral's answer: {e}"));
                match answers.as_slice() {
                    [released, _, on] => (
                        redis::from_redis_value(released.clone()).map_err(unreadable)?,
                        redis::from_redis_value(on.clone()).map_err(unreadable)?,
                    ),
                    _ => return Err(StoreError::Batch(format!("{} answers to a deferral", answers.len()))),
                }
            }
        };
        if on < r.replicas {
            return Err(StoreError::NotReplicated { on, wanted: r.replicas });
        }
        Ok(released)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn prefs_many(&self, users: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let keys: Vec<String> = users.iter().map(|u| self.keys.prefs(u)).collect();
        self.mget(&keys).await
    }

    async fn set_prefs(&self, user: &str, json: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = redis::cmd("SET").arg(self.keys.prefs(user)).arg(json).query_async(&mut conn).await?;
        Ok(())
    }

    async fn claim(&self, id: &str, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
        Ok(self.claim_and_read(id, owner, lease, None, None).await?.claim)
    }

    async fn claim_for_delivery(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
        user: &str,
        address: Option<&str>,
    ) -> Result<Claimed, StoreError> {
        self.claim_and_read(id, owner, lease, Some(user), address).await
    }

    async fn swap(&self, id: &str, expected: &str, new: Option<&str>, ttl: Duration) -> Result<bool, StoreError> {
        let ask =
            SwapAsk { key: self.keys.dedupe(id), expected: expected.to_string(), new: new.map(str::to_string), ttl };
        self.swaps.ask(ask).await
    }

    async fn swap_tails(&self, swaps: &[(String, String, String)]) -> Result<(), StoreError> {
        let swaps: Vec<(String, &str, &str)> =
            swaps.iter().map(|(id, tail, new)| (self.keys.dedupe(id), tail.as_str(), new.as_str())).collect();
        if !swaps.is_empty() {
            // Each swap is idempotent: a batch any of whose groups failed is sent again whole.
            for done in by_slot(self.conn.is_cluster(), swaps, |s| &s.0, |swaps| self.swap_tail_batch(swaps)).await {
                done?;
            }
        }
        Ok(())
    }

    async fn dedupe_value(&self, id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET").arg(self.keys.dedupe(id)).query_async(&mut conn).await?)
    }

    async fn hydrate(&self, users: &[String], lanes: &[String]) -> Result<Hydrated, StoreError> {
        // Two commands at once (one round trip on a multiplexed connection;
        // on a cluster the preferences are spread over every node).
        let prefs = self.prefs_many(users);
        let holds = async {
            if lanes.is_empty() {
                return Ok(Vec::new());
            }
            let mut conn = self.conn.clone();
            let holds: Vec<Option<String>> =
                redis::cmd("HMGET").arg(self.keys.lanes()).arg(lanes).query_async(&mut conn).await?;
            Ok::<_, StoreError>(holds.into_iter().map(|v| v.and_then(|v| held_until(&v))).collect())
        };
        let (prefs, holds) = try_join(prefs, holds).await?;
        Ok(Hydrated { prefs, holds })
    }

    async fn place(&self, lane: &str, member: &str, due: DateTime<Utc>, exact: bool) -> Result<Placed, StoreError> {
        let placed = |(at, joined): (i64, u8)| Placed {
            at: DateTime::from_timestamp_millis(at).unwrap_or(due),
            joined: joined == 1,
        };
        if let Some(r) = &self.replicated {
            return Ok(placed(self.defer_replicated(r, lane, member, due, exact).await?));
        }
        let mut conn = self.conn.clone();
        let released: (i64, u8) = self
            .defer
            .key(self.keys.deferred())
            .key(self.keys.lanes())
            .key(self.keys.deferred_claimed())
            .key(self.keys.deferred_ids())
            .arg(member)
            .arg(millis(due))
            .arg(lane)
            .arg(u8::from(exact))
            .invoke_async(&mut conn)
            .await?;
        Ok(placed(released))
    }

    async fn claim_due(&self, now: DateTime<Utc>, limit: usize, lease: Duration) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let until = millis(now) + lease.as_millis() as i64;
        Ok(self
            .claim_due
            .key(self.keys.deferred())
            .key(self.keys.deferred_claimed())
            .arg(score(millis(now), 999))
            .arg(limit.min(MAX_CLAIM))
            .arg(score(until, 0))
            .arg(score(millis(now), 999))
            .invoke_async(&mut conn)
            .await?)
    }

    async fn undefer(&self, lane: &str, member: &str) -> Result<(), StoreError> {
        self.remove_from(self.keys.deferred(), lane, member).await
    }

    async fn remove_deferred(&self, lane: &str, member: &str) -> Result<(), StoreError> {
        self.remove_from(self.keys.deferred_claimed(), lane, member).await
    }

    async fn admit_from(
        &self,
        asks: &[CapAsk],
        read: &CapsRead,
    ) -> Result<(Vec<Admission>, HashMap<String, CapsSeen>), StoreError> {
        if asks.is_empty() {
            return Ok((Vec::new(), HashMap::new()));
        }
        // One read and one script call per slot (a user's caps are one key).
        let keyed: Vec<(String, &CapAsk)> = asks.iter().map(|a| (self.keys.caps(&a.user), a)).collect();
        let seen = std::sync::Mutex::new(HashMap::new());
        let answers =
            by_slot(self.conn.is_cluster(), keyed, |(key, _)| key, |group| self.admit_group(group, read, &seen)).await;
        let answers = answers.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok((answers, seen.into_inner().unwrap_or_else(|e| e.into_inner())))
    }

    async fn caps_values(&self, users: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let keys: Vec<String> = users.iter().map(|u| self.keys.caps(u)).collect();
        self.mget(&keys).await
    }

    async fn digest_add(&self, adds: &[DigestAdd]) -> Result<Vec<Added>, StoreError> {
        if adds.is_empty() {
            return Ok(Vec::new());
        }
        // One script call per slot (each user's keys share one).
        let keyed: Vec<(String, &DigestAdd)> = adds.iter().map(|a| (self.keys.digests_open(&a.user), a)).collect();
        let answers = by_slot(self.conn.is_cluster(), keyed, |(key, _)| key, |group| self.digest_group(group)).await;
        answers.into_iter().collect()
    }

    async fn digest_take(
        &self,
        user: &str,
        name: &str,
        window: u64,
        opened: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Taken>, StoreError> {
        let mut conn = self.conn.clone();
        let out: Vec<String> = self
            .digest_take
            .key(self.keys.digest(user, name))
            .key(self.keys.digests_open(user))
            .arg(window)
            .arg(name)
            .arg(millis(now))
            .arg(millis(opened))
            .invoke_async(&mut conn)
            .await?;
        let mut out = out.into_iter();
        let (Some(opened), Some(closed)) = (out.next(), out.next()) else { return Ok(None) };
        let at = |ms: String| ms.parse().ok().and_then(DateTime::from_timestamp_millis).unwrap_or_default();
        Ok(Some(Taken { opened: at(opened), closed: at(closed), items: out.collect() }))
    }

    async fn open_digests(&self, user: &str) -> Result<Vec<OpenDigest>, StoreError> {
        let mut conn = self.conn.clone();
        let open: Vec<(String, String)> =
            redis::cmd("HGETALL").arg(self.keys.digests_open(user)).query_async(&mut conn).await?;
        if open.is_empty() {
            return Ok(Vec::new());
        }
        // Each one's state, from its digest (the index names the window).
        let mut pipe = redis::pipe();
        for (name, _) in &open {
            pipe.hget(self.keys.digest(user, name), "w");
        }
        let states: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        let shown = open.into_iter().zip(states).filter_map(|((name, window), state)| {
            digest::open_of(name, &state?).filter(|o| o.window.to_string() == window)
        });
        let mut shown: Vec<OpenDigest> = shown.collect();
        shown.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(shown)
    }

    async fn cap_counts(
        &self,
        user: &str,
        caps: &[(String, Duration)],
        channels: &[Channel],
        now: DateTime<Utc>,
    ) -> Result<Vec<CapCount>, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.caps(user);
        let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        let (_, _, state) = caps_state(&key, value.as_deref());
        let mut out = Vec::new();
        for (cap, per) in caps {
            for &channel in channels {
                let (in_window, ahead) = state.count(cap, *per, channel, now);
                out.push(CapCount { cap: cap.clone(), channel, in_window, ahead });
            }
        }
        Ok(out)
    }

    async fn open_breaker(&self, provider: &str, open_for: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(self.keys.breaker(provider))
            .arg(1)
            .arg("PX")
            .arg(ttl_ms(open_for))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn open_breakers(&self, providers: &[String]) -> Result<Vec<bool>, StoreError> {
        // One EXISTS each, all at once: the keys may be on several nodes.
        try_join_all(providers.iter().map(|p| async move {
            let mut conn = self.conn.clone();
            let found: i64 = redis::cmd("EXISTS").arg(self.keys.breaker(p)).query_async(&mut conn).await?;
            Ok::<_, StoreError>(found > 0)
        }))
        .await
    }

    async fn lease_calls(
        &self,
        provider: &str,
        per_second: f64,
        burst: u32,
        want: u32,
    ) -> Result<(u32, Duration), StoreError> {
        let mut conn = self.conn.clone();
        let (granted, wait_ms): (u32, u64) = self
            .lease
            .key(self.keys.rate(provider))
            .key(self.keys.slowed(provider))
            .arg((1e6 / per_second).round().max(1.0) as u64)
            .arg(burst.max(1))
            .arg(want.max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok((granted, Duration::from_millis(wait_ms)))
    }

    async fn slow_down(&self, provider: &str, period: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(self.keys.slowed(provider))
            .arg(1)
            .arg("PX")
            .arg(ttl_ms(period))
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

    async fn deferred_due(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let (due, claimed): (u64, u64) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(self.keys.deferred())
            .arg("-inf")
            .arg(score(millis(now), 999))
            .cmd("ZCARD")
            .arg(self.keys.deferred_claimed())
            .query_async(&mut conn)
            .await?;
        Ok(due + claimed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let Conn::Cluster(cluster) = &mut conn else {
            let () = redis::cmd("PING").query_async(&mut conn).await?;
            return Ok(());
        };
        // Every primary answers, and each says every slot is served (a node
        // gone is seen by the others once the cluster's node timeout passed).
        use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
        let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let mut info = redis::cmd("CLUSTER");
        info.arg("INFO");
        let answers = cluster.route_command(info, all).await?;
        let answers: HashMap<String, String> =
            redis::from_redis_value(answers).map_err(|e| StoreError::Cluster(format!("CLUSTER INFO: {e}")))?;
        match answers.iter().find(|(_, info)| !info.contains("cluster_state:ok")) {
            Some((node, _)) => Err(StoreError::Cluster(format!("node {node}: the cluster is not ok"))),
            None => Ok(()),
        }
    }

    async fn swap_prefs(&self, user: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let done: i64 = self.swap_value.key(self.keys.prefs(user)).arg(old).arg(new).invoke_async(&mut conn).await?;
        Ok(done == 1)
    }

    async fn webhook_keys(&self, user: &str, fresh: &str) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        Ok(self.get_or_set.key(self.keys.webhook_keys(user)).arg(fresh).invoke_async(&mut conn).await?)
    }

    async fn swap_webhook_keys(&self, user: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let done: i64 =
            self.swap_value.key(self.keys.webhook_keys(user)).arg(old).arg(new).invoke_async(&mut conn).await?;
        Ok(done == 1)
    }

    async fn suppress(&self, e: &Suppression) -> Result<bool, StoreError> {
        let json = serde_json::to_string(e).expect("entries serialize to JSON");
        let mut conn = self.conn.clone();
        let operators = if e.cause == Cause::Manual { "1" } else { "0" };
        let written: i64 = self
            .list
            .key(self.keys.suppressions())
            .arg(&e.address)
            .arg(json)
            .arg(operators)
            .invoke_async(&mut conn)
            .await?;
        Ok(written == 1)
    }

    async fn lift(&self, address: &str, cause: Cause, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        // Entries' times as the script reads them: to the second, then nine digits of fraction.
        let at = format!("{}{:09}", at.format("%Y-%m-%dT%H:%M:%S"), at.timestamp_subsec_nanos());
        let lifted: i64 = self
            .lift
            .key(self.keys.suppressions())
            .arg(address)
            .arg(cause.as_str())
            .arg(at)
            .invoke_async(&mut conn)
            .await?;
        Ok(lifted == 1)
    }

    async fn unsuppress(&self, address: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let gone: i64 = redis::cmd("HDEL").arg(self.keys.suppressions()).arg(address).query_async(&mut conn).await?;
        Ok(gone > 0)
    }

    async fn suppression(&self, address: &str) -> Result<Option<Suppression>, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> =
            redis::cmd("HGET").arg(self.keys.suppressions()).arg(address).query_async(&mut conn).await?;
        Ok(json.and_then(|j| entry(&j)))
    }

    async fn listed(&self, addresses: &[String]) -> Result<Vec<Option<Suppression>>, StoreError> {
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let json: Vec<Option<String>> =
            redis::cmd("HMGET").arg(self.keys.suppressions()).arg(addresses).query_async(&mut conn).await?;
        Ok(json.into_iter().map(|j| j.and_then(|j| entry(&j))).collect())
    }

    async fn suppressions(&self, cursor: u64) -> Result<(u64, Vec<Suppression>), StoreError> {
        let mut conn = self.conn.clone();
        let (next, pairs): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
            .arg(self.keys.suppressions())
            .arg(cursor)
            .arg("COUNT")
            .arg(100)
            .query_async(&mut conn)
            .await?;
        Ok((next, pairs.iter().filter_map(|(_, json)| entry(json)).collect()))
    }

    async fn soft_bounce(&self, address: &str, by: &str, window: Duration) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.soft_bounces(address);
        Ok(self.soft_bounce.key(key).arg(by).arg(ttl_ms(window)).invoke_async(&mut conn).await?)
    }

    async fn first_sighting(&self, key: &str, by: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let first: i64 =
            self.sighting.key(self.keys.seen(key)).arg(by).arg(ttl_ms(ttl)).invoke_async(&mut conn).await?;
        Ok(first == 1)
    }

    async fn sighting_done(&self, key: &str, by: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self.sighting_done.key(self.keys.seen(key)).arg(by).invoke_async(&mut conn).await?;
        Ok(())
    }
}

impl RedisStore {
    /// Runs one [`SWAP_TAIL`] call for `(key, tail, new tail)` each.
    async fn swap_tail_batch(&self, swaps: Vec<(String, &str, &str)>) -> Result<Vec<()>, StoreError> {
        let mut cmd = evalsha(&self.swap_tail, swaps.len());
        for (key, ..) in &swaps {
            cmd.arg(key);
        }
        for (_, tail, new) in &swaps {
            cmd.arg(tail).arg(new);
        }
        let mut conn = self.conn.clone();
        let _: i64 = run(&mut conn, &self.swap_tail, &cmd).await?;
        Ok(vec![(); swaps.len()])
    }

    /// Values of `keys`, in order (MGET; on a cluster, one per node).
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let mut conn = self.conn.clone();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // MGET even for one key: it answers nil for a key of another type,
        // where GET fails with WRONGTYPE, which a caller would retry for ever.
        Ok(redis::cmd("MGET").arg(keys).query_async(&mut conn).await?)
    }
}

/// The release time of a lane's last member, if it holds any (`due,pending,seq`).
fn held_until(value: &str) -> Option<DateTime<Utc>> {
    let mut parts = value.split(',');
    let due: i64 = parts.next()?.parse().ok()?;
    let pending: i64 = parts.next()?.parse().ok()?;
    (pending > 0).then(|| DateTime::from_timestamp_millis(due)).flatten()
}
