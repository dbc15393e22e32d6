//! Emulators of the far sides, for tests, benchmarks and `double-natpmp demo`: a NAT-PMP
//! gateway that behaves like ProtonVPN's, a RouterOS API server that follows the real wire
//! protocol and reply texts, and a STUN server with RFC 5780 (`stun`) for the reachability
//! self-test. The gateway and the RouterOS emulator hold their replies for the injected latency
//! with `delay`, exact to a tenth of a millisecond.
//!
//! A crate of its own so that the daemon's production code never reaches them: of the daemon
//! only the `demo`, `sim-router` and `sim-gateway` subcommands use them (behind the daemon's
//! `demo` feature, on by default), and the tests and benchmarks do.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod counter;
pub mod delay;
pub mod gateway;
pub mod path;
pub mod routeros;
pub mod stun;
