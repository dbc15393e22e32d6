//! The orchestrator: one transaction per mapping request across both NAT layers.
//!
//! | request | router | upstream | reply |
//! |---|---|---|---|
//! | new mapping | add the dst-nat rule (1 command) | map (proto, R, client's suggestion, min(asked, cap)) | I, E, min(asked, granted, cap) |
//! | renewal / retransmit | none | map (proto, R, current E, min(asked, cap)) | I, E (new E if the gateway moved it) |
//! | delete | remove the rule | map (proto, R, 0, 0) | I, 0, 0 (C-33); unknown → success (C-34) |
//! | delete all (I = 0) | remove each of the client's rules of the protocol | delete each | 0, 0, 0 (C-36) |
//! | expiry | remove the rule | delete | — |
//!
//! **Serialization.** Each [`MappingKey`] has its own async mutex (created on demand, dropped
//! when nobody holds or waits for it); different keys run in parallel. No dashmap guard is ever
//! held across an `.await`.
//!
//! **Failures are answered** (C-17) and nothing is left half made:
//! * the router add fails definitely (trap, refused): the port is freed, the reply is 2 (policy)
//!   or 3; the upstream is never asked;
//! * the router add's answer is lost (connection cut, timeout): the rule may exist; the port stays
//!   used as a *suspect* and the reconciler removes the orphan (no live lease owns it);
//! * the upstream fails after the rule was added: the rule is removed (rollback; if that fails too
//!   the reconciler removes it later); if the gateway may have made the mapping (timeout), a
//!   delete is sent to it in the background before the port is reused.
//!
//! **Lifetimes.** The gateway is asked for min(asked, cap); the client gets min(asked, granted,
//! cap) (C-30). The lease expires at grant time + lifetime + `expiry_grace` (a few seconds for a
//! late renewal); one task sleeps until the earliest deadline (woken when a new one appears) and
//! removes both layers of expired leases (C-32).
//!
//! **Renewal** is upstream-only. If the gateway answers a different external port, the client
//! gets the new one. A rule someone deleted meanwhile is recreated by the reconciler, not here.
//!
//! **Internal port 0 with a lifetime** (C-37) is answered 2 (RFC-safe, as miniupnpd does).
//!
//! **Delete of a mapping we do not hold** answers success (C-34), unless a dst-nat rule we did not
//! make forwards that protocol and port to the client: then 2 (C-35). Delete-all answers 2 when
//! such rules exist for the client, after deleting everything of ours (C-36).
//!
//! **Upstream epoch** (C-48): every grant's SSSoE is checked with the RFC 6886 §3.6 rule; when
//! the gateway lost its state, our epoch is reset, so clients re-map on their next request.
//!
//! **Shutdown**: stop accepting (new requests get 3), wait for in-flight transactions, remove
//! every mapping on both layers, all within a bound.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{watch, Notify, OwnedMutexGuard, RwLock, RwLockReadGuard};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use crate::mapping::epoch_watch::UpstreamEpochWatch;
use crate::mapping::error::MappingError;
use crate::mapping::lease::{reply_lifetime, upstream_lifetime, Lease, LeaseInfo, MappingKey};
use crate::mapping::ports::{PortIndex, Reservation};
use crate::mapping::reconcile::ReconcileReport;
use crate::mapping::rule::RuleComment;
use crate::mapping::MappingConfig;
use crate::natpmp::epoch::Epoch;
use crate::natpmp::handler::{MapHandler, MapReply};
use crate::natpmp::upstream::{MapGrant, Upstream};
use crate::natpmp::wire::{MapRequest, Protocol, ResultCode};
use crate::routeros::api::{DstNatRule, Router, RouterError, RuleId};

/// The mapping orchestrator. Cheap to clone (one shared state); implements [`MapHandler`].
pub struct Orchestrator<R, U> {
    inner: Arc<Inner<R, U>>,
}

impl<R, U> Clone for Orchestrator<R, U> {
    fn clone(&self) -> Self {
        Orchestrator {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R, U> std::fmt::Debug for Orchestrator<R, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("in_interface", &self.inner.config.in_interface)
            .field("leases", &self.inner.leases.len())
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
    /// The bound ran out.
    pub timed_out: bool,
}

/// How a teardown treats a rule the router would not remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnRouterFailure {
    /// Keep the lease (the client asked for a delete and gets an error; it may retry).
    Keep,
    /// Drop the lease anyway (expiry, shutdown); the reconciler removes the rule later.
    Abandon,
}

pub(super) struct Inner<R, U> {
    pub(super) router: R,
    pub(super) upstream: U,
    pub(super) epoch: Arc<Epoch>,
    pub(super) config: MappingConfig,
    pub(super) ports: Arc<PortIndex>,
    pub(super) leases: DashMap<MappingKey, Lease>,
    locks: DashMap<MappingKey, Arc<tokio::sync::Mutex<KeyState>>>,
    gate: RwLock<()>,
    closing: AtomicBool,
    expiry_wake: Notify,
    stop: watch::Sender<bool>,
    epoch_watch: Mutex<UpstreamEpochWatch>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What a key's lock remembers while requests for the key are queued on it.
#[derive(Debug, Default)]
pub(super) struct KeyState {
    /// The last mapping request served under this lock, when it finished, and its answer.
    last: Option<(Instant, MapRequest, MapReply)>,
}

/// The per-key lock; the lock's map entry goes away when nobody holds or waits for it.
pub(super) struct KeyLock<'a> {
    locks: &'a DashMap<MappingKey, Arc<tokio::sync::Mutex<KeyState>>>,
    key: MappingKey,
    guard: Option<OwnedMutexGuard<KeyState>>,
}

impl KeyLock<'_> {
    /// The answer of an identical request that finished while this one waited for the lock.
    ///
    /// A client retransmits (250 ms, doubling) while its first try is still in flight (a slow
    /// or silent gateway, a busy router pool). The copy asks exactly what the first try asked,
    /// so it gets that answer: repeating the transaction would cost a second upstream exchange
    /// (a renewal), or a router add and remove for a failure, and change nothing.
    fn answered_while_waiting(&self, arrived: Instant, request: &MapRequest) -> Option<MapReply> {
        let state = self.guard.as_ref()?;
        match state.last {
            Some((finished, ref served, reply)) if finished >= arrived && served == request => {
                Some(reply)
            }
            _ => None,
        }
    }

    /// Remembers how this request ended, for the copies queued behind it.
    fn record(&mut self, request: MapRequest, outcome: &Result<MapReply, MappingError>) {
        if let Some(state) = self.guard.as_mut() {
            let reply = match outcome {
                Ok(reply) => *reply,
                Err(e) => MapReply::failure(e.result_code()),
            };
            state.last = Some((Instant::now(), request, reply));
        }
    }
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        self.guard.take();
        // Waiters hold a clone of the Arc, so a count of 1 (the map's) means nobody needs it;
        // the check runs under the shard lock, so nobody can clone it meanwhile.
        self.locks
            .remove_if(&self.key, |_, m| Arc::strong_count(m) == 1);
    }
}

fn deleted(result: ResultCode) -> MapReply {
    MapReply {
        result,
        external_port: 0,
        lifetime: 0,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl<R: Router, U: Upstream> Orchestrator<R, U> {
    /// An orchestrator with an empty port index and no background tasks (no I/O). Most callers
    /// want [`Orchestrator::start`].
    pub fn new(
        router: R,
        upstream: U,
        epoch: Arc<Epoch>,
        config: MappingConfig,
    ) -> Result<Self, MappingError> {
        config.validate()?;
        let (stop, _) = watch::channel(false);
        Ok(Orchestrator {
            inner: Arc::new(Inner {
                router,
                upstream,
                epoch,
                ports: Arc::new(PortIndex::new(config.router_ports.clone())),
                config,
                leases: DashMap::new(),
                locks: DashMap::new(),
                gate: RwLock::new(()),
                closing: AtomicBool::new(false),
                expiry_wake: Notify::new(),
                stop,
                epoch_watch: Mutex::new(UpstreamEpochWatch::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Builds the orchestrator, runs the start reconcile (loads the port index from the router's
    /// dst-nat rules and removes rules of ours, which no lease owns after a restart), then starts
    /// the expiry task and the periodic reconciler. Fails if the router cannot be listed.
    pub async fn start(
        router: R,
        upstream: U,
        epoch: Arc<Epoch>,
        config: MappingConfig,
    ) -> Result<Self, MappingError> {
        let orchestrator = Orchestrator::new(router, upstream, epoch, config)?;
        let report = orchestrator.reconcile().await?;
        info!(
            in_interface = %orchestrator.inner.config.in_interface,
            rules = report.rules_seen,
            foreign = report.foreign_rules,
            removed = report.orphans_removed,
            "mapping orchestrator ready"
        );
        orchestrator.spawn_background();
        Ok(orchestrator)
    }

    /// Starts the expiry task and the periodic reconciler (done by [`Orchestrator::start`]).
    pub fn spawn_background(&self) {
        let expiry = tokio::spawn(Arc::clone(&self.inner).expiry_loop(self.inner.stop.subscribe()));
        let reconcile =
            tokio::spawn(Arc::clone(&self.inner).reconcile_loop(self.inner.stop.subscribe()));
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.push(expiry);
        tasks.push(reconcile);
    }

    /// One reconcile pass now (see [`crate::mapping::reconcile`]).
    pub async fn reconcile(&self) -> Result<ReconcileReport, MappingError> {
        self.inner.reconcile().await
    }

    /// Removes every lease whose deadline has passed, now (the expiry task does this on its own).
    pub async fn expire_due(&self) {
        Arc::clone(&self.inner).expire_due().await;
    }

    /// Feeds an upstream SSSoE seen elsewhere (e.g. an external-address reply) to the epoch
    /// watch; resets our epoch when the gateway lost its state (C-48). Returns whether it did.
    pub fn observe_upstream_epoch(&self, sssoe: u32) -> bool {
        self.inner.observe_epoch(sssoe)
    }

    /// The number of live mappings.
    pub fn lease_count(&self) -> usize {
        self.inner.leases.len()
    }

    /// A snapshot of the live mappings, sorted by key.
    pub fn leases(&self) -> Vec<LeaseInfo> {
        let mut out: Vec<LeaseInfo> = self
            .inner
            .leases
            .iter()
            .map(|e| LeaseInfo {
                key: *e.key(),
                lease: e.value().clone(),
            })
            .collect();
        out.sort_by_key(|l| l.key);
        out
    }

    /// The configuration.
    pub fn config(&self) -> &MappingConfig {
        &self.inner.config
    }

    /// The router port index (for diagnostics and tests).
    pub fn ports(&self) -> &PortIndex {
        &self.inner.ports
    }

    /// Graceful stop: new requests are answered 3, in-flight transactions finish, then every
    /// mapping is removed on both layers; all within `bound`. Background tasks are stopped.
    pub async fn shutdown(&self, bound: Duration) -> ShutdownReport {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::SeqCst);
        inner.stop.send_replace(true);
        let removed = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let work = async {
            let _closed = inner.gate.write().await;
            let keys: Vec<MappingKey> = inner.leases.iter().map(|e| *e.key()).collect();
            let mut set = JoinSet::new();
            for key in keys {
                let inner = Arc::clone(inner);
                let removed = Arc::clone(&removed);
                let failed = Arc::clone(&failed);
                set.spawn(async move {
                    match inner.remove_for_shutdown(key).await {
                        Some(true) => removed.fetch_add(1, Ordering::Relaxed),
                        Some(false) => failed.fetch_add(1, Ordering::Relaxed),
                        None => 0,
                    };
                });
            }
            while set.join_next().await.is_some() {}
        };
        let timed_out = timeout(bound, work).await.is_err();
        let handles: Vec<JoinHandle<()>> = {
            let mut tasks = inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.drain(..).collect()
        };
        for h in handles {
            h.abort();
        }
        let report = ShutdownReport {
            removed: removed.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            remaining: inner.leases.len(),
            timed_out,
        };
        if timed_out {
            warn!(
                ?bound,
                remaining = report.remaining,
                "shutdown bound ran out; remaining rules are removed at the next start"
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

impl<R: Router, U: Upstream> MapHandler for Orchestrator<R, U> {
    fn handle_map(
        &self,
        client: Ipv4Addr,
        request: MapRequest,
    ) -> impl Future<Output = MapReply> + Send {
        let inner = Arc::clone(&self.inner);
        async move { inner.handle(client, request).await }
    }
}

impl<R: Router, U: Upstream> Inner<R, U> {
    /// Enters the transaction gate, unless shutting down.
    pub(super) async fn enter(&self) -> Option<RwLockReadGuard<'_, ()>> {
        if self.closing.load(Ordering::SeqCst) {
            return None;
        }
        let guard = self.gate.read().await;
        if self.closing.load(Ordering::SeqCst) {
            return None;
        }
        Some(guard)
    }

    pub(super) async fn lock_key(&self, key: MappingKey) -> KeyLock<'_> {
        let mutex = self.locks.entry(key).or_default().value().clone();
        let guard = mutex.lock_owned().await;
        KeyLock {
            locks: &self.locks,
            key,
            guard: Some(guard),
        }
    }

    pub(super) fn lease(&self, key: &MappingKey) -> Option<Lease> {
        self.leases.get(key).map(|l| l.value().clone())
    }

    /// A router command under our bound.
    pub(super) async fn router_call<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, RouterError>>,
    ) -> Result<T, MappingError> {
        match timeout(self.config.router_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(MappingError::Router { what, source }),
            Err(_) => Err(MappingError::RouterTimeout {
                what,
                after: self.config.router_timeout,
            }),
        }
    }

    /// An upstream map/renew/delete under our bound; a grant for lifetime > 0 must carry a port
    /// and a lifetime. Every grant's epoch goes to the watch.
    async fn upstream_map(
        &self,
        what: &'static str,
        protocol: Protocol,
        router_port: u16,
        suggested: u16,
        lifetime: u32,
    ) -> Result<MapGrant, MappingError> {
        let fut = self
            .upstream
            .map(protocol, router_port, suggested, lifetime);
        let grant: MapGrant = match timeout(self.config.upstream_timeout, fut).await {
            Ok(Ok(g)) => g,
            Ok(Err(source)) => return Err(MappingError::Upstream { what, source }),
            Err(_) => {
                return Err(MappingError::UpstreamTimeout {
                    what,
                    after: self.config.upstream_timeout,
                })
            }
        };
        self.observe_epoch(grant.epoch);
        if lifetime > 0 && (grant.external_port == 0 || grant.lifetime == 0) {
            return Err(MappingError::UpstreamUnusable {
                external_port: grant.external_port,
                lifetime: grant.lifetime,
            });
        }
        Ok(grant)
    }

    fn observe_epoch(&self, sssoe: u32) -> bool {
        let lost = self
            .epoch_watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(sssoe, Instant::now());
        if lost {
            warn!(
                upstream_epoch = sssoe,
                "the VPN gateway's epoch went backwards: it lost its mappings; resetting our epoch so clients renew (C-48)"
            );
            self.epoch.reset();
        }
        lost
    }

    pub(super) fn dst_nat_rule(&self, key: MappingKey, router_port: u16) -> DstNatRule {
        DstNatRule {
            protocol: key.protocol,
            in_interface: self.config.in_interface.clone(),
            dst_port: router_port,
            to_address: key.client,
            to_port: key.internal_port,
            comment: RuleComment { key, router_port }.encode(),
        }
    }

    async fn handle(self: Arc<Self>, client: Ipv4Addr, request: MapRequest) -> MapReply {
        let key = MappingKey {
            client,
            protocol: request.protocol,
            internal_port: request.internal_port,
        };
        let outcome = match self.enter().await {
            None => Err(MappingError::ShuttingDown),
            Some(_gate) => {
                if request.is_delete_all() {
                    self.delete_all(client, request.protocol).await
                } else if request.is_delete() {
                    self.delete(key).await
                } else if request.internal_port == 0 {
                    Err(MappingError::InternalPortZero)
                } else {
                    self.map(key, request).await
                }
            }
        };
        match outcome {
            Ok(reply) => reply,
            Err(e) => {
                let result = e.result_code();
                if result == ResultCode::NetworkFailure {
                    warn!(%client, proto = %key.protocol, internal_port = key.internal_port, %result, "request failed: {e}");
                } else {
                    info!(%client, proto = %key.protocol, internal_port = key.internal_port, %result, "request refused: {e}");
                }
                MapReply::failure(result)
            }
        }
    }

    async fn map(
        self: &Arc<Self>,
        key: MappingKey,
        request: MapRequest,
    ) -> Result<MapReply, MappingError> {
        let arrived = Instant::now();
        let mut lock = self.lock_key(key).await;
        if let Some(reply) = lock.answered_while_waiting(arrived, &request) {
            if reply.result != ResultCode::Success {
                return Err(MappingError::FailedJustNow {
                    result: reply.result,
                });
            }
            debug!(client = %key.client, proto = %key.protocol, internal_port = key.internal_port, "retransmission answered with the reply it waited for");
            return Ok(reply);
        }
        let outcome = match self.lease(&key) {
            Some(lease) => self.renew(key, lease, request).await,
            None => self.create(key, request).await,
        };
        lock.record(request, &outcome);
        outcome
    }

    async fn create(
        self: &Arc<Self>,
        key: MappingKey,
        request: MapRequest,
    ) -> Result<MapReply, MappingError> {
        let preferred = [request.suggested_external_port, key.internal_port];
        let Some(reservation) = self.ports.reserve(key, &preferred) else {
            return Err(MappingError::PortsExhausted {
                protocol: key.protocol,
                start: *self.config.router_ports.start(),
                end: *self.config.router_ports.end(),
            });
        };
        let router_port = reservation.port();
        let rule = self.dst_nat_rule(key, router_port);
        let rule_id = match self
            .router_call("add the dst-nat rule", self.router.add_dstnat(&rule))
            .await
        {
            Ok(id) => id,
            Err(e) => {
                if e.is_uncertain() {
                    // The rule may exist: the port stays a suspect until the reconciler looked.
                    drop(reservation);
                } else {
                    reservation.release();
                }
                return Err(e);
            }
        };
        let asked = upstream_lifetime(request.lifetime, self.config.max_lifetime);
        let grant = match self
            .upstream_map(
                "map the port",
                key.protocol,
                router_port,
                request.suggested_external_port,
                asked,
            )
            .await
        {
            Ok(g) => g,
            Err(e) => {
                self.roll_back(key, &rule_id, reservation, &e).await;
                return Err(e);
            }
        };
        let lifetime = reply_lifetime(request.lifetime, grant.lifetime, self.config.max_lifetime);
        let deadline =
            Instant::now() + Duration::from_secs(u64::from(lifetime)) + self.config.expiry_grace;
        reservation.commit(key, rule_id.clone());
        self.leases.insert(
            key,
            Lease {
                router_port,
                rule: rule_id.clone(),
                external_port: grant.external_port,
                lifetime,
                deadline,
            },
        );
        self.expiry_wake.notify_one();
        info!(
            client = %key.client,
            proto = %key.protocol,
            internal_port = key.internal_port,
            router_port,
            external_port = grant.external_port,
            lifetime,
            rule = %rule_id,
            "mapped"
        );
        Ok(MapReply {
            result: ResultCode::Success,
            external_port: grant.external_port,
            lifetime,
        })
    }

    /// Undoes a new mapping whose upstream step failed.
    async fn roll_back(
        self: &Arc<Self>,
        key: MappingKey,
        rule_id: &RuleId,
        reservation: Reservation,
        cause: &MappingError,
    ) {
        let rule_gone = match self
            .router_call(
                "remove the dst-nat rule (rollback)",
                self.router.remove_rule(rule_id),
            )
            .await
        {
            Ok(()) => true,
            Err(e) if e.is_not_found() => true,
            Err(e) => {
                warn!(
                    client = %key.client,
                    proto = %key.protocol,
                    internal_port = key.internal_port,
                    router_port = reservation.port(),
                    rule = %rule_id,
                    "rollback failed, the reconciler will remove the rule: {e}"
                );
                false
            }
        };
        if cause.is_uncertain() {
            // The gateway may have made the mapping although we saw no answer: delete it before
            // the port can be reused, in the background so the client's reply is not delayed.
            let inner = Arc::clone(self);
            let protocol = key.protocol;
            tokio::spawn(async move {
                let port = reservation.port();
                if let Err(e) = inner
                    .upstream_map("delete the mapping (rollback)", protocol, port, 0, 0)
                    .await
                {
                    debug!(proto = %protocol, router_port = port, "rollback delete at the VPN gateway failed: {e}");
                }
                if rule_gone {
                    reservation.release();
                }
            });
        } else if rule_gone {
            reservation.release();
        }
    }

    async fn renew(
        &self,
        key: MappingKey,
        lease: Lease,
        request: MapRequest,
    ) -> Result<MapReply, MappingError> {
        let asked = upstream_lifetime(request.lifetime, self.config.max_lifetime);
        let grant = self
            .upstream_map(
                "renew the mapping",
                key.protocol,
                lease.router_port,
                lease.external_port,
                asked,
            )
            .await?;
        let lifetime = reply_lifetime(request.lifetime, grant.lifetime, self.config.max_lifetime);
        let deadline =
            Instant::now() + Duration::from_secs(u64::from(lifetime)) + self.config.expiry_grace;
        if let Some(mut l) = self.leases.get_mut(&key) {
            l.external_port = grant.external_port;
            l.lifetime = lifetime;
            l.deadline = deadline;
        }
        if grant.external_port != lease.external_port {
            info!(
                client = %key.client,
                proto = %key.protocol,
                internal_port = key.internal_port,
                router_port = lease.router_port,
                old_external_port = lease.external_port,
                external_port = grant.external_port,
                "the VPN gateway moved the mapping to a new external port"
            );
        }
        info!(
            client = %key.client,
            proto = %key.protocol,
            internal_port = key.internal_port,
            router_port = lease.router_port,
            external_port = grant.external_port,
            lifetime,
            "renewed"
        );
        Ok(MapReply {
            result: ResultCode::Success,
            external_port: grant.external_port,
            lifetime,
        })
    }

    async fn delete(&self, key: MappingKey) -> Result<MapReply, MappingError> {
        let _lock = self.lock_key(key).await;
        let Some(lease) = self.lease(&key) else {
            if self
                .ports
                .foreign_target(key.protocol, key.client, Some(key.internal_port))
            {
                return Err(MappingError::ForeignRule {
                    client: key.client,
                    protocol: key.protocol,
                    port: Some(key.internal_port),
                });
            }
            return Ok(deleted(ResultCode::Success));
        };
        self.teardown(key, &lease, OnRouterFailure::Keep).await?;
        info!(
            client = %key.client,
            proto = %key.protocol,
            internal_port = key.internal_port,
            router_port = lease.router_port,
            external_port = lease.external_port,
            "deleted"
        );
        Ok(deleted(ResultCode::Success))
    }

    async fn delete_all(
        &self,
        client: Ipv4Addr,
        protocol: Protocol,
    ) -> Result<MapReply, MappingError> {
        let keys: Vec<MappingKey> = self
            .leases
            .iter()
            .map(|e| *e.key())
            .filter(|k| k.client == client && k.protocol == protocol)
            .collect();
        let mut failure = None;
        for key in keys {
            if let Err(e) = self.delete(key).await {
                failure.get_or_insert(e);
            }
        }
        if self.ports.foreign_target(protocol, client, None) {
            failure.get_or_insert(MappingError::ForeignRule {
                client,
                protocol,
                port: None,
            });
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(deleted(ResultCode::Success)),
        }
    }

    /// Removes both layers of a lease (caller holds the key lock). `Ok(true)` when both went,
    /// `Ok(false)` when something was left behind (logged; the reconciler or the gateway's own
    /// expiry finishes the job).
    pub(super) async fn teardown(
        &self,
        key: MappingKey,
        lease: &Lease,
        on_router_failure: OnRouterFailure,
    ) -> Result<bool, MappingError> {
        let rule_left = match self
            .router_call(
                "remove the dst-nat rule",
                self.router.remove_rule(&lease.rule),
            )
            .await
        {
            Ok(()) => false,
            Err(e) if e.is_not_found() => false,
            Err(e) if on_router_failure == OnRouterFailure::Keep => return Err(e),
            Err(e) => {
                warn!(
                    client = %key.client,
                    proto = %key.protocol,
                    internal_port = key.internal_port,
                    router_port = lease.router_port,
                    rule = %lease.rule,
                    "could not remove the dst-nat rule, the reconciler will: {e}"
                );
                true
            }
        };
        let upstream_left = match self
            .upstream_map("delete the mapping", key.protocol, lease.router_port, 0, 0)
            .await
        {
            Ok(_) => false,
            Err(e) => {
                warn!(
                    client = %key.client,
                    proto = %key.protocol,
                    router_port = lease.router_port,
                    external_port = lease.external_port,
                    "could not delete the mapping at the VPN gateway; it ends with its lifetime: {e}"
                );
                true
            }
        };
        self.leases.remove(&key);
        self.ports
            .release_leased(key.protocol, lease.router_port, rule_left);
        Ok(!rule_left && !upstream_left)
    }

    async fn expiry_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow_and_update() {
                break;
            }
            let next = self.leases.iter().map(|e| e.value().deadline).min();
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = self.expiry_wake.notified() => {}
                _ = sleep_until_opt(next) => Arc::clone(&self).expire_due().await,
            }
        }
    }

    async fn expire_due(self: Arc<Self>) {
        let now = Instant::now();
        let due: Vec<MappingKey> = self
            .leases
            .iter()
            .filter(|e| e.value().deadline <= now)
            .map(|e| *e.key())
            .collect();
        let mut set = JoinSet::new();
        for key in due {
            let inner = Arc::clone(&self);
            set.spawn(async move { inner.expire(key).await });
        }
        while set.join_next().await.is_some() {}
    }

    async fn expire(&self, key: MappingKey) {
        let Some(_gate) = self.enter().await else {
            return;
        };
        let _lock = self.lock_key(key).await;
        let Some(lease) = self.lease(&key) else {
            return;
        };
        if lease.deadline > Instant::now() {
            return; // renewed meanwhile
        }
        // Abandon never returns an error.
        let _ = self.teardown(key, &lease, OnRouterFailure::Abandon).await;
        info!(
            client = %key.client,
            proto = %key.protocol,
            internal_port = key.internal_port,
            router_port = lease.router_port,
            external_port = lease.external_port,
            "expired: not renewed in time"
        );
    }

    /// `None` when the lease was already gone; else whether both layers went.
    async fn remove_for_shutdown(&self, key: MappingKey) -> Option<bool> {
        let _lock = self.lock_key(key).await;
        let lease = self.lease(&key)?;
        self.teardown(key, &lease, OnRouterFailure::Abandon)
            .await
            .ok()
    }

    async fn reconcile_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let period = self.config.reconcile_interval;
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                _ = ticks.tick() => {
                    match self.reconcile().await {
                        Ok(report) => debug!(?report, "reconciled"),
                        Err(MappingError::ShuttingDown) => break,
                        Err(e) => warn!("reconcile failed, retrying in {period:?}: {e}"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::natpmp::upstream::{AddressReply, UpstreamError};
    use crate::routeros::api::NatRule;
    use std::sync::atomic::AtomicU32;

    #[derive(Default)]
    struct OkRouter(AtomicU32);

    impl Router for OkRouter {
        async fn add_dstnat(&self, _rule: &DstNatRule) -> Result<RuleId, RouterError> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(RuleId(format!(
                "*{:X}",
                self.0.fetch_add(1, Ordering::Relaxed)
            )))
        }
        async fn remove_rule(&self, _id: &RuleId) -> Result<(), RouterError> {
            Ok(())
        }
        async fn list_dstnat(&self, _in_interface: &str) -> Result<Vec<NatRule>, RouterError> {
            Ok(Vec::new())
        }
    }

    struct OkUpstream;

    impl Upstream for OkUpstream {
        async fn external_address(&self) -> Result<AddressReply, UpstreamError> {
            Ok(AddressReply {
                epoch: 1,
                address: Ipv4Addr::LOCALHOST,
            })
        }
        async fn map(
            &self,
            _protocol: Protocol,
            internal_port: u16,
            _suggested: u16,
            lifetime: u32,
        ) -> Result<MapGrant, UpstreamError> {
            Ok(MapGrant {
                epoch: 1,
                internal_port,
                external_port: if lifetime == 0 { 0 } else { internal_port },
                lifetime: lifetime.min(60),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn key_locks_are_dropped_when_nobody_needs_them() {
        let orch = match Orchestrator::new(
            OkRouter::default(),
            OkUpstream,
            Arc::new(Epoch::new()),
            MappingConfig::default(),
        ) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        let request = MapRequest {
            protocol: Protocol::Udp,
            internal_port: 6881,
            suggested_external_port: 0,
            lifetime: 60,
        };
        let mut set = JoinSet::new();
        for i in 0..20u8 {
            let orch = orch.clone();
            set.spawn(async move {
                orch.handle_map(Ipv4Addr::new(192, 168, 88, i % 4), request)
                    .await
            });
        }
        while let Some(r) = set.join_next().await {
            assert!(matches!(
                r,
                Ok(MapReply {
                    result: ResultCode::Success,
                    ..
                })
            ));
        }
        assert_eq!(orch.lease_count(), 4);
        assert_eq!(
            orch.inner.locks.len(),
            0,
            "no lock entry outlives its transactions"
        );
    }
}
