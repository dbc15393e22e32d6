//! The lab ring: the daemon end to end in network namespaces (docs/lab.md): natpmpc,
//! miniupnpd, libtorrent and nftables as real peers, the ARM builds under qemu-user, and the
//! STUN codec against coturn. Needs root; without it each test skips loudly (`common::skip`),
//! under CI=true it fails.
//!
//! One test binary for the ring, so the test support crate is linked once for all its files.

use double_natpmp_test_support as common;

mod e2e_address;
mod e2e_arm;
mod e2e_both_ways;
mod e2e_libtorrent;
mod e2e_mapping;
mod e2e_restart;
mod reachability;
mod status_lab;
mod stun_coturn;
