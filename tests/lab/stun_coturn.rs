//! The STUN codec against a real STUN server: Debian's coturn with RFC 5780 (two listening
//! IPs, two ports, the `rfc5780` line) and without it, in a fresh namespace each
//! (docs/stun.md §7). Each test runs itself again inside its namespace (`stun_lab`), where it
//! owns the sockets on 10.99.0.3. Needs root; without it each test skips loudly.

use crate::common;

use common::stun_lab::{self, client_socket, exchange, txid, Coturn, CoturnMode};
use double_natpmp_codec::stun::{encode_binding_request, ChangeRequest, Class, Retransmission};

/// Three sends (0, 0.5 and 1.5 s), then 8 s: plenty on loopback.
fn rule() -> Retransmission {
    Retransmission::with_requests(3)
}

#[test]
fn coturn_with_rfc5780_reports_our_address_and_its_other_address() {
    let name = "coturn_with_rfc5780_reports_our_address_and_its_other_address";
    let Some(ns) = stun_lab::in_namespace(module_path!(), name) else {
        return;
    };
    let coturn = Coturn::start(&ns, CoturnMode::Rfc5780);
    let socket = client_socket();
    let id = txid();
    let req = encode_binding_request(id, ChangeRequest::NONE, None);
    let (m, source) = exchange(&socket, &socket, coturn.primary(), &req, id, rule())
        .unwrap_or_else(|| panic!("coturn did not answer:\n{}", coturn.log()));
    eprintln!("coturn answered {m:?}");
    assert_eq!(m.class, Class::Success);
    assert_eq!(source, coturn.primary());
    assert_eq!(m.xor_mapped_address(), socket.local_addr().ok());
    assert_eq!(
        m.mapped_address(),
        socket.local_addr().ok(),
        "coturn sends both"
    );
    assert_eq!(m.response_origin(), Some(coturn.primary()));
    assert_eq!(m.other_address(), coturn.other());
    assert_eq!(
        m.other_address().map(|a| a.to_string()).as_deref(),
        Some("10.99.0.2:3479")
    );
    assert!(m.unknown_required.is_empty(), "{m:?}");
}

#[test]
fn coturn_answers_change_request_from_the_other_address_to_the_response_port() {
    let name = "coturn_answers_change_request_from_the_other_address_to_the_response_port";
    let Some(ns) = stun_lab::in_namespace(module_path!(), name) else {
        return;
    };
    let coturn = Coturn::start(&ns, CoturnMode::Rfc5780);
    let (asking, listening) = (client_socket(), client_socket());
    let port = listening.local_addr().expect("addr").port();
    let id = txid();
    let req = encode_binding_request(id, ChangeRequest::IP_AND_PORT, Some(port));
    let (m, source) = exchange(&asking, &listening, coturn.primary(), &req, id, rule())
        .unwrap_or_else(|| panic!("no answer on the RESPONSE-PORT socket:\n{}", coturn.log()));
    eprintln!("coturn answered {m:?} from {source}");
    assert_eq!(m.class, Class::Success);
    assert_eq!(
        Some(source),
        coturn.other(),
        "the other IP and port answered"
    );
    assert_eq!(m.response_origin(), coturn.other());
    assert_eq!(m.xor_mapped_address(), asking.local_addr().ok());
}

#[test]
fn coturn_without_rfc5780_gives_no_other_address_and_answers_change_request_with_420() {
    let name = "coturn_without_rfc5780_gives_no_other_address_and_answers_change_request_with_420";
    let Some(ns) = stun_lab::in_namespace(module_path!(), name) else {
        return;
    };
    let coturn = Coturn::start(&ns, CoturnMode::Plain);
    let socket = client_socket();
    let id = txid();
    let req = encode_binding_request(id, ChangeRequest::NONE, None);
    let (m, _) = exchange(&socket, &socket, coturn.primary(), &req, id, rule())
        .unwrap_or_else(|| panic!("coturn did not answer:\n{}", coturn.log()));
    assert_eq!(m.class, Class::Success);
    assert_eq!(m.xor_mapped_address(), socket.local_addr().ok());
    assert_eq!(
        m.other_address(),
        None,
        "no RFC 5780: inbound cannot be tested"
    );

    let id = txid();
    let req = encode_binding_request(id, ChangeRequest::IP_AND_PORT, None);
    let (m, source) = exchange(&socket, &socket, coturn.primary(), &req, id, rule())
        .unwrap_or_else(|| panic!("coturn did not answer:\n{}", coturn.log()));
    eprintln!("coturn answered {m:?}");
    assert_eq!(source, coturn.primary());
    assert_eq!(m.class, Class::Error);
    let error = m.error_code().expect("ERROR-CODE");
    assert_eq!(error.code, 420);
    assert!(error.reason.contains("RFC 5780"), "{error:?}");
}
