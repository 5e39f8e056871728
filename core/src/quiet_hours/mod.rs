//! When a user's quiet window ends.
//!
//! A window is a local start and end time on a given day; an end at or before
//! the start crosses midnight; start == end is no window. Local times are
//! turned into instants in the user's zone: a time inside a DST gap means the
//! first instant after the gap, an ambiguous time (DST overlap) the earlier
//! instant.

use crate::prefs::{QuietHours, Window, WEEKDAYS};
use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// If `now` falls inside a quiet window, the instant the window (and any window
/// chained right after it) ends.
///
/// Windows chain only when they meet on the wall clock (a weekly window that
/// starts as the day before's ends). When a DST gap swallows the open time
/// between two windows, both resolve to the transition instant; the deferral
/// then ends there rather than a day later.
pub fn quiet_until(quiet: &QuietHours, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut until: Option<(NaiveDateTime, DateTime<Utc>)> = None;
    for _ in 0..8 {
        let at = until.map_or(now, |(_, end)| end);
        match window_containing(quiet, tz, at) {
            Some(next) if until.is_none_or(|(local_end, end)| next.end > end && next.local_start <= local_end) => {
                until = Some((next.local_end, next.end))
            }
            _ => break,
        }
    }
    until.map(|(_, end)| end)
}

/// The first instant at or after `at` that is outside the user's quiet
/// hours and inside the category's send window (either may be absent): when
/// a non-critical message may go. Where the quiet hours cover the whole
/// send window (no such instant in the days ahead), the send window gives
/// way: the end of the quiet hours.
pub fn opening(
    quiet: Option<&QuietHours>,
    window: Option<&crate::config::SendWindow>,
    tz: Tz,
    at: DateTime<Utc>,
) -> DateTime<Utc> {
    let closed = window.map(|w| w.as_quiet());
    let mut t = at;
    // Each step moves past one window; a day has at most a few.
    for _ in 0..16 {
        let mut moved = t;
        for q in [quiet, closed.as_ref()].into_iter().flatten() {
            moved = quiet_until(q, tz, moved).unwrap_or(moved);
        }
        if moved == t {
            return t;
        }
        t = moved;
    }
    quiet.and_then(|q| quiet_until(q, tz, at)).unwrap_or(at)
}

/// The first instant after `now` whose wall-clock time in `tz` is `at`
/// (inside a DST gap, the first instant after it).
pub fn next_local(at: chrono::NaiveTime, tz: Tz, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.with_timezone(&tz).date_naive();
    let days = std::iter::successors(Some(today), |d| d.succ_opt()).take(3);
    days.filter_map(|day| resolve(tz, day.and_time(at))).find(|t| *t > now).unwrap_or(now + Duration::days(1))
}

/// A window as it was written (local times) and when it ends (an instant).
struct Span {
    local_start: NaiveDateTime,
    local_end: NaiveDateTime,
    end: DateTime<Utc>,
}

fn window_containing(quiet: &QuietHours, tz: Tz, at: DateTime<Utc>) -> Option<Span> {
    let today = at.with_timezone(&tz).date_naive();
    // A window that started yesterday may still be running after midnight.
    [today.pred_opt()?, today]
        .into_iter()
        .filter_map(|day| {
            let w = window_for(quiet, day)?;
            let (local_start, local_end) = local_bounds(w, day)?;
            let (start, end) = (resolve(tz, local_start)?, resolve(tz, local_end)?);
            (start <= at && at < end).then_some(Span { local_start, local_end, end })
        })
        .max_by_key(|span| span.end)
}

fn window_for(quiet: &QuietHours, day: NaiveDate) -> Option<Window> {
    match quiet {
        QuietHours::Daily(w) => Some(*w),
        QuietHours::Weekly(days) => {
            let name = WEEKDAYS[day.weekday().num_days_from_monday() as usize];
            days.get(name).copied()
        }
    }
}

/// The window that starts on local `day`, as local times; `None` for an empty window.
fn local_bounds(w: Window, day: NaiveDate) -> Option<(NaiveDateTime, NaiveDateTime)> {
    if w.start == w.end {
        return None;
    }
    let end_day = if w.end < w.start { day.succ_opt()? } else { day };
    Some((day.and_time(w.start), end_day.and_time(w.end)))
}

/// A local wall-clock time as an instant in `tz`.
pub fn resolve(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => {
            // In a gap: the first local minute that exists is the transition
            // instant itself (every zone changes offset on a whole minute).
            let mut probe = local;
            for _ in 0..(26 * 60) {
                probe += Duration::minutes(1);
                let minute = probe.with_second(0)?.with_nanosecond(0)?;
                if let Some(t) = tz.from_local_datetime(&minute).earliest() {
                    return Some(t.with_timezone(&Utc));
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests;
