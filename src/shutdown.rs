//! [`Shutdown`]: the one stop signal that the front end, the mapping core's background tasks and
//! the daemon all honour (after mini-redis's `shutdown.rs`).
//!
//! A [`ShutdownTrigger`] fires it once; every [`Shutdown`] handle (cheap to clone) then reports
//! [`Shutdown::is_shutdown`] and its [`Shutdown::recv`] returns. A trigger that is dropped
//! without firing counts as fired, so no task waits forever for a signal nobody can send.

use std::sync::Arc;

use tokio::sync::watch;

/// Fires the stop signal.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// Listens for the stop signal.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    /// Set only by [`Shutdown::never`]: the sender nobody fires, kept alive with the handle.
    _never: Option<Arc<watch::Sender<bool>>>,
}

impl ShutdownTrigger {
    /// A trigger that has not fired, and the first handle that listens to it.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx, _never: None })
    }

    /// Fires the signal (again is harmless).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Another handle that listens to this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
            _never: None,
        }
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }
}

impl Shutdown {
    /// A handle that never fires (for callers that stop by dropping the task instead).
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            rx,
            _never: Some(Arc::new(tx)),
        }
    }

    /// Whether the signal has fired (or its trigger is gone).
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Waits until the signal fires (at once if it already has, or its trigger is gone).
    pub async fn recv(&mut self) {
        // `wait_for` errs only when the trigger was dropped: that counts as fired.
        let _ = self.rx.wait_for(|fired| *fired).await;
    }
}

/// A handle on a bare `watch` channel that turns true to stop, for callers written before
/// this type (`tests/mapping_emulators.rs` hands one to `daemon::start`); a dropped sender
/// counts as fired, as a dropped trigger does.
impl From<watch::Receiver<bool>> for Shutdown {
    fn from(rx: watch::Receiver<bool>) -> Shutdown {
        Shutdown { rx, _never: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_handle_sees_the_signal_once_fired() {
        let (trigger, mut a) = ShutdownTrigger::new();
        let mut b = trigger.subscribe();
        let c = a.clone();
        assert!(!a.is_shutdown() && !c.is_shutdown());
        let waiter = tokio::spawn(async move {
            b.recv().await;
            b.is_shutdown()
        });
        trigger.trigger();
        a.recv().await;
        assert!(a.is_shutdown() && c.is_shutdown() && trigger.is_triggered());
        assert!(matches!(waiter.await, Ok(true)));
    }

    #[tokio::test]
    async fn a_dropped_trigger_counts_as_fired() {
        let (trigger, mut s) = ShutdownTrigger::new();
        drop(trigger);
        assert!(s.is_shutdown());
        s.recv().await;
    }

    #[tokio::test]
    async fn a_bare_watch_receiver_becomes_a_handle_that_fires_on_true() {
        let (tx, rx) = watch::channel(false);
        let mut s = Shutdown::from(rx);
        assert!(!s.is_shutdown());
        tx.send_replace(true);
        s.recv().await;
        assert!(s.is_shutdown());
    }

    #[tokio::test(start_paused = true)]
    async fn never_does_not_fire() {
        let mut s = Shutdown::never();
        assert!(!s.is_shutdown());
        let waited = tokio::time::timeout(std::time::Duration::from_secs(3600), s.recv()).await;
        assert!(waited.is_err(), "recv returned without a signal");
    }
}
