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
//! * [`config`]: the environment variables and flags, validated with clear messages;
//!   [`cidr`]: IPv4 networks (ALLOWED_CLIENTS); [`refused`]: the sources that are not real
//!   clients (the router's and the daemon's own addresses, subnet edges, the VPN gateway).
//! * [`daemon`]: wires everything together and stops it in order; [`logging`]: LOG_LEVEL/LOG_FORMAT.
//! * [`protocol`]: the transport protocol of a mapping, neutral (every front end, the mapping
//!   core and the router speak of it).
//! * [`natpmp::wire`]: the NAT-PMP packet format in both directions, pure functions.
//! * [`natpmp::epoch`]: seconds since start of epoch, from one monotonic clock.
//! * [`natpmp::server`]: the UDP front end LAN clients talk to; [`natpmp::handler`]: the trait
//!   it hands mapping requests to; [`natpmp::address_cache`]: the upstream address it answers;
//!   [`natpmp::rate`]: the per-client request rate.
//! * [`natpmp::upstream`]: the NAT-PMP client toward the VPN gateway (retransmission, matching).
//! * [`routeros::wire`]: RouterOS API words and sentences, shared by client and emulator.
//! * [`routeros::conn`], [`routeros::tls`], [`routeros::pool`]: one API connection, api-ssl,
//!   and the pool of connections.
//! * [`routeros::api`]: the typed router operations (add/remove/list dst-nat and src-nat, route
//!   check); [`routeros::nat`]: the NAT rules they carry.
//! * [`mapping`]: the transactions, the port allocator, expiry and the reconciler.
//! * [`sim`]: emulators of the router API and of the VPN gateway, for tests and the demo.
//! * [`status`]: the HTTP status server (page, `/healthz`, `/readyz`, `/metrics`, the JSON API
//!   and the forwards API), the webhook and the status file, all fed by the mapping core's
//!   events and lease snapshot; [`static_keeper`]: keeps STATIC_MAPPINGS alive.
//! * [`shutdown`]: the one stop signal every task honours.
//! * [`cli`]: the command line ([`cli::args`]), the `demo`, `client`, `check`, `health` and
//!   `status` subcommands, and the hidden `sim-router` and `sim-gateway` that run one emulator alone (the
//!   namespace tests use them).
//!
//! A request's trip: `natpmp::server` reads a datagram and parses it with `natpmp::wire`; an
//! address request is answered from the cached upstream address; a mapping request goes to the
//! `mapping` orchestrator, which locks the mapping's key, reserves a router port, adds the rule
//! through `routeros::api`, asks `natpmp::upstream`, and hands the reply back to the server,
//! which sends it from the same socket.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cidr;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod logging;
pub mod mapping;
pub mod natpmp;
pub mod refused;
pub mod routeros;
pub mod shutdown;
pub mod static_keeper;
pub mod status;

/// This build's version (`--version`, the image tag).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
