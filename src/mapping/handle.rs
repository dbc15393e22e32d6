//! [`MappingHandle`]: the mapping core as the status services, the static keeper and the CLI
//! see it, without the router and gateway types the [`Orchestrator`] is generic over: the
//! lease snapshot, the events, the refused sources, and the request entry point. Cheap to
//! clone (one `Arc`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::mapping::config::MappingConfig;
use crate::mapping::core::InterfaceState;
use crate::mapping::error::MappingError;
use crate::mapping::events::MappingEvent;
use crate::mapping::orchestrator::Orchestrator;
use crate::mapping::request::Command;
use crate::mapping::router::seam::Router;
use crate::mapping::store::key::MappingKey;
use crate::mapping::store::lease::{Lease, LeaseInfo};
use crate::natpmp::handler::MapReply;
use crate::natpmp::upstream::Upstream;
use crate::refused::RefusedSources;

/// A reply that is on its way.
type ReplyFuture = Pin<Box<dyn Future<Output = MapReply> + Send>>;
/// A reconcile pass that is on its way.
type ReconcileFuture = Pin<Box<dyn Future<Output = Result<(), MappingError>> + Send>>;

/// What the handle asks of the core (implemented by every [`Orchestrator`]).
trait Facade: Send + Sync {
    fn leases(&self) -> Vec<LeaseInfo>;
    fn lease(&self, key: &MappingKey) -> Option<Lease>;
    fn lease_count(&self) -> usize;
    fn config(&self) -> &MappingConfig;
    fn interface(&self) -> InterfaceState;
    fn refused(&self) -> &Arc<RefusedSources>;
    fn subscribe(&self) -> broadcast::Receiver<MappingEvent>;
    fn request(&self, command: Command) -> ReplyFuture;
    fn quota_full(&self) -> bool;
    fn reconcile(&self) -> ReconcileFuture;
}

impl<R: Router, U: Upstream> Facade for Orchestrator<R, U> {
    fn leases(&self) -> Vec<LeaseInfo> {
        Orchestrator::leases(self)
    }
    fn lease(&self, key: &MappingKey) -> Option<Lease> {
        self.table().get(key)
    }
    fn lease_count(&self) -> usize {
        Orchestrator::lease_count(self)
    }
    fn config(&self) -> &MappingConfig {
        Orchestrator::config(self)
    }
    fn interface(&self) -> InterfaceState {
        Orchestrator::interface(self)
    }
    fn refused(&self) -> &Arc<RefusedSources> {
        Orchestrator::refused(self)
    }
    fn subscribe(&self) -> broadcast::Receiver<MappingEvent> {
        Orchestrator::subscribe(self)
    }
    fn request(&self, command: Command) -> ReplyFuture {
        let orchestrator = self.clone();
        Box::pin(async move { orchestrator.request(command).await })
    }
    fn quota_full(&self) -> bool {
        Orchestrator::quota_full(self)
    }
    fn reconcile(&self) -> ReconcileFuture {
        let orchestrator = self.clone();
        Box::pin(async move { orchestrator.reconcile().await.map(|_| ()) })
    }
}

/// The mapping core without its type parameters; see the module docs.
#[derive(Clone)]
pub(crate) struct MappingHandle {
    core: Arc<dyn Facade>,
}

impl std::fmt::Debug for MappingHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappingHandle")
            .field("leases", &self.core.lease_count())
            .finish()
    }
}

impl<R: Router, U: Upstream> From<Orchestrator<R, U>> for MappingHandle {
    fn from(orchestrator: Orchestrator<R, U>) -> MappingHandle {
        MappingHandle {
            core: Arc::new(orchestrator),
        }
    }
}

impl MappingHandle {
    /// A snapshot of the live mappings, sorted by key.
    pub(crate) fn leases(&self) -> Vec<LeaseInfo> {
        self.core.leases()
    }

    /// The live lease of `key`.
    pub(crate) fn lease(&self, key: &MappingKey) -> Option<Lease> {
        self.core.lease(key)
    }

    /// The number of live mappings.
    pub(crate) fn lease_count(&self) -> usize {
        self.core.lease_count()
    }

    /// The mapping core's configuration.
    pub(crate) fn config(&self) -> &MappingConfig {
        self.core.config()
    }

    /// Whether the VPN interface is proven usable, as of the last reconcile pass.
    pub(crate) fn interface(&self) -> InterfaceState {
        self.core.interface()
    }

    /// The sources that are not real clients, as of the last reconcile pass.
    pub(crate) fn refused(&self) -> &Arc<RefusedSources> {
        self.core.refused()
    }

    /// A listener for what happens to mappings from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<MappingEvent> {
        self.core.subscribe()
    }

    /// Answers a command ([`Orchestrator::request`]).
    pub(crate) async fn request(&self, command: Command) -> MapReply {
        self.core.request(command).await
    }

    /// Whether the gateway's port quota was found used up a moment ago.
    pub(crate) fn quota_full(&self) -> bool {
        self.core.quota_full()
    }

    /// One reconcile pass now ([`Orchestrator::reconcile`]): orphans removed, missing rules of
    /// live mappings made again.
    pub(crate) async fn reconcile(&self) -> Result<(), MappingError> {
        self.core.reconcile().await
    }
}
