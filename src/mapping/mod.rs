//! The double-NAT mapping core: transactions across the router rule and the upstream mapping,
//! the lease table, port allocation, expiry and reconciliation.
//!
//! * [`adopt`]: a start without loss: the router's rules of ours become leases again.
//! * [`orchestrator`]: the [`Orchestrator`], the facade that implements
//!   [`MapHandler`](crate::natpmp::server::MapHandler) and starts and stops the rest;
//!   [`handle`]: the [`MappingHandle`], the facade without its type parameters, for status,
//!   STATIC_MAPPINGS and the CLI.
//! * [`request`]: the core's own request, a [`Command`] (map, delete, delete-all) that every
//!   front end speaks; NAT-PMP's packets are translated into it at the edge.
//! * [`transaction`]: answering a command: the entry point and renewals.
//! * [`create`]: a new mapping: the router rules and the upstream mapping asked at once,
//!   each with its undo (sequential only while the gateway's quota is used up: [`quota`]).
//! * [`patience`]: CREATE_PATIENCE: a create or a lapsed renewal tried again through a
//!   transient failure until both layers are made or the window ends (C-17b).
//! * [`twin`]: MAP_BOTH_PROTOCOLS: the UDP twin of a TCP mapping, made, kept and ended with it.
//! * [`teardown`]: delete, delete-all, expiry and shutdown: both layers, upstream first.
//! * [`table`]: the [`LeaseTable`], the only store of leases and router-port holds.
//! * [`keylock`]: per-key serialization and the retransmission memo.
//! * [`keeper`]: upstream renewals the daemon makes itself, and healing after a gateway's loss.
//! * [`layers`]: the router and the gateway under our bounds; rules found by comment, lost
//!   replies settled at once.
//! * [`limits`]: the caps on mappings and the per-client request rate; [`caps`]: the caps as a
//!   new mapping meets them, counting the creates in flight.
//! * [`interface`]: proving the VPN in-interface before any rule is added.
//! * [`reconcile`]: the reconcile pass (orphans removed, deleted live rules recreated, ids
//!   re-bound, the router view refreshed), at start and every `reconcile_interval`.
//! * [`tasks`]: the expiry and reconcile loops.
//! * [`core`]: the state they all share.
//! * [`events`]: what happens to mappings, for whoever listens (status API, metrics, webhooks).
//! * [`ports`]: what the router says about its ports, and the choice of a router port.
//! * [`rule`]: the comment format that marks our rules (and names their kind).
//! * [`srcnat`]: UDP_SRCNAT: where a src-nat rule goes in the `srcnat` chain, and what comes
//!   before it (RFC 6886 §3.9, C-42).
//! * [`key`]: the mapping's identity (C-29).
//! * [`lease`]: the lease and the lifetime arithmetic (C-30).
//! * [`epoch_watch`]: the upstream epoch watch (C-48).
//! * [`config`]: the [`MappingConfig`] and its checks.
//! * [`error`]: [`MappingError`] and its mapping to NAT-PMP result codes (one place).
//!
//! Decisions (see the module docs for details):
//!
//! * A rule is ours by its comment, never by its `.id` alone; ids are handles, re-bound by
//!   comment.
//! * The router is the database: a start adopts the rules of ours as leases (their comments
//!   carry what a lease needs) and makes their upstream mappings again before any client is
//!   answered. A stop removes both layers, unless KEEP_MAPPINGS_ON_STOP keeps them for the
//!   next start.
//! * Internal port 0 with a lifetime (C-37) is answered 2 (RFC-safe; miniupnpd does the same).
//! * A new mapping asks the router and the gateway at once (the router port is chosen
//!   locally), so it costs the longer round trip, not both; teardown stays upstream first.
//! * A lease's router side is its rules (`lease::Rules`, one of each kind): the dst-nat rule,
//!   and with UDP_SRCNAT the src-nat rule of a UDP mapping, each found by its comment (`k=snat`
//!   names the kind).
//! * Renewals and retransmits cost no router command, and no upstream exchange while the
//!   upstream mapping is known to be valid: the keeper renews it.

pub mod adopt;
pub mod caps;
pub mod config;
pub mod core;
pub mod create;
pub mod epoch_watch;
pub mod error;
pub mod events;
pub mod handle;
pub mod interface;
pub mod keeper;
pub mod key;
pub mod keylock;
pub mod layers;
pub mod lease;
pub mod limits;
pub mod orchestrator;
pub mod patience;
pub mod ports;
pub mod quota;
pub mod reconcile;
pub mod request;
pub mod rule;
pub mod slab;
pub mod srcnat;
pub mod table;
pub mod tasks;
pub mod teardown;
pub mod transaction;
pub mod twin;

pub use config::{
    MappingConfig, DEFAULT_MAX_LIFETIME, DEFAULT_RECONCILE_INTERVAL, DEFAULT_ROUTER_PORTS,
};
pub use error::MappingError;
pub use events::{MappingEvent, Origin, RemovalReason};
pub use handle::MappingHandle;
pub use lease::{Lease, LeaseInfo, MappingKey};
pub use orchestrator::{Orchestrator, ShutdownReport};
pub use reconcile::ReconcileReport;
pub use request::{Command, MappingRequest};
pub use table::LeaseTable;
