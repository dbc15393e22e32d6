//! Limits that protect the router and the gateway's quota: a cap on live mappings, a
//! per-client mapping limit, and a per-client request rate (a token bucket: `rate` requests a
//! second, bursts of twice that). Excess is answered 4 (out of resources) and logged at most
//! once per client per minute.
//!
//! Both mapping caps count the creates still in flight as well as the live leases, checked in
//! the same step as the router port is reserved (`caps.rs`).

use std::net::Ipv4Addr;

use tokio::time::Instant;

use crate::natpmp::rate::ClientRate;

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

/// The caps and the per-client rate of mapping requests.
#[derive(Debug)]
pub(crate) struct Limits {
    config: LimitsConfig,
    rate: ClientRate,
}

impl Limits {
    /// Limits with these settings.
    pub(crate) fn new(config: LimitsConfig) -> Limits {
        Limits {
            config,
            rate: ClientRate::new(config.requests_per_second),
        }
    }

    /// The settings.
    pub(crate) fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Takes one mapping request from `client`'s bucket; `false` when it is empty.
    pub(crate) fn allow(&self, client: Ipv4Addr, now: Instant) -> bool {
        self.rate.allow(client, now)
    }

    /// Whether a refusal of `client` should be logged now (at most once per minute).
    pub(crate) fn should_log(&self, client: Ipv4Addr, now: Instant) -> bool {
        self.rate.should_log(client, now)
    }
}
