//! The double-NAT mapping transactions (router rule + upstream mapping), port allocation,
//! expiry and reconciliation.
//!
//! * [`orchestrator`]: the [`Orchestrator`], which implements
//!   [`MapHandler`](crate::natpmp::server::MapHandler): one transaction per request, serialized per
//!   [`MappingKey`], parallel across keys; the expiry task; graceful shutdown.
//! * [`reconcile`]: the reconciler pass (orphans removed, deleted live rules recreated, port
//!   index refreshed), at start and every `reconcile_interval`.
//! * [`ports`]: the router-port allocator, which never asks the router.
//! * [`rule`]: the comment format that marks our rules.
//! * [`lease`]: the key, the lease and the lifetime arithmetic (C-30).
//! * [`epoch_watch`]: the upstream epoch watch (C-48).
//! * [`error`]: [`MappingError`] and its mapping to NAT-PMP result codes (one place).
//!
//! Decisions (see the module docs for details):
//!
//! * Leases live in memory only. Rules of ours found at start have no live lease (the upstream
//!   mappings behind them expire within their lifetime anyway, 60 s with ProtonVPN), so the start
//!   reconcile removes them; clients re-map on their next renewal.
//! * Internal port 0 with a lifetime (C-37) is answered 2 (RFC-safe; miniupnpd does the same).
//! * Renewals and retransmits cost one upstream exchange and no router command.

use std::ops::RangeInclusive;
use std::time::Duration;

pub mod epoch_watch;
pub mod error;
pub mod lease;
pub mod orchestrator;
pub mod ports;
pub mod reconcile;
pub mod rule;

pub use error::MappingError;
pub use lease::{Lease, LeaseInfo, MappingKey};
pub use orchestrator::{Orchestrator, ShutdownReport};
pub use reconcile::ReconcileReport;

/// Default router port range for R when neither the suggested nor the internal port is free:
/// high ports, away from the well-known and registered ranges most LAN services use.
pub const DEFAULT_ROUTER_PORTS: RangeInclusive<u16> = 40000..=65000;
/// Default cap on any lifetime we grant (seconds).
pub const DEFAULT_MAX_LIFETIME: u32 = 3600;
/// Default interval between reconcile passes.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(600);

/// What the orchestrator needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingConfig {
    /// The VPN in-interface our dst-nat rules match (e.g. `wg-proton`).
    pub in_interface: String,
    /// Fallback range for router ports R.
    pub router_ports: RangeInclusive<u16>,
    /// Cap on every lifetime we ask upstream for and grant (seconds, C-30).
    pub max_lifetime: u32,
    /// Time between reconcile passes (the first runs at start).
    pub reconcile_interval: Duration,
    /// Extra time after a granted lifetime before the lease expires, so a client renewing a
    /// little late (timer jitter, one lost datagram) keeps its ports.
    pub expiry_grace: Duration,
    /// Bound on one router command, on top of the client's own timeouts.
    pub router_timeout: Duration,
    /// Bound on one upstream exchange, on top of the client's own retransmission budget.
    pub upstream_timeout: Duration,
    /// Default bound for [`Orchestrator::shutdown`].
    pub shutdown_timeout: Duration,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            in_interface: "wg-proton".to_owned(),
            router_ports: DEFAULT_ROUTER_PORTS,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
            expiry_grace: Duration::from_secs(5),
            router_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl MappingConfig {
    /// Checks the values; the message names the setting.
    pub fn validate(&self) -> Result<(), MappingError> {
        if self.in_interface.trim().is_empty() {
            return Err(MappingError::InvalidConfig(
                "the VPN in-interface name is empty".to_owned(),
            ));
        }
        if self.router_ports.is_empty() || *self.router_ports.start() == 0 {
            return Err(MappingError::InvalidConfig(format!(
                "router port range {}-{} is empty or starts at 0",
                self.router_ports.start(),
                self.router_ports.end()
            )));
        }
        if self.max_lifetime == 0 {
            return Err(MappingError::InvalidConfig(
                "max lifetime must be at least 1 second".to_owned(),
            ));
        }
        if self.reconcile_interval.is_zero() {
            return Err(MappingError::InvalidConfig(
                "reconcile interval must be more than 0".to_owned(),
            ));
        }
        Ok(())
    }
}
