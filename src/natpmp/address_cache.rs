//! [`AddressCache`]: the upstream gateway's external address, which the front end answers
//! opcode 0 with (RFC 6886 §3.2), asked once and kept fresh in the background.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::natpmp::upstream::Upstream;
use crate::shutdown::Shutdown;

/// The upstream gateway's external address, asked once and cached.
///
/// A request finds the cached address, or (when there is none) asks the upstream itself. One
/// exchange runs at a time, and its outcome is every waiter's, a failure included: while the
/// gateway is dark, the requests that arrived during one exchange (up to its 2 s budget) all get
/// result 3 with 0.0.0.0 (C-21) when it fails, and none of them starts an exchange of its own
/// after it. A background refresh ([`AddressCache::refresh_loop`]) asks again every `refresh`
/// interval (requests waiting meanwhile share its outcome too); a failed exchange clears the
/// cache, and the next request that arrives after it asks again.
pub struct AddressCache<U> {
    upstream: Arc<U>,
    cached: StdMutex<Option<Ipv4Addr>>,
    epoch_observer: StdMutex<Option<EpochObserver>>,
    change_observer: StdMutex<Option<ChangeObserver>>,
    fetching: tokio::sync::Mutex<()>,
    /// How many exchanges have finished: a waiter that sees it change while it waited for
    /// `fetching` takes that exchange's outcome instead of starting another.
    fetched: AtomicU64,
    wake: tokio::sync::Notify,
}

/// Called with (old, new) when the upstream's external address changes: the mapping layer
/// re-creates its mappings (a new address means the gateway's state is new too).
pub(crate) type ChangeObserver = Arc<dyn Fn(Ipv4Addr, Ipv4Addr) + Send + Sync>;

/// Called with the upstream's SSSoE from each address reply (C-48: the mapping layer watches it
/// for a gateway that lost its state).
pub(crate) type EpochObserver = Arc<dyn Fn(u32) + Send + Sync>;

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
            fetched: AtomicU64::new(0),
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
    /// with one (this request's exchange, or the one it waited for, failed).
    pub async fn get(&self) -> Option<Ipv4Addr> {
        let seen = self.fetched.load(Ordering::SeqCst);
        if let Some(a) = self.cached() {
            return Some(a);
        }
        let _one_at_a_time = self.fetching.lock().await;
        // An exchange that finished while we waited answered for us too, also when it failed:
        // starting another would make every waiter of a dark gateway wait out its own budget.
        if self.fetched.load(Ordering::SeqCst) != seen {
            return self.cached();
        }
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
        let outcome = self.ask().await;
        self.fetched.fetch_add(1, Ordering::SeqCst);
        outcome
    }

    async fn ask(&self) -> Option<Ipv4Addr> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::natpmp::upstream::{AddressReply, MapGrant, UpstreamError, UpstreamMap};
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use tokio::time::Instant;

    /// The upstream client's default budget: a dark gateway costs each exchange this long.
    const BUDGET: Duration = Duration::from_secs(2);

    /// A gateway that answers after the budget: with its address when `up`, else a timeout.
    #[derive(Default)]
    struct Slow {
        up: AtomicBool,
        asked: AtomicUsize,
    }

    impl Upstream for Slow {
        async fn external_address(&self) -> Result<AddressReply, UpstreamError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(BUDGET).await;
            if self.up.load(Ordering::SeqCst) {
                Ok(AddressReply {
                    epoch: 1,
                    address: Ipv4Addr::new(198, 51, 100, 7),
                })
            } else {
                Err(UpstreamError::Timeout {
                    gateway: "127.0.0.1:1".parse().unwrap(),
                    after: BUDGET,
                })
            }
        }

        async fn map(&self, _: UpstreamMap) -> Result<MapGrant, UpstreamError> {
            unreachable!("the cache only asks for the address")
        }
    }

    /// `n` concurrent askers; their answers, once all have one.
    async fn ask_all(cache: &Arc<AddressCache<Slow>>, n: usize) -> Vec<Option<Ipv4Addr>> {
        let askers: Vec<_> = (0..n)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get().await })
            })
            .collect();
        let mut answers = Vec::new();
        for asker in askers {
            answers.push(asker.await.unwrap());
        }
        answers
    }

    /// C-21: with the gateway dark, 200 address requests that arrive together share one
    /// exchange, its failure included: all are answered (no address) after one budget, not
    /// one budget after another. Then one new exchange serves the next ones, and its success is
    /// shared the same way.
    #[tokio::test(start_paused = true)]
    async fn c21_concurrent_askers_share_one_exchange_and_its_failure() {
        let slow = Arc::new(Slow::default());
        let cache = Arc::new(AddressCache::new(slow.clone()));
        let started = Instant::now();
        let answers = ask_all(&cache, 200).await;
        assert!(answers.iter().all(Option::is_none), "{answers:?}");
        assert_eq!(slow.asked.load(Ordering::SeqCst), 1, "one exchange for all");
        assert_eq!(
            started.elapsed(),
            BUDGET,
            "every asker waited for the one exchange only"
        );

        slow.up.store(true, Ordering::SeqCst);
        let answers = ask_all(&cache, 200).await;
        assert!(
            answers
                .iter()
                .all(|a| *a == Some(Ipv4Addr::new(198, 51, 100, 7))),
            "{answers:?}"
        );
        assert_eq!(
            slow.asked.load(Ordering::SeqCst),
            2,
            "one new exchange after the failure"
        );
        assert_eq!(started.elapsed(), BUDGET * 2);
        assert_eq!(cache.get().await, Some(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(
            slow.asked.load(Ordering::SeqCst),
            2,
            "then the cache answers"
        );
    }
}
