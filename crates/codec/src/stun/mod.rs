//! STUN (RFC 8489) Binding messages with the NAT behaviour discovery attributes of RFC 5780,
//! without I/O, for the reachability self-test (docs/stun.md).
//!
//! A client writes a request with [`encode_binding_request`] (optionally with CHANGE-REQUEST
//! and RESPONSE-PORT) and reads the answer with [`decode_message`], which refuses anything that
//! is not a well-formed STUN message (cookie, length, attribute bounds, FINGERPRINT when
//! present) and never panics. [`Message::is_response_to`] matches an answer to its transaction;
//! [`Retransmission`] is RFC 8489 §6.2.1's schedule of waits. A server (our emulator) builds its
//! answers with [`binding_success`] or [`binding_error`] and writes them with
//! [`encode_message`].
//!
//! Hand-written rather than a crate: the static binary has little room left under its 4 MiB
//! limit, and the STUN crates on crates.io carry far more than a Binding exchange needs
//! (`stun_codec` 0.4 depends on bytecodec, byteorder, crc, hmac, md5, sha1 and trackable;
//! `stun-rs` 0.1.8 on sixteen crates, base64, hmac-sha1, hmac-sha256 and precis among them).
//! We need no authentication, so MESSAGE-INTEGRITY is read over but never checked, and the
//! CRC-32 of FINGERPRINT is a 1 KiB table built at compile time.
//!
//! The pieces: `header` (cookie, transaction id, method and class), `message` (decoding and
//! encoding, FINGERPRINT), `attribute` (the attributes we understand), `crc32`, `retransmit`
//! (the schedule).

mod attribute;
mod crc32;
mod header;
mod message;
mod retransmit;

#[cfg(test)]
mod tests;

pub use attribute::{kind, Attribute, ChangeRequest, ErrorCode};
pub use header::{Class, Method, TransactionId, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE};
pub use message::{
    binding_error, binding_success, decode_message, encode_binding_request, encode_message,
    Message, StunError,
};
pub use retransmit::{Retransmission, Waits};

/// The UDP port STUN servers listen on by default (RFC 8489).
pub const DEFAULT_PORT: u16 = 3478;
