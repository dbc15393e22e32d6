//! [`Protocol`]: the transport protocol of a mapping, as every front end (NAT-PMP, the forwards
//! API, STATIC_MAPPINGS), the mapping core and the router speak of it. Neutral on purpose: the
//! NAT-PMP opcode that carries it on the wire is `natpmp::protocol`'s business.

/// Transport protocol of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// UDP (NAT-PMP opcode 1).
    Udp,
    /// TCP (NAT-PMP opcode 2).
    Tcp,
}

impl Protocol {
    /// Both protocols, UDP first.
    pub const ALL: [Protocol; 2] = [Protocol::Udp, Protocol::Tcp];

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
