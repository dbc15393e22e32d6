//! [`Counter`]: a count of what an emulator received, that a test can wait on.

use std::time::Duration;

use tokio::sync::watch;

/// A count that only goes up; waiters wake at each step.
#[derive(Debug)]
pub(crate) struct Counter(watch::Sender<u64>);

impl Counter {
    /// Zero.
    pub(crate) fn new() -> Counter {
        Counter(watch::Sender::new(0))
    }

    /// One more.
    pub(crate) fn bump(&self) {
        self.0.send_modify(|c| *c += 1);
    }

    /// The count now.
    pub(crate) fn get(&self) -> u64 {
        *self.0.borrow()
    }

    /// Waits until the count is at least `n`; `false` if `timeout` passed first.
    pub(crate) async fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.0.subscribe();
        // Bound to a name so that the borrow of `rx` ends before `rx` is dropped.
        let reached = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await,
            Ok(Ok(_))
        );
        reached
    }
}
