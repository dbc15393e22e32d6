//! [`Protocol`]: the transport protocol of a mapping, as a NAT-PMP request's opcode carries
//! it (RFC 6886 §3.3) and as RouterOS and people write it.

/// Opcode of a UDP mapping request.
const OP_MAP_UDP: u8 = 1;
/// Opcode of a TCP mapping request.
const OP_MAP_TCP: u8 = 2;

/// Transport protocol of a mapping; the request's opcode (1 = UDP, 2 = TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Opcode 1.
    Udp,
    /// Opcode 2.
    Tcp,
}

impl Protocol {
    /// Both protocols, UDP first.
    pub const ALL: [Protocol; 2] = [Protocol::Udp, Protocol::Tcp];

    /// The request opcode for this protocol.
    pub fn opcode(self) -> u8 {
        match self {
            Protocol::Udp => OP_MAP_UDP,
            Protocol::Tcp => OP_MAP_TCP,
        }
    }

    /// The protocol a request opcode asks for, if it is a mapping opcode.
    pub fn from_opcode(op: u8) -> Option<Protocol> {
        match op {
            OP_MAP_UDP => Some(Protocol::Udp),
            OP_MAP_TCP => Some(Protocol::Tcp),
            _ => None,
        }
    }

    /// Lower-case name, as RouterOS and humans write it ("udp", "tcp").
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }

    /// Parses "udp"/"tcp" in any case.
    pub fn parse(s: &str) -> Option<Protocol> {
        if s.eq_ignore_ascii_case("udp") {
            Some(Protocol::Udp)
        } else if s.eq_ignore_ascii_case("tcp") {
            Some(Protocol::Tcp)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
