//! [`MappingConfig`]: what the mapping core needs to know, with its checks.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::Duration;

use tokio::time::Instant;

use crate::mapping::error::MappingError;
use crate::mapping::store::limits::LimitsConfig;

/// Default router port range for R when neither the suggested nor the internal port is free:
/// high ports, away from the well-known and registered ranges most LAN services use.
pub(crate) const DEFAULT_ROUTER_PORTS: RangeInclusive<u16> = 40000..=65000;
/// Default cap on any lifetime we grant (seconds).
pub(crate) const DEFAULT_MAX_LIFETIME: u32 = 3600;
/// Default interval between reconcile passes.
pub(crate) const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(600);
/// Default CREATE_PATIENCE: how long a new mapping keeps trying through transient failures.
/// libtorrent (qBittorrent, Deluge) sends a request up to 9 times, 250 ms × n apart, and gives
/// up about 11.25 s after its first send, then waits two hours: 9 s answers well inside that.
pub(crate) const DEFAULT_CREATE_PATIENCE: Duration = Duration::from_secs(9);
/// The longest any duration setting may be: longer ones could overflow deadline arithmetic,
/// and no router owner means a week-long timeout.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the orchestrator needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingConfig {
    /// The VPN in-interface our dst-nat rules match (e.g. `wg-proton`).
    pub in_interface: String,
    /// Whether the in-interface was found with `/ip/route/check` (then it must be a tunnel
    /// type) rather than configured (then another type is used, with a warning).
    pub in_interface_found: bool,
    /// The VPN gateway: the route to it must go through the in-interface. `None` skips that
    /// check (in-process tests without routes).
    pub vpn_gateway: Option<Ipv4Addr>,
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
    /// CREATE_PATIENCE: how long a new mapping, or a renewal that must ask the gateway, keeps
    /// trying both layers through transient failures (no answer, ICMP unreachable, a connection
    /// reset) before it is answered 3; zero tries once.
    pub create_patience: Duration,
    /// A stop leaves every mapping in place (both layers) for the next start to adopt,
    /// instead of removing them.
    pub keep_on_stop: bool,
    /// Limits that protect the router and the gateway's quota.
    pub limits: LimitsConfig,
    /// Default bound for [`Orchestrator::shutdown`].
    pub shutdown_timeout: Duration,
    /// UDP_SRCNAT: every UDP mapping also gets a src-nat rule, so what the client sends from
    /// its internal port leaves the tunnel from the router port (RFC 6886 §3.9, C-42).
    pub udp_srcnat: bool,
    /// MAP_BOTH_PROTOCOLS: every TCP mapping also gets a UDP twin (same client and internal
    /// port), made, kept and ended with it.
    pub map_both_protocols: bool,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            in_interface: "wg-proton".to_owned(),
            in_interface_found: false,
            vpn_gateway: None,
            router_ports: DEFAULT_ROUTER_PORTS,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
            expiry_grace: Duration::from_secs(5),
            router_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(10),
            create_patience: DEFAULT_CREATE_PATIENCE,
            shutdown_timeout: Duration::from_secs(10),
            keep_on_stop: false,
            limits: LimitsConfig::default(),
            udp_srcnat: false,
            map_both_protocols: false,
        }
    }
}

impl MappingConfig {
    /// When a lease granted `lifetime` seconds at `now` ends unless its client renews it: the
    /// lifetime plus `expiry_grace` (C-32).
    pub fn client_deadline(&self, now: Instant, lifetime: u32) -> Instant {
        now + Duration::from_secs(u64::from(lifetime)) + self.expiry_grace
    }

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
        for (name, d) in [
            ("reconcile interval", self.reconcile_interval),
            ("router timeout", self.router_timeout),
            ("upstream timeout", self.upstream_timeout),
            ("shutdown timeout", self.shutdown_timeout),
        ] {
            if d.is_zero() || d > MAX_DURATION {
                return Err(MappingError::InvalidConfig(format!(
                    "{name} must be more than 0 and at most {MAX_DURATION:?}, not {d:?}"
                )));
            }
        }
        for (name, d) in [
            ("expiry grace", self.expiry_grace),
            ("create patience", self.create_patience),
        ] {
            if d > MAX_DURATION {
                return Err(MappingError::InvalidConfig(format!(
                    "{name} must be at most {MAX_DURATION:?}, not {d:?}"
                )));
            }
        }
        Ok(())
    }
}
