//! Only real clients are served (docs/conformance.md C-39a): the network and broadcast addresses
//! of the router's subnets, the router's own addresses, the daemon's own and the VPN gateway get
//! no mapping and leave no rule, through NAT-PMP (silence), the forwards API (403 naming why) and
//! STATIC_MAPPINGS (a start that stops, or a warning and no mapping). The router's addresses
//! come from its `/ip/address` at each reconcile pass, so one added on the router is refused
//! after the next pass; refusing costs no router command.
//!
//! The whole-daemon tests run both emulators and the daemon on loopback, with the router's
//! subnets inside 127.0.0.0/8 so that a test socket can send from their edges; the in-process
//! tests use the fakes.
//!
//! Network safety: everything is bound to and sent to loopback only.

use crate::common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use double_natpmp::daemon::DaemonError;
use double_natpmp::MapHandler;
use double_natpmp::Refusal;
use double_natpmp::{MappingConfig, MappingEvent};
use double_natpmp_codec::natpmp::wire::{
    encode_request, parse_response, Protocol, Request, Response, ResultCode, MAP_REQUEST_LEN,
    MAX_PACKET_LEN,
};
use double_natpmp_emulators::gateway::GatewayConfig;
use hyper::{Method, StatusCode};
use tokio::net::UdpSocket;

use common::daemon::{
    gateway_config, http, map, router_config, start, try_start, wait_event, within, Lab,
};
use common::fakes::{self, lan, FakeRouter, FakeUpstream};

const TOKEN: &str = "a-token-of-more-than-sixteen-characters";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("an IPv4 address")
}

/// Starts the lab with `address` (`a.b.c.d/nn`) on the router's `bridge` from the start.
async fn start_with_lan(address: &str, flags: &[(&str, String)]) -> Lab {
    let mut router = router_config();
    router.addresses.push((address.into(), "bridge".into()));
    match try_start(router, gateway_config(), flags).await {
        Ok(lab) => lab,
        Err((_, _, e)) => panic!("daemon did not start: {e}"),
    }
}

/// A NAT-PMP socket on `at`.
async fn socket(at: &str) -> UdpSocket {
    UdpSocket::bind((ip(at), 0)).await.expect("client socket")
}

/// Sends one mapping request (TCP `internal`, an hour) from `sock`, once.
async fn send_map(sock: &UdpSocket, daemon: SocketAddr, internal: u16) {
    let mut buf = [0u8; MAP_REQUEST_LEN];
    let len = encode_request(&Request::Map(map(Protocol::Tcp, internal, 3600)), &mut buf);
    sock.send_to(&buf[..len], daemon).await.expect("send");
}

/// Waits, bounded, until the server has read `n` datagrams it dropped as not from a client (it
/// counts a drop as it reads the datagram).
async fn dropped(counter: &AtomicU64, n: u64) {
    within(
        Duration::from_secs(5),
        "the server reads the requests",
        async {
            while counter.load(Ordering::SeqCst) < n {
                tokio::task::yield_now().await;
            }
        },
    )
    .await;
    assert_eq!(
        counter.load(Ordering::SeqCst),
        n,
        "exactly these were dropped"
    );
}

/// Whether a reply is waiting on `sock`.
fn got_reply(sock: &UdpSocket) -> bool {
    let mut buf = [0u8; MAX_PACKET_LEN];
    sock.try_recv_from(&mut buf).is_ok()
}

/// A real client's mapping request, retransmitted until answered.
async fn ask(sock: &UdpSocket, daemon: SocketAddr, internal: u16) -> ResultCode {
    within(Duration::from_secs(10), "a reply", async {
        let mut buf = [0u8; MAX_PACKET_LEN];
        loop {
            send_map(sock, daemon, internal).await;
            let Ok(got) =
                tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await
            else {
                continue;
            };
            let (n, _) = got.expect("receive");
            if let Ok(Response::Map(m)) = parse_response(&buf[..n]) {
                return m.result;
            }
        }
    })
    .await
}

/// The administrator adds `address` on the router's `interface`; then a reconcile pass runs.
async fn router_takes(lab: &Lab, address: &str, interface: &str) {
    lab.router.add_address(address, interface);
    lab.daemon
        .orchestrator
        .reconcile()
        .await
        .expect("reconcile pass");
}

/// The clients our rules on the router forward to.
fn rule_targets(lab: &Lab) -> Vec<String> {
    lab.our_rules()
        .iter()
        .filter_map(|r| r.fields.get("to-addresses").cloned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// NAT-PMP

/// C-39a: the LAN subnet's network and broadcast addresses and the router's own address on it
/// are inside ALLOWED_CLIENTS, yet their requests get silence, no gateway mapping and no rule;
/// a host of the same subnet is served.
#[tokio::test]
async fn c39a_requests_from_the_lan_subnets_network_and_broadcast_and_the_routers_own_address_get_no_mapping_and_leave_no_rule(
) {
    let mut lab = start_with_lan("127.0.77.1/24", &[]).await;
    let daemon = lab.daemon.listen;
    let mut refused = Vec::new();
    for at in ["127.0.77.0", "127.0.77.255", "127.0.77.1"] {
        let sock = socket(at).await;
        send_map(&sock, daemon, 5001).await;
        refused.push(sock);
    }
    dropped(&lab.daemon.stats.dropped_blocked, 3).await;
    // A host of the subnet, asked after them: its reply means theirs would have come first.
    let host = socket("127.0.77.10").await;
    assert_eq!(ask(&host, daemon, 5001).await, ResultCode::Success);
    for sock in &refused {
        assert!(!got_reply(sock), "{:?} got a reply", sock.local_addr());
    }
    assert_eq!(rule_targets(&lab), vec!["127.0.77.10".to_owned()]);
    assert_eq!(
        lab.gateway.mappings().len(),
        1,
        "one gateway mapping, the host's"
    );
    lab.stop().await;
}

/// C-39a: the daemon's own address may not map (a rule to it would put the status page on the
/// internet); the host's health probe, an address request from it, is still answered.
#[tokio::test]
async fn c39a_a_mapping_request_from_the_daemons_own_address_gets_no_mapping_but_its_address_request_is_answered(
) {
    let mut lab = start(gateway_config(), &[]).await;
    let daemon = lab.daemon.listen;
    lab.daemon
        .orchestrator
        .refused()
        .set_daemon_addresses([ip("127.0.0.62")]);
    let own = socket("127.0.0.62").await;
    send_map(&own, daemon, 5002).await;
    dropped(&lab.daemon.stats.dropped_blocked, 1).await;
    own.send_to(&[0, 0], daemon).await.expect("send");
    let mut buf = [0u8; MAX_PACKET_LEN];
    let (n, _) = within(
        Duration::from_secs(5),
        "the address reply",
        own.recv_from(&mut buf),
    )
    .await
    .expect("receive");
    assert!(
        matches!(
            parse_response(&buf[..n]),
            Ok(Response::ExternalAddress { .. })
        ),
        "the first reply is the address request's, not the mapping's"
    );
    assert!(lab.our_rules().is_empty(), "no rule");
    assert!(lab.gateway.mappings().is_empty(), "no gateway mapping");
    lab.stop().await;
}

/// C-39a: an address added on the router is read by the next reconcile pass; from then on
/// requests from it and from its subnet's broadcast address get no mapping.
#[tokio::test]
async fn c39a_an_address_added_on_the_router_is_refused_after_the_next_reconcile() {
    let mut lab = start(gateway_config(), &[]).await;
    let daemon = lab.daemon.listen;
    let soon_the_routers = socket("127.0.79.1").await;
    assert_eq!(
        ask(&soon_the_routers, daemon, 5003).await,
        ResultCode::Success,
        "not the router's yet"
    );
    router_takes(&lab, "127.0.79.1/24", "bridge").await;
    let broadcast = socket("127.0.79.255").await;
    send_map(&soon_the_routers, daemon, 5004).await;
    send_map(&broadcast, daemon, 5004).await;
    dropped(&lab.daemon.stats.dropped_blocked, 2).await;
    let host = socket("127.0.79.10").await;
    assert_eq!(ask(&host, daemon, 5004).await, ResultCode::Success);
    assert!(!got_reply(&soon_the_routers) && !got_reply(&broadcast));
    let mut targets = rule_targets(&lab);
    targets.sort();
    assert_eq!(
        targets,
        vec!["127.0.79.1".to_owned(), "127.0.79.10".to_owned()],
        "the mapping made before the pass, and the host's; none for port 5004 of the router"
    );
    lab.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The forwards API

/// C-39a: the forwards API answers 403 for a refused client, saying why, and makes nothing.
#[tokio::test]
async fn c39a_the_forwards_api_refuses_a_refused_client_with_403_naming_why() {
    let mut lab = start_with_lan("127.0.80.1/24", &[("api-token", TOKEN.into())]).await;
    lab.daemon
        .orchestrator
        .refused()
        .set_daemon_addresses([ip("127.0.0.63")]);
    let addr = lab.status();
    let bearer = format!("Bearer {TOKEN}");
    let headers = [("authorization", bearer.as_str())];
    for (client, why) in [
        (
            "127.0.80.255",
            "broadcast address of the router's subnet 127.0.80.0/24",
        ),
        (
            "127.0.80.0",
            "network address of the router's subnet 127.0.80.0/24",
        ),
        ("127.0.80.1", "the router's own address (on bridge)"),
        ("127.0.0.63", "the daemon's own address"),
    ] {
        let body = format!(
            r#"{{"client": "{client}", "protocol": "tcp", "internal_port": 32400, "lifetime": 3600}}"#
        );
        let (status, _, text) = http(
            addr,
            Method::POST,
            "/api/v1/forwards",
            &headers,
            Some(&body),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{client}: {text}");
        assert!(text.contains(why), "{client}: {text}");
    }
    assert!(lab.our_rules().is_empty(), "nothing was made");
    let body =
        r#"{"client": "127.0.80.20", "protocol": "tcp", "internal_port": 32400, "lifetime": 3600}"#;
    let (status, _, text) =
        http(addr, Method::POST, "/api/v1/forwards", &headers, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "a host of the subnet: {text}");
    lab.stop().await;
}

// ---------------------------------------------------------------------------------------------
// STATIC_MAPPINGS

/// C-39a: a static mapping for an address the start already knows as the router's stops the
/// start, naming the entry, the reason and the fix; nothing is left on the router.
#[tokio::test]
async fn c39a_a_static_mapping_for_the_routers_own_address_stops_the_start_with_a_clear_error() {
    let mut router = router_config();
    router
        .addresses
        .push(("127.0.81.1/24".into(), "bridge".into()));
    let started = try_start(
        router,
        gateway_config(),
        &[("static-mappings", "tcp:127.0.81.1:32400".into())],
    )
    .await;
    let (router, gateway, error) = match started {
        Ok(_) => panic!("the daemon started with a static mapping for the router's address"),
        Err(failed) => failed,
    };
    assert!(matches!(error, DaemonError::StaticMapping(_)), "{error}");
    let text = error.to_string();
    for part in [
        "STATIC_MAPPINGS",
        "tcp:127.0.81.1:32400",
        "the router's own address (on bridge)",
        "remove it from STATIC_MAPPINGS",
    ] {
        assert!(text.contains(part), "{part:?} not in {text:?}");
    }
    assert!(common::daemon::our_sim_rules(&router).is_empty());
    assert!(gateway.mappings().is_empty());
}

/// C-39a: a static mapping whose client becomes the router's later (seen by a reconcile pass)
/// is removed from both layers, with a warning, and not made again.
#[tokio::test]
async fn c39a_a_static_mapping_whose_client_becomes_the_routers_address_is_removed() {
    // A short upstream lifetime: the keeper looks at its mapping again after 2 s.
    let gateway = GatewayConfig {
        max_lifetime: 4,
        ..gateway_config()
    };
    let mut lab = start(
        gateway,
        &[("static-mappings", "tcp:127.0.82.5:32400".into())],
    )
    .await;
    let mut events = lab.daemon.orchestrator.subscribe();
    if lab.our_rules().is_empty() {
        wait_event(
            &mut events,
            Duration::from_secs(10),
            "the static mapping",
            |e| matches!(e, MappingEvent::Created { .. }).then_some(()),
        )
        .await;
    }
    assert_eq!(rule_targets(&lab), vec!["127.0.82.5".to_owned()]);
    router_takes(&lab, "127.0.82.5/32", "ether1").await;
    wait_event(&mut events, Duration::from_secs(10), "the removal", |e| {
        matches!(e, MappingEvent::Removed { key, .. } if key.client == ip("127.0.82.5"))
            .then_some(())
    })
    .await;
    assert!(lab.our_rules().is_empty(), "its rule is gone");
    assert!(
        lab.gateway.mappings().is_empty(),
        "its gateway mapping is gone"
    );
    assert!(lab.daemon.orchestrator.leases().is_empty(), "no lease");
    lab.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The mapping core, in process

/// C-39a: the core answers a refused source 2 without a single router command or gateway
/// exchange (the list is in memory); a host is served as before.
#[tokio::test]
async fn c39a_a_refused_source_costs_no_router_command_and_no_gateway_exchange() {
    let (router, upstream, orch) = fakes::fresh().await;
    let (commands, exchanges) = (router.commands(), upstream.exchanges());
    for (client, why) in [
        (lan(0), "the network address"),
        (lan(255), "the broadcast address"),
        (lan(1), "the router's LAN address"),
        (ip("10.2.0.2"), "the router's tunnel address"),
        (ip("10.2.0.1"), "the VPN gateway"),
    ] {
        let reply = orch
            .handle_map(client, fakes::map(Protocol::Tcp, 6000, 0, 3600))
            .await;
        assert_eq!(reply.result, ResultCode::NotAuthorized, "{why}");
    }
    assert_eq!(router.commands(), commands, "no router command");
    assert_eq!(upstream.exchanges(), exchanges, "no gateway exchange");
    assert!(orch.leases().is_empty());
    fakes::ask_ok(&orch, Protocol::Tcp, 6000, 3600).await;
}

/// C-39a: the tunnel-address part of the list follows the router: an address the router gains
/// on the VPN interface is refused after the next reconcile pass, not only at start.
#[tokio::test]
async fn c39a_a_new_tunnel_address_is_refused_after_the_next_reconcile() {
    let (router, _upstream, orch) = fakes::fresh().await;
    let request = fakes::map(Protocol::Udp, 6001, 0, 60);
    assert_eq!(
        orch.handle_map(ip("10.2.0.9"), request).await.result,
        ResultCode::Success,
        "not the router's yet"
    );
    router
        .state()
        .added_addresses
        .push(("10.2.0.9/32".into(), fakes::IFACE.into()));
    orch.reconcile().await.expect("reconcile pass");
    assert_eq!(
        orch.refused().why(ip("10.2.0.9")),
        Some(Refusal::RouterAddress {
            interface: fakes::IFACE.into()
        })
    );
    assert!(orch.tunnel_addresses().contains(&ip("10.2.0.9")));
    let again = fakes::map(Protocol::Udp, 6002, 0, 60);
    assert_eq!(
        orch.handle_map(ip("10.2.0.9"), again).await.result,
        ResultCode::NotAuthorized
    );
}

/// The VPN gateway is refused, unless it is on loopback: then it is an emulator on this host
/// (the demo, tests), whose clients share its address.
#[tokio::test]
async fn the_vpn_gateway_is_refused_unless_it_is_an_emulator_on_loopback() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let remote = fakes::start(&router, &upstream).await;
    assert_eq!(
        remote.refused().why(ip("10.2.0.1")),
        Some(Refusal::VpnGateway)
    );
    let local = fakes::start_with(
        &router,
        &upstream,
        MappingConfig {
            vpn_gateway: Some(Ipv4Addr::LOCALHOST),
            ..fakes::config()
        },
    )
    .await;
    assert_eq!(local.refused().why(Ipv4Addr::LOCALHOST), None);
}
