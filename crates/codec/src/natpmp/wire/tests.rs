//! One test per packet-form rule of docs/conformance.md §1A-1D and §1F, named after its
//! C-number and using the appendix vectors byte for byte; property tests at the end.

use super::*;

/// An SSSoE that shows up clearly in a dump: 0x00BC614E.
const EPOCH: u32 = 12_345_678;
const EPOCH_BYTES: [u8; 4] = [0x00, 0xBC, 0x61, 0x4E];

fn encode(resp: &Response) -> Vec<u8> {
    let mut out = [0u8; MAX_PACKET_LEN];
    let n = encode_response(resp, &mut out);
    out[..n].to_vec()
}

/// What the server puts on the wire for a datagram it refuses: `None` is silence.
fn refusal(packet: &[u8], epoch: u32) -> Option<Vec<u8>> {
    let err = parse_request(packet).expect_err("packet should be refused");
    let mut out = [0u8; MAX_PACKET_LEN];
    error_reply(&err, packet, epoch, &mut out).map(|n| out[..n].to_vec())
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn map(protocol: Protocol, internal_port: u16, suggested: u16, lifetime: u32) -> Request {
    Request::Map(MapRequest {
        protocol,
        internal_port,
        suggested_external_port: suggested,
        lifetime,
    })
}

const ALL_RESULTS: [ResultCode; 6] = [
    ResultCode::Success,
    ResultCode::UnsupportedVersion,
    ResultCode::NotAuthorized,
    ResultCode::NetworkFailure,
    ResultCode::OutOfResources,
    ResultCode::UnsupportedOpcode,
];

#[test]
fn appendix_map_tcp_vector_parses() {
    let req = parse_request(&[
        0x00, 0x02, 0x00, 0x00, 0x1A, 0xE1, 0x1A, 0xE1, 0x00, 0x00, 0x0E, 0x10,
    ]);
    assert_eq!(req, Ok(map(Protocol::Tcp, 6881, 6881, 3600)));
}

#[test]
fn c02_multibyte_fields_are_big_endian_and_address_in_natural_order() {
    // Request side: 0x1234 / 0xABCD / 0x01020304 must not come out byte-swapped.
    let req = parse_request(&[0, 1, 0, 0, 0x12, 0x34, 0xAB, 0xCD, 0x01, 0x02, 0x03, 0x04]);
    assert_eq!(req, Ok(map(Protocol::Udp, 0x1234, 0xABCD, 0x0102_0304)));
    let mut out = [0u8; MAP_REQUEST_LEN];
    let n = encode_request(&map(Protocol::Udp, 0x1234, 0xABCD, 0x0102_0304), &mut out);
    assert_eq!(
        &out[..n],
        &[0, 1, 0, 0, 0x12, 0x34, 0xAB, 0xCD, 0x01, 0x02, 0x03, 0x04]
    );

    // Reply side: result, SSSoE, ports, lifetime big-endian.
    let bytes = encode(&Response::Map(MapResponse {
        protocol: Protocol::Udp,
        result: ResultCode::OutOfResources,
        epoch: 0x0A0B_0C0D,
        internal_port: 0x1234,
        external_port: 0xABCD,
        lifetime: 0x0102_0304,
    }));
    assert_eq!(
        bytes,
        [0, 0x81, 0, 4, 0x0A, 0x0B, 0x0C, 0x0D, 0x12, 0x34, 0xAB, 0xCD, 1, 2, 3, 4]
    );

    // The address is a.b.c.d as bytes 8..11.
    let bytes = encode(&Response::ExternalAddress {
        result: ResultCode::Success,
        epoch: EPOCH,
        address: Ipv4Addr::new(198, 51, 100, 7),
    });
    assert_eq!(&bytes[8..12], &[198, 51, 100, 7]);
}

#[test]
fn c03_address_reply_is_exactly_12_bytes_with_appendix_layout() {
    // Appendix: `00 00` -> `00 80 00 00 <SSSoE:4> <a b c d>`.
    assert_eq!(parse_request(&[0x00, 0x00]), Ok(Request::ExternalAddress));
    let bytes = encode(&Response::ExternalAddress {
        result: ResultCode::Success,
        epoch: EPOCH,
        address: Ipv4Addr::new(203, 0, 113, 9),
    });
    assert_eq!(bytes.len(), ADDRESS_REPLY_LEN);
    assert_eq!(
        bytes,
        concat(&[&[0x00, 0x80, 0x00, 0x00], &EPOCH_BYTES, &[203, 0, 113, 9]])
    );
}

#[test]
fn c04_map_reply_is_exactly_16_bytes_with_appendix_layout() {
    // Appendix: map TCP 6881 -> `00 82 00 00 <SSSoE> 1A E1 <ext:2> <<=60:4>`.
    let bytes = encode(&Response::Map(MapResponse {
        protocol: Protocol::Tcp,
        result: ResultCode::Success,
        epoch: EPOCH,
        internal_port: 6881,
        external_port: 51_234,
        lifetime: 60,
    }));
    assert_eq!(bytes.len(), MAP_REPLY_LEN);
    assert_eq!(
        bytes,
        concat(&[
            &[0x00, 0x82, 0x00, 0x00],
            &EPOCH_BYTES,
            &[0x1A, 0xE1, 0xC8, 0x22, 0x00, 0x00, 0x00, 0x3C],
        ])
    );
}

#[test]
fn c05_unsupported_version_reply_is_8_bytes_with_op_128() {
    let bytes = encode(&Response::UnsupportedVersion { epoch: EPOCH });
    assert_eq!(bytes.len(), SHORT_REPLY_LEN);
    // Erratum 3618: op byte 128, not 0 (RFC figure) nor 128+op (miniupnpd).
    assert_eq!(bytes, concat(&[&[0x00, 0x80, 0x00, 0x01], &EPOCH_BYTES]));
    // And our client reads a gateway's erratum-form reply back as the same thing.
    assert_eq!(
        parse_response(&bytes),
        Ok(Response::UnsupportedVersion { epoch: EPOCH })
    );
}

#[test]
fn c07_replies_are_never_padded() {
    for result in ALL_RESULTS {
        let address = Response::ExternalAddress {
            result,
            epoch: EPOCH,
            address: Ipv4Addr::new(10, 2, 0, 1),
        };
        for protocol in Protocol::ALL {
            let mapping = Response::Map(MapResponse {
                protocol,
                result,
                epoch: EPOCH,
                internal_port: 1,
                external_port: 2,
                lifetime: 3,
            });
            let short = Response::Short {
                opcode: 0x80 | protocol.opcode(),
                result,
                epoch: EPOCH,
            };
            for (resp, len) in [
                (address, ADDRESS_REPLY_LEN),
                (mapping, MAP_REPLY_LEN),
                (short, SHORT_REPLY_LEN),
                (
                    Response::UnsupportedVersion { epoch: EPOCH },
                    SHORT_REPLY_LEN,
                ),
            ] {
                // A buffer full of 0xAA: the length says what is sent, and nothing past it
                // is written (so no stale padding can leak into a longer send).
                let mut out = [0xAAu8; MAX_PACKET_LEN];
                let n = encode_response(&resp, &mut out);
                assert_eq!(n, len, "{resp:?}");
                assert!(out[n..].iter().all(|b| *b == 0xAA), "{resp:?}");
            }
        }
    }
}

#[test]
fn c08_short_packets_are_dropped_but_two_byte_address_request_is_served() {
    for packet in [
        &[][..],
        &[0x00][..],
        &[0x00, 0x01][..],
        &[0x00, 0x02, 0, 0, 0x1A, 0xE1, 0x1A, 0xE1, 0, 0, 0x0E][..], // 11 bytes, op 2
    ] {
        assert!(
            matches!(parse_request(packet), Err(RequestError::TooShort { .. })),
            "{packet:02X?}"
        );
        assert_eq!(
            refusal(packet, EPOCH),
            None,
            "{packet:02X?} must get no reply"
        );
    }
    assert_eq!(parse_request(&[0x00, 0x00]), Ok(Request::ExternalAddress));
}

#[test]
fn c09_trailing_bytes_are_ignored() {
    assert_eq!(
        parse_request(&[0x00, 0x00, 0xDE, 0xAD]),
        Ok(Request::ExternalAddress)
    );
    let mut long = vec![
        0x00, 0x02, 0x00, 0x00, 0x1A, 0xE1, 0x1A, 0xE1, 0x00, 0x00, 0x0E, 0x10,
    ];
    long.extend_from_slice(&[0xFF; 100]);
    assert_eq!(
        parse_request(&long),
        Ok(map(Protocol::Tcp, 6881, 6881, 3600))
    );
}

#[test]
fn c10_reserved_field_is_ignored() {
    assert_eq!(
        parse_request(&[0x00, 0x01, 0xFF, 0xFF, 0x1A, 0xE1, 0x1A, 0xE1, 0x00, 0x00, 0x0E, 0x10]),
        Ok(map(Protocol::Udp, 6881, 6881, 3600))
    );
}

#[test]
fn c11_nonzero_version_gets_result_1_with_version_0() {
    for version in 1..=u8::MAX {
        for opcode in 0..0x80u8 {
            let packet = [
                version, opcode, 0, 0, 0x1A, 0xE1, 0x1A, 0xE1, 0, 0, 0x0E, 0x10,
            ];
            assert_eq!(
                parse_request(&packet),
                Err(RequestError::UnsupportedVersion { version })
            );
            let reply = refusal(&packet, EPOCH).expect("unsupported version is answered");
            assert_eq!(reply[0], 0, "version field is the one we speak");
            assert_eq!(&reply[2..4], &[0, 1], "result 1");
        }
    }
}

#[test]
fn c12_unsupported_version_reply_has_c05_layout_and_the_given_epoch() {
    for epoch in [1, EPOCH, u32::MAX] {
        let reply = refusal(&[0x01, 0x00], epoch).expect("answered");
        assert_eq!(
            reply,
            concat(&[&[0x00, 0x80, 0x00, 0x01], &epoch.to_be_bytes()])
        );
    }
}

#[test]
fn c13_version_1_is_unsupported_not_pcp() {
    let packet = [0x01, 0x01, 0, 0, 0x1A, 0xE1, 0x1A, 0xE1, 0, 0, 0x0E, 0x10];
    assert_eq!(
        parse_request(&packet),
        Err(RequestError::UnsupportedVersion { version: 1 })
    );
    assert_eq!(
        refusal(&packet, EPOCH),
        Some(concat(&[&[0x00, 0x80, 0x00, 0x01], &EPOCH_BYTES]))
    );
}

/// A 60-byte PCP (RFC 6887 §11.1) MAP request for UDP 6881 from 192.168.88.10, as
/// libtorrent sends before falling back to NAT-PMP.
fn pcp_map_probe() -> Vec<u8> {
    let mut p = vec![0x02, 0x01, 0x00, 0x00]; // version 2, R=0 opcode MAP, reserved
    p.extend_from_slice(&3600u32.to_be_bytes()); // requested lifetime
    p.extend_from_slice(&[0; 10]); // client IP, IPv4-mapped IPv6
    p.extend_from_slice(&[0xFF, 0xFF, 192, 168, 88, 10]);
    p.extend_from_slice(&[0x5A; 12]); // mapping nonce
    p.extend_from_slice(&[17, 0, 0, 0]); // protocol UDP, reserved
    p.extend_from_slice(&6881u16.to_be_bytes()); // internal port
    p.extend_from_slice(&6881u16.to_be_bytes()); // suggested external port
    p.extend_from_slice(&[0; 16]); // suggested external address: any
    p
}

#[test]
fn c14_pcp_v2_probe_gets_8_byte_natpmp_reply() {
    let probe = pcp_map_probe();
    assert_eq!(probe.len(), 60);
    // Appendix: `02 01 ...` -> `00 80 00 01 <SSSoE>`, 8 bytes, so the client falls back.
    assert_eq!(
        refusal(&probe, EPOCH),
        Some(concat(&[&[0x00, 0x80, 0x00, 0x01], &EPOCH_BYTES]))
    );
    // PCP ANNOUNCE (opcode 0) and PEER (opcode 2) probes get the same answer.
    for opcode in [0x00, 0x02] {
        let mut p = probe.clone();
        p[1] = opcode;
        assert_eq!(refusal(&p, EPOCH).map(|r| r.len()), Some(SHORT_REPLY_LEN));
    }
}

#[test]
fn c15_response_opcodes_are_never_answered() {
    for opcode in [128u8, 129, 130, 255] {
        for version in [0u8, 2] {
            for len in [2usize, 8, 12, 16, 60] {
                let mut packet = vec![0u8; len];
                packet[0] = version;
                packet[1] = opcode;
                assert_eq!(
                    parse_request(&packet),
                    Err(RequestError::IsResponse { opcode })
                );
                assert_eq!(refusal(&packet, EPOCH), None, "v{version} op {opcode}");
            }
        }
    }
    // Appendix: a response-looking packet `00 81 ...` gets no reply.
    let our_own_reply = encode(&Response::Map(MapResponse {
        protocol: Protocol::Udp,
        result: ResultCode::Success,
        epoch: EPOCH,
        internal_port: 6881,
        external_port: 6881,
        lifetime: 60,
    }));
    assert_eq!(refusal(&our_own_reply, EPOCH), None);
}

#[test]
fn c16_unsupported_opcode_echoes_whole_request_with_result_5() {
    let request = [
        0x00, 0x07, 0x00, 0x00, 0x1A, 0xE1, 0x1A, 0xE1, 0x00, 0x00, 0x0E, 0x10,
    ];
    assert_eq!(
        parse_request(&request),
        Err(RequestError::UnsupportedOpcode { opcode: 7 })
    );
    let reply = refusal(&request, EPOCH).expect("answered");
    // Appendix: same 12 bytes with byte1 = 87 and bytes 2..3 = 00 05.
    assert_eq!(
        reply,
        [0x00, 0x87, 0x00, 0x05, 0x1A, 0xE1, 0x1A, 0xE1, 0x00, 0x00, 0x0E, 0x10]
    );
    // Every opcode 3..=127 is treated alike, and the reserved field is overwritten.
    for opcode in 3..0x80u8 {
        let request = [0, opcode, 0xFF, 0xFF, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        let reply = refusal(&request, EPOCH).expect("answered");
        assert_eq!(reply.len(), request.len());
        assert_eq!(&reply[..4], &[0, opcode | 0x80, 0, 5]);
        assert_eq!(&reply[4..], &request[4..]);
    }
}

#[test]
fn c16_short_unsupported_opcode_request_is_padded_to_8_with_epoch() {
    for request in [
        &[0x00, 0x07][..],
        &[0x00, 0x07, 0xAB][..],
        &[0x00, 0x07, 0, 0, 9, 9][..],
    ] {
        assert_eq!(
            refusal(request, EPOCH),
            Some(concat(&[&[0x00, 0x87, 0x00, 0x05], &EPOCH_BYTES])),
            "{request:02X?}"
        );
    }
}

#[test]
fn c16_oversized_unsupported_opcode_request_is_cut_at_max_packet_len() {
    let mut request = vec![0x42; 1500];
    request[0] = 0;
    request[1] = 0x10;
    let reply = refusal(&request, EPOCH).expect("answered");
    assert_eq!(reply.len(), MAX_PACKET_LEN);
    assert_eq!(&reply[..4], &[0x00, 0x90, 0x00, 0x05]);
    assert!(reply[4..].iter().all(|b| *b == 0x42));
}

#[test]
fn c18_failure_map_reply_keeps_internal_port_and_zeroes_the_rest() {
    for (protocol, op) in [(Protocol::Udp, 0x81), (Protocol::Tcp, 0x82)] {
        for result in [
            ResultCode::NotAuthorized,
            ResultCode::NetworkFailure,
            ResultCode::OutOfResources,
        ] {
            let bytes = encode(&Response::Map(MapResponse {
                protocol,
                result,
                epoch: EPOCH,
                internal_port: 6881,
                external_port: 0,
                lifetime: 0,
            }));
            let code = result.to_u16().to_be_bytes();
            assert_eq!(
                bytes,
                concat(&[
                    &[0x00, op, code[0], code[1]],
                    &EPOCH_BYTES,
                    &[0x1A, 0xE1, 0, 0, 0, 0, 0, 0],
                ])
            );
        }
    }
}

#[test]
fn c21_failure_address_reply_hides_the_address() {
    let address = Ipv4Addr::new(10, 2, 0, 1);
    for result in ALL_RESULTS {
        let bytes = encode(&Response::ExternalAddress {
            result,
            epoch: EPOCH,
            address,
        });
        assert_eq!(bytes.len(), ADDRESS_REPLY_LEN);
        let expected = if result == ResultCode::Success {
            address.octets()
        } else {
            [0, 0, 0, 0]
        };
        assert_eq!(&bytes[8..12], &expected, "{result}");
    }
}

#[test]
fn c24_reply_opcode_is_128_plus_request_opcode() {
    for request in [
        [0x00, 0x01, 0, 0, 0x1A, 0xE1, 0, 0, 0, 0, 0, 60],
        [0x00, 0x02, 0, 0, 0x1A, 0xE1, 0, 0, 0, 0, 0, 60],
    ] {
        let Ok(Request::Map(m)) = parse_request(&request) else {
            panic!("{request:02X?} is a mapping request");
        };
        let bytes = encode(&Response::Map(MapResponse {
            protocol: m.protocol,
            result: ResultCode::Success,
            epoch: EPOCH,
            internal_port: m.internal_port,
            external_port: 40_000,
            lifetime: 60,
        }));
        assert_eq!(bytes[1], 128 + request[1]);
    }
    let bytes = encode(&Response::ExternalAddress {
        result: ResultCode::Success,
        epoch: EPOCH,
        address: Ipv4Addr::LOCALHOST,
    });
    assert_eq!(bytes[1], 128);
}

#[test]
fn c33_lifetime_0_deletes_one_mapping_and_reply_matches_appendix() {
    // Appendix: `00 01 00 00 1A E1 00 00 00 00 00 00`.
    let req = parse_request(&[0x00, 0x01, 0x00, 0x00, 0x1A, 0xE1, 0, 0, 0, 0, 0, 0]);
    let Ok(Request::Map(m)) = req else {
        panic!("delete is a mapping request: {req:?}");
    };
    assert!(m.is_delete());
    assert!(!m.is_delete_all());
    // The suggested external port does not change what a delete means.
    let req = parse_request(&[0x00, 0x01, 0x00, 0x00, 0x1A, 0xE1, 0x1A, 0xE1, 0, 0, 0, 0]);
    let Ok(Request::Map(m2)) = req else {
        panic!("delete is a mapping request: {req:?}");
    };
    assert!(m2.is_delete() && !m2.is_delete_all());
    // -> `00 81 00 00 <SSSoE> 1A E1 00 00 00 00 00 00`.
    let bytes = encode(&Response::Map(MapResponse {
        protocol: m.protocol,
        result: ResultCode::Success,
        epoch: EPOCH,
        internal_port: m.internal_port,
        external_port: 0,
        lifetime: 0,
    }));
    assert_eq!(
        bytes,
        concat(&[
            &[0x00, 0x81, 0x00, 0x00],
            &EPOCH_BYTES,
            &[0x1A, 0xE1, 0, 0, 0, 0, 0, 0],
        ])
    );
}

#[test]
fn c34_retransmitted_delete_is_read_the_same_and_answered_with_success_layout() {
    // The codec is stateless: the second copy of a delete is the same request, and the
    // success reply the server sends for "nothing to delete" has the C-33 layout.
    let packet = [0x00, 0x02, 0x00, 0x00, 0x1A, 0xE1, 0, 0, 0, 0, 0, 0];
    let first = parse_request(&packet);
    assert_eq!(first, parse_request(&packet));
    assert_eq!(first, Ok(map(Protocol::Tcp, 6881, 0, 0)));
    let bytes = encode(&Response::Map(MapResponse {
        protocol: Protocol::Tcp,
        result: ResultCode::Success,
        epoch: EPOCH,
        internal_port: 6881,
        external_port: 0,
        lifetime: 0,
    }));
    assert_eq!(
        bytes,
        concat(&[
            &[0x00, 0x82, 0x00, 0x00],
            &EPOCH_BYTES,
            &[0x1A, 0xE1, 0, 0, 0, 0, 0, 0],
        ])
    );
}

#[test]
fn c36_delete_all_is_internal_0_lifetime_0_for_the_opcodes_protocol_only() {
    // Appendix: delete all UDP `00 01 00 00 00 00 00 00 00 00 00 00`.
    for (op, protocol) in [(0x01, Protocol::Udp), (0x02, Protocol::Tcp)] {
        let req = parse_request(&[0x00, op, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let Ok(Request::Map(m)) = req else {
            panic!("delete-all is a mapping request: {req:?}");
        };
        assert!(m.is_delete_all());
        assert!(m.is_delete());
        assert_eq!(m.protocol, protocol, "only the opcode's protocol");
        // -> `00 8x 00 00 <SSSoE> 00 00 00 00 00 00 00 00`.
        let bytes = encode(&Response::Map(MapResponse {
            protocol: m.protocol,
            result: ResultCode::Success,
            epoch: EPOCH,
            internal_port: 0,
            external_port: 0,
            lifetime: 0,
        }));
        assert_eq!(
            bytes,
            concat(&[&[0x00, 0x80 | op, 0x00, 0x00], &EPOCH_BYTES, &[0; 8]])
        );
    }
}

#[test]
fn c37_internal_port_0_with_lifetime_is_a_map_request_not_delete_all() {
    // ProtonVPN's guide: `natpmpc -a 1 0 udp 60` (public 1, private 0).
    let req = parse_request(&[0x00, 0x01, 0x00, 0x00, 0, 0, 0x00, 0x01, 0, 0, 0, 0x3C]);
    assert_eq!(req, Ok(map(Protocol::Udp, 0, 1, 60)));
    let Ok(Request::Map(m)) = req else {
        panic!("a mapping request: {req:?}");
    };
    assert!(!m.is_delete());
    assert!(!m.is_delete_all());
}

#[test]
fn c19_result_codes_travel_with_their_rfc_values() {
    for (code, value) in ALL_RESULTS.iter().zip(0u16..) {
        assert_eq!(code.to_u16(), value);
        assert_eq!(ResultCode::from_u16(value), Some(*code));
    }
    assert_eq!(ResultCode::from_u16(6), None);
    assert_eq!(
        ResultCode::NetworkFailure.to_string(),
        "3 (network failure)"
    );
}

#[test]
fn c20_reply_with_undefined_result_code_is_rejected() {
    let packet = concat(&[&[0x00, 0x80, 0x00, 0x06], &EPOCH_BYTES, &[1, 2, 3, 4]]);
    assert_eq!(
        parse_response(&packet),
        Err(ResponseError::UnknownResultCode { code: 6 })
    );
}

#[test]
fn gateway_short_error_replies_are_read_and_short_successes_refused() {
    // miniupnpd answers unsupported opcodes and versions with 8 bytes, op 128+req.
    let short = concat(&[&[0x00, 0x81, 0x00, 0x05], &EPOCH_BYTES]);
    assert_eq!(
        parse_response(&short),
        Ok(Response::Short {
            opcode: 0x81,
            result: ResultCode::UnsupportedOpcode,
            epoch: EPOCH,
        })
    );
    // A pre-erratum unsupported-version reply (op 0) is not a reply at all.
    let pre_erratum = concat(&[&[0x00, 0x00, 0x00, 0x01], &EPOCH_BYTES]);
    assert_eq!(
        parse_response(&pre_erratum),
        Err(ResponseError::BadOpcode { opcode: 0 })
    );
    // A success must be full size: 8 bytes of "success" says nothing about the mapping.
    let short_ok = concat(&[&[0x00, 0x82, 0x00, 0x00], &EPOCH_BYTES, &[0x1A, 0xE1]]);
    assert_eq!(
        parse_response(&short_ok),
        Err(ResponseError::TooShort { len: 10 })
    );
}

mod props {
    //! Property tests: round trips of every value the codec can produce, and no panics on
    //! arbitrary datagrams.

    use super::super::*;
    use proptest::prelude::*;

    fn protocol() -> impl Strategy<Value = Protocol> {
        prop_oneof![Just(Protocol::Udp), Just(Protocol::Tcp)]
    }

    fn result_code() -> impl Strategy<Value = ResultCode> {
        (0u16..=5).prop_map(|v| ResultCode::from_u16(v).expect("0..=5 are defined"))
    }

    fn failure_code() -> impl Strategy<Value = ResultCode> {
        (1u16..=5).prop_map(|v| ResultCode::from_u16(v).expect("1..=5 are defined"))
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::ExternalAddress),
            (protocol(), any::<u16>(), any::<u16>(), any::<u32>()).prop_map(
                |(protocol, internal_port, suggested_external_port, lifetime)| {
                    Request::Map(MapRequest {
                        protocol,
                        internal_port,
                        suggested_external_port,
                        lifetime,
                    })
                }
            ),
        ]
    }

    /// Every Response that survives encode/parse unchanged. Left out, as documented: a
    /// failed ExternalAddress with an address (encoded as 0.0.0.0, C-21), Short with result
    /// 0 (not a valid reply) and Short{128, result 1} (that is UnsupportedVersion).
    fn canonical_response() -> impl Strategy<Value = Response> {
        let address =
            (result_code(), any::<u32>(), any::<u32>()).prop_map(|(result, epoch, addr)| {
                Response::ExternalAddress {
                    result,
                    epoch,
                    address: if result == ResultCode::Success {
                        Ipv4Addr::from(addr)
                    } else {
                        Ipv4Addr::UNSPECIFIED
                    },
                }
            });
        let mapping = (
            protocol(),
            result_code(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
        )
            .prop_map(
                |(protocol, result, epoch, internal_port, external_port, lifetime)| {
                    Response::Map(MapResponse {
                        protocol,
                        result,
                        epoch,
                        internal_port,
                        external_port,
                        lifetime,
                    })
                },
            );
        let short = (128u8..=130, failure_code(), any::<u32>())
            .prop_filter("Short{128, 1} is UnsupportedVersion", |(op, r, _)| {
                !(*op == 128 && *r == ResultCode::UnsupportedVersion)
            })
            .prop_map(|(opcode, result, epoch)| Response::Short {
                opcode,
                result,
                epoch,
            });
        prop_oneof![
            address,
            mapping,
            short,
            any::<u32>().prop_map(|epoch| Response::UnsupportedVersion { epoch }),
        ]
    }

    fn request_error() -> impl Strategy<Value = RequestError> {
        prop_oneof![
            (any::<usize>(), proptest::option::of(any::<u8>()))
                .prop_map(|(len, opcode)| RequestError::TooShort { len, opcode }),
            any::<u8>().prop_map(|opcode| RequestError::IsResponse { opcode }),
            any::<u8>().prop_map(|version| RequestError::UnsupportedVersion { version }),
            any::<u8>().prop_map(|opcode| RequestError::UnsupportedOpcode { opcode }),
        ]
    }

    /// Datagrams close to requests (random bytes are almost never version 0): versions
    /// 0..=2, opcodes near every boundary, 0..=16 bytes in all.
    fn near_request() -> impl Strategy<Value = Vec<u8>> {
        (
            0u8..=2,
            prop_oneof![0u8..=4, 126u8..=131, Just(255u8)],
            proptest::collection::vec(any::<u8>(), 14),
            0usize..=16,
        )
            .prop_map(|(version, opcode, body, len)| {
                let mut p = vec![version, opcode];
                p.extend(body);
                p.truncate(len);
                p
            })
    }

    /// Datagrams close to replies: versions 0..=1, opcodes 126..=132, result codes 0..=7,
    /// 0..=20 bytes in all.
    fn near_reply() -> impl Strategy<Value = Vec<u8>> {
        (
            0u8..=1,
            126u8..=132,
            0u16..=7,
            proptest::collection::vec(any::<u8>(), 16),
            0usize..=20,
        )
            .prop_map(|(version, opcode, code, body, len)| {
                let mut p = vec![version, opcode];
                p.extend(code.to_be_bytes());
                p.extend(body);
                p.truncate(len);
                p
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn prop_request_roundtrips(req in request()) {
            let mut out = [0u8; MAP_REQUEST_LEN];
            let n = encode_request(&req, &mut out);
            prop_assert_eq!(parse_request(&out[..n]), Ok(req));
        }

        #[test]
        fn prop_canonical_response_roundtrips(resp in canonical_response()) {
            let mut out = [0u8; MAX_PACKET_LEN];
            let n = encode_response(&resp, &mut out);
            prop_assert_eq!(parse_response(&out[..n]), Ok(resp));
        }

        #[test]
        fn prop_failed_address_reply_roundtrips_as_0_0_0_0(
            result in failure_code(), epoch in any::<u32>(), addr in any::<u32>()
        ) {
            let mut out = [0u8; MAX_PACKET_LEN];
            let n = encode_response(
                &Response::ExternalAddress { result, epoch, address: Ipv4Addr::from(addr) },
                &mut out,
            );
            prop_assert_eq!(
                parse_response(&out[..n]),
                Ok(Response::ExternalAddress { result, epoch, address: Ipv4Addr::UNSPECIFIED })
            );
        }

        #[test]
        fn prop_parse_request_and_error_reply_never_panic(
            packet in proptest::collection::vec(any::<u8>(), 0..1200), epoch in any::<u32>()
        ) {
            match parse_request(&packet) {
                Ok(_) => prop_assert!(packet.len() >= 2),
                Err(err) => {
                    let mut out = [0u8; MAX_PACKET_LEN];
                    let reply = error_reply(&err, &packet, epoch, &mut out);
                    if let Some(n) = reply {
                        prop_assert!((SHORT_REPLY_LEN..=MAX_PACKET_LEN).contains(&n));
                        prop_assert_eq!(out[0], VERSION);
                        prop_assert!(out[1] & 0x80 != 0, "a reply has the top bit set");
                    }
                }
            }
        }

        #[test]
        fn prop_parse_response_never_panics(
            packet in proptest::collection::vec(any::<u8>(), 0..1200)
        ) {
            if let Ok(resp) = parse_response(&packet) {
                // Whatever parses re-encodes to a packet that parses to itself again.
                let mut out = [0u8; MAX_PACKET_LEN];
                let n = encode_response(&resp, &mut out);
                let again = parse_response(&out[..n]);
                prop_assert!(again.is_ok());
                let mut out2 = [0u8; MAX_PACKET_LEN];
                let n2 = encode_response(&again.expect("checked above"), &mut out2);
                prop_assert_eq!(&out[..n], &out2[..n2]);
            }
        }

        #[test]
        fn prop_error_reply_is_silent_exactly_for_too_short_and_responses(
            err in request_error(),
            packet in proptest::collection::vec(any::<u8>(), 0..1200),
            epoch in any::<u32>(),
        ) {
            let mut out = [0u8; MAX_PACKET_LEN];
            let reply = error_reply(&err, &packet, epoch, &mut out);
            let silent = matches!(
                err,
                RequestError::TooShort { .. } | RequestError::IsResponse { .. }
            );
            prop_assert_eq!(reply.is_none(), silent, "{:?}", err);
        }

        #[test]
        fn prop_near_valid_requests_are_classified_per_rfc(packet in near_request()) {
            // An oracle written from docs/conformance.md, independent of parse_request.
            let got = parse_request(&packet);
            match packet[..] {
                [] | [_] => prop_assert!(
                    matches!(got, Err(RequestError::TooShort { .. })), "C-08"
                ),
                [_, op, ..] if op >= 128 => {
                    prop_assert_eq!(got, Err(RequestError::IsResponse { opcode: op }), "C-15")
                }
                [v, ..] if v != 0 => {
                    prop_assert_eq!(got, Err(RequestError::UnsupportedVersion { version: v }))
                }
                [_, 0, ..] => prop_assert_eq!(got, Ok(Request::ExternalAddress), "C-09"),
                [_, op @ (1 | 2), ..] if packet.len() < 12 => {
                    prop_assert_eq!(
                        got,
                        Err(RequestError::TooShort { len: packet.len(), opcode: Some(op) })
                    )
                }
                [_, op @ (1 | 2), _, _, i0, i1, e0, e1, l0, l1, l2, l3, ..] => {
                    prop_assert_eq!(
                        got,
                        Ok(Request::Map(MapRequest {
                            protocol: if op == 1 { Protocol::Udp } else { Protocol::Tcp },
                            internal_port: u16::from_be_bytes([i0, i1]),
                            suggested_external_port: u16::from_be_bytes([e0, e1]),
                            lifetime: u32::from_be_bytes([l0, l1, l2, l3]),
                        })),
                        "C-02, C-10"
                    )
                }
                [_, op, ..] => prop_assert_eq!(
                    got,
                    Err(RequestError::UnsupportedOpcode { opcode: op }),
                    "C-16"
                ),
            }
        }

        #[test]
        fn prop_near_valid_replies_are_read_and_reencode_to_themselves(packet in near_reply()) {
            let got = parse_response(&packet);
            if packet.len() < 8 {
                prop_assert_eq!(got, Err(ResponseError::TooShort { len: packet.len() }));
                return Ok(());
            }
            let (version, opcode) = (packet[0], packet[1]);
            let code = u16::from_be_bytes([packet[2], packet[3]]);
            let full = if opcode == 128 { 12 } else { 16 };
            if version != 0 {
                prop_assert_eq!(got, Err(ResponseError::BadVersion { version }));
            } else if !(128..=130).contains(&opcode) {
                prop_assert_eq!(got, Err(ResponseError::BadOpcode { opcode }));
            } else if code > 5 {
                prop_assert_eq!(got, Err(ResponseError::UnknownResultCode { code }));
            } else if code == 0 && packet.len() < full {
                prop_assert_eq!(got, Err(ResponseError::TooShort { len: packet.len() }));
            } else {
                let resp = got.expect("a well-formed reply is read");
                prop_assert_eq!(resp.result().to_u16(), code);
                let mut out = [0u8; MAX_PACKET_LEN];
                let n = encode_response(&resp, &mut out);
                let len = if packet.len() < full { 8 } else { full };
                prop_assert_eq!(n, len, "C-07: re-encoded at its exact size");
                let hidden_address = opcode == 128 && code != 0 && n == 12;
                if !hidden_address {
                    prop_assert_eq!(&out[..n], &packet[..n]);
                    prop_assert_eq!(parse_response(&out[..n]), Ok(resp));
                } else {
                    // C-21: a failed address reply is written with 0.0.0.0.
                    prop_assert_eq!(&out[..8], &packet[..8]);
                    prop_assert_eq!(&out[8..12], &[0u8; 4][..], "C-21");
                    let Response::ExternalAddress { result, epoch, .. } = resp else {
                        return Err(TestCaseError::fail("op 128 reads as an address reply"));
                    };
                    prop_assert_eq!(
                        parse_response(&out[..n]),
                        Ok(Response::ExternalAddress {
                            result,
                            epoch,
                            address: Ipv4Addr::UNSPECIFIED
                        })
                    );
                }
            }
        }
    }
}
