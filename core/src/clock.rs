//! The wall clock every role reads. In production it is the system clock;
//! `tidings dev --now` starts it at a chosen instant and lets it run on, so that
//! quiet hours can be shown at any time of day.

use chrono::{DateTime, Utc};
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Option<(DateTime<Utc>, Instant)>,
}

impl Clock {
    pub fn system() -> Self {
        Clock { origin: None }
    }

    /// A clock that reads `start` now and advances in real time from there.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Clock {
            origin: Some((start, Instant::now())),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self.origin {
            None => Utc::now(),
            Some((start, at)) => {
                start + chrono::Duration::from_std(at.elapsed()).unwrap_or_default()
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}
