//! [`StatusState`]: what the status server's handlers share: the mapping core (a
//! [`MappingHandle`], not generic), the [`History`], the [`Metrics`], the gateway's external address, and the API
//! token. Its methods build the JSON views from a snapshot of the lease table.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use crate::cidr::CidrList;
use crate::mapping::store::lease::{LeaseInfo, MappingKey};
use crate::mapping::MappingHandle;
use crate::natpmp::server::ServerStats;
use crate::reachability::service::ReachabilityHandle;
use crate::static_keeper::KeeperStats;
use crate::status::auth::Token;
use crate::status::history::{unix_seconds, History};
use crate::status::metrics::Metrics;
use crate::status::view::{MappingView, ReachabilityView, Readiness, StatusView};

/// Reads the VPN gateway's external address as the daemon knows it now.
pub(crate) type ExternalAddress = Arc<dyn Fn() -> Option<Ipv4Addr> + Send + Sync>;

/// See the module docs.
pub(crate) struct StatusState {
    /// The mapping core.
    pub mapping: MappingHandle,
    /// Times and events learned from the core's events.
    pub history: Arc<History>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The NAT-PMP server's counters (none in tests that run no server).
    pub server_stats: Option<Arc<ServerStats>>,
    /// The static keeper's counters.
    pub keeper: Arc<KeeperStats>,
    /// The external address.
    pub external: ExternalAddress,
    /// The API token; `None`: the forwards routes do not exist.
    pub token: Option<Token>,
    /// ALLOWED_CLIENTS: the forwards API serves only these clients.
    pub allowed: CidrList,
    /// The reachability check, when the daemon runs one.
    pub reachability: Option<ReachabilityHandle>,
}

impl StatusState {
    /// Every live mapping, sorted by key.
    pub(crate) fn mappings(&self) -> Vec<MappingView> {
        let external = (self.external)();
        let grace = self.mapping.config().expiry_grace;
        let now = Instant::now();
        self.mapping
            .leases()
            .iter()
            .map(|info| MappingView::new(info, &self.history, external, grace, now))
            .collect()
    }

    /// The live mapping of `key`, as [`mappings`](Self::mappings) shows it.
    pub(crate) fn mapping(&self, key: &MappingKey) -> Option<MappingView> {
        let lease = self.mapping.lease(key)?;
        let info = LeaseInfo { key: *key, lease };
        Some(MappingView::new(
            &info,
            &self.history,
            (self.external)(),
            self.mapping.config().expiry_grace,
            Instant::now(),
        ))
    }

    /// The readiness checks now.
    pub(crate) fn readiness(&self) -> Readiness {
        Readiness::new(
            &self.history,
            &self.mapping.interface(),
            (self.external)(),
            SystemTime::now(),
        )
    }

    /// The page's summary.
    pub(crate) fn status(&self) -> StatusView {
        StatusView {
            version: env!("CARGO_PKG_VERSION"),
            external_address: (self.external)(),
            in_interface: self.mapping.config().in_interface.clone(),
            mappings: self.mapping.lease_count(),
            health: self.readiness(),
            events: self.history.recent(),
            reachability: self.reachability_view(),
            now: unix_seconds(SystemTime::now()),
        }
    }

    /// The reachability check's view, when the daemon runs one.
    pub(crate) fn reachability_view(&self) -> Option<ReachabilityView> {
        let handle = self.reachability.as_ref()?;
        Some(ReachabilityView::new(
            handle.periodic(),
            handle.latest(),
            SystemTime::now(),
        ))
    }

    /// The metrics exposition now.
    pub(crate) fn metrics_text(&self) -> Result<String, std::fmt::Error> {
        let reachability = self.reachability.as_ref().and_then(|r| r.latest());
        self.metrics.encode(
            &self.mapping.leases(),
            self.server_stats.as_deref(),
            &self.keeper,
            reachability.as_deref(),
        )
    }
}
