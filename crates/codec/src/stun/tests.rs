//! Unit tests of the STUN codec: the RFC 5769 test vectors, round trips, refusals, and the
//! retransmission schedule.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// RFC 5769 §2.1: a Binding Request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
/// MESSAGE-INTEGRITY and FINGERPRINT (padding bytes are spaces, which a reader must ignore).
const RFC5769_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 §2.2: a Binding success response, XOR-MAPPED-ADDRESS 192.0.2.1:32853.
const RFC5769_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

/// RFC 5769 §2.3: the same response for 2001:db8:1234:5678:11:2233:4455:6677 port 32853.
const RFC5769_IPV6_RESPONSE: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

const RFC5769_TXID: TransactionId = TransactionId([
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
]);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address literal")
}

#[test]
fn rfc5769_sample_request_decodes_with_its_unknown_attributes_reported() {
    let m = decode_message(&RFC5769_REQUEST).expect("the RFC's request");
    assert_eq!(m.class, Class::Request);
    assert_eq!(m.method, Method::BINDING);
    assert_eq!(m.transaction_id, RFC5769_TXID);
    assert_eq!(m.software(), Some("STUN test client"));
    assert!(m.has_fingerprint());
    assert!(m
        .attributes
        .iter()
        .any(|a| matches!(a, Attribute::MessageIntegrity(mac) if mac[0] == 0x9a)));
    // PRIORITY (0x0024) and USERNAME (0x0006) are ICE's and comprehension-required; the
    // optional ICE-CONTROLLED (0x8029) is skipped silently.
    assert_eq!(m.unknown_required, [0x0024, 0x0006]);
}

#[test]
fn rfc5769_ipv4_response_gives_192_0_2_1_port_32853_and_a_matching_fingerprint() {
    let m = decode_message(&RFC5769_IPV4_RESPONSE).expect("the RFC's IPv4 response");
    assert_eq!(m.class, Class::Success);
    assert!(m.is_response_to(RFC5769_TXID));
    assert_eq!(m.xor_mapped_address(), Some(addr("192.0.2.1:32853")));
    assert_eq!(m.reflexive_address(), Some(addr("192.0.2.1:32853")));
    assert_eq!(m.software(), Some("test vector"));
    assert!(m.attributes.contains(&Attribute::Fingerprint(0xc07d_4c96)));
    assert!(m.unknown_required.is_empty());
    assert_eq!(m.other_address(), None, "no RFC 5780 in the vector");
}

#[test]
fn rfc5769_ipv6_response_gives_the_ipv6_reflexive_address() {
    let m = decode_message(&RFC5769_IPV6_RESPONSE).expect("the RFC's IPv6 response");
    assert_eq!(
        m.xor_mapped_address(),
        Some(addr("[2001:db8:1234:5678:11:2233:4455:6677]:32853"))
    );
}

#[test]
fn a_flipped_bit_fails_the_fingerprint() {
    let mut bad = RFC5769_IPV4_RESPONSE;
    bad[45] ^= 0x01; // inside the XOR-MAPPED-ADDRESS
    assert!(matches!(
        decode_message(&bad),
        Err(StunError::FingerprintMismatch {
            found: 0xc07d_4c96,
            ..
        })
    ));
}

#[test]
fn binding_request_with_change_and_response_port_round_trips() {
    let id = TransactionId([7; 12]);
    let bytes = encode_binding_request(id, ChangeRequest::IP_AND_PORT, Some(40000));
    // Header, CHANGE-REQUEST (8), RESPONSE-PORT (8), FINGERPRINT (8).
    assert_eq!(bytes.len(), HEADER_LEN + 24);
    assert_eq!(&bytes[..2], &[0x00, 0x01]);
    assert_eq!(&bytes[20..28], &[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 0x06]);
    assert_eq!(&bytes[28..36], &[0x00, 0x27, 0x00, 0x04, 0x9c, 0x40, 0, 0]);
    let m = decode_message(&bytes).expect("our own request");
    assert_eq!(m.class, Class::Request);
    assert_eq!(m.transaction_id, id);
    assert_eq!(m.change_request(), Some(ChangeRequest::IP_AND_PORT));
    assert_eq!(m.response_port(), Some(40000));
    assert!(m.has_fingerprint());
}

#[test]
fn plain_binding_request_carries_no_change_request() {
    let bytes = encode_binding_request(TransactionId([1; 12]), ChangeRequest::NONE, None);
    let m = decode_message(&bytes).expect("our own request");
    assert_eq!(m.change_request(), None);
    assert_eq!(m.response_port(), None);
    assert_eq!(bytes.len(), HEADER_LEN + 8, "only FINGERPRINT");
}

#[test]
fn success_response_round_trips_ipv4_and_ipv6() {
    let id = TransactionId([0xA5; 12]);
    for (reflexive, origin, other) in [
        (
            addr("198.51.101.7:40000"),
            addr("10.99.0.1:3478"),
            Some(addr("10.99.0.2:3479")),
        ),
        (addr("[2001:db8::1]:1"), addr("[2001:db8::2]:3478"), None),
    ] {
        let m = binding_success(id, reflexive, origin, other);
        let back = decode_message(&encode_message(&m, true)).expect("our own response");
        assert!(back.is_response_to(id));
        assert_eq!(back.xor_mapped_address(), Some(reflexive));
        assert_eq!(back.response_origin(), Some(origin));
        assert_eq!(back.other_address(), other);
        assert_eq!(back.attributes[..m.attributes.len()], m.attributes[..]);
    }
}

#[test]
fn error_response_round_trips_with_its_code_and_reason() {
    let id = TransactionId([3; 12]);
    let m = binding_error(id, 420, "Unknown Attribute")
        .with(Attribute::UnknownAttributes(vec![0x0003]));
    let back = decode_message(&encode_message(&m, false)).expect("our own error");
    assert_eq!(back.class, Class::Error);
    assert!(back.is_response_to(id));
    let e = back.error_code().expect("ERROR-CODE");
    assert_eq!((e.code, e.reason.as_str()), (420, "Unknown Attribute"));
    assert!(back
        .attributes
        .contains(&Attribute::UnknownAttributes(vec![0x0003])));
    assert!(!back.has_fingerprint());
}

#[test]
fn coturns_zero_padded_reason_phrase_reads_without_the_zeros() {
    // coturn 4.6.1 without `rfc5780`, answering a CHANGE-REQUEST (docs/stun.md §7): the
    // ERROR-CODE length (76) counts two NUL bytes of padding.
    let reason = b"Unknown attribute: TURN server was configured without RFC 5780 support";
    let mut m = vec![0x01, 0x11, 0x00, 80, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[1; 12]);
    m.extend_from_slice(&[0x00, 0x09, 0x00, 76, 0, 0, 4, 20]);
    m.extend_from_slice(reason);
    m.extend_from_slice(&[0, 0]);
    let back = decode_message(&m).expect("coturn's error");
    let e = back.error_code().expect("ERROR-CODE");
    assert_eq!(e.code, 420);
    assert_eq!(e.reason.as_bytes(), reason);
}

#[test]
fn a_response_to_another_transaction_is_not_ours() {
    let m = decode_message(&RFC5769_IPV4_RESPONSE).expect("the RFC's response");
    assert!(!m.is_response_to(TransactionId([0; 12])));
    let request = decode_message(&RFC5769_REQUEST).expect("the RFC's request");
    assert!(
        !request.is_response_to(RFC5769_TXID),
        "a request answers nothing"
    );
}

#[test]
fn message_types_interleave_method_and_class_bits() {
    let id = TransactionId([0; 12]);
    for (class, t) in [
        (Class::Request, 0x0001u16),
        (Class::Indication, 0x0011),
        (Class::Success, 0x0101),
        (Class::Error, 0x0111),
    ] {
        let bytes = encode_message(&Message::new(class, Method::BINDING, id), false);
        assert_eq!(&bytes[..2], &t.to_be_bytes());
        assert_eq!(decode_message(&bytes).map(|m| m.class), Ok(class));
    }
    let odd = encode_message(&Message::new(Class::Error, Method(0xABC), id), false);
    assert_eq!(decode_message(&odd).map(|m| m.method), Ok(Method(0xABC)));
}

#[test]
fn truncated_and_odd_length_datagrams_are_refused_with_the_matching_error() {
    let full = &RFC5769_IPV4_RESPONSE[..];
    assert_eq!(decode_message(&[]), Err(StunError::TooShort { len: 0 }));
    assert_eq!(
        decode_message(&full[..19]),
        Err(StunError::TooShort { len: 19 })
    );
    assert_eq!(
        decode_message(&full[..full.len() - 4]),
        Err(StunError::LengthMismatch {
            declared: 0x3c,
            actual: 76
        })
    );
    let mut trailing = full.to_vec();
    trailing.push(0);
    assert_eq!(
        decode_message(&trailing),
        Err(StunError::LengthMismatch {
            declared: 0x3c,
            actual: 81
        })
    );
    let mut odd = full[..HEADER_LEN].to_vec();
    odd[3] = 3;
    odd.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        decode_message(&odd),
        Err(StunError::UnalignedLength { declared: 3 })
    );
}

#[test]
fn an_attribute_longer_than_the_message_is_refused() {
    // SOFTWARE claims 12 bytes (padded 12) in a message with room for 8.
    let mut m = encode_message(
        &Message::new(Class::Success, Method::BINDING, TransactionId([0; 12])),
        false,
    );
    m[3] = 8;
    m.extend_from_slice(&[0x80, 0x22, 0x00, 0x0c, b'a', b'b', b'c', b'd']);
    assert_eq!(
        decode_message(&m),
        Err(StunError::AttributeTruncated {
            kind: 0x8022,
            offset: 20
        })
    );
}

#[test]
fn wrong_cookie_and_leading_bits_are_not_stun() {
    let mut m = RFC5769_IPV4_RESPONSE;
    m[4] = 0;
    assert!(matches!(
        decode_message(&m),
        Err(StunError::BadCookie { found: 0x0012_a442 })
    ));
    let mut m = RFC5769_IPV4_RESPONSE;
    m[0] |= 0x80;
    assert_eq!(decode_message(&m), Err(StunError::NotStun));
}

#[test]
fn a_malformed_known_attribute_is_named() {
    let id = TransactionId([9; 12]);
    let mut m = encode_message(&Message::new(Class::Success, Method::BINDING, id), false);
    m[3] = 8;
    // XOR-MAPPED-ADDRESS of family 3.
    m.extend_from_slice(&[0x00, 0x20, 0x00, 0x04, 0x00, 0x03, 0x00, 0x01]);
    assert!(matches!(
        decode_message(&m),
        Err(StunError::BadAttribute { kind: 0x0020, .. })
    ));
}

#[test]
fn an_attribute_after_fingerprint_is_refused() {
    let mut m = RFC5769_IPV4_RESPONSE.to_vec();
    m[3] += 8;
    m.extend_from_slice(&[0x80, 0x22, 0x00, 0x01, b'x', 0, 0, 0]);
    assert_eq!(
        decode_message(&m),
        Err(StunError::AfterFingerprint { kind: 0x8022 })
    );
}

#[test]
fn attributes_after_message_integrity_are_ignored_but_fingerprint_counts() {
    let id = TransactionId([4; 12]);
    let m = Message::new(Class::Success, Method::BINDING, id)
        .with(Attribute::MessageIntegrity([1; 20]))
        .with(Attribute::XorMappedAddress(addr("192.0.2.9:9")));
    let back = decode_message(&encode_message(&m, true)).expect("well formed");
    assert_eq!(back.xor_mapped_address(), None, "RFC 8489 §14.5");
    assert!(back.has_fingerprint());
}

#[test]
fn comprehension_optional_unknowns_are_skipped_silently() {
    let id = TransactionId([5; 12]);
    let mut m = encode_message(&Message::new(Class::Success, Method::BINDING, id), false);
    m[3] = 16;
    m.extend_from_slice(&[0x80, 0x55, 0x00, 0x02, 1, 2, 0, 0]);
    m.extend_from_slice(&[0x7f, 0x01, 0x00, 0x01, 1, 0, 0, 0]);
    let back = decode_message(&m).expect("well formed");
    assert!(back.attributes.is_empty());
    assert_eq!(back.unknown_required, [0x7f01]);
}

#[test]
fn long_software_is_cut_at_763_bytes_on_a_character_boundary() {
    let id = TransactionId([6; 12]);
    let name = "é".repeat(500); // 1000 bytes
    let m = Message::new(Class::Success, Method::BINDING, id).with(Attribute::Software(name));
    let back = decode_message(&encode_message(&m, true)).expect("well formed");
    let s = back.software().expect("SOFTWARE");
    assert_eq!(s.len(), 762);
    assert!(s.chars().all(|c| c == 'é'));
}

#[test]
fn change_request_flags_map_to_rfc5780_bits() {
    assert_eq!(ChangeRequest::IP_AND_PORT.to_bits(), 0x06);
    assert_eq!(
        ChangeRequest {
            ip: true,
            port: false
        }
        .to_bits(),
        0x04
    );
    assert_eq!(
        ChangeRequest::from_bits(0x02),
        ChangeRequest {
            ip: false,
            port: true
        }
    );
    assert!(!ChangeRequest::NONE.any());
}

#[test]
fn default_schedule_is_rfc8489s_39_5_seconds_over_7_requests() {
    let waits: Vec<u64> = Retransmission::default()
        .waits()
        .map(|d| d.as_millis() as u64)
        .collect();
    // Sends at 0, 500, 1500, 3500, 7500, 15500, 31500 ms; failure at 39500 ms (§6.2.1).
    assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 8000]);
    assert_eq!(
        Retransmission::default().total(),
        Duration::from_millis(39_500)
    );
}

#[test]
fn fewer_requests_end_with_the_last_wait() {
    let r = Retransmission::with_requests(3);
    assert_eq!(
        r.waits().collect::<Vec<_>>(),
        [500, 1000, 8000].map(Duration::from_millis)
    );
    assert_eq!(r.waits().len(), 3);
    assert_eq!(Retransmission::with_requests(0).waits().count(), 0);
    let huge = Retransmission {
        rto: Duration::from_secs(1),
        requests: 100,
        last_wait_factor: u32::MAX,
    };
    assert_eq!(huge.waits().count(), 100, "saturates, never overflows");
}

#[test]
fn the_ipv4_vector_reencodes_to_its_own_address_bytes() {
    let m = binding_success(
        RFC5769_TXID,
        SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 32853)),
        addr("192.0.2.2:3478"),
        None,
    );
    let bytes = encode_message(&m, false);
    assert_eq!(&bytes[20..32], &RFC5769_IPV4_RESPONSE[36..48]);
}

proptest! {
    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_message(&bytes);
    }

    #[test]
    fn any_bytes_behind_a_valid_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..200),
        class in 0u8..4,
    ) {
        // Most random bytes fail the cookie; this reaches the attribute walk.
        let mut m = vec![0x00, 0x01 | (class & 1) << 4, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        m[0] = (class >> 1) & 1;
        m.extend_from_slice(&[0; 12]);
        let len = (body.len() / 4 * 4) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m.extend_from_slice(&body[..usize::from(len)]);
        let _ = decode_message(&m);
    }

    #[test]
    fn decoded_messages_reencode_to_what_decodes_the_same(
        port in any::<u16>(), ip in any::<u32>(), change in 0u32..8, rp in any::<Option<u16>>(),
        id in any::<[u8; 12]>(),
    ) {
        let id = TransactionId(id);
        let req = decode_message(&encode_binding_request(id, ChangeRequest::from_bits(change), rp));
        prop_assert!(req.is_ok());
        let reflexive = SocketAddr::from((Ipv4Addr::from(ip), port));
        let resp = binding_success(id, reflexive, reflexive, Some(reflexive));
        let back = decode_message(&encode_message(&resp, true)).map(|m| m.xor_mapped_address());
        prop_assert_eq!(back, Ok(Some(reflexive)));
    }
}
