//! Frequency caps: how many notifications of some categories one user gets
//! on one channel in any window of a given length.
//!
//! Each (user, cap, channel) keeps the ids of the notifications it admitted
//! (as [`short`] ids), each scored by the instant it was admitted for; a
//! user's windows and drops are one [`State`], which both stores keep whole
//! (Redis as one value in [`State::encode`]'s form, replaced only if no
//! other process replaced it since it was read).
//! Admitting is one atomic step over every cap a notification falls under
//! ([`Store::admit`], and [`Store::admit_from`] from values read ahead,
//! each checked to be still the one stored):
//!
//! - A notification already admitted is answered with the instant it was
//!   admitted for, and counted no further: a redelivered event, a replayed
//!   letter, a second intake process reading the same record all get the
//!   first answer. One dropped is remembered as dropped, as long as the
//!   longest cap's window.
//! - Otherwise it is admitted at the first instant `t`, at or after the one
//!   asked for, where each cap's window `(t - per, t]` holds fewer than
//!   `max`, and no earlier than the latest instant the cap already
//!   admitted one for (a user's capped messages keep their order).
//! - Over the cap, a category that drops does not wait: the notification is
//!   dropped, counted nowhere.
//!
//! With `again` the instant asked for is a floor: one admitted earlier
//! (intake learned since that quiet hours, a send window or a message
//! ahead of it hold it later) is taken out and admitted again from there.
//! Taking one out only frees room, so no other admission is undone by it.
//!
//! [`Store::admit`]: crate::store::Store::admit
//! [`Store::admit_from`]: crate::store::Store::admit_from

use crate::Channel;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;

/// One notification to admit under the caps it falls under.
#[derive(Debug, Clone)]
pub struct CapAsk {
    pub user: String,
    pub channel: Channel,
    /// The notification id: what is counted.
    pub id: String,
    /// `(name, max, per)` of each cap, in a fixed order (by name).
    pub caps: Vec<(String, u32, Duration)>,
    /// The earliest instant it may go.
    pub at: DateTime<Utc>,
    /// Now: what has left every window is forgotten.
    pub now: DateTime<Utc>,
    /// Over the cap it is dropped rather than deferred.
    pub drop: bool,
    /// An admission before `at` is moved to `at` or later (see the module).
    pub again: bool,
}

/// What became of a [`CapAsk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// It goes at this instant (the one asked for, when no cap held it).
    /// `by`: the cap that held it later, if one did.
    Admitted { at: DateTime<Utc>, by: Option<String> },
    /// Admitted before, for this instant (by an earlier read of its event):
    /// the first answer stands, and counted once.
    Before { at: DateTime<Utc> },
    /// Over the cap `by` (`None`: dropped before, when first routed).
    Dropped { by: Option<String> },
}

/// The admission step on one user's windows, as both stores run it
/// (through [`State::admit`]).
/// `windows[i]` holds the scores (ms) of cap `i`'s window in order; `dropped`
/// the ids dropped and when.
pub fn admit(ask: &CapAsk, windows: &mut [Vec<(i64, u64)>], dropped: &mut Vec<(i64, u64)>) -> (i64, i64, usize) {
    let (t0, now) = (ask.at.timestamp_millis(), ask.now.timestamp_millis());
    let id = short(&ask.id);
    // Only a category that drops drops (and a notification's category never changes).
    if ask.drop {
        let longest = ask.caps.iter().map(|c| c.2.as_millis() as i64).max().unwrap_or(0);
        dropped.retain(|(at, _)| *at > now - longest);
        if dropped.iter().any(|(_, d)| *d == id) {
            return (-1, 0, 0);
        }
    }
    if let Some(had) = windows.first().and_then(|w| w.iter().find(|(_, a)| *a == id)).map(|(s, _)| *s) {
        if !ask.again || had >= t0 {
            return (2, had, 0);
        }
        for w in windows.iter_mut() {
            w.retain(|(_, a)| *a != id);
        }
    }
    let (mut t, mut by) = (t0, 0);
    for (i, (w, (_, max, per))) in windows.iter_mut().zip(&ask.caps).enumerate() {
        let per = per.as_millis() as i64;
        w.retain(|(s, _)| *s > now - per);
        let Some(&(newest, _)) = w.last() else { continue };
        let mut need = newest;
        if w.len() >= *max as usize {
            need = need.max(w[w.len() - *max as usize].0 + per);
        }
        if need > t {
            (t, by) = (need, i + 1);
        }
    }
    if ask.drop && t > t0 {
        dropped.push((now, id));
        return (-1, t, by);
    }
    for w in windows.iter_mut() {
        // Kept in score order: `t` is at least every score there.
        w.push((t, id));
    }
    (1, t, by)
}

/// A notification id as the caps keep it: 64 bits of it. A notification id
/// is 128 bits of a SHA-256 in 32 hex digits
/// ([`crate::notification::notification_id`]), so its first 64 are taken as
/// they are; any other id is hashed. Two of one user's notifications within
/// a window sharing 64 bits is as likely as a guess of a random 64-bit
/// number: the caps would count the second as the first, once.
pub fn short(id: &str) -> u64 {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Ok(n) = u64::from_str_radix(&id[..16], 16) {
            return n;
        }
    }
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(id.as_bytes());
    u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

/// One user's caps: each (cap, channel)'s window and the notifications
/// dropped. Redis holds it as [`State::encode`] writes it: one value is read
/// and written per user and batch, so it is kept small and quick to read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct State {
    /// `<cap>:<channel>` -> the window.
    pub windows: BTreeMap<String, Window>,
    /// (when ms, [`short`] notification id) of each drop, oldest first.
    pub dropped: Vec<(i64, u64)>,
    /// How long a drop is remembered (ms): the longest window it was decided under.
    pub keep_dropped: i64,
}

/// What one cap admitted on one channel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Window {
    /// The cap's window (ms), so a window outlives no longer than it must.
    pub per: i64,
    /// (instant ms, [`short`] notification id), in order of instant.
    pub admitted: Vec<(i64, u64)>,
}

/// The caps as JSON, as they were kept before [`State::encode`]'s form.
#[derive(serde::Deserialize)]
struct Json {
    #[serde(default)]
    w: BTreeMap<String, JsonWindow>,
    #[serde(default)]
    d: Vec<(i64, String)>,
    #[serde(default)]
    k: i64,
}

#[derive(serde::Deserialize)]
struct JsonWindow {
    p: i64,
    a: Vec<(i64, String)>,
}

fn from_json(value: &str) -> Result<State, String> {
    let json: Json = serde_json::from_str(value).map_err(|e| e.to_string())?;
    let shorts = |v: Vec<(i64, String)>| v.into_iter().map(|(ms, id)| (ms, short(&id))).collect();
    let windows = json.w.into_iter().map(|(k, w)| (k, Window { per: w.p, admitted: shorts(w.a) })).collect();
    Ok(State { windows, dropped: shorts(json.d), keep_dropped: json.k })
}

/// The first word of [`State::encode`]'s form.
const FORM: &str = "c1";

/// Appends `entries` as `<ms>.<id>,...`: each instant as its difference from
/// the one before (most are 0 or small), each id in hex.
fn put_entries(out: &mut String, entries: &[(i64, u64)]) {
    use std::fmt::Write as _;
    let mut last = 0;
    for (i, (ms, id)) in entries.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        // Wrapped, not checked: only a corrupt value wraps, and reading it back refuses it.
        let _ = write!(out, "{sep}{}.{id:x}", ms.wrapping_sub(last));
        last = *ms;
    }
}

fn entries(s: &str) -> Result<Vec<(i64, u64)>, String> {
    let mut last = 0i64;
    let parse = |e: &str| -> Option<(i64, u64)> {
        let (ms, id) = e.split_once('.')?;
        Some((ms.parse().ok()?, u64::from_str_radix(id, 16).ok()?))
    };
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    for e in s.split(',') {
        let (delta, id) = parse(e).ok_or_else(|| format!("entry `{e}` is not `<ms>.<hex id>`"))?;
        last = last.checked_add(delta).ok_or_else(|| format!("entry `{e}` is out of range"))?;
        out.push((last, id));
    }
    Ok(out)
}

impl State {
    /// The state as Redis holds it:
    /// `c1|<keep ms>|<drops>|<cap>:<channel>:<per ms>:<admissions>|...`, each
    /// list of entries as `<ms>.<hex id>,...` with each instant written as
    /// its difference from the one before. (A cap's name has no `:`, `|` or
    /// `,`: the configuration refuses one.) A hand-made form rather than
    /// JSON: a user's value is parsed and written again for every batch that
    /// counts one of theirs, and this one is a third of JSON's size and
    /// allocates nothing per entry.
    pub fn encode(&self) -> String {
        let size = self.dropped.len() + self.windows.values().map(|w| w.admitted.len()).sum::<usize>();
        let mut out = String::with_capacity(24 + size * 20 + self.windows.len() * 24);
        out.push_str(FORM);
        out.push('|');
        out.push_str(&self.keep_dropped.to_string());
        out.push('|');
        put_entries(&mut out, &self.dropped);
        for (key, w) in &self.windows {
            out.push('|');
            out.push_str(key);
            out.push(':');
            out.push_str(&w.per.to_string());
            out.push(':');
            put_entries(&mut out, &w.admitted);
        }
        out
    }

    /// Reads what [`State::encode`] wrote, or the JSON the caps were kept
    /// in before it (read as it was, ids made [`short`]).
    pub fn decode(value: &str) -> Result<State, String> {
        if value.starts_with('{') {
            return from_json(value);
        }
        let mut parts = value.split('|');
        if parts.next() != Some(FORM) {
            return Err(format!("not caps in form {FORM}"));
        }
        let keep = parts.next().ok_or("no keep")?;
        let keep_dropped = keep.parse().map_err(|_| format!("keep `{keep}` is not a number"))?;
        let dropped = entries(parts.next().ok_or("no drops")?)?;
        let mut windows = BTreeMap::new();
        for part in parts {
            let (key, rest) = part.rsplit_once(':').ok_or_else(|| format!("window `{part}` has no admissions"))?;
            let (key, per) = key.rsplit_once(':').ok_or_else(|| format!("window `{part}` has no length"))?;
            let per = per.parse().map_err(|_| format!("window `{key}`: length `{per}` is not a number"))?;
            windows.insert(key.to_string(), Window { per, admitted: entries(rest)? });
        }
        Ok(State { windows, dropped, keep_dropped })
    }

    pub fn window_key(cap: &str, channel: Channel) -> String {
        format!("{cap}:{}", channel.as_str())
    }

    /// Admits `ask` (a notification of this state's user), as [`admit`] says.
    pub fn admit(&mut self, ask: &CapAsk) -> Admission {
        let keys: Vec<String> = ask.caps.iter().map(|c| Self::window_key(&c.0, ask.channel)).collect();
        let mut windows: Vec<Vec<(i64, u64)>> =
            keys.iter().map(|k| self.windows.remove(k).map(|w| w.admitted).unwrap_or_default()).collect();
        let (code, ms, by) = admit(ask, &mut windows, &mut self.dropped);
        if ask.drop {
            let longest = ask.caps.iter().map(|c| c.2.as_millis() as i64).max().unwrap_or(0);
            self.keep_dropped = self.keep_dropped.max(longest);
        }
        for ((key, admitted), cap) in keys.into_iter().zip(windows).zip(&ask.caps) {
            if !admitted.is_empty() {
                self.windows.insert(key, Window { per: cap.2.as_millis() as i64, admitted });
            }
        }
        answer(ask, code, ms, by)
    }

    /// How long after `now` the state still matters (ms): none of it once
    /// every window's newest admission left it and every drop is forgotten.
    /// (What left a window is forgotten as [`admit`] says, when the window
    /// is next used; the state as a whole expires here.)
    pub fn lasts(&self, now: DateTime<Utc>) -> Option<i64> {
        let now = now.timestamp_millis();
        let windows = self.windows.values().filter_map(|w| w.admitted.last().map(|(s, _)| s + w.per));
        let dropped = self.dropped.last().map(|(at, _)| at + self.keep_dropped);
        windows.chain(dropped).max().map(|end| end - now).filter(|ms| *ms > 0)
    }

    /// What cap `cap` counted on `channel`: in the window of length `per`
    /// ending at `now`, and admitted for after it.
    pub fn count(&self, cap: &str, per: Duration, channel: Channel, now: DateTime<Utc>) -> (u64, u64) {
        let Some(w) = self.windows.get(&Self::window_key(cap, channel)) else { return (0, 0) };
        let (now, start) = (now.timestamp_millis(), now.timestamp_millis() - per.as_millis() as i64);
        let in_window = w.admitted.iter().filter(|(s, _)| *s > start && *s <= now).count() as u64;
        let ahead = w.admitted.iter().filter(|(s, _)| *s > now).count() as u64;
        (in_window, ahead)
    }
}

/// The answer `(code, ms, binding cap)` of [`admit`], read.
pub fn answer(ask: &CapAsk, code: i64, ms: i64, by: usize) -> Admission {
    let by = by.checked_sub(1).and_then(|i| ask.caps.get(i)).map(|c| c.0.clone());
    if code < 0 {
        return Admission::Dropped { by };
    }
    let at = DateTime::from_timestamp_millis(ms).unwrap_or(ask.at);
    if code == 2 {
        return Admission::Before { at };
    }
    Admission::Admitted { at, by }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(id: &str, at: i64, now: i64, caps: &[(u32, u64)], drop: bool) -> CapAsk {
        CapAsk {
            user: "u1".into(),
            channel: Channel::Email,
            id: id.into(),
            caps: caps.iter().enumerate().map(|(i, (m, p))| (format!("c{i}"), *m, Duration::from_secs(*p))).collect(),
            at: DateTime::from_timestamp_millis(at * 1000).unwrap(),
            now: DateTime::from_timestamp_millis(now * 1000).unwrap(),
            drop,
            again: false,
        }
    }

    fn run(a: &CapAsk, w: &mut Vec<Vec<(i64, u64)>>, d: &mut Vec<(i64, u64)>) -> Admission {
        w.resize(a.caps.len(), Vec::new());
        let (code, ms, by) = admit(a, w, d);
        answer(a, code, ms, by)
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(s * 1000).unwrap()
    }

    #[test]
    fn a_sliding_window_defers_to_the_instant_the_oldest_leaves_and_counts_an_id_once() {
        let (mut w, mut d) = (Vec::new(), Vec::new());
        let cap = [(2, 3600)];
        assert_eq!(run(&ask("a", 0, 0, &cap, false), &mut w, &mut d), Admission::Admitted { at: at(0), by: None });
        assert_eq!(
            run(&ask("b", 600, 600, &cap, false), &mut w, &mut d),
            Admission::Admitted { at: at(600), by: None }
        );
        // The same id again: the first answer, nothing counted.
        assert_eq!(run(&ask("b", 900, 900, &cap, false), &mut w, &mut d), Admission::Before { at: at(600) });
        let by = Some("c0".to_string());
        assert_eq!(run(&ask("c", 900, 900, &cap, false), &mut w, &mut d), Admission::Admitted { at: at(3600), by });
        // Behind c, whatever the window says: d waits for b to leave after c.
        let by = Some("c0".to_string());
        assert_eq!(run(&ask("d", 1000, 1000, &cap, false), &mut w, &mut d), Admission::Admitted { at: at(4200), by });
        // Dropping: not counted, and remembered.
        let dropped = Admission::Dropped { by: Some("c0".into()) };
        assert_eq!(run(&ask("e", 1000, 1000, &cap, true), &mut w, &mut d), dropped);
        assert_eq!(run(&ask("e", 1500, 1500, &cap, true), &mut w, &mut d), Admission::Dropped { by: None });
        // Forgotten once the longest window passed: decided afresh.
        let later = run(&ask("e", 9000, 9000, &cap, true), &mut w, &mut d);
        assert_eq!(later, Admission::Admitted { at: at(9000), by: None });
        assert_eq!(w[0], [(9_000_000, short("e"))], "what left every window is forgotten");
    }

    #[test]
    fn every_cap_must_admit_and_again_moves_an_admission_later() {
        let (mut w, mut d) = (Vec::new(), Vec::new());
        let caps = [(1, 60), (2, 3600)];
        assert!(matches!(run(&ask("a", 0, 0, &caps, false), &mut w, &mut d), Admission::Admitted { .. }));
        let second = run(&ask("b", 10, 10, &caps, false), &mut w, &mut d);
        assert_eq!(second, Admission::Admitted { at: at(60), by: Some("c0".into()) });
        let third = run(&ask("c", 70, 70, &caps, false), &mut w, &mut d);
        assert_eq!(third, Admission::Admitted { at: at(3600), by: Some("c1".into()) });
        // Moved later: taken out and admitted again from the floor.
        let mut moved = ask("b", 7200, 100, &caps, false);
        moved.again = true;
        assert_eq!(run(&moved, &mut w, &mut d), Admission::Admitted { at: at(7200), by: None });
        assert_eq!(w[1].iter().map(|(s, _)| *s).collect::<Vec<_>>(), [0, 3_600_000, 7_200_000]);
    }

    #[test]
    fn a_state_reads_back_as_it_was_written_and_a_short_id_is_the_notification_ids_first_half() {
        let id = crate::notification::notification_id("shop", "e1", Channel::Email, "u1");
        assert_eq!(short(&id), u64::from_str_radix(&id[..16], 16).unwrap());
        assert_ne!(short("e"), short("f"));
        let mut state = State { keep_dropped: 86_400_000, ..State::default() };
        state.dropped = vec![(1_765_000_000_000, short("x")), (1_764_999_000_000, 7)];
        let hour = Window { per: 3_600_000, admitted: vec![(1_765_000_000_000, 1), (1_765_000_000_000, u64::MAX)] };
        state.windows.insert("all:email".into(), hour);
        state.windows.insert("marketing:sms".into(), Window { per: 60_000, admitted: vec![] });
        let value = state.encode();
        assert!(value.starts_with("c1|86400000|1765000000000."), "{value}");
        assert_eq!(State::decode(&value).unwrap(), state);
        assert_eq!(State::decode(&State::default().encode()).unwrap(), State::default());
        // As kept before this form: read as it was.
        let json = format!("{{\"w\":{{\"all:email\":{{\"p\":3600000,\"a\":[[1765000000000,\"{id}\"]]}}}},\"k\":5}}");
        let read = State::decode(&json).unwrap();
        assert_eq!(read.windows["all:email"].admitted, [(1_765_000_000_000, short(&id))]);
        assert_eq!((read.keep_dropped, read.dropped.len()), (5, 0));
        let odd = format!("{}é", &id[..30]);
        assert_ne!(short(&odd), 0, "an id of 32 bytes that is not hex is hashed");
        let far = format!("c1|0|{}.1,{}.2", i64::MAX, 1);
        for bad in ["", "{\"w\":1}", "c1|x|", "c1|0|1.zz", "c1|0||all:email:60000:1", "c1|0|1.a,,2.b", &far] {
            assert!(State::decode(bad).is_err(), "{bad}");
        }
    }
}
