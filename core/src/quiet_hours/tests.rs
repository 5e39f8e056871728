//! Quiet-hours math: fixed cases for every kind of DST day, and properties
//! over many zones and dates.

use super::*;
use crate::prefs::Window;
use chrono::{NaiveTime, Offset};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn hm(s: &str) -> NaiveTime {
    NaiveTime::parse_from_str(s, "%H:%M").unwrap()
}

fn daily(start: &str, end: &str) -> QuietHours {
    QuietHours::Daily(Window { start: hm(start), end: hm(end) })
}

fn weekly(days: &[(&str, &str, &str)]) -> QuietHours {
    QuietHours::Weekly(
        days.iter().map(|(d, s, e)| (d.to_string(), Window { start: hm(s), end: hm(e) })).collect::<BTreeMap<_, _>>(),
    )
}

fn tz(name: &str) -> Tz {
    name.parse().unwrap()
}

/// An unambiguous local time as an instant.
fn local(zone: &str, s: &str) -> DateTime<Utc> {
    let ndt = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    tz(zone).from_local_datetime(&ndt).single().expect("unambiguous").with_timezone(&Utc)
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[test]
fn late_evening_defers_to_local_morning_across_midnight() {
    let q = daily("22:00", "07:00");
    assert_eq!(
        quiet_until(&q, tz("Europe/Paris"), local("Europe/Paris", "2026-11-26 23:00")),
        Some(local("Europe/Paris", "2026-11-27 07:00"))
    );
    assert_eq!(
        quiet_until(&q, tz("Europe/Paris"), local("Europe/Paris", "2026-11-27 03:00")),
        Some(local("Europe/Paris", "2026-11-27 07:00"))
    );
    assert_eq!(
        quiet_until(&q, tz("Europe/Paris"), local("Europe/Paris", "2026-11-27 07:00")),
        None,
        "the end is not quiet"
    );
    assert_eq!(quiet_until(&q, tz("Europe/Paris"), local("Europe/Paris", "2026-11-26 21:59")), None);
}

#[test]
fn a_window_ending_in_a_dst_gap_ends_at_the_first_instant_after_it() {
    // New York springs forward 2026-03-08 02:00 -> 03:00 (EST -5 -> EDT -4).
    let q = daily("23:00", "02:30");
    assert_eq!(
        quiet_until(&q, tz("America/New_York"), local("America/New_York", "2026-03-08 01:00")),
        Some(utc("2026-03-08T07:00:00Z"))
    );
    // London springs forward 2026-03-29 01:00 -> 02:00 (GMT -> BST).
    let q = daily("23:00", "01:30");
    assert_eq!(
        quiet_until(&q, tz("Europe/London"), local("Europe/London", "2026-03-29 00:30")),
        Some(utc("2026-03-29T01:00:00Z"))
    );
    // Lord Howe moves 30 minutes, 2026-10-04 02:00 -> 02:30 (+10:30 -> +11).
    let q = daily("22:00", "02:15");
    assert_eq!(
        quiet_until(&q, tz("Australia/Lord_Howe"), local("Australia/Lord_Howe", "2026-10-03 23:00")),
        Some(utc("2026-10-03T15:30:00Z"))
    );
}

#[test]
fn open_time_swallowed_by_a_dst_gap_releases_at_the_transition_not_a_day_later() {
    // Quiet 01:15 -> 01:00: open only 01:00-01:15, which London skips on
    // 2027-03-28 (01:00 GMT -> 02:00 BST). The deferral ends at the jump.
    let q = daily("01:15", "01:00");
    assert_eq!(quiet_until(&q, tz("Europe/London"), utc("2027-03-27T01:30:00Z")), Some(utc("2027-03-28T01:00:00Z")));
    // Weekly windows that meet on the wall clock still chain across the jump.
    let q = weekly(&[("sat", "22:00", "01:00"), ("sun", "01:00", "06:00")]);
    assert_eq!(quiet_until(&q, tz("Europe/London"), utc("2027-03-27T23:00:00Z")), Some(utc("2027-03-28T05:00:00Z")));
}

#[test]
fn an_ambiguous_end_resolves_to_the_earlier_instant() {
    // New York falls back 2026-11-01: 01:00-02:00 happens twice.
    let q = daily("22:00", "01:30");
    assert_eq!(
        quiet_until(&q, tz("America/New_York"), local("America/New_York", "2026-10-31 23:00")),
        Some(utc("2026-11-01T05:30:00Z"))
    );
    // London falls back 2026-10-25: 01:00-02:00 happens twice.
    let q = daily("00:00", "01:30");
    assert_eq!(quiet_until(&q, tz("Europe/London"), utc("2026-10-24T23:10:00Z")), Some(utc("2026-10-25T00:30:00Z")));
    // Lord Howe falls back 30 minutes 2026-04-05: 01:30-02:00 happens twice.
    let q = daily("22:00", "01:45");
    assert_eq!(
        quiet_until(&q, tz("Australia/Lord_Howe"), local("Australia/Lord_Howe", "2026-04-04 23:00")),
        Some(utc("2026-04-04T14:45:00Z"))
    );
}

#[test]
fn zones_with_quarter_and_half_hour_offsets() {
    let q = daily("22:00", "07:00");
    // Kathmandu is +05:45: 07:00 local is 01:15Z.
    assert_eq!(
        quiet_until(&q, tz("Asia/Kathmandu"), local("Asia/Kathmandu", "2026-11-26 23:00")),
        Some(utc("2026-11-27T01:15:00Z"))
    );
    // Adelaide in summer is +10:30.
    assert_eq!(
        quiet_until(&q, tz("Australia/Adelaide"), local("Australia/Adelaide", "2026-12-01 05:00")),
        Some(utc("2026-11-30T20:30:00Z"))
    );
}

#[test]
fn per_weekday_windows_apply_on_their_own_days_and_chain() {
    let zone = "Australia/Lord_Howe";
    // 2026-11-23 is a Monday.
    let q = weekly(&[("mon", "22:00", "06:30"), ("sat", "23:00", "09:00")]);
    assert_eq!(quiet_until(&q, tz(zone), local(zone, "2026-11-23 23:00")), Some(local(zone, "2026-11-24 06:30")));
    assert_eq!(quiet_until(&q, tz(zone), local(zone, "2026-11-24 23:00")), None, "no Tuesday window");
    // Saturday's window still runs on Sunday morning.
    assert_eq!(quiet_until(&q, tz(zone), local(zone, "2026-11-29 08:00")), Some(local(zone, "2026-11-29 09:00")));
    // Monday's window ends inside Tuesday's: the user stays quiet until Tuesday's ends.
    let q = weekly(&[("mon", "22:00", "02:00"), ("tue", "01:00", "05:00")]);
    assert_eq!(quiet_until(&q, tz("UTC"), utc("2026-11-23T23:00:00Z")), Some(utc("2026-11-24T05:00:00Z")));
}

#[test]
fn an_empty_window_is_no_window() {
    assert_eq!(quiet_until(&daily("07:00", "07:00"), tz("UTC"), utc("2026-01-01T07:00:00Z")), None);
    assert_eq!(quiet_until(&weekly(&[]), tz("UTC"), utc("2026-01-01T03:00:00Z")), None);
}

const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "America/St_Johns",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Paris",
    "Asia/Kathmandu",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "Australia/Adelaide",
    "Pacific/Chatham",
    "Pacific/Auckland",
];

/// Whether the zone's offset is the same for a day and more around `at`, so
/// wall-clock arithmetic is exact there.
fn steady(zone: Tz, at: DateTime<Utc>) -> bool {
    let offset = |t: DateTime<Utc>| t.with_timezone(&zone).offset().fix().local_minus_utc();
    (-30..=30).all(|h| offset(at + chrono::Duration::hours(h)) == offset(at))
}

fn in_window(t: NaiveTime, start: NaiveTime, end: NaiveTime) -> bool {
    if start < end {
        start <= t && t < end
    } else {
        t >= start || t < end
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// The end of a deferral is never in the past, and never quiet itself unless a
    /// DST gap swallowed the open time after it.
    #[test]
    fn the_deferral_end_is_after_now_and_not_quiet(
        zone in proptest::sample::select(ZONES),
        secs in 1_577_836_800i64..1_893_456_000i64, // 2020..2030
        start in 0u32..96, end in 0u32..96,
    ) {
        let zone: Tz = zone.parse().unwrap();
        let now = DateTime::from_timestamp(secs, 0).unwrap();
        let w = Window { start: NaiveTime::from_hms_opt(start / 4, start % 4 * 15, 0).unwrap(), end: NaiveTime::from_hms_opt(end / 4, end % 4 * 15, 0).unwrap() };
        let q = QuietHours::Daily(w);
        if let Some(until) = quiet_until(&q, zone, now) {
            prop_assert!(until > now);
            prop_assert!(until - now <= chrono::Duration::hours(26));
            // Quiet again at once only where a DST gap swallowed the open time:
            // then `until` is the transition itself.
            if quiet_until(&q, zone, until).is_some() {
                let offset = |t: DateTime<Utc>| t.with_timezone(&zone).offset().fix().local_minus_utc();
                prop_assert_ne!(offset(until - chrono::Duration::seconds(1)), offset(until));
            }
        }
    }

    /// Away from DST changes, deferral matches the wall clock exactly.
    #[test]
    fn away_from_transitions_it_matches_the_wall_clock(
        zone in proptest::sample::select(ZONES),
        secs in 1_577_836_800i64..1_893_456_000i64,
        start in 0u32..96, end in 0u32..96,
    ) {
        let zone: Tz = zone.parse().unwrap();
        let now = DateTime::from_timestamp(secs, 0).unwrap();
        prop_assume!(steady(zone, now));
        let (s, e) = (NaiveTime::from_hms_opt(start / 4, start % 4 * 15, 0).unwrap(), NaiveTime::from_hms_opt(end / 4, end % 4 * 15, 0).unwrap());
        let q = QuietHours::Daily(Window { start: s, end: e });
        let wall = now.with_timezone(&zone).time();
        let quiet = s != e && in_window(wall, s, e);
        let until = quiet_until(&q, zone, now);
        prop_assert_eq!(until.is_some(), quiet);
        if let Some(until) = until {
            prop_assert_eq!(until.with_timezone(&zone).time(), e);
        }
    }
}

#[test]
fn a_daily_time_lands_at_that_local_time_across_a_dst_change() {
    use super::next_local;
    let nine = chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap();
    let paris: Tz = "Europe/Paris".parse().unwrap();
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    // Summer time ends in Paris on 2026-10-25: 09:00 is 07:00Z before, 08:00Z after.
    assert_eq!(next_local(nine, paris, at("2026-10-24T06:00:00Z")), at("2026-10-24T07:00:00Z"));
    assert_eq!(next_local(nine, paris, at("2026-10-24T07:00:00Z")), at("2026-10-25T08:00:00Z"));
    // It begins on 2026-03-29: 08:00Z the day before, 07:00Z that day.
    assert_eq!(next_local(nine, paris, at("2026-03-28T09:00:00Z")), at("2026-03-29T07:00:00Z"));
    // 02:30 does not exist that night: the first instant after the gap.
    let gap = chrono::NaiveTime::from_hms_opt(2, 30, 0).unwrap();
    assert_eq!(next_local(gap, paris, at("2026-03-28T23:00:00Z")), at("2026-03-29T01:00:00Z"));
}

#[test]
fn a_send_window_inside_quiet_hours_gives_way_to_them() {
    let quiet = QuietHours::Daily(Window { start: hm("09:00"), end: hm("19:00") });
    let window = crate::config::SendWindow { from: hm("10:00"), to: hm("18:00") };
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    // No instant is both outside the quiet hours and inside the window: the quiet hours' end.
    assert_eq!(opening(Some(&quiet), Some(&window), Tz::UTC, at("2026-12-07T12:00:00Z")), at("2026-12-07T19:00:00Z"));
    // Where they leave room, both hold: quiet until 11:00, inside the window from then.
    let early = QuietHours::Daily(Window { start: hm("22:00"), end: hm("11:00") });
    assert_eq!(opening(Some(&early), Some(&window), Tz::UTC, at("2026-12-07T08:00:00Z")), at("2026-12-07T11:00:00Z"));
}
