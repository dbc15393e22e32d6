//! [`Core`]: the state every transaction and background task of the mapping core shares: the
//! two layers, the lease table, the key locks, the transaction gate, the in-interface's proof,
//! and the tracker of background undo work. It holds state and small helpers; the transactions
//! live in `transaction.rs`, the loops in `tasks.rs`, the reconcile pass in `reconcile.rs`.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, RwLock, RwLockReadGuard};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::mapping::config::MappingConfig;
use crate::mapping::events::Events;
use crate::mapping::router::interface::{InterfaceProblem, Proof};
use crate::mapping::router::layers::Layers;
use crate::mapping::router::seam::ListMember;
use crate::mapping::router::srcnat::OutScope;
use crate::mapping::store::keylock::KeyLocks;
use crate::mapping::store::limits::Limits;
use crate::mapping::store::quota::QuotaHint;
use crate::mapping::store::table::LeaseTable;
use crate::refused::RefusedSources;
use crate::shutdown::ShutdownTrigger;

/// Whether the in-interface may carry new rules, as of the last proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterfaceState {
    /// Not proven yet (before the first proof).
    Unknown,
    /// Proven.
    Proven(Proof),
    /// The last proof failed.
    Unusable(InterfaceProblem),
}

/// Counts background work (undo after an uncertain failure, draining ports) so a stop or a
/// test can wait for it to finish.
#[derive(Debug, Default)]
pub(crate) struct Background {
    running: AtomicUsize,
    idle: Notify,
}

impl Background {
    /// Runs `work` in the background, counted.
    pub(crate) fn spawn(self: &Arc<Self>, work: impl Future<Output = ()> + Send + 'static) {
        self.running.fetch_add(1, Ordering::SeqCst);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            // Decrements also when the task is cancelled (runtime shutdown).
            struct Done(Arc<Background>);
            impl Drop for Done {
                fn drop(&mut self) {
                    if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                        self.0.idle.notify_waiters();
                    }
                }
            }
            let _done = Done(me);
            work.await;
        });
    }

    /// Resolves once no background work is running.
    pub(crate) async fn settled(&self) {
        loop {
            let idle = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// The shared state of the mapping core.
pub(crate) struct Core<R, U> {
    /// The router and the gateway under our bounds.
    pub(crate) layers: Layers<R, U>,
    /// What happens to mappings, for whoever listens: the transactions and the loops emit
    /// here; the layers hold a sender of the same channel for the router commands they run.
    pub(crate) events: Events,
    /// The only store of leases and router-port holds.
    pub(crate) table: Arc<LeaseTable>,
    /// Per-key serialization and the retransmission memo.
    pub(crate) locks: KeyLocks,
    /// The configuration.
    pub(crate) config: MappingConfig,
    /// Wakes the expiry task when a new deadline appears.
    pub(crate) expiry_wake: Notify,
    /// Wakes the keeper when a renewal became due sooner than it sleeps.
    pub(crate) keeper_wake: Notify,
    /// Set while the keeper re-makes every mapping after a loss (to tell when it is healed).
    pub(crate) healing: AtomicBool,
    /// Stops the background tasks.
    pub(crate) stop: ShutdownTrigger,
    /// The caps on mappings and the per-client request rate.
    pub(crate) limits: Limits,
    /// Background undo and drain work.
    pub(crate) background: Arc<Background>,
    /// The background loops, aborted at shutdown.
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Whether new mappings ask the gateway first for a while (its quota was used up).
    pub(crate) quota: QuotaHint,
    /// The sources that are not real clients; the router's part is refreshed by each reconcile
    /// pass.
    pub(crate) refused: Arc<RefusedSources>,
    /// The router's interface-list members, as of the last reconcile pass (which lists say a
    /// src-nat rule's out-interface-list holds the VPN interface).
    members: Mutex<Vec<ListMember>>,
    gate: RwLock<()>,
    closing: AtomicBool,
    interface: Mutex<InterfaceState>,
}

impl<R, U> Core<R, U> {
    /// The shared state, with nothing proven and nothing running.
    pub(crate) fn new(layers: Layers<R, U>, config: MappingConfig) -> Core<R, U> {
        let (stop, _) = ShutdownTrigger::new();
        // A gateway on loopback is an emulator on this host (the demo, tests), whose clients
        // share its address.
        let refused = Arc::new(RefusedSources::new(
            config.vpn_gateway.filter(|g| !g.is_loopback()),
        ));
        Core {
            events: layers.events.clone(),
            layers,
            table: Arc::new(LeaseTable::new(config.router_ports.clone())),
            locks: KeyLocks::new(),
            limits: Limits::new(config.limits),
            config,
            expiry_wake: Notify::new(),
            keeper_wake: Notify::new(),
            healing: AtomicBool::new(false),
            stop,
            background: Arc::new(Background::default()),
            tasks: Mutex::new(Vec::new()),
            quota: QuotaHint::default(),
            refused,
            members: Mutex::new(Vec::new()),
            gate: RwLock::new(()),
            closing: AtomicBool::new(false),
            interface: Mutex::new(InterfaceState::Unknown),
        }
    }

    /// Enters the transaction gate, unless shutting down.
    pub(crate) async fn enter(&self) -> Option<RwLockReadGuard<'_, ()>> {
        if self.is_closing() {
            return None;
        }
        let guard = self.gate.read().await;
        if self.is_closing() {
            return None;
        }
        Some(guard)
    }

    /// Enters the transaction gate without waiting: `None` when shutting down.
    pub(crate) fn try_enter(&self) -> Option<RwLockReadGuard<'_, ()>> {
        if self.is_closing() {
            return None;
        }
        self.gate.try_read().ok()
    }

    /// Closes the gate for new transactions and waits until those in it have left.
    pub(crate) async fn close(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.closing.store(true, Ordering::SeqCst);
        self.stop.trigger();
        self.gate.write().await
    }

    /// Refuses every new transaction from now on, without waiting (a crash, for tests).
    pub(crate) fn abandon(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Whether a stop has begun.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Records the interface-list members a reconcile pass listed.
    pub(crate) fn set_members(&self, members: Vec<ListMember>) {
        *self.members.lock().unwrap_or_else(|p| p.into_inner()) = members;
    }

    /// Which src-nat rules catch traffic out of the VPN interface, as of the last listing.
    pub(crate) fn out_scope(&self) -> OutScope {
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        OutScope::new(&self.config.in_interface, &members)
    }

    fn interface_state(&self) -> MutexGuard<'_, InterfaceState> {
        self.interface.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The in-interface's state.
    pub(crate) fn interface(&self) -> InterfaceState {
        self.interface_state().clone()
    }

    /// Why new rules may not be added now, if they may not.
    pub(crate) fn interface_problem(&self) -> Option<String> {
        match &*self.interface_state() {
            InterfaceState::Proven(_) => None,
            InterfaceState::Unusable(p) => Some(p.to_string()),
            InterfaceState::Unknown => Some(format!(
                "the VPN interface '{}' has not been checked yet",
                self.config.in_interface
            )),
        }
    }

    /// The router's addresses on the in-interface, as of the last proof.
    pub(crate) fn tunnel_addresses(&self) -> Vec<Ipv4Addr> {
        match &*self.interface_state() {
            InterfaceState::Proven(p) => p.addresses.clone(),
            _ => Vec::new(),
        }
    }

    /// Records a proof's result, logging what changed.
    pub(crate) fn set_interface(&self, result: Result<Proof, InterfaceProblem>) {
        let name = &self.config.in_interface;
        let mut state = self.interface_state();
        match result {
            Ok(proof) => {
                let was_proven = matches!(&*state, InterfaceState::Proven(_));
                if !was_proven {
                    for w in &proof.warnings {
                        warn!(in_interface = %name, "{w}");
                    }
                    info!(in_interface = %name, addresses = ?proof.addresses, "VPN interface checked: mappings go through it");
                }
                *state = InterfaceState::Proven(proof);
            }
            Err(problem) => {
                if *state != InterfaceState::Unusable(problem.clone()) {
                    error!(in_interface = %name, "no new mappings until this is fixed: {problem}");
                }
                *state = InterfaceState::Unusable(problem);
            }
        }
    }
}
