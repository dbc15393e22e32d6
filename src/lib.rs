//! double-natpmp: NAT-PMP for LAN clients behind a MikroTik router, through a VPN gateway that
//! itself speaks NAT-PMP (ProtonVPN-style). Two NAT layers, one request.
//!
//! A LAN client asks its gateway (the MikroTik) for a port over NAT-PMP; a dst-nat rule on the
//! router hands the datagram to this daemon. For each mapping the daemon runs one transaction:
//! add a dst-nat rule on the router over the RouterOS API (VPN interface, router port R →
//! client:internal port), ask the upstream VPN gateway for the matching mapping (internal port
//! R), and answer the client with the gateway's external port and lifetime, or roll the rule back.
//!
//! The major components are:
//!
//! * `config`: the environment variables and flags, validated with clear messages;
//!   `cidr`: IPv4 networks (ALLOWED_CLIENTS); `refused`: the sources that are not real
//!   clients (the router's and the daemon's own addresses, subnet edges, the VPN gateway).
//! * `daemon`: wires everything together and stops it in order; `logging`: LOG_LEVEL/LOG_FORMAT.
//! * The packet formats are the codec crate's (`double_natpmp_codec`): the neutral `protocol`
//!   of a mapping, NAT-PMP's `natpmp::wire` and `natpmp::epoch`, RouterOS's `routeros::wire`.
//! * `natpmp::server`: the UDP front end LAN clients talk to; `natpmp::handler`: the trait
//!   it hands mapping requests to; `natpmp::address_cache`: the upstream address it answers;
//!   `natpmp::rate`: the per-client request rate.
//! * `natpmp::upstream`: the NAT-PMP client toward the VPN gateway (retransmission, matching).
//! * `routeros::conn`, `routeros::tls`, `routeros::pool`: one API connection, api-ssl,
//!   and the pool of connections.
//! * `routeros::api`: the RouterOS implementation of the mapping core's router seam (add,
//!   remove and list dst-nat and src-nat rules, the route check).
//! * `mapping`: the transactions, the lease store, the background loops and the router-facing
//!   policy, with the router seam (`mapping::router::seam`).
//! * `status`: the HTTP status server (page, `/healthz`, `/readyz`, `/metrics`, the JSON API
//!   and the forwards API), the webhook and the status file, all fed by the mapping core's
//!   events and lease snapshot; `static_keeper`: keeps STATIC_MAPPINGS alive.
//! * `shutdown`: the one stop signal every task honours.
//! * `cli`: the command line (`cli::args`), the `demo`, `client`, `check`, `health` and
//!   `status` subcommands, and (feature `demo`, with the emulators of
//!   `double_natpmp_emulators`) `demo` and the hidden `sim-router` and `sim-gateway`.
//!
//! A request's trip: `natpmp::server` reads a datagram and parses it with `natpmp::wire`; an
//! address request is answered from the cached upstream address; a mapping request goes to the
//! `mapping` orchestrator, which locks the mapping's key, reserves a router port, adds the rule
//! through the router seam (`routeros::api`), asks `natpmp::upstream`, and hands the reply back to the server,
//! which sends it from the same socket.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod cidr;
pub mod cli;
mod config;
pub mod daemon;
mod logging;
mod mapping;
mod natpmp;
mod reachability;
mod refused;
mod routeros;
mod shutdown;
mod static_keeper;
mod status;

// The public surface: what the binary (`cli::main`), the tests and the benchmarks use. The
// modules above are private; `unreachable_pub` keeps what is not listed here crate-private.

// Settings.
pub use cidr::parse_cidr_list;
pub use config::value::{LogFormat, LogLevel};
pub use config::DaemonArgs;
// The mapping core, its requests and its events.
pub use mapping::config::MappingConfig;
pub use mapping::events::{MappingEvent, Origin, RemovalReason};
pub use mapping::orchestrator::Orchestrator;
pub use mapping::router::rule::{RuleComment, RuleKind};
pub use mapping::store::lease::MappingKey;
pub use mapping::store::limits::LimitsConfig;
// NAT-PMP: the front end and the client toward the gateway.
pub use natpmp::handler::{MapHandler, MapReply, NoMappings};
pub use natpmp::server::{Server, ServerConfig, ServerStats};
pub use natpmp::upstream::{
    AddressReply, MapGrant, Upstream, UpstreamClient, UpstreamConfig, UpstreamError, UpstreamMap,
};
// The router seam and its RouterOS implementation.
pub use mapping::router::seam::{
    DstNatRule, InterfaceInfo, ListMember, NatRule, Router, RouterAddress, RouterError, RuleId,
    ServiceInfo, SrcNatRule,
};
pub use routeros::api::RouterApi;
pub use routeros::conn::{ApiConfig, Password};
pub use routeros::error::TlsProblem;
pub use routeros::tls::{fingerprint_of, TlsMode};
// Sources that are never clients.
pub use refused::{Refusal, RefusedSources};
// Stopping.
pub use shutdown::{Shutdown, ShutdownTrigger};
// The status server's bound on connections.
pub use status::server::MAX_CONNECTIONS as MAX_STATUS_CONNECTIONS;

/// This build's version (`--version`, the image tag).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
