//! Per-key ordering: work for one user runs in the order it was read, while
//! different users run concurrently. Each task waits for its predecessor on
//! the same key to finish; a slow user holds up only that user. A lane is
//! forgotten when the last task that entered it leaves, so the map holds
//! only users with work in flight and every call is O(1).
//!
//! A lane is named by a 64-bit hash of its key ([`Lanes::lane`]), computed
//! once a record: two users whose keys hash alike share a lane, which keeps
//! each one's order and only costs them their concurrency.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use tokio::sync::oneshot;

#[derive(Debug, Default)]
pub struct Lanes {
    lanes: HashMap<u64, Lane, BuildHasherDefault<Hashed>>,
    keys: RandomState,
}

/// Lane names are hashes already: the map uses them as they are.
#[derive(Debug, Default)]
struct Hashed(u64);

impl Hasher for Hashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug)]
struct Lane {
    /// Tasks that entered and have not left.
    entered: usize,
    /// Fires when the last task that entered finishes.
    tail: oneshot::Receiver<()>,
}

/// A place in a lane: wait for `after` (if any), then drop or fire `done`.
pub struct Turn {
    pub after: Option<oneshot::Receiver<()>>,
    pub done: oneshot::Sender<()>,
}

impl Turn {
    /// Waits until every earlier task on the same key has finished.
    pub async fn wait(&mut self) {
        if let Some(rx) = self.after.take() {
            // An error means the predecessor was dropped: it is finished either way.
            let _ = rx.await;
        }
    }
}

impl Lanes {
    /// The lane of records keyed `key`.
    pub fn lane(&self, key: &[u8]) -> u64 {
        self.keys.hash_one(key)
    }

    /// Takes the next turn on `lane`; [`Lanes::leave`] must follow once the task is done.
    pub fn enter(&mut self, lane: u64) -> Turn {
        let (done, tail) = oneshot::channel();
        let after = match self.lanes.get_mut(&lane) {
            Some(lane) => {
                lane.entered += 1;
                Some(std::mem::replace(&mut lane.tail, tail))
            }
            None => {
                self.lanes.insert(lane, Lane { entered: 1, tail });
                None
            }
        };
        Turn { after, done }
    }

    /// A task that entered `lane` is done; the lane goes when its last task does.
    pub fn leave(&mut self, lane: u64) {
        if let Some(l) = self.lanes.get_mut(&lane) {
            l.entered -= 1;
            if l.entered == 0 {
                self.lanes.remove(&lane);
            }
        }
    }

    /// Users with work in flight.
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn a_turn_waits_for_the_one_before_it_on_its_lane_only() {
        let mut lanes = Lanes::default();
        let (u, v) = (lanes.lane(b"u-1"), lanes.lane(b"u-2"));
        assert_eq!(u, lanes.lane(b"u-1"));
        assert_ne!(u, v);
        let first = lanes.enter(u);
        let mut second = lanes.enter(u);
        let mut other = lanes.enter(v);
        assert!(other.wait().now_or_never().is_some(), "another user's lane is free");
        let mut waiting = Box::pin(second.wait());
        assert!((&mut waiting).now_or_never().is_none(), "the same user's waits");
        drop(first.done);
        lanes.leave(u);
        assert!(waiting.now_or_never().is_some(), "until the one before it is done");
        assert_eq!(lanes.len(), 2);
        lanes.leave(u);
        lanes.leave(v);
        assert!(lanes.is_empty(), "a lane goes with its last turn");
    }
}
