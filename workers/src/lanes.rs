//! Per-key ordering: work for one user runs in the order it was read, while
//! different users run concurrently. Each task waits for its predecessor on
//! the same key to finish; a slow user holds up only that user.

use std::collections::HashMap;
use tokio::sync::oneshot;

#[derive(Debug, Default)]
pub struct Lanes {
    tails: HashMap<String, oneshot::Receiver<()>>,
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
    /// Takes the next turn on `key`.
    pub fn enter(&mut self, key: &str) -> Turn {
        let (done, rx) = oneshot::channel();
        let after = self.tails.insert(key.to_string(), rx);
        if self.tails.len() > 4096 {
            self.sweep();
        }
        Turn { after, done }
    }

    /// Forgets keys whose last task has finished.
    fn sweep(&mut self) {
        self.tails.retain(|_, rx| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn same_key_runs_in_order_other_keys_do_not_wait() {
        let mut lanes = Lanes::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (gate_tx, gate_rx) = oneshot::channel::<()>();
        let mut first = lanes.enter("u1");
        let l = log.clone();
        let a = tokio::spawn(async move {
            first.wait().await;
            let _ = gate_rx.await;
            l.lock().unwrap().push("u1-a");
            drop(first.done);
        });
        let mut second = lanes.enter("u1");
        let l = log.clone();
        let b = tokio::spawn(async move {
            second.wait().await;
            l.lock().unwrap().push("u1-b");
        });
        let mut other = lanes.enter("u2");
        other.wait().await;
        log.lock().unwrap().push("u2");
        assert_eq!(*log.lock().unwrap(), vec!["u2"], "u2 ran while u1 was held");
        gate_tx.send(()).unwrap();
        a.await.unwrap();
        b.await.unwrap();
        assert_eq!(*log.lock().unwrap(), vec!["u2", "u1-a", "u1-b"]);
    }
}
