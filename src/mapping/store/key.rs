//! [`MappingKey`]: the identity of a mapping.

use std::net::Ipv4Addr;

use double_natpmp_codec::protocol::Protocol;

/// The NAT-PMP identity of a mapping (C-29): retransmits and renewals of the same key are the
/// same mapping, whatever external port they suggest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MappingKey {
    /// The LAN client (the request's source address, C-25).
    pub client: Ipv4Addr,
    /// UDP or TCP (the opcode).
    pub protocol: Protocol,
    /// The client's own port I.
    pub internal_port: u16,
}

impl std::fmt::Display for MappingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}:{}",
            self.protocol, self.client, self.internal_port
        )
    }
}
