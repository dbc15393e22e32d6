//! The STUN attributes the reachability self-test reads or writes, their values on the wire,
//! and the type codes of the registry (RFC 8489 §18.3, and RFC 5780 for its four).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::header::{TransactionId, MAGIC_COOKIE};

/// Attribute type codes. 0x0000-0x7FFF are comprehension-required, 0x8000-0xFFFF optional
/// (RFC 8489 §14).
pub mod kind {
    /// MAPPED-ADDRESS (RFC 8489 §14.1).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// CHANGE-REQUEST (RFC 5780 §7.2).
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// MESSAGE-INTEGRITY (RFC 8489 §14.5): accepted, never verified.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE (RFC 8489 §14.8).
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.13).
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6): may follow MESSAGE-INTEGRITY.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RESPONSE-PORT (RFC 5780 §7.5).
    pub const RESPONSE_PORT: u16 = 0x0027;
    /// SOFTWARE (RFC 8489 §14.14).
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT (RFC 8489 §14.7).
    pub const FINGERPRINT: u16 = 0x8028;
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// OTHER-ADDRESS (RFC 5780 §7.4).
    pub const OTHER_ADDRESS: u16 = 0x802C;

    /// Whether an agent that does not know `kind` must refuse the message (RFC 8489 §14).
    pub fn comprehension_required(kind: u16) -> bool {
        kind < 0x8000
    }
}

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// The flags of CHANGE-REQUEST (RFC 5780 §7.2): answer from the other IP and/or port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChangeRequest {
    /// "change IP" (0x04).
    pub ip: bool,
    /// "change port" (0x02).
    pub port: bool,
}

impl ChangeRequest {
    /// Neither flag: no CHANGE-REQUEST attribute is written.
    pub const NONE: ChangeRequest = ChangeRequest {
        ip: false,
        port: false,
    };
    /// Both flags (0x06): the answer proves that a third party reaches the mapping.
    pub const IP_AND_PORT: ChangeRequest = ChangeRequest {
        ip: true,
        port: true,
    };

    /// Whether any flag is set.
    pub fn any(self) -> bool {
        self.ip || self.port
    }

    /// The 32-bit value on the wire.
    pub fn to_bits(self) -> u32 {
        (u32::from(self.ip) << 2) | (u32::from(self.port) << 1)
    }

    /// Reads the 32-bit value; the other bits are ignored.
    pub fn from_bits(bits: u32) -> ChangeRequest {
        ChangeRequest {
            ip: bits & 0x4 != 0,
            port: bits & 0x2 != 0,
        }
    }
}

/// An ERROR-CODE (RFC 8489 §14.8): a code 300..=699 and a reason phrase.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode {
    /// The code, e.g. 420 (Unknown Attribute).
    pub code: u16,
    /// The reason phrase, for people.
    pub reason: String,
}

/// One attribute of a message, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// The reflexive address, plain (RFC 8489 §14.1; old servers send only this).
    MappedAddress(SocketAddr),
    /// The reflexive address, XOR-ed with the cookie (and transaction id for IPv6).
    XorMappedAddress(SocketAddr),
    /// Which of the server's IP and port must send the answer (RFC 5780 §7.2).
    ChangeRequest(ChangeRequest),
    /// The port the answer goes to, at the request's source IP (RFC 5780 §7.5).
    ResponsePort(u16),
    /// The server's address with the other IP and port; present only when the server does
    /// RFC 5780 (§7.4).
    OtherAddress(SocketAddr),
    /// The address the answer was sent from (RFC 5780 §7.3).
    ResponseOrigin(SocketAddr),
    /// The error of an error response.
    ErrorCode(ErrorCode),
    /// The comprehension-required attributes an error 420 says the server did not know.
    UnknownAttributes(Vec<u16>),
    /// The agent's name and version (read with invalid UTF-8 replaced).
    Software(String),
    /// The HMAC-SHA1 of the message: kept as read, never verified.
    MessageIntegrity([u8; 20]),
    /// The CRC-32 of the message XOR 0x5354554E; checked by the decoder.
    Fingerprint(u32),
}

impl Attribute {
    /// The attribute's type code.
    pub fn kind(&self) -> u16 {
        match self {
            Attribute::MappedAddress(_) => kind::MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => kind::XOR_MAPPED_ADDRESS,
            Attribute::ChangeRequest(_) => kind::CHANGE_REQUEST,
            Attribute::ResponsePort(_) => kind::RESPONSE_PORT,
            Attribute::OtherAddress(_) => kind::OTHER_ADDRESS,
            Attribute::ResponseOrigin(_) => kind::RESPONSE_ORIGIN,
            Attribute::ErrorCode(_) => kind::ERROR_CODE,
            Attribute::UnknownAttributes(_) => kind::UNKNOWN_ATTRIBUTES,
            Attribute::Software(_) => kind::SOFTWARE,
            Attribute::MessageIntegrity(_) => kind::MESSAGE_INTEGRITY,
            Attribute::Fingerprint(_) => kind::FINGERPRINT,
        }
    }

    /// Reads the value of an attribute of type `kind`; `Ok(None)` for a type we do not know.
    pub(crate) fn decode(
        kind: u16,
        value: &[u8],
        txid: &TransactionId,
    ) -> Result<Option<Attribute>, &'static str> {
        let attr = match kind {
            kind::MAPPED_ADDRESS => Attribute::MappedAddress(address(value)?),
            kind::XOR_MAPPED_ADDRESS => {
                Attribute::XorMappedAddress(xor_address(address(value)?, txid))
            }
            kind::OTHER_ADDRESS => Attribute::OtherAddress(address(value)?),
            kind::RESPONSE_ORIGIN => Attribute::ResponseOrigin(address(value)?),
            kind::CHANGE_REQUEST => Attribute::ChangeRequest(ChangeRequest::from_bits(
                u32::from_be_bytes(fixed::<4>(value).ok_or("CHANGE-REQUEST is not 4 bytes")?),
            )),
            kind::RESPONSE_PORT => {
                // RFC 5780 §7.5: 16 bits of port, then 16 bits of padding (some agents write a
                // length of 2 and leave the padding to the attribute padding).
                match value {
                    [a, b] | [a, b, _, _] => Attribute::ResponsePort(u16::from_be_bytes([*a, *b])),
                    _ => return Err("RESPONSE-PORT is neither 2 nor 4 bytes"),
                }
            }
            kind::ERROR_CODE => {
                let [_, _, class, number, reason @ ..] = value else {
                    return Err("ERROR-CODE is shorter than 4 bytes");
                };
                let (class, number) = (u16::from(class & 0x07), u16::from(*number));
                if !(3..=6).contains(&class) || number > 99 {
                    return Err("ERROR-CODE is outside 300..=699");
                }
                // coturn counts its zero padding into the reason's length: cut trailing NULs.
                let end = reason.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                Attribute::ErrorCode(ErrorCode {
                    code: class * 100 + number,
                    reason: String::from_utf8_lossy(&reason[..end]).into_owned(),
                })
            }
            kind::UNKNOWN_ATTRIBUTES => {
                if value.len() % 2 != 0 {
                    return Err("UNKNOWN-ATTRIBUTES has an odd length");
                }
                Attribute::UnknownAttributes(
                    value
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                )
            }
            kind::SOFTWARE => Attribute::Software(String::from_utf8_lossy(value).into_owned()),
            kind::MESSAGE_INTEGRITY => Attribute::MessageIntegrity(
                fixed::<20>(value).ok_or("MESSAGE-INTEGRITY is not 20 bytes")?,
            ),
            kind::FINGERPRINT => Attribute::Fingerprint(u32::from_be_bytes(
                fixed::<4>(value).ok_or("FINGERPRINT is not 4 bytes")?,
            )),
            _ => return Ok(None),
        };
        Ok(Some(attr))
    }

    /// Appends the value (unpadded) of this attribute to `out`.
    pub(crate) fn encode_value(&self, txid: &TransactionId, out: &mut Vec<u8>) {
        match self {
            Attribute::MappedAddress(a)
            | Attribute::OtherAddress(a)
            | Attribute::ResponseOrigin(a) => write_address(*a, out),
            Attribute::XorMappedAddress(a) => write_address(xor_address(*a, txid), out),
            Attribute::ChangeRequest(c) => out.extend_from_slice(&c.to_bits().to_be_bytes()),
            Attribute::ResponsePort(p) => {
                out.extend_from_slice(&p.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Attribute::ErrorCode(e) => {
                let class = (e.code / 100).min(7) as u8;
                let number = (e.code % 100) as u8;
                out.extend_from_slice(&[0, 0, class, number]);
                out.extend_from_slice(e.reason.as_bytes());
            }
            Attribute::UnknownAttributes(kinds) => {
                for k in kinds {
                    out.extend_from_slice(&k.to_be_bytes());
                }
            }
            Attribute::Software(s) => out.extend_from_slice(s.as_bytes()),
            Attribute::MessageIntegrity(mac) => out.extend_from_slice(mac),
            Attribute::Fingerprint(f) => out.extend_from_slice(&f.to_be_bytes()),
        }
    }
}

fn fixed<const N: usize>(value: &[u8]) -> Option<[u8; N]> {
    value.try_into().ok()
}

/// MAPPED-ADDRESS's layout, shared by the other address attributes (RFC 8489 §14.1).
fn address(value: &[u8]) -> Result<SocketAddr, &'static str> {
    match value {
        [_, FAMILY_IPV4, p0, p1, a @ ..] if a.len() == 4 => {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([*p0, *p1]),
            ))
        }
        [_, FAMILY_IPV6, p0, p1, a @ ..] => {
            let octets: [u8; 16] = a.try_into().map_err(|_| "IPv6 address is not 16 bytes")?;
            let ip = Ipv6Addr::from(octets);
            Ok(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([*p0, *p1]),
            ))
        }
        [_, FAMILY_IPV4, ..] => Err("IPv4 address attribute is not 8 bytes"),
        [_, _, ..] => Err("address family is neither IPv4 nor IPv6"),
        _ => Err("address attribute is shorter than 4 bytes"),
    }
}

fn write_address(a: SocketAddr, out: &mut Vec<u8>) {
    let family = if a.is_ipv4() {
        FAMILY_IPV4
    } else {
        FAMILY_IPV6
    };
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&a.port().to_be_bytes());
    match a.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
}

/// XOR-MAPPED-ADDRESS's obfuscation (RFC 8489 §14.2); its own inverse.
fn xor_address(a: SocketAddr, txid: &TransactionId) -> SocketAddr {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = a.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match a.ip() {
        IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) ^ MAGIC_COOKIE)),
        IpAddr::V6(ip) => {
            let mut octets = ip.octets();
            let key = cookie.iter().chain(txid.0.iter());
            for (o, k) in octets.iter_mut().zip(key) {
                *o ^= k;
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
    };
    SocketAddr::new(ip, port)
}
