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
pub fn quiet_until(quiet: &QuietHours, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut until: Option<DateTime<Utc>> = None;
    // A window that starts when another ends keeps the user quiet: follow the chain.
    for _ in 0..8 {
        let at = until.unwrap_or(now);
        match window_containing(quiet, tz, at) {
            Some(end) if until.is_none_or(|u| end > u) => until = Some(end),
            _ => break,
        }
    }
    until
}

fn window_containing(quiet: &QuietHours, tz: Tz, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let today = at.with_timezone(&tz).date_naive();
    // A window that started yesterday may still be running after midnight.
    [today.pred_opt()?, today]
        .into_iter()
        .filter_map(|day| {
            let w = window_for(quiet, day)?;
            let (start, end) = bounds(w, day, tz)?;
            (start <= at && at < end).then_some(end)
        })
        .max()
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

/// The window that starts on local `day`, as instants; `None` for an empty window.
fn bounds(w: Window, day: NaiveDate, tz: Tz) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if w.start == w.end {
        return None;
    }
    let end_day = if w.end < w.start { day.succ_opt()? } else { day };
    let start = resolve(tz, day.and_time(w.start))?;
    let end = resolve(tz, end_day.and_time(w.end))?;
    Some((start, end))
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
