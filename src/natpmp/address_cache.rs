//! [`AddressCache`]: the upstream gateway's external address, which the front end answers
//! opcode 0 with (RFC 6886 §3.2), asked once and kept fresh in the background.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::natpmp::upstream::Upstream;
use crate::shutdown::Shutdown;

/// The upstream gateway's external address, asked once and cached.
///
/// A request finds the cached address, or (when there is none) asks the upstream itself, with
/// concurrent askers sharing one exchange. A background refresh ([`AddressCache::refresh_loop`])
/// asks again every `refresh` interval; a failed exchange clears the cache, so clients get
/// result 3 with 0.0.0.0 (C-21) until the upstream answers again, and the next request retries.
pub struct AddressCache<U> {
    upstream: Arc<U>,
    cached: StdMutex<Option<Ipv4Addr>>,
    epoch_observer: StdMutex<Option<EpochObserver>>,
    change_observer: StdMutex<Option<ChangeObserver>>,
    fetching: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
}

/// Called with (old, new) when the upstream's external address changes: the mapping layer
/// re-creates its mappings (a new address means the gateway's state is new too).
pub type ChangeObserver = Arc<dyn Fn(Ipv4Addr, Ipv4Addr) + Send + Sync>;

/// Called with the upstream's SSSoE from each address reply (C-48: the mapping layer watches it
/// for a gateway that lost its state).
pub type EpochObserver = Arc<dyn Fn(u32) + Send + Sync>;

/// The value behind `mutex`, also after a panic elsewhere while it was held (every value here
/// is a plain one, consistent at any moment).
fn locked<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<U: Upstream> AddressCache<U> {
    /// An empty cache in front of `upstream`.
    pub fn new(upstream: Arc<U>) -> AddressCache<U> {
        AddressCache {
            upstream,
            cached: StdMutex::new(None),
            epoch_observer: StdMutex::new(None),
            change_observer: StdMutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The cached address, if any.
    pub fn cached(&self) -> Option<Ipv4Addr> {
        *locked(&self.cached)
    }

    fn store(&self, value: Option<Ipv4Addr>) {
        let old = std::mem::replace(&mut *locked(&self.cached), value);
        if let (Some(old), Some(new)) = (old, value) {
            if old != new {
                let observer = locked(&self.change_observer).clone();
                if let Some(observe) = observer {
                    observe(old, new);
                }
            }
        }
        if old != value {
            match value {
                Some(a) => info!(external_address = %a, "upstream external address"),
                None => warn!("upstream external address unknown: answering result 3 until the VPN gateway answers"),
            }
        }
    }

    /// The address, asking the upstream when none is cached. `None`: the upstream did not answer
    /// with one.
    pub async fn get(&self) -> Option<Ipv4Addr> {
        if let Some(a) = self.cached() {
            return Some(a);
        }
        let _one_at_a_time = self.fetching.lock().await;
        // Someone else may have fetched it while we waited.
        if let Some(a) = self.cached() {
            return Some(a);
        }
        self.fetch().await
    }

    /// Sets the function that sees the upstream's SSSoE of every address reply.
    pub fn set_epoch_observer(&self, observer: EpochObserver) {
        *locked(&self.epoch_observer) = Some(observer);
    }

    /// Sets the function told when the external address changes.
    pub fn set_change_observer(&self, observer: ChangeObserver) {
        *locked(&self.change_observer) = Some(observer);
    }

    /// Makes the background refresh ask the upstream now instead of at its next interval (the
    /// gateway lost its state: its address may have changed too).
    pub fn refresh_soon(&self) {
        self.wake.notify_one();
    }

    /// Asks the upstream now and updates the cache.
    pub async fn fetch(&self) -> Option<Ipv4Addr> {
        match self.upstream.external_address().await {
            Ok(reply) => {
                let observer = locked(&self.epoch_observer).clone();
                if let Some(observe) = observer {
                    observe(reply.epoch);
                }
                self.store(Some(reply.address));
                Some(reply.address)
            }
            Err(e) => {
                warn!(error = %e, "upstream external address request failed");
                self.store(None);
                None
            }
        }
    }

    /// Refreshes every `every` until `shutdown` fires.
    pub async fn refresh_loop(&self, every: Duration, mut shutdown: Shutdown) {
        loop {
            {
                let _one_at_a_time = self.fetching.lock().await;
                self.fetch().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.recv() => return,
            }
        }
    }
}
