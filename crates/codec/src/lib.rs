//! The packet formats double-natpmp speaks, as pure functions: no sockets, no tasks, no
//! allocation beyond the values they return. The daemon, its emulators and the fuzz targets
//! share this one copy, so what the fuzzers run is what the daemon runs.
//!
//! * [`protocol`]: the transport protocol of a mapping, neutral (every front end, the mapping
//!   core and the router speak of it).
//! * [`natpmp`]: RFC 6886 packets in both directions ([`natpmp::wire`]), the result codes, the
//!   opcode of each protocol, and the epoch clock (seconds since start of epoch).
//! * [`routeros`]: RouterOS API words and sentences ([`routeros::wire`]).
//! * [`stun`]: STUN Binding messages (RFC 8489) with RFC 5780's NAT behaviour discovery
//!   attributes, and the retransmission schedule, for the reachability self-test.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod natpmp;
pub mod protocol;
pub mod routeros;
pub mod stun;
