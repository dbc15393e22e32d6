//! The STUN message: header (RFC 8489 §5), the walk over its attributes with their bounds and
//! FINGERPRINT (§14.7), and the encoder.

use std::net::SocketAddr;

use thiserror::Error;

use super::attribute::{kind, Attribute, ChangeRequest, ErrorCode};
use super::crc32::crc32;
use super::header::{
    message_type, split_type, Class, Method, TransactionId, FINGERPRINT_XOR, HEADER_LEN,
    MAGIC_COOKIE,
};

/// Longest SOFTWARE value or reason phrase we write (RFC 8489 §14.8, §14.14: 763 bytes).
const MAX_TEXT: usize = 763;
/// Attribute header: type and length.
const ATTR_HEADER_LEN: usize = 4;

/// Why a datagram is not a STUN message we accept.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StunError {
    /// Shorter than the 20-byte header.
    #[error("a STUN message has a 20-byte header; this datagram has only {len} bytes")]
    TooShort {
        /// Datagram length.
        len: usize,
    },
    /// The two most significant bits are not zero (RFC 8489 §5): some other protocol.
    #[error("not a STUN message: its first two bits are not zero")]
    NotStun,
    /// The magic cookie is wrong: an RFC 3489-only server, or not STUN at all.
    #[error("magic cookie {found:#010x} is not 0x2112a442 (an RFC 3489 server, or not STUN)")]
    BadCookie {
        /// The bytes 4..8.
        found: u32,
    },
    /// The length field is not a multiple of 4 (RFC 8489 §5).
    #[error("STUN message length {declared} is not a multiple of 4")]
    UnalignedLength {
        /// The length field.
        declared: u16,
    },
    /// The length field and the datagram's size disagree (truncated, or trailing bytes).
    #[error("STUN message length {declared} plus the 20-byte header does not match the {actual}-byte datagram")]
    LengthMismatch {
        /// The length field.
        declared: u16,
        /// Datagram length.
        actual: usize,
    },
    /// An attribute (with its padding to 4 bytes) runs past the end of the message.
    #[error("STUN attribute {kind:#06x} at byte {offset} runs past the end of the message")]
    AttributeTruncated {
        /// Its type, 0 if its header itself is cut.
        kind: u16,
        /// Where its header starts.
        offset: usize,
    },
    /// An attribute we know has a value of the wrong shape.
    #[error("STUN attribute {kind:#06x} is malformed: {reason}")]
    BadAttribute {
        /// Its type.
        kind: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// FINGERPRINT does not match: corrupted, or not STUN (RFC 8489 §14.7).
    #[error("STUN FINGERPRINT {found:#010x} does not match the message's {expected:#010x}")]
    FingerprintMismatch {
        /// The value carried.
        found: u32,
        /// The value computed.
        expected: u32,
    },
    /// An attribute follows FINGERPRINT, which must be the last (RFC 8489 §14.7).
    #[error("STUN attribute {kind:#06x} follows FINGERPRINT, which must be last")]
    AfterFingerprint {
        /// The type of the attribute after it.
        kind: u16,
    },
}

/// A decoded STUN message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Request, indication, success or error.
    pub class: Class,
    /// The method (Binding for us).
    pub method: Method,
    /// Pairs a response with its request.
    pub transaction_id: TransactionId,
    /// The attributes we understand, in order; unknown ones and those after
    /// MESSAGE-INTEGRITY (§14.5) are left out.
    pub attributes: Vec<Attribute>,
    /// Types of comprehension-required attributes we did not understand (RFC 8489 §6.3:
    /// a request with any deserves error 420, a response with any must be discarded). Never
    /// written by [`encode_message`].
    pub unknown_required: Vec<u16>,
}

impl Message {
    /// A message without attributes.
    pub fn new(class: Class, method: Method, transaction_id: TransactionId) -> Message {
        Message {
            class,
            method,
            transaction_id,
            attributes: Vec::new(),
            unknown_required: Vec::new(),
        }
    }

    /// Adds an attribute (builder style).
    pub fn with(mut self, attribute: Attribute) -> Message {
        self.attributes.push(attribute);
        self
    }

    /// Whether this is a Binding response (success or error) to the transaction `id`.
    pub fn is_response_to(&self, id: TransactionId) -> bool {
        self.method == Method::BINDING
            && matches!(self.class, Class::Success | Class::Error)
            && self.transaction_id == id
    }

    fn find<T>(&self, f: impl FnMut(&Attribute) -> Option<T>) -> Option<T> {
        self.attributes.iter().find_map(f)
    }

    /// XOR-MAPPED-ADDRESS: where the server saw the request come from.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorMappedAddress(x) => Some(*x),
            _ => None,
        })
    }

    /// MAPPED-ADDRESS (servers older than RFC 5389 send only this).
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::MappedAddress(x) => Some(*x),
            _ => None,
        })
    }

    /// The reflexive address: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS.
    pub fn reflexive_address(&self) -> Option<SocketAddr> {
        self.xor_mapped_address().or_else(|| self.mapped_address())
    }

    /// OTHER-ADDRESS: its presence says the server does RFC 5780.
    pub fn other_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::OtherAddress(x) => Some(*x),
            _ => None,
        })
    }

    /// RESPONSE-ORIGIN: the address the server answered from.
    pub fn response_origin(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::ResponseOrigin(x) => Some(*x),
            _ => None,
        })
    }

    /// CHANGE-REQUEST of a request.
    pub fn change_request(&self) -> Option<ChangeRequest> {
        self.find(|a| match a {
            Attribute::ChangeRequest(c) => Some(*c),
            _ => None,
        })
    }

    /// RESPONSE-PORT of a request.
    pub fn response_port(&self) -> Option<u16> {
        self.find(|a| match a {
            Attribute::ResponsePort(p) => Some(*p),
            _ => None,
        })
    }

    /// ERROR-CODE of an error response.
    pub fn error_code(&self) -> Option<&ErrorCode> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::ErrorCode(e) => Some(e),
            _ => None,
        })
    }

    /// SOFTWARE, the agent's name.
    pub fn software(&self) -> Option<&str> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Software(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// Whether the message carried a FINGERPRINT (it matched, or decoding would have failed).
    pub fn has_fingerprint(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| matches!(a, Attribute::Fingerprint(_)))
    }
}

/// Reads one STUN message from a datagram. Checks the first two bits, the cookie, that the
/// length is a multiple of 4 and matches the datagram, that every attribute and its padding
/// fits, the values of the attributes we know, and FINGERPRINT when present (it must be last).
/// MESSAGE-INTEGRITY is accepted without verification. Never panics.
pub fn decode_message(datagram: &[u8]) -> Result<Message, StunError> {
    let Some(header) = datagram.first_chunk::<HEADER_LEN>() else {
        return Err(StunError::TooShort {
            len: datagram.len(),
        });
    };
    let msg_type = u16::from_be_bytes([header[0], header[1]]);
    if msg_type & 0xC000 != 0 {
        return Err(StunError::NotStun);
    }
    let declared = u16::from_be_bytes([header[2], header[3]]);
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if cookie != MAGIC_COOKIE {
        return Err(StunError::BadCookie { found: cookie });
    }
    if declared % 4 != 0 {
        return Err(StunError::UnalignedLength { declared });
    }
    if usize::from(declared) + HEADER_LEN != datagram.len() {
        return Err(StunError::LengthMismatch {
            declared,
            actual: datagram.len(),
        });
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&header[8..]);
    let (method, class) = split_type(msg_type);
    let mut message = Message::new(class, method, TransactionId(txid));

    let mut offset = HEADER_LEN;
    let mut after_integrity = false;
    let mut fingerprint_at = None;
    while offset < datagram.len() {
        let Some(&[k0, k1, l0, l1]) = datagram.get(offset..).and_then(|r| r.first_chunk::<4>())
        else {
            return Err(StunError::AttributeTruncated { kind: 0, offset });
        };
        let kind = u16::from_be_bytes([k0, k1]);
        if fingerprint_at.is_some() {
            return Err(StunError::AfterFingerprint { kind });
        }
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let start = offset + ATTR_HEADER_LEN;
        let next = start + len.next_multiple_of(4);
        let (Some(value), true) = (datagram.get(start..start + len), next <= datagram.len()) else {
            return Err(StunError::AttributeTruncated { kind, offset });
        };
        if kind == kind::FINGERPRINT {
            fingerprint_at = Some(offset);
        }
        // RFC 8489 §14.5: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and
        // FINGERPRINT count; everything else is ignored.
        let ignored =
            after_integrity && kind != kind::FINGERPRINT && kind != kind::MESSAGE_INTEGRITY_SHA256;
        if !ignored {
            match Attribute::decode(kind, value, &message.transaction_id) {
                Ok(Some(attr)) => message.attributes.push(attr),
                Ok(None) if kind::comprehension_required(kind) => {
                    message.unknown_required.push(kind)
                }
                Ok(None) => {}
                Err(reason) => return Err(StunError::BadAttribute { kind, reason }),
            }
        }
        after_integrity |= kind == kind::MESSAGE_INTEGRITY;
        offset = next;
    }
    if let Some(at) = fingerprint_at {
        let expected = crc32(&datagram[..at]) ^ FINGERPRINT_XOR;
        if let Some(found) = message.find(|a| match a {
            Attribute::Fingerprint(f) => Some(*f),
            _ => None,
        }) {
            if found != expected {
                return Err(StunError::FingerprintMismatch { found, expected });
            }
        }
    }
    Ok(message)
}

/// Writes `message`: the header, its attributes in order with their padding (zero bytes), and
/// a FINGERPRINT at the end when `fingerprint` is true (a [`Attribute::Fingerprint`] in the
/// list is left out: its value is computed here). SOFTWARE and reason phrases are cut at 763
/// bytes (RFC 8489 §14.8, §14.14).
pub fn encode_message(message: &Message, fingerprint: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&message_type(message.method, message.class).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(&message.transaction_id.0);
    let mut value = Vec::new();
    for attr in &message.attributes {
        if matches!(attr, Attribute::Fingerprint(_)) {
            continue;
        }
        value.clear();
        attr.encode_value(&message.transaction_id, &mut value);
        if matches!(attr, Attribute::Software(_) | Attribute::ErrorCode(_)) {
            truncate_utf8(
                &mut value,
                MAX_TEXT + 4 * usize::from(attr.kind() == kind::ERROR_CODE),
            );
        }
        value.truncate(usize::from(u16::MAX) & !3);
        push_attribute(&mut out, attr.kind(), &value);
    }
    if fingerprint {
        set_length(&mut out, 8);
        let crc = crc32(&out) ^ FINGERPRINT_XOR;
        push_attribute(&mut out, kind::FINGERPRINT, &crc.to_be_bytes());
    }
    set_length(&mut out, 0);
    out
}

fn push_attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    // `value` was cut below 64 KiB by the caller.
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Sets the header's length field for the message in `out` and `extra` bytes still to come
/// (saturating: a message past 64 KiB cannot be written and would be refused by any reader).
fn set_length(out: &mut [u8], extra: usize) {
    let total = out.len() + extra;
    let len = u16::try_from(total.saturating_sub(HEADER_LEN)).unwrap_or(u16::MAX);
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

/// Cuts `bytes` (UTF-8 after any binary prefix) to at most `max` bytes at a character start.
fn truncate_utf8(bytes: &mut Vec<u8>, max: usize) {
    if bytes.len() <= max {
        return;
    }
    let mut cut = max;
    // Continuation bytes are 0b10xx_xxxx; back up to the start of the character.
    while cut > 0 && bytes[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    bytes.truncate(cut);
}

/// A Binding Request with FINGERPRINT; with CHANGE-REQUEST when `change` sets a flag, and with
/// RESPONSE-PORT when `response_port` is given (RFC 5780 §7.2, §7.5).
pub fn encode_binding_request(
    id: TransactionId,
    change: ChangeRequest,
    response_port: Option<u16>,
) -> Vec<u8> {
    let mut m = Message::new(Class::Request, Method::BINDING, id);
    if change.any() {
        m = m.with(Attribute::ChangeRequest(change));
    }
    if let Some(port) = response_port {
        m = m.with(Attribute::ResponsePort(port));
    }
    encode_message(&m, true)
}

/// A Binding success response: XOR-MAPPED-ADDRESS `reflexive` (the request's source),
/// RESPONSE-ORIGIN `origin` (the socket answering) and, from a server that does RFC 5780,
/// OTHER-ADDRESS `other` (RFC 5780 §7.3, §7.4).
pub fn binding_success(
    id: TransactionId,
    reflexive: SocketAddr,
    origin: SocketAddr,
    other: Option<SocketAddr>,
) -> Message {
    let mut m = Message::new(Class::Success, Method::BINDING, id)
        .with(Attribute::XorMappedAddress(reflexive))
        .with(Attribute::ResponseOrigin(origin));
    if let Some(other) = other {
        m = m.with(Attribute::OtherAddress(other));
    }
    m
}

/// A Binding error response with ERROR-CODE `code` (300..=699) and `reason`.
pub fn binding_error(id: TransactionId, code: u16, reason: &str) -> Message {
    Message::new(Class::Error, Method::BINDING, id).with(Attribute::ErrorCode(ErrorCode {
        code,
        reason: reason.to_owned(),
    }))
}
