//! The reachability self-test (REACHABILITY_CHECK; docs/reachability.md): proves from a third
//! party on the internet that a forwarded port is reached through both NAT layers, with STUN
//! (RFC 8489) and its NAT behaviour discovery (RFC 5780).
//!
//! * [`check`]: one check: a test mapping of the daemon's own, the STUN probes, the heal,
//!   the delete.
//! * [`probe`]: one STUN Binding transaction with RFC 8489's retransmissions.
//! * [`outcome`]: what a check found, its cause and fix, the page's line.
//! * [`service`]: when checks run, and the handle the status server holds.

pub(crate) mod check;
pub(crate) mod outcome;
pub(crate) mod probe;
pub(crate) mod service;
