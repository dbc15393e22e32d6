//! The NAT-PMP opcode of a mapping request (RFC 6886 §3.3): [`Protocol`] (neutral, in
//! `crate::protocol`) as the wire carries it. Re-exported here and in `wire` for NAT-PMP code.

pub use crate::protocol::Protocol;

/// Opcode of a UDP mapping request.
const OP_MAP_UDP: u8 = 1;
/// Opcode of a TCP mapping request.
const OP_MAP_TCP: u8 = 2;

impl Protocol {
    /// The NAT-PMP request opcode for this protocol (1 = UDP, 2 = TCP).
    pub fn opcode(self) -> u8 {
        match self {
            Protocol::Udp => OP_MAP_UDP,
            Protocol::Tcp => OP_MAP_TCP,
        }
    }

    /// The protocol a NAT-PMP request opcode asks for, if it is a mapping opcode.
    pub fn from_opcode(op: u8) -> Option<Protocol> {
        match op {
            OP_MAP_UDP => Some(Protocol::Udp),
            OP_MAP_TCP => Some(Protocol::Tcp),
            _ => None,
        }
    }
}
