//! The STUN header's pieces (RFC 8489 §5): the cookie, the transaction id, and the message
//! type with its method and class bits interleaved.

/// The fixed value of bytes 4..8 of every STUN message (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the message header.
pub const HEADER_LEN: usize = 20;
/// FINGERPRINT is the CRC-32 of the message XOR this ("STUN" in ASCII, RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// The 96-bit transaction id that pairs a response with its request (RFC 8489 §5). The codec
/// does not draw it: the caller brings 12 random bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

/// The class of a message (RFC 8489 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request (C1C0 = 00).
    Request,
    /// An indication (01): never answered.
    Indication,
    /// A success response (10).
    Success,
    /// An error response (11).
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// A 12-bit STUN method (RFC 8489 §18.2); only Binding is served here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    /// Binding (0x001), the only method of the self-test.
    pub const BINDING: Method = Method(0x001);
}

/// The message type: method bits interleaved with the two class bits (RFC 8489 §5, figure 3).
pub(crate) fn message_type(method: Method, class: Class) -> u16 {
    let m = method.0 & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

pub(crate) fn split_type(t: u16) -> (Method, Class) {
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = ((t >> 4) & 1) | ((t >> 7) & 2);
    (Method(method), Class::from_bits(class))
}
