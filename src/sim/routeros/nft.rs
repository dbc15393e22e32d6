//! Optional mirror of the emulated dst-nat rules into a real nftables chain inside a network
//! namespace, so end-to-end tests can push packets through the rules the daemon added.

use super::commands::RuleChange;

/// Where the mirror writes: `ip netns exec <netns> nft ... ip <table> <chain>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftMirror {
    /// The network namespace the chain lives in (created by the test).
    pub netns: String,
    /// The nftables table (family `ip`), e.g. `mikrotik`.
    pub table: String,
    /// The chain in that table, e.g. `dstnat`.
    pub chain: String,
    /// RouterOS `in-interface` -> Linux `iifname`.
    pub interface_map: Vec<(String, String)>,
}

/// Applies table changes to the mirror (not yet implemented: changes are ignored).
pub(crate) fn apply(_mirror: &NftMirror, _changes: Vec<RuleChange>) {}
