//! Per-key ordering: work for one user runs in the order it was read, while
//! different users run concurrently. Each task waits for its predecessor on
//! the same key to finish; a slow user holds up only that user. A lane is
//! forgotten when the last task that entered it leaves, so the map holds
//! only users with work in flight and every call is O(1).

use std::collections::HashMap;
use tokio::sync::oneshot;

#[derive(Debug, Default)]
pub struct Lanes {
    lanes: HashMap<String, Lane>,
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
    /// Takes the next turn on `key`; [`Lanes::leave`] must follow once the task is done.
    pub fn enter(&mut self, key: &str) -> Turn {
        let (done, tail) = oneshot::channel();
        let after = match self.lanes.get_mut(key) {
            Some(lane) => {
                lane.entered += 1;
                Some(std::mem::replace(&mut lane.tail, tail))
            }
            None => {
                self.lanes.insert(key.to_string(), Lane { entered: 1, tail });
                None
            }
        };
        Turn { after, done }
    }

    /// A task that entered `key` is done; the lane goes when its last task does.
    pub fn leave(&mut self, key: &str) {
        if let Some(lane) = self.lanes.get_mut(key) {
            lane.entered -= 1;
            if lane.entered == 0 {
                self.lanes.remove(key);
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
