//! What happens to mappings, as events anyone may listen to ([`Events::subscribe`]): the status
//! API, metrics, webhooks and logs read the mapping core through these and through the lease
//! table's snapshot, never by reaching into it.
//!
//! Sending never waits: the channel is a bounded broadcast, and a listener that falls behind
//! loses the oldest events (its next receive says how many, so it can count them).

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::mapping::store::key::MappingKey;
pub use crate::mapping::store::lease::Origin;

/// How many events a slow listener may fall behind before it loses some.
pub(crate) const EVENT_BUFFER: usize = 1024;

/// Why a mapping ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovalReason {
    /// Its client (or the API) deleted it.
    Deleted,
    /// It was not renewed in time.
    Expired,
    /// The daemon stopped.
    Shutdown,
}

impl RemovalReason {
    /// `deleted`, `expired` or `shutdown`.
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalReason::Deleted => "deleted",
            RemovalReason::Expired => "expired",
            RemovalReason::Shutdown => "shutdown",
        }
    }
}

/// Something that happened in the mapping core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingEvent {
    /// A mapping went live on both layers.
    Created {
        /// Its key.
        key: MappingKey,
        /// Router port R.
        router_port: u16,
        /// External port E.
        external_port: u16,
        /// The lifetime granted to the client (seconds).
        lifetime: u32,
        /// Where it came from.
        origin: Origin,
    },
    /// A mapping was renewed.
    Renewed {
        /// Its key.
        key: MappingKey,
        /// The lifetime granted (seconds).
        lifetime: u32,
    },
    /// The gateway moved a mapping to another external port.
    ExternalPortChanged {
        /// Its key.
        key: MappingKey,
        /// The port before.
        old: u16,
        /// The port now.
        new: u16,
    },
    /// A mapping ended.
    Removed {
        /// Its key.
        key: MappingKey,
        /// Router port R.
        router_port: u16,
        /// External port E.
        external_port: u16,
        /// Why.
        reason: RemovalReason,
    },
    /// The gateway lost its mappings (its epoch went backwards, C-48).
    UpstreamLost {
        /// The gateway's epoch (SSSoE) that showed it.
        epoch: u32,
    },
    /// The gateway's mappings were made again after a loss.
    UpstreamHealed {
        /// How many mappings were made again.
        mappings: usize,
    },
    /// One router command finished.
    RouterCommand {
        /// What it was for (e.g. "add the dst-nat rule").
        what: &'static str,
        /// How long it took.
        took: Duration,
        /// The error kind when it failed (`timeout`, `connection`, `trap`, …).
        error: Option<&'static str>,
    },
    /// One upstream NAT-PMP exchange finished.
    UpstreamExchange {
        /// What it was for (e.g. "map the port").
        what: &'static str,
        /// How long it took.
        took: Duration,
        /// The error kind when it failed (`timeout`, `refused`, `rejected`, …).
        error: Option<&'static str>,
    },
    /// A reconcile pass finished.
    Reconciled {
        /// Rules of ours removed as orphans.
        orphans_removed: usize,
        /// Rules recreated after someone deleted them.
        recreated: usize,
        /// Whether the VPN interface is usable.
        interface_ok: bool,
    },
    /// A reconcile pass failed (the router could not be asked).
    ReconcileFailed,
    /// A request was refused or failed (for the last-events list of the status page).
    Failed {
        /// The client.
        client: Ipv4Addr,
        /// The NAT-PMP result code it got.
        result: u16,
        /// What went wrong, in words.
        message: String,
    },
}

/// The sending side, owned by the mapping core (`Core::events`); the router layers hold a
/// clone of it for the router commands they run.
#[derive(Clone, Debug)]
pub(crate) struct Events {
    tx: broadcast::Sender<MappingEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    /// A channel nobody listens to yet.
    pub(crate) fn new() -> Events {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        Events { tx }
    }

    /// Sends an event to every listener; never waits (nobody listening is fine).
    pub(crate) fn emit(&self, event: MappingEvent) {
        let _ = self.tx.send(event);
    }

    /// A new listener, which sees every event from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<MappingEvent> {
        self.tx.subscribe()
    }
}
