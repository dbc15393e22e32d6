//! The [`Orchestrator`]: the mapping core's facade. It builds the [`Core`], runs the start
//! reconcile, starts the background loops, hands each request to the transactions, and stops
//! everything in order. The work itself lives in `transaction.rs` (the entry point, renew),
//! `create.rs`, `teardown.rs` (delete, expire, shutdown), `twin.rs`, `reconcile.rs`, `tasks.rs` (expiry and reconcile loops), `table.rs` (the
//! leases and router ports), `keylock.rs` (per-key serialization) and `layers.rs` (the router
//! and the gateway under our bounds).
//!
//! **Shutdown**: stop accepting (new requests get 3), wait for in-flight transactions, remove
//! every mapping on both layers, wait for background undo work, all within a bound.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tracing::{info, warn};

use crate::mapping::config::MappingConfig;
use crate::mapping::core::{Core, InterfaceState};
use crate::mapping::error::MappingError;
use crate::mapping::events::{MappingEvent, Origin};
use crate::mapping::loops::keeper;
use crate::mapping::loops::reconcile::{self, ReconcileReport};
use crate::mapping::loops::tasks;
use crate::mapping::request::{Command, MappingRequest};
use crate::mapping::router::layers::Layers;
use crate::mapping::router::seam::Router;
use crate::mapping::store::key::MappingKey;
use crate::mapping::store::lease::LeaseInfo;
use crate::mapping::store::table::LeaseTable;
use crate::mapping::txn::adopt;
use crate::mapping::txn::teardown;
use crate::mapping::txn::transaction;
use crate::natpmp::handler::{MapHandler, MapReply};
use crate::natpmp::upstream::Upstream;
use crate::refused::RefusedSources;
use double_natpmp_codec::natpmp::epoch::Epoch;
use double_natpmp_codec::natpmp::result::ResultCode;
use double_natpmp_codec::natpmp::wire::MapRequest;

/// The mapping orchestrator. Cheap to clone (one shared state); implements [`MapHandler`].
pub struct Orchestrator<R, U> {
    core: Arc<Core<R, U>>,
}

impl<R, U> Clone for Orchestrator<R, U> {
    fn clone(&self) -> Self {
        Orchestrator {
            core: Arc::clone(&self.core),
        }
    }
}

impl<R, U> std::fmt::Debug for Orchestrator<R, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("in_interface", &self.core.config.in_interface)
            .field("leases", &self.core.table.len())
            .finish()
    }
}

/// What [`Orchestrator::shutdown`] achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Mappings removed on both layers.
    pub removed: usize,
    /// Mappings of which a layer could not be removed (rule or upstream mapping left behind).
    pub failed: usize,
    /// Mappings still held when the bound ran out.
    pub remaining: usize,
    /// Mappings kept on both layers for the next start (KEEP_MAPPINGS_ON_STOP).
    pub kept: usize,
    /// The bound ran out.
    pub timed_out: bool,
}

impl<R: Router, U: Upstream> Orchestrator<R, U> {
    /// An orchestrator with an empty lease table, nothing proven and no background tasks (no
    /// I/O). Most callers want [`Orchestrator::start`]; until a reconcile pass has proven the
    /// VPN interface, new mappings are answered 3.
    pub fn new(
        router: R,
        upstream: U,
        epoch: Arc<Epoch>,
        config: MappingConfig,
    ) -> Result<Self, MappingError> {
        config.validate()?;
        let layers = Layers::new(
            router,
            upstream,
            config.router_timeout,
            config.upstream_timeout,
            epoch,
        );
        Ok(Orchestrator {
            core: Arc::new(Core::new(layers, config)),
        })
    }

    /// Builds the orchestrator, adopts the router's rules of ours as leases and makes their
    /// upstream mappings again ([`crate::mapping::txn::adopt`]), runs the start reconcile (proves the
    /// VPN interface, loads the router view, removes rules of ours no lease owns), then starts
    /// the expiry task, the keeper and the periodic reconciler. Fails if the router cannot be
    /// listed.
    pub async fn start(
        router: R,
        upstream: U,
        epoch: Arc<Epoch>,
        config: MappingConfig,
    ) -> Result<Self, MappingError> {
        let orchestrator = Orchestrator::new(router, upstream, epoch, config)?;
        let adopted = Box::pin(adopt::adopt(&orchestrator.core)).await?;
        let report = orchestrator.reconcile().await?;
        info!(
            in_interface = %orchestrator.core.config.in_interface,
            interface_ok = report.interface_ok,
            rules = report.rules_seen,
            foreign = report.foreign_rules,
            foreign_on_tunnel = report.foreign_on_tunnel,
            removed = report.orphans_removed,
            adopted = adopted.adopted,
            "mapping orchestrator ready"
        );
        orchestrator.spawn_background();
        Ok(orchestrator)
    }

    /// Starts the expiry task and the periodic reconciler (done by [`Orchestrator::start`]).
    pub fn spawn_background(&self) {
        let core = &self.core;
        let expiry = tokio::spawn(tasks::expiry_loop(Arc::clone(core), core.stop.subscribe()));
        let reconcile = tokio::spawn(tasks::reconcile_loop(
            Arc::clone(core),
            core.stop.subscribe(),
        ));
        let keeper = tokio::spawn(keeper::keeper_loop(Arc::clone(core), core.stop.subscribe()));
        let mut handles = core.tasks.lock().unwrap_or_else(|p| p.into_inner());
        handles.push(expiry);
        handles.push(reconcile);
        handles.push(keeper);
    }

    /// One reconcile pass now (see [`crate::mapping::loops::reconcile`]).
    pub async fn reconcile(&self) -> Result<ReconcileReport, MappingError> {
        // Boxed: the pass is a deep future; kept off the caller's stack.
        Box::pin(reconcile::pass(&self.core)).await
    }

    /// Whether the gateway's port quota was found used up a moment ago (see `store/quota.rs`).
    pub fn quota_full(&self) -> bool {
        self.core.quota.sequential(tokio::time::Instant::now())
    }

    /// Removes every lease whose deadline has passed, now (the expiry task does this on its own).
    pub async fn expire_due(&self) {
        tasks::expire_due(&self.core).await;
    }

    /// Feeds an upstream SSSoE seen elsewhere (e.g. an external-address reply) to the epoch
    /// watch; resets our epoch when the gateway lost its state (C-48). Returns whether it did.
    pub fn observe_upstream_epoch(&self, sssoe: u32) -> bool {
        self.core.layers.observe_epoch(sssoe)
    }

    /// Makes every live mapping again at the gateway now (its external address changed, or it
    /// lost its state in a way the daemon learnt of elsewhere).
    pub fn heal(&self, why: &str) {
        keeper::heal(&self.core, why);
    }

    /// Runs the keeper's due renewals now (the keeper task does this on its own).
    pub async fn renew_due(&self) {
        keeper::renew_due(&self.core).await;
    }

    /// The number of live mappings.
    pub fn lease_count(&self) -> usize {
        self.core.table.len()
    }

    /// A snapshot of the live mappings, sorted by key.
    pub fn leases(&self) -> Vec<LeaseInfo> {
        self.core.table.snapshot()
    }

    /// The configuration.
    pub fn config(&self) -> &MappingConfig {
        &self.core.config
    }

    /// The lease table (for diagnostics and tests).
    pub fn table(&self) -> &LeaseTable {
        &self.core.table
    }

    /// Whether the VPN interface is proven usable, as of the last reconcile pass.
    pub fn interface(&self) -> InterfaceState {
        self.core.interface()
    }

    /// The router's own addresses on the VPN interface (requests from them are not clients).
    pub fn tunnel_addresses(&self) -> Vec<Ipv4Addr> {
        self.core.tunnel_addresses()
    }

    /// The sources that are not real clients, as of the last reconcile pass (the NAT-PMP
    /// server drops their datagrams; the forwards API and STATIC_MAPPINGS refuse them).
    pub fn refused(&self) -> &Arc<RefusedSources> {
        &self.core.refused
    }

    /// Answers a command of any front end (the forwards API, a static reservation, a twin):
    /// the same transaction a NAT-PMP request runs, with the lease marked by the command's
    /// origin (a static lease never expires).
    pub async fn request(&self, command: Command) -> MapReply {
        answer(&self.core, command).await
    }

    /// Answers a NAT-PMP-shaped request made on behalf of `client` with the lease marked by
    /// `origin`: translated at the edge ([`from_natpmp`]) and run as [`Orchestrator::request`].
    pub async fn handle_from(
        &self,
        client: Ipv4Addr,
        request: MapRequest,
        origin: Origin,
    ) -> MapReply {
        self.request(from_natpmp(client, request, origin)).await
    }

    /// A listener for what happens to mappings from now on ([`MappingEvent`]).
    pub fn subscribe(&self) -> broadcast::Receiver<MappingEvent> {
        self.core.events.subscribe()
    }

    /// How many mapping keys have a lock entry now (held or waited for); 0 when idle.
    pub fn locks_in_use(&self) -> usize {
        self.core.locks.len()
    }

    /// Resolves once no background undo or drain work is running.
    pub async fn settled(&self) {
        self.core.background.settled().await;
    }

    /// Stops every background task at once and refuses new requests, touching neither layer,
    /// as a crash (SIGKILL) would; a new orchestrator on the same router then adopts what was
    /// left (tests of a restart use this).
    pub fn abandon(&self) {
        self.core.stop.trigger();
        let handles: Vec<JoinHandle<()>> = {
            let mut tasks = self.core.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.drain(..).collect()
        };
        for h in handles {
            h.abort();
        }
        self.core.abandon();
    }

    /// Graceful stop: new requests are answered 3, in-flight transactions finish, then every
    /// mapping is removed on both layers; all within `bound`. Background tasks are stopped.
    pub async fn shutdown(&self, bound: Duration) -> ShutdownReport {
        let core = &self.core;
        let removed = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let work = async {
            let _closed = core.close().await;
            let mut set = JoinSet::new();
            if core.config.keep_on_stop {
                return;
            }
            for info in core.table.snapshot() {
                let core = Arc::clone(core);
                let removed = Arc::clone(&removed);
                let failed = Arc::clone(&failed);
                set.spawn(async move {
                    match teardown::remove_for_shutdown(&core, info.key).await {
                        Some(true) => removed.fetch_add(1, Ordering::Relaxed),
                        Some(false) => failed.fetch_add(1, Ordering::Relaxed),
                        None => 0,
                    };
                });
            }
            while set.join_next().await.is_some() {}
            core.background.settled().await;
        };
        let timed_out = timeout(bound, work).await.is_err();
        let handles: Vec<JoinHandle<()>> = {
            let mut tasks = core.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.drain(..).collect()
        };
        for h in handles {
            h.abort();
        }
        let left = core.table.len();
        let kept = if core.config.keep_on_stop { left } else { 0 };
        let report = ShutdownReport {
            removed: removed.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            remaining: left - kept,
            kept,
            timed_out,
        };
        if timed_out {
            warn!(
                ?bound,
                remaining = report.remaining,
                "shutdown bound ran out; remaining rules are removed at the next start"
            );
        } else if kept > 0 {
            info!(
                mappings = kept,
                "KEEP_MAPPINGS_ON_STOP: every mapping stays on both layers for the next start"
            );
        } else {
            info!(
                removed = report.removed,
                failed = report.failed,
                "all mappings removed"
            );
        }
        report
    }
}

/// The NAT-PMP front end's request as the core's [`Command`] (the edge's translation): lifetime 0
/// deletes the mapping (C-33), and with internal port 0 every mapping of the client for the
/// protocol (C-36); the suggested external port is ignored on deletion.
pub(crate) fn from_natpmp(client: Ipv4Addr, request: MapRequest, origin: Origin) -> Command {
    match (request.lifetime, request.internal_port) {
        (0, 0) => Command::DeleteAll {
            client,
            protocol: request.protocol,
            origin,
        },
        (0, internal_port) => Command::Delete {
            key: MappingKey {
                client,
                protocol: request.protocol,
                internal_port,
            },
            origin,
        },
        (lifetime, internal_port) => Command::Map(MappingRequest {
            client,
            protocol: request.protocol,
            internal_port,
            suggested_external_port: request.suggested_external_port,
            lifetime,
            origin,
        }),
    }
}

/// Every front end's way in: a refused source is answered at once, anything else runs the
/// transaction.
async fn answer<R: Router, U: Upstream>(core: &Arc<Core<R, U>>, command: Command) -> MapReply {
    match refuse(core, &command) {
        Some(reply) => reply,
        None => transaction::handle(core, command).await,
    }
}

impl<R: Router, U: Upstream> MapHandler for Orchestrator<R, U> {
    fn handle_map(
        &self,
        client: Ipv4Addr,
        request: MapRequest,
    ) -> impl Future<Output = MapReply> + Send {
        let core = Arc::clone(&self.core);
        let command = from_natpmp(client, request, Origin::NatPmp);
        async move { answer(&core, command).await }
    }

    fn answer_now(&self, client: Ipv4Addr, request: MapRequest) -> Option<MapReply> {
        match from_natpmp(client, request, Origin::NatPmp) {
            Command::Map(request) => transaction::answer_now(&self.core, request),
            Command::Delete { .. } | Command::DeleteAll { .. } => None,
        }
    }
}

/// A command to create or renew a mapping for a source that is not a real client (see
/// [`crate::refused`]) is answered 2 at once, with no router or gateway command; the front
/// ends refuse it before it gets here (the NAT-PMP server with silence), so this holds for
/// every other caller too. A delete goes through: it can only take something away. The
/// self-test maps the daemon's own address on purpose (it is not a client's request).
fn refuse<R, U>(core: &Core<R, U>, command: &Command) -> Option<MapReply> {
    let Command::Map(request) = command else {
        return None;
    };
    if request.origin == Origin::SelfTest {
        return None;
    }
    core.refused
        .check(request.client)
        .map(|_| MapReply::failure(ResultCode::NotAuthorized))
}
