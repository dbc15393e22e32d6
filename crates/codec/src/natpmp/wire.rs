//! NAT-PMP (RFC 6886) packet format, in both directions, without I/O.
//!
//! The server side reads requests with [`parse_request`] and writes replies with
//! [`encode_response`]; a request it must not serve as-is comes back as a [`RequestError`]
//! and [`error_reply`] says what (if anything) goes back on the wire. The client side
//! (toward the upstream VPN gateway) writes requests with [`encode_request`] and reads replies
//! with [`parse_response`].
//!
//! Rule numbers (C-xx) refer to `docs/conformance.md`.

use std::net::Ipv4Addr;

use thiserror::Error;

pub use crate::natpmp::protocol::Protocol;
pub use crate::natpmp::result::ResultCode;

/// UDP port a NAT-PMP server listens on (RFC 6886 §3, C-01).
pub const SERVER_PORT: u16 = 5351;
/// UDP port clients listen on for announcements (RFC 6886 §3.2.1, C-53).
pub const CLIENT_PORT: u16 = 5350;
/// The only protocol version we speak (RFC 6886 §3).
pub const VERSION: u8 = 0;
/// Exact size of an external-address reply (C-03).
pub const ADDRESS_REPLY_LEN: usize = 12;
/// Exact size of a mapping reply (C-04).
pub const MAP_REPLY_LEN: usize = 16;
/// Size of a mapping request; shorter ones are dropped (C-08), longer ones truncated (C-09).
pub const MAP_REQUEST_LEN: usize = 12;
/// Size of the result-only reply (unsupported version, C-05).
pub const SHORT_REPLY_LEN: usize = 8;
/// Largest reply this module ever writes: an echoed unsupported-opcode request is cut here.
/// (1100 bytes is the largest PCP message, RFC 6887 §7; nothing legitimate is longer.)
pub const MAX_PACKET_LEN: usize = 1100;

const OP_EXTERNAL_ADDRESS: u8 = 0;
const OP_REPLY_BIT: u8 = 0x80;

/// A mapping request (opcode 1 or 2), RFC 6886 §3.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapRequest {
    /// UDP (op 1) or TCP (op 2).
    pub protocol: Protocol,
    /// The client's own port; 0 with lifetime 0 means "all my mappings" (C-36).
    pub internal_port: u16,
    /// The external port the client would like; 0 means "any" (C-28).
    pub suggested_external_port: u16,
    /// Requested lifetime in seconds; 0 means delete (C-33).
    pub lifetime: u32,
}

impl MapRequest {
    /// Lifetime 0: delete one mapping, or all of them with internal port 0 (C-33, C-36).
    pub fn is_delete(&self) -> bool {
        self.lifetime == 0
    }

    /// Internal port 0 and lifetime 0: delete all of this client's mappings of the protocol
    /// (C-36). The suggested external port is ignored on deletion (C-33).
    pub fn is_delete_all(&self) -> bool {
        self.lifetime == 0 && self.internal_port == 0
    }
}

/// A request a NAT-PMP server can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// Opcode 0: what is the external address? (§3.2)
    ExternalAddress,
    /// Opcode 1/2: create, renew or delete a mapping (§3.3, §3.4).
    Map(MapRequest),
}

/// Why a datagram is not a request the server serves as-is. [`error_reply`] turns each case into
/// the reply the RFC asks for, or into silence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RequestError {
    /// Fewer than 2 bytes, or a mapping opcode with fewer than 12 (C-08): dropped.
    #[error("packet too short: {len} bytes for opcode {opcode:?}")]
    TooShort {
        /// Datagram length.
        len: usize,
        /// The opcode, if the packet had one.
        opcode: Option<u8>,
    },
    /// Opcode with the top bit set: a response, never answered (C-15).
    #[error("opcode {opcode} is a response")]
    IsResponse {
        /// The opcode byte.
        opcode: u8,
    },
    /// Version other than 0, PCP (2) included (C-11..C-14): answered with result 1.
    #[error("unsupported version {version}")]
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
    /// Opcode 3..=127 (C-16): the request is echoed with result 5.
    #[error("unsupported opcode {opcode}")]
    UnsupportedOpcode {
        /// The opcode byte.
        opcode: u8,
    },
}

/// Reads a request datagram (server side).
///
/// Trailing bytes and the reserved field are ignored (C-09, C-10).
pub fn parse_request(packet: &[u8]) -> Result<Request, RequestError> {
    let (version, opcode) = match packet {
        [v, op, ..] => (*v, *op),
        _ => {
            return Err(RequestError::TooShort {
                len: packet.len(),
                opcode: None,
            })
        }
    };
    // C-15 before C-11: a response-looking packet is never answered, whatever its version,
    // so two NAT-PMP speakers can never loop on each other.
    if opcode & OP_REPLY_BIT != 0 {
        return Err(RequestError::IsResponse { opcode });
    }
    if version != VERSION {
        return Err(RequestError::UnsupportedVersion { version });
    }
    if opcode == OP_EXTERNAL_ADDRESS {
        return Ok(Request::ExternalAddress);
    }
    let Some(protocol) = Protocol::from_opcode(opcode) else {
        return Err(RequestError::UnsupportedOpcode { opcode });
    };
    let Some(body) = packet.get(..MAP_REQUEST_LEN) else {
        return Err(RequestError::TooShort {
            len: packet.len(),
            opcode: Some(opcode),
        });
    };
    Ok(Request::Map(MapRequest {
        protocol,
        internal_port: u16::from_be_bytes([body[4], body[5]]),
        suggested_external_port: u16::from_be_bytes([body[6], body[7]]),
        lifetime: u32::from_be_bytes([body[8], body[9], body[10], body[11]]),
    }))
}

/// Writes the reply the RFC asks for when [`parse_request`] refused `packet`, and returns its
/// length; `None` means the packet must go unanswered.
///
/// - unsupported version: the 8-byte `[0][128][0,1][SSSoE]` of erratum 3618 (C-05, C-12);
/// - unsupported opcode: the whole request echoed with the top bit of the opcode set and
///   result 5 (C-16), cut at [`MAX_PACKET_LEN`]. A request shorter than 8 bytes is padded to 8
///   and gets the SSSoE in bytes 4..8 (C-44); a longer one keeps its own bytes there, since
///   §3.5 asks for "the entire request".
pub fn error_reply(
    err: &RequestError,
    packet: &[u8],
    epoch: u32,
    out: &mut [u8; MAX_PACKET_LEN],
) -> Option<usize> {
    match *err {
        RequestError::TooShort { .. } | RequestError::IsResponse { .. } => None,
        RequestError::UnsupportedVersion { .. } => Some(encode_response(
            &Response::UnsupportedVersion { epoch },
            out,
        )),
        RequestError::UnsupportedOpcode { opcode } => {
            let len = packet.len().min(MAX_PACKET_LEN);
            out[..len].copy_from_slice(&packet[..len]);
            let len = if len < SHORT_REPLY_LEN {
                out[len..SHORT_REPLY_LEN].fill(0);
                out[4..8].copy_from_slice(&epoch.to_be_bytes());
                SHORT_REPLY_LEN
            } else {
                len
            };
            out[0] = VERSION;
            out[1] = opcode | OP_REPLY_BIT;
            out[2..4].copy_from_slice(&ResultCode::UnsupportedOpcode.to_u16().to_be_bytes());
            Some(len)
        }
    }
}

/// Writes a request datagram (client side) and returns its length (2 or 12).
pub fn encode_request(req: &Request, out: &mut [u8; MAP_REQUEST_LEN]) -> usize {
    match req {
        Request::ExternalAddress => {
            out[0] = VERSION;
            out[1] = OP_EXTERNAL_ADDRESS;
            2
        }
        Request::Map(m) => {
            out[0] = VERSION;
            out[1] = m.protocol.opcode();
            out[2..4].fill(0);
            out[4..6].copy_from_slice(&m.internal_port.to_be_bytes());
            out[6..8].copy_from_slice(&m.suggested_external_port.to_be_bytes());
            out[8..12].copy_from_slice(&m.lifetime.to_be_bytes());
            MAP_REQUEST_LEN
        }
    }
}

/// A reply to a mapping request (opcode 128+1 or 128+2), 16 bytes (C-04).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapResponse {
    /// Echoes the request's protocol (C-24).
    pub protocol: Protocol,
    /// Outcome.
    pub result: ResultCode,
    /// Seconds since start of epoch.
    pub epoch: u32,
    /// Echoes the request's internal port (C-18).
    pub internal_port: u16,
    /// The mapped external port; 0 on failure or deletion.
    pub external_port: u16,
    /// Granted lifetime in seconds; 0 on failure or deletion.
    pub lifetime: u32,
}

/// A NAT-PMP reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Response {
    /// Opcode 128, 12 bytes (C-03); address 0.0.0.0 unless result is success (C-21).
    ExternalAddress {
        /// Outcome.
        result: ResultCode,
        /// Seconds since start of epoch.
        epoch: u32,
        /// The external address.
        address: Ipv4Addr,
    },
    /// Opcode 129/130, 16 bytes.
    Map(MapResponse),
    /// The 8-byte `[0][128][0,1][SSSoE]` reply to any version ≠ 0 (C-05, erratum 3618).
    UnsupportedVersion {
        /// Seconds since start of epoch.
        epoch: u32,
    },
    /// An 8-byte result-only reply with another code, as some gateways (miniupnpd) send for
    /// unsupported opcodes. Only [`parse_response`] produces it.
    Short {
        /// The reply opcode (128 + request opcode).
        opcode: u8,
        /// Outcome.
        result: ResultCode,
        /// Seconds since start of epoch.
        epoch: u32,
    },
}

impl Response {
    /// The SSSoE the reply carries.
    pub fn epoch(&self) -> u32 {
        match self {
            Response::ExternalAddress { epoch, .. }
            | Response::UnsupportedVersion { epoch }
            | Response::Short { epoch, .. } => *epoch,
            Response::Map(m) => m.epoch,
        }
    }

    /// The result code the reply carries.
    pub fn result(&self) -> ResultCode {
        match self {
            Response::ExternalAddress { result, .. } | Response::Short { result, .. } => *result,
            Response::Map(m) => m.result,
            Response::UnsupportedVersion { .. } => ResultCode::UnsupportedVersion,
        }
    }
}

/// Writes a reply datagram and returns its exact length: 12, 16 or 8 (C-03..C-05, C-07: never
/// padded). Bytes of `out` past that length are left untouched.
///
/// # Panics
///
/// If `out` is shorter than the reply; a buffer of [`MAP_REPLY_LEN`] bytes or more always fits.
pub fn encode_response(resp: &Response, out: &mut [u8]) -> usize {
    out[0] = VERSION;
    match resp {
        Response::ExternalAddress {
            result,
            epoch,
            address,
        } => {
            out[1] = OP_REPLY_BIT | OP_EXTERNAL_ADDRESS;
            out[2..4].copy_from_slice(&result.to_u16().to_be_bytes());
            out[4..8].copy_from_slice(&epoch.to_be_bytes());
            // C-21: a failure never reveals an address.
            let address = if *result == ResultCode::Success {
                *address
            } else {
                Ipv4Addr::UNSPECIFIED
            };
            out[8..12].copy_from_slice(&address.octets());
            ADDRESS_REPLY_LEN
        }
        Response::Map(m) => {
            out[1] = OP_REPLY_BIT | m.protocol.opcode();
            out[2..4].copy_from_slice(&m.result.to_u16().to_be_bytes());
            out[4..8].copy_from_slice(&m.epoch.to_be_bytes());
            out[8..10].copy_from_slice(&m.internal_port.to_be_bytes());
            out[10..12].copy_from_slice(&m.external_port.to_be_bytes());
            out[12..16].copy_from_slice(&m.lifetime.to_be_bytes());
            MAP_REPLY_LEN
        }
        Response::UnsupportedVersion { epoch } => {
            // Erratum 3618: the op byte is 128, whatever the request's opcode was.
            out[1] = OP_REPLY_BIT;
            out[2..4].copy_from_slice(&ResultCode::UnsupportedVersion.to_u16().to_be_bytes());
            out[4..8].copy_from_slice(&epoch.to_be_bytes());
            SHORT_REPLY_LEN
        }
        Response::Short {
            opcode,
            result,
            epoch,
        } => {
            out[1] = *opcode | OP_REPLY_BIT;
            out[2..4].copy_from_slice(&result.to_u16().to_be_bytes());
            out[4..8].copy_from_slice(&epoch.to_be_bytes());
            SHORT_REPLY_LEN
        }
    }
}

/// Why a datagram from a gateway is not a usable reply (client side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ResponseError {
    /// Shorter than the 8-byte header, or shorter than its opcode's reply.
    #[error("reply too short: {len} bytes")]
    TooShort {
        /// Datagram length.
        len: usize,
    },
    /// Version byte not 0.
    #[error("reply has version {version}, expected 0")]
    BadVersion {
        /// The version byte.
        version: u8,
    },
    /// Opcode without the top bit, or above 130.
    #[error("reply has opcode {opcode}, expected 128..=130")]
    BadOpcode {
        /// The opcode byte.
        opcode: u8,
    },
    /// A result code RFC 6886 does not define (C-20).
    #[error("reply has undefined result code {code}")]
    UnknownResultCode {
        /// The raw code.
        code: u16,
    },
}

/// Reads a reply datagram (client side).
///
/// Replies of 8 to 11 bytes (or 8 to 15 for mappings) are accepted when their result is not
/// success, since gateways answer errors with the 8-byte form; a success must be full size.
pub fn parse_response(packet: &[u8]) -> Result<Response, ResponseError> {
    let Some(head) = packet.get(..SHORT_REPLY_LEN) else {
        return Err(ResponseError::TooShort { len: packet.len() });
    };
    if head[0] != VERSION {
        return Err(ResponseError::BadVersion { version: head[0] });
    }
    let opcode = head[1];
    if opcode & OP_REPLY_BIT == 0 || opcode > OP_REPLY_BIT | Protocol::Tcp.opcode() {
        return Err(ResponseError::BadOpcode { opcode });
    }
    let code = u16::from_be_bytes([head[2], head[3]]);
    let result = ResultCode::from_u16(code).ok_or(ResponseError::UnknownResultCode { code })?;
    let epoch = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let request_op = opcode & !OP_REPLY_BIT;
    let full_len = if request_op == OP_EXTERNAL_ADDRESS {
        ADDRESS_REPLY_LEN
    } else {
        MAP_REPLY_LEN
    };
    if packet.len() < full_len {
        if result == ResultCode::Success {
            return Err(ResponseError::TooShort { len: packet.len() });
        }
        if result == ResultCode::UnsupportedVersion && request_op == OP_EXTERNAL_ADDRESS {
            return Ok(Response::UnsupportedVersion { epoch });
        }
        return Ok(Response::Short {
            opcode,
            result,
            epoch,
        });
    }
    if request_op == OP_EXTERNAL_ADDRESS {
        return Ok(Response::ExternalAddress {
            result,
            epoch,
            address: Ipv4Addr::new(packet[8], packet[9], packet[10], packet[11]),
        });
    }
    let protocol = Protocol::from_opcode(request_op).ok_or(ResponseError::BadOpcode { opcode })?;
    Ok(Response::Map(MapResponse {
        protocol,
        result,
        epoch,
        internal_port: u16::from_be_bytes([packet[8], packet[9]]),
        external_port: u16::from_be_bytes([packet[10], packet[11]]),
        lifetime: u32::from_be_bytes([packet[12], packet[13], packet[14], packet[15]]),
    }))
}

#[cfg(test)]
mod tests;
