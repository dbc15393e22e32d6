//! The double-NAT mapping core: transactions across the router rule and the upstream mapping,
//! the lease table, port allocation, expiry and reconciliation.
//!
//! The folder holds one concept per sub-module, so a reader finds a piece by what it is:
//!
//! * [`store`]: the lease store: what is held and what it may still hold (the lease table,
//!   leases and their keys, router ports, per-key locks, caps, limits, the gateway's quota).
//!   Pure state and arithmetic; it asks no router and no gateway.
//! * [`txn`]: the transactions: answering one [`Command`] across both layers (create, renewal,
//!   patience, teardown, twin) and the start's adoption of the router's rules.
//! * [`loops`]: the background loops that act without a client: the keeper, the reconcile pass,
//!   the expiry and reconcile tasks and the upstream epoch watch.
//! * [`router`]: the router-facing policy: the router and the gateway under our bounds, the
//!   in-interface proof, the comment that marks our rules and src-nat placement.
//!
//! At the top, what ties them together:
//!
//! * [`orchestrator`]: the [`Orchestrator`], the facade that implements
//!   [`MapHandler`](crate::natpmp::handler::MapHandler) (the NAT-PMP adapter: packets become
//!   [`Command`]s here) and starts and stops the rest; [`handle`]: the [`MappingHandle`], the
//!   facade without its type parameters, for status, STATIC_MAPPINGS and the CLI.
//! * [`request`]: the core's own request, a [`Command`] (map, delete, delete-all) that every
//!   front end speaks; NAT-PMP's packets are translated into it at the edge.
//! * [`core`]: the state they all share.
//! * [`events`]: what happens to mappings, for whoever listens (status API, metrics, webhooks).
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
//! * A lease's router side is its rules (`store::lease::Rules`, one of each kind): the dst-nat rule,
//!   and with UDP_SRCNAT the src-nat rule of a UDP mapping, each found by its comment (`k=snat`
//!   names the kind).
//! * Renewals and retransmits cost no router command, and no upstream exchange while the
//!   upstream mapping is known to be valid: the keeper renews it.

pub(crate) mod config;
pub(crate) mod core;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod handle;
pub(crate) mod loops;
pub(crate) mod orchestrator;
pub(crate) mod request;
pub(crate) mod router;
pub(crate) mod store;
pub(crate) mod txn;

pub(crate) use config::MappingConfig;
pub(crate) use error::MappingError;
pub(crate) use events::MappingEvent;
pub(crate) use handle::MappingHandle;
pub(crate) use orchestrator::Orchestrator;
