//! Server side of the NAT-PMP codec: any datagram a LAN host can send.
//!
//! `parse_request` and `error_reply` must never panic, a refused packet is answered exactly
//! when the RFC says so (C-08, C-15: silence; C-11, C-16: a reply), and every reply is a
//! well-formed NAT-PMP reply no longer than `MAX_PACKET_LEN`.

#![no_main]

use double_natpmp_codec::natpmp::wire::{
    encode_request, error_reply, parse_request, RequestError, MAP_REQUEST_LEN, MAX_PACKET_LEN,
    SHORT_REPLY_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The SSSoE is part of the input too, so the fuzzer can vary it.
    let (epoch, packet) = match data {
        [a, b, c, d, rest @ ..] => (u32::from_be_bytes([*a, *b, *c, *d]), rest),
        _ => (0, data),
    };
    match parse_request(packet) {
        Ok(req) => {
            // What we read, we can write back, and it reads the same.
            let mut buf = [0u8; MAP_REQUEST_LEN];
            let n = encode_request(&req, &mut buf);
            assert_eq!(parse_request(&buf[..n]), Ok(req));
            // And the datagram's own first n bytes were exactly that (reserved field aside).
            assert_eq!(packet[..2], buf[..2]);
            if n == MAP_REQUEST_LEN {
                assert_eq!(packet[4..n], buf[4..n]);
            }
        }
        Err(err) => {
            let mut out = [0u8; MAX_PACKET_LEN];
            let reply = error_reply(&err, packet, epoch, &mut out);
            let silent = matches!(
                err,
                RequestError::TooShort { .. } | RequestError::IsResponse { .. }
            );
            assert_eq!(reply.is_none(), silent, "{err:?}");
            if let Some(n) = reply {
                assert!((SHORT_REPLY_LEN..=MAX_PACKET_LEN).contains(&n));
                assert_eq!(out[0], 0, "reply version");
                assert!(out[1] & 0x80 != 0, "reply opcode has the top bit");
                let result = u16::from_be_bytes([out[2], out[3]]);
                match err {
                    RequestError::UnsupportedVersion { .. } => {
                        assert_eq!((n, out[1], result), (8, 0x80, 1));
                        assert_eq!(out[4..8], epoch.to_be_bytes());
                    }
                    RequestError::UnsupportedOpcode { .. } => {
                        assert_eq!(result, 5);
                        assert_eq!(n, packet.len().clamp(SHORT_REPLY_LEN, MAX_PACKET_LEN));
                    }
                    _ => unreachable!("silent errors return None"),
                }
                // Our reply must never be answered by another NAT-PMP speaker (no loops).
                assert!(matches!(
                    parse_request(&out[..n]),
                    Err(RequestError::IsResponse { .. })
                ));
            }
        }
    }
});
