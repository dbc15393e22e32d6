//! A NAT-PMP gateway emulator with ProtonVPN-like behaviour.
//!
//! It keeps a mapping table and answers NAT-PMP like ProtonVPN's gateway is reported to
//! (docs/architecture.md §5, docs/routeros-api.md §4, docs/conformance.md U-05, C-37): lifetimes capped at 60 s, a random
//! external port for each new mapping, the internal port honoured, a per-peer quota answered with
//! result 4, mappings that really expire, and an epoch (SSSoE) that restarts when state is lost.
//! It does not forward any traffic; it only keeps the table.
//!
//! Tests drive it with [`Gateway::set_mode`] (stop answering, answer a chosen result code, or
//! close the socket so the OS answers ICMP port unreachable), [`Gateway::lose_state`], and await
//! it with [`Gateway::wait_for_requests`] and [`Gateway::wait_for_mappings`].
//!
//! Table rules, per peer IP address (every exchange of a NAT-PMP client uses a new source port,
//! so the peer is its address, not its socket address):
//!
//! - op 0 answers [`GatewayConfig::external_address`];
//! - a new mapping gets a random free external port from [`GatewayConfig::port_range`] (or the
//!   suggested one with [`GatewayConfig::honour_suggested`]) and lifetime
//!   `min(asked, max_lifetime)`;
//! - a renewal (same peer, protocol, internal port) keeps its external port, with a new expiry;
//! - the other protocol of an internal port the peer already maps gets the same external port
//!   and does not count against the quota (Proton forwards one port for both protocols);
//! - lifetime 0 deletes (C-33, C-34: also when nothing was there), internal port 0 with
//!   lifetime 0 deletes all of the peer's mappings of that protocol (C-36);
//! - internal port 0 with lifetime > 0 is Proton's "symmetric default port" (C-37): a random
//!   port P forwarded to P, answered with internal port 0 and external port P;
//! - over [`GatewayConfig::quota_per_peer`] distinct internal ports: result 4.
//!
//! The pieces: `config` (how it behaves: [`GatewayConfig`], [`Mode`]), `table` (the mapping
//! table and its rules, no I/O), `server` (the socket loop and the [`Gateway`] handle tests
//! hold).

mod config;
mod server;
mod table;

pub use config::{GatewayConfig, Mode};
pub use server::Gateway;
pub use table::GatewayMapping;
