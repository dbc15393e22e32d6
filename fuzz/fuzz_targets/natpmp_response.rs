//! Client side of the NAT-PMP codec: any datagram the upstream gateway (or an attacker on
//! the path) can send back.
//!
//! `parse_response` must never panic, and every reply it accepts re-encodes to an exact-size
//! packet (C-03..C-05, C-07) that reads back as the same reply, the address of a failed
//! address reply aside (it is written as 0.0.0.0, C-21).

#![no_main]

use std::net::Ipv4Addr;

use double_natpmp_codec::natpmp::wire::{
    encode_response, parse_response, Response, ResultCode, ADDRESS_REPLY_LEN, MAP_REPLY_LEN,
    MAX_PACKET_LEN, SHORT_REPLY_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(resp) = parse_response(data) else {
        return;
    };
    let mut out = [0u8; MAX_PACKET_LEN];
    let n = encode_response(&resp, &mut out);
    let expected_len = match resp {
        Response::ExternalAddress { .. } => ADDRESS_REPLY_LEN,
        Response::Map(_) => MAP_REPLY_LEN,
        Response::UnsupportedVersion { .. } | Response::Short { .. } => SHORT_REPLY_LEN,
    };
    assert_eq!(n, expected_len);
    assert!(
        data.len() >= n,
        "a reply is never shorter than its encoding"
    );

    let canonical = match resp {
        Response::ExternalAddress { result, epoch, .. } if result != ResultCode::Success => {
            Response::ExternalAddress {
                result,
                epoch,
                address: Ipv4Addr::UNSPECIFIED,
            }
        }
        other => other,
    };
    assert_eq!(parse_response(&out[..n]), Ok(canonical));
    assert_eq!(resp.epoch(), canonical.epoch());
    assert_eq!(resp.result(), canonical.result());
    if canonical == resp {
        // Byte-exact: the first n bytes of the datagram are the reply we read.
        assert_eq!(data[..n], out[..n]);
    }
});
