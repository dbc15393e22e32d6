//! [`ClientRate`]: how many requests each client may make, a token bucket per client address
//! (`rate` requests a second, bursts of twice that), with a note of when each client's refusal
//! was last logged. The server holds one for address requests, the mapping core one for mapping
//! requests (CLIENT_RATE_LIMIT sets both).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// How often one client's refusals are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Past this many tracked clients, idle ones are forgotten.
const PRUNE_ABOVE: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    logged: Option<Instant>,
}

/// The per-client token buckets (see the module docs).
#[derive(Debug)]
pub(crate) struct ClientRate {
    per_second: u32,
    clients: Mutex<HashMap<Ipv4Addr, Bucket>>,
}

impl ClientRate {
    /// `per_second` requests a second for each client, bursts of twice that.
    pub(crate) fn new(per_second: u32) -> ClientRate {
        ClientRate {
            per_second,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Requests a second, per client.
    pub(crate) fn per_second(&self) -> u32 {
        self.per_second
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<Ipv4Addr, Bucket>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn burst(&self) -> f64 {
        f64::from(self.per_second) * 2.0
    }

    /// Takes one request from `client`'s bucket; `false` when it is empty.
    pub(crate) fn allow(&self, client: Ipv4Addr, now: Instant) -> bool {
        let rate = f64::from(self.per_second);
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
    pub(crate) fn should_log(&self, client: Ipv4Addr, now: Instant) -> bool {
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

    #[tokio::test(start_paused = true)]
    async fn a_client_gets_a_burst_of_twice_its_rate_then_the_rate() {
        let l = ClientRate::new(10);
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
        let l = ClientRate::new(1);
        let c = Ipv4Addr::new(192, 168, 88, 10);
        let now = Instant::now();
        assert!(l.should_log(c, now));
        assert!(!l.should_log(c, now + Duration::from_secs(59)));
        assert!(l.should_log(c, now + Duration::from_secs(60)));
        assert!(l.should_log(Ipv4Addr::new(192, 168, 88, 11), now));
    }
}
