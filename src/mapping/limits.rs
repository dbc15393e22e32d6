//! Limits that protect the router and the gateway's quota: a cap on live mappings, a
//! per-client mapping limit, and a per-client request rate (a token bucket: `rate` requests a
//! second, bursts of twice that). Excess is answered 4 (out of resources) and logged at most
//! once per client per minute.
//!
//! Both mapping caps count the creates still in flight as well as the live leases, checked in
//! the same step as the router port is reserved ([`Limits::caps`], `LeaseTable::reserve_within`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::mapping::events::Origin;
use crate::mapping::table::Caps;

/// How often one client's refusals are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Past this many tracked clients, idle ones are forgotten.
const PRUNE_ABOVE: usize = 1024;

/// The limits' settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Most live mappings at once (MAX_MAPPINGS).
    pub max_mappings: usize,
    /// Most live mappings of one client (MAX_MAPPINGS_PER_CLIENT).
    pub max_per_client: usize,
    /// Mapping requests one client may make per second (CLIENT_RATE_LIMIT).
    pub requests_per_second: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_mappings: 4096,
            max_per_client: 64,
            requests_per_second: 50,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    logged: Option<Instant>,
}

/// The per-client rate state.
#[derive(Debug)]
pub struct Limits {
    config: LimitsConfig,
    clients: Mutex<HashMap<Ipv4Addr, Bucket>>,
}

impl Limits {
    /// Limits with these settings.
    pub fn new(config: LimitsConfig) -> Limits {
        Limits {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// The caps a new mapping from `origin` is made within: MAX_MAPPINGS always, and
    /// MAX_MAPPINGS_PER_CLIENT for a client's own NAT-PMP request (a forward made through the
    /// API or a static mapping counts toward its client but is not refused by that cap; a twin
    /// does neither).
    pub fn caps(&self, origin: Origin) -> Caps {
        Caps {
            total: self.config.max_mappings,
            per_client: (origin == Origin::NatPmp).then_some(self.config.max_per_client),
            own: origin.twin_of().is_none(),
        }
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<Ipv4Addr, Bucket>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn burst(&self) -> f64 {
        f64::from(self.config.requests_per_second) * 2.0
    }

    /// Takes one request from `client`'s bucket; `false` when it is empty.
    pub fn allow(&self, client: Ipv4Addr, now: Instant) -> bool {
        let rate = f64::from(self.config.requests_per_second);
        let burst = self.burst();
        let mut clients = self.clients();
        if clients.len() > PRUNE_ABOVE {
            // A bucket that has refilled completely holds nothing worth keeping.
            clients.retain(|_, b| {
                now.saturating_duration_since(b.at).as_secs_f64() * rate + b.tokens < burst
            });
        }
        let bucket = clients.entry(client).or_insert(Bucket {
            tokens: burst,
            at: now,
            logged: None,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a refusal of `client` should be logged now (at most once per minute).
    pub fn should_log(&self, client: Ipv4Addr, now: Instant) -> bool {
        let mut clients = self.clients();
        let bucket = clients.entry(client).or_insert(Bucket {
            tokens: 0.0,
            at: now,
            logged: None,
        });
        match bucket.logged {
            Some(at) if now.saturating_duration_since(at) < LOG_EVERY => false,
            _ => {
                bucket.logged = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32) -> Limits {
        Limits::new(LimitsConfig {
            requests_per_second: rate,
            ..LimitsConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_gets_a_burst_of_twice_its_rate_then_the_rate() {
        let l = limits(10);
        let c = Ipv4Addr::new(192, 168, 88, 10);
        let now = Instant::now();
        assert_eq!((0..25).filter(|_| l.allow(c, now)).count(), 20);
        let later = now + Duration::from_millis(500);
        assert_eq!((0..25).filter(|_| l.allow(c, later)).count(), 5);
        assert!(
            l.allow(Ipv4Addr::new(192, 168, 88, 11), later),
            "another client has its own bucket"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_logged_once_a_minute_per_client() {
        let l = limits(1);
        let c = Ipv4Addr::new(192, 168, 88, 10);
        let now = Instant::now();
        assert!(l.should_log(c, now));
        assert!(!l.should_log(c, now + Duration::from_secs(59)));
        assert!(l.should_log(c, now + Duration::from_secs(60)));
        assert!(l.should_log(Ipv4Addr::new(192, 168, 88, 11), now));
    }
}
