//! Turning one event and its user's preferences into outcomes. Pure: no I/O,
//! the clock is a parameter, so every rule here is unit-tested.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::collections::HashMap;
use tidings_core::config::{ChannelMode, EventRoute, SendWindow};
use tidings_core::event::CloudEvent;
use tidings_core::notification::notification_id;
use tidings_core::quiet_hours::opening;
use tidings_core::suppression::address_of;
use tidings_core::{Notification, Preferences, Priority, Recipient};

/// What becomes of one notification intake creates.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Goes to `tidings.<channel>.<priority>` now.
    Publish(Notification),
    /// Held until `not_before` (set on the notification): the user's quiet
    /// hours, or the category's send window.
    Defer(Notification),
    /// Never sent, for the reason given.
    Suppress(Notification, String),
}

/// Routes `event` for `prefs` at `now`. An empty result means no channel of the
/// route is enabled for the user; the caller records that as suppressed.
/// `listed` gives why an address is on the suppression list, if it is: a
/// `first` route passes over such a channel to the next (the worker
/// suppresses what reaches it for a listed address, and does not fall back).
/// `window`: the send window of the route's category, if it has one.
pub fn route(
    event: &CloudEvent,
    user_id: &str,
    route: &EventRoute,
    prefs: &Preferences,
    listed: &HashMap<String, String>,
    window: Option<&SendWindow>,
    now: DateTime<Utc>,
) -> Vec<Outcome> {
    let template = route.template.clone().unwrap_or_else(|| event.ty.clone());
    let quiet = match route.priority {
        Priority::Normal | Priority::Bulk if prefs.quiet_hours.is_some() || window.is_some() => {
            let open = opening(prefs.quiet_hours.as_ref(), window, zone(prefs), now);
            (open > now).then_some(open)
        }
        _ => None,
    };
    let mut outcomes = Vec::new();
    for &channel in route.channels.iter().filter(|c| prefs.channel_enabled(**c)) {
        let mut n = Notification {
            notification_id: notification_id(&event.source, &event.id, channel, user_id),
            source: event.source.clone(),
            event_id: event.id.clone(),
            event_type: event.ty.clone(),
            user_id: user_id.to_string(),
            channel,
            priority: route.priority,
            template: template.clone(),
            category: route.category.clone(),
            locale: prefs.locale.clone(),
            timezone: prefs.timezone.clone(),
            recipient: Recipient::Webhook { url: String::new() },
            data: event.data.clone(),
            created_at: now,
            not_before: None,
            fallback: route.fallback.iter().copied().filter(|c| *c != channel).collect(),
            attempt: 0,
        };
        let first = route.mode == ChannelMode::First;
        let outcome = match (prefs.recipient(channel), prefs.suppression(channel, &route.category)) {
            (_, Some(reason)) => Outcome::Suppress(n, reason),
            (None, None) => Outcome::Suppress(n, format!("user has no {channel} address")),
            (Some(r), None) if first && address_of(&r).is_some_and(|a| listed.contains_key(&a)) => {
                let why = address_of(&r).and_then(|a| listed.get(&a).cloned()).unwrap_or_default();
                n.recipient = r;
                Outcome::Suppress(n, why)
            }
            (Some(r), None) => {
                n.recipient = r;
                match quiet {
                    Some(until) => {
                        n.not_before = Some(until);
                        Outcome::Defer(n)
                    }
                    None => Outcome::Publish(n),
                }
            }
        };
        let sendable = !matches!(outcome, Outcome::Suppress(..));
        outcomes.push(outcome);
        if sendable && first {
            break;
        }
    }
    outcomes
}

/// The user's time zone (UTC when it does not read).
pub fn zone(prefs: &Preferences) -> Tz {
    prefs.timezone.parse().unwrap_or(Tz::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::Channel;

    fn event(ty: &str) -> CloudEvent {
        serde_json::from_value(serde_json::json!({
            "specversion": "1.0", "id": "e1", "type": ty, "source": "/shop", "data": {"user_id": "u1"}
        }))
        .unwrap()
    }

    fn prefs(extra: serde_json::Value) -> Preferences {
        let mut base = serde_json::json!({
            "user_id": "u1", "timezone": "Europe/Paris", "email": "a@example.com", "phone": "+33612345678",
            "channels": {"email": true, "sms": true, "push": true},
            "quiet_hours": {"start": "22:00", "end": "07:00"}
        });
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn route_of(priority: &str, mode: &str) -> EventRoute {
        serde_json::from_value(serde_json::json!({
            "category": "transactional", "priority": priority, "channels": ["push", "email", "sms"], "mode": mode
        }))
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn one_notification_per_enabled_channel_and_a_reason_for_a_missing_address() {
        let out = route(
            &event("order.confirmed"),
            "u1",
            &route_of("normal", "all"),
            &prefs(serde_json::json!({})),
            &HashMap::new(),
            None,
            at("2026-11-26T12:00:00Z"),
        );
        assert_eq!(out.len(), 3);
        assert!(matches!(&out[0], Outcome::Suppress(n, r) if n.channel == Channel::Push && r.contains("no push")));
        assert!(
            matches!(&out[1], Outcome::Publish(n) if n.recipient == Recipient::Email { address: "a@example.com".into() })
        );
        assert!(matches!(&out[2], Outcome::Publish(n) if n.channel == Channel::Sms));
    }

    #[test]
    fn first_mode_stops_at_the_first_sendable_channel() {
        let out = route(
            &event("t"),
            "u1",
            &route_of("normal", "first"),
            &prefs(serde_json::json!({})),
            &HashMap::new(),
            None,
            at("2026-11-26T12:00:00Z"),
        );
        assert_eq!(out.len(), 2, "push is suppressed (no token), email is the first that can send");
        assert!(matches!(&out[1], Outcome::Publish(n) if n.channel == Channel::Email));

        // An address on the suppression list cannot receive: the next channel is chosen.
        let listed = HashMap::from([("a@example.com".to_string(), "listed: hard_bounce".to_string())]);
        let p = prefs(serde_json::json!({}));
        let out = route(&event("t"), "u1", &route_of("normal", "first"), &p, &listed, None, at("2026-11-26T12:00:00Z"));
        assert_eq!(out.len(), 3);
        assert!(
            matches!(&out[1], Outcome::Suppress(n, r) if n.channel == Channel::Email && r == "listed: hard_bounce")
        );
        assert!(matches!(&out[2], Outcome::Publish(n) if n.channel == Channel::Sms));
        // A route to every channel leaves the list to the workers.
        let out = route(&event("t"), "u1", &route_of("normal", "all"), &p, &listed, None, at("2026-11-26T12:00:00Z"));
        assert!(matches!(&out[1], Outcome::Publish(n) if n.channel == Channel::Email));
    }

    #[test]
    fn quiet_hours_defer_normal_but_not_critical() {
        // 23:00 in Paris.
        let now = at("2026-11-26T22:00:00Z");
        let p = prefs(serde_json::json!({}));
        let out = route(&event("t"), "u1", &route_of("normal", "all"), &p, &HashMap::new(), None, now);
        assert!(matches!(&out[1], Outcome::Defer(n) if n.not_before == Some(at("2026-11-27T06:00:00Z"))));
        let out = route(&event("t"), "u1", &route_of("critical", "all"), &p, &HashMap::new(), None, now);
        assert!(matches!(&out[1], Outcome::Publish(_)));
    }

    #[test]
    fn a_send_window_defers_to_its_next_local_opening_in_every_zone() {
        let window: SendWindow = serde_json::from_value(serde_json::json!({"from": "10:00", "to": "18:00"})).unwrap();
        let bulk = route_of("bulk", "all");
        let in_zone = |tz: &str| prefs(serde_json::json!({"timezone": tz, "quiet_hours": null}));
        let released = |tz: &str, now: &str| {
            let out = route(&event("t"), "u1", &bulk, &in_zone(tz), &HashMap::new(), Some(&window), at(now));
            match &out[1] {
                Outcome::Publish(_) => None,
                Outcome::Defer(n) => n.not_before,
                other => panic!("{other:?}"),
            }
        };
        // 13:00 in Tonga (UTC+13) and 14:00 the day before in Honolulu (UTC-10): inside.
        assert_eq!(released("Pacific/Tongatapu", "2026-12-07T00:00:00Z"), None);
        assert_eq!(released("Pacific/Honolulu", "2026-12-07T00:00:00Z"), None);
        // 19:00 in Tonga: the next local 10:00; 20:00 in Honolulu: its next 10:00.
        assert_eq!(released("Pacific/Tongatapu", "2026-12-07T06:00:00Z"), Some(at("2026-12-07T21:00:00Z")));
        assert_eq!(released("Pacific/Honolulu", "2026-12-07T06:00:00Z"), Some(at("2026-12-07T20:00:00Z")));
        // Before the opening the same day: that opening.
        assert_eq!(released("Pacific/Honolulu", "2026-12-07T17:00:00Z"), Some(at("2026-12-07T20:00:00Z")));
        // Quiet hours apply inside the window: 09:00-11:00 quiet opens it at 11:00.
        let quiet = prefs(serde_json::json!({"timezone": "UTC", "quiet_hours": {"start": "09:00", "end": "11:00"}}));
        let out = route(&event("t"), "u1", &bulk, &quiet, &HashMap::new(), Some(&window), at("2026-12-07T07:00:00Z"));
        assert!(matches!(&out[1], Outcome::Defer(n) if n.not_before == Some(at("2026-12-07T11:00:00Z"))));
        // Critical ones are never held.
        let critical = route_of("critical", "all");
        let out =
            route(&event("t"), "u1", &critical, &quiet, &HashMap::new(), Some(&window), at("2026-12-07T07:00:00Z"));
        assert!(matches!(&out[1], Outcome::Publish(_)));
    }

    #[test]
    fn opt_out_and_mute_suppress_with_reason() {
        let p = prefs(serde_json::json!({"opt_out": ["transactional"]}));
        let out =
            route(&event("t"), "u1", &route_of("normal", "all"), &p, &HashMap::new(), None, at("2026-11-26T12:00:00Z"));
        assert!(out.iter().all(|o| matches!(o, Outcome::Suppress(_, r) if r.contains("opted out"))));
        let p = prefs(serde_json::json!({"muted": true}));
        let out =
            route(&event("t"), "u1", &route_of("normal", "all"), &p, &HashMap::new(), None, at("2026-11-26T12:00:00Z"));
        assert!(out.iter().all(|o| matches!(o, Outcome::Suppress(_, r) if r == "user is muted")));
    }
}
