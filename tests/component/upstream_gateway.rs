//! The upstream NAT-PMP client against the gateway emulator (and against raw fake gateways for
//! malformed replies), all on 127.0.0.1. C-numbers refer to docs/conformance.md.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use double_natpmp::{Upstream, UpstreamClient, UpstreamConfig, UpstreamError, UpstreamMap};
use double_natpmp_codec::natpmp::wire::{
    encode_response, parse_request, MapResponse, Protocol, Request, Response, ResultCode,
};
use double_natpmp_emulators::gateway::{Gateway, GatewayConfig, Mode};
use tokio::net::UdpSocket;

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("test gateway must be IPv4"),
    }
}

/// One mapping to ask of the gateway.
fn ask(protocol: Protocol, internal_port: u16, suggested: u16, lifetime: u32) -> UpstreamMap {
    UpstreamMap {
        protocol,
        internal_port,
        suggested_external_port: suggested,
        lifetime,
    }
}

fn client_for(addr: SocketAddr, budget: Duration) -> UpstreamClient {
    let mut config = UpstreamConfig::new(v4(addr));
    config.budget = budget;
    UpstreamClient::new(config)
}

async fn gateway(config: GatewayConfig) -> (Gateway, UpstreamClient) {
    let gw = Gateway::start(config, LOOPBACK)
        .await
        .expect("start gateway");
    let client = client_for(gw.local_addr(), Duration::from_secs(1));
    (gw, client)
}

#[tokio::test]
async fn external_address_reports_the_vpn_exit_address() {
    let (_gw, client) = gateway(GatewayConfig {
        external_address: Ipv4Addr::new(198, 51, 100, 9),
        ..GatewayConfig::default()
    })
    .await;
    let reply = client.external_address().await.expect("address");
    assert_eq!(reply.address, Ipv4Addr::new(198, 51, 100, 9));
    assert!(reply.epoch <= 1, "fresh gateway epoch, got {}", reply.epoch);
}

#[tokio::test]
async fn c29_renewal_keeps_the_external_port() {
    let (gw, client) = gateway(GatewayConfig::default()).await;
    let first = client
        .map(ask(Protocol::Udp, 40001, 0, 60))
        .await
        .expect("map");
    assert_eq!(first.internal_port, 40001);
    assert!((32768..=65535).contains(&first.external_port));
    assert_eq!(first.lifetime, 60);
    // Proton does not honour a suggestion, and a renewal ignores it: same port.
    let again = client
        .map(ask(Protocol::Udp, 40001, 1234, 60))
        .await
        .expect("renew");
    assert_eq!(again.external_port, first.external_port);
    let table = gw.mappings();
    assert_eq!(table.len(), 1);
    assert_eq!(table[0].external_port, first.external_port);
    assert_eq!(table[0].peer, std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[tokio::test]
async fn c30_lifetime_is_capped_at_the_gateway_maximum() {
    let (_gw, client) = gateway(GatewayConfig::default()).await;
    let long = client
        .map(ask(Protocol::Tcp, 40002, 0, 3600))
        .await
        .expect("map");
    assert_eq!(long.lifetime, 60);
    let short = client
        .map(ask(Protocol::Tcp, 40003, 0, 30))
        .await
        .expect("map");
    assert_eq!(short.lifetime, 30);
}

#[tokio::test]
async fn c33_delete_removes_the_mapping_and_answers_zeros() {
    let (gw, client) = gateway(GatewayConfig::default()).await;
    client
        .map(ask(Protocol::Udp, 40004, 0, 60))
        .await
        .expect("map");
    assert_eq!(gw.mappings().len(), 1);
    let del = client
        .map(ask(Protocol::Udp, 40004, 0, 0))
        .await
        .expect("delete");
    assert_eq!(
        (del.internal_port, del.external_port, del.lifetime),
        (40004, 0, 0)
    );
    assert!(gw.mappings().is_empty());
    // C-34: deleting again is still a success.
    client
        .map(ask(Protocol::Udp, 40004, 0, 0))
        .await
        .expect("delete again");
}

#[tokio::test]
async fn c36_delete_all_removes_only_that_protocol() {
    let (gw, client) = gateway(GatewayConfig::default()).await;
    client
        .map(ask(Protocol::Udp, 1000, 0, 60))
        .await
        .expect("udp");
    client
        .map(ask(Protocol::Tcp, 2000, 0, 60))
        .await
        .expect("tcp");
    let del = client
        .map(ask(Protocol::Udp, 0, 0, 0))
        .await
        .expect("delete all");
    assert_eq!(del.internal_port, 0);
    let table = gw.mappings();
    assert_eq!(table.len(), 1);
    assert_eq!(
        (table[0].protocol, table[0].internal_port),
        (Protocol::Tcp, 2000)
    );
}

#[tokio::test]
async fn companion_protocol_gets_the_same_port_without_using_quota() {
    let (gw, client) = gateway(GatewayConfig {
        quota_per_peer: 1,
        ..GatewayConfig::default()
    })
    .await;
    let udp = client
        .map(ask(Protocol::Udp, 40005, 0, 60))
        .await
        .expect("udp");
    let tcp = client
        .map(ask(Protocol::Tcp, 40005, 0, 60))
        .await
        .expect("tcp");
    assert_eq!(udp.external_port, tcp.external_port);
    assert_eq!(gw.mappings().len(), 2);
}

#[tokio::test]
async fn c37_internal_port_zero_gets_a_symmetric_default_port() {
    let (gw, client) = gateway(GatewayConfig::default()).await;
    // Proton's guide: natpmpc -a 1 0 udp 60.
    let grant = client.map(ask(Protocol::Udp, 0, 1, 60)).await.expect("map");
    assert_eq!(grant.internal_port, 0);
    assert_ne!(grant.external_port, 0);
    let table = gw.mappings();
    assert_eq!(table.len(), 1);
    assert!(table[0].symmetric);
    assert_eq!(table[0].internal_port, grant.external_port);
    let renewed = client
        .map(ask(Protocol::Udp, 0, 1, 60))
        .await
        .expect("renew");
    assert_eq!(renewed.external_port, grant.external_port);
    let tcp = client.map(ask(Protocol::Tcp, 0, 1, 60)).await.expect("tcp");
    assert_eq!(tcp.external_port, grant.external_port);
}

#[tokio::test]
async fn quota_exceeded_is_rejected_out_of_resources() {
    let (gw, client) = gateway(GatewayConfig {
        quota_per_peer: 2,
        ..GatewayConfig::default()
    })
    .await;
    client
        .map(ask(Protocol::Udp, 41000, 0, 60))
        .await
        .expect("first");
    client
        .map(ask(Protocol::Udp, 41001, 0, 60))
        .await
        .expect("second");
    let err = client
        .map(ask(Protocol::Udp, 41002, 0, 60))
        .await
        .expect_err("third is over quota");
    assert!(
        matches!(
            err,
            UpstreamError::Rejected {
                result: ResultCode::OutOfResources,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(gw.mappings().len(), 2);
}

#[tokio::test]
async fn honour_suggested_gives_the_suggested_port_when_free() {
    let (_gw, client) = gateway(GatewayConfig {
        honour_suggested: true,
        ..GatewayConfig::default()
    })
    .await;
    let grant = client
        .map(ask(Protocol::Tcp, 40006, 50000, 60))
        .await
        .expect("map");
    assert_eq!(grant.external_port, 50000);
}

#[tokio::test]
async fn silent_gateway_times_out_after_the_budget_with_doubling_retransmissions() {
    let (gw, _) = gateway(GatewayConfig::default()).await;
    gw.set_mode(Mode::Silent).await.expect("silent");
    let budget = Duration::from_secs(1);
    let client = client_for(gw.local_addr(), budget);
    let started = Instant::now();
    let err = client
        .map(ask(Protocol::Udp, 40007, 0, 60))
        .await
        .expect_err("no answer");
    let elapsed = started.elapsed();
    assert!(
        matches!(err, UpstreamError::Timeout { after, .. } if after == budget),
        "{err:?}"
    );
    assert!(elapsed >= budget, "gave up early: {elapsed:?}");
    assert!(
        elapsed < budget + Duration::from_millis(300),
        "overran: {elapsed:?}"
    );
    // RFC 6886 §3.1: sends at 0, 0.25 and 0.75 s within a 1 s budget.
    assert!(gw.wait_for_requests(3, Duration::from_millis(200)).await);
    assert_eq!(gw.requests_received(), 3);
    assert_eq!(gw.map_requests(), 3);
    assert!(gw.mappings().is_empty());
}

#[tokio::test]
async fn unreachable_gateway_is_refused_at_once() {
    let (gw, client) = gateway(GatewayConfig::default()).await;
    gw.set_mode(Mode::Unreachable).await.expect("close socket");
    let started = Instant::now();
    let err = client.external_address().await.expect_err("refused");
    assert!(matches!(err, UpstreamError::Refused { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(200));
    assert!(err.to_string().contains("port forwarding"), "{err}");
    // And it comes back on the same address.
    gw.set_mode(Mode::Normal).await.expect("reopen");
    client.external_address().await.expect("answers again");
}

#[tokio::test]
async fn refusing_gateway_is_rejected_with_its_code() {
    let (gw, client) = gateway(GatewayConfig::default()).await;
    gw.set_mode(Mode::Refuse(ResultCode::NotAuthorized))
        .await
        .expect("refuse");
    let err = client
        .map(ask(Protocol::Tcp, 40008, 0, 60))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            UpstreamError::Rejected {
                result: ResultCode::NotAuthorized,
                ..
            }
        ),
        "{err:?}"
    );
    let err = client.external_address().await.expect_err("refused");
    assert!(
        matches!(
            err,
            UpstreamError::Rejected {
                result: ResultCode::NotAuthorized,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(gw.mappings().is_empty());
}

fn map_reply(internal_port: u16, external_port: u16, result: ResultCode) -> Vec<u8> {
    let mut out = [0u8; 16];
    let n = encode_response(
        &Response::Map(MapResponse {
            protocol: Protocol::Udp,
            result,
            epoch: 42,
            internal_port,
            external_port,
            lifetime: 60,
        }),
        &mut out,
    );
    out[..n].to_vec()
}

/// Receives one request on a raw fake gateway; returns the client's address.
async fn recv_request(fake: &UdpSocket) -> SocketAddr {
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(1), fake.recv_from(&mut buf))
        .await
        .expect("request within 1 s")
        .expect("recv");
    assert!(matches!(parse_request(&buf[..n]), Ok(Request::Map(_))));
    from
}

#[tokio::test]
async fn reply_for_another_internal_port_is_ignored() {
    let fake = UdpSocket::bind(LOOPBACK).await.expect("bind");
    let client = client_for(fake.local_addr().expect("addr"), Duration::from_secs(1));
    let server = async {
        let peer = recv_request(&fake).await;
        fake.send_to(&map_reply(5001, 11111, ResultCode::Success), peer)
            .await
            .expect("send wrong");
        // Also a garbage datagram and a wrong-version one: both ignored.
        fake.send_to(&[0xff; 5], peer).await.expect("send junk");
        let mut bad_version = map_reply(5000, 33333, ResultCode::Success);
        bad_version[0] = 1;
        fake.send_to(&bad_version, peer).await.expect("send v1");
        fake.send_to(&map_reply(5000, 22222, ResultCode::Success), peer)
            .await
            .expect("send right");
    };
    let (grant, ()) = tokio::join!(client.map(ask(Protocol::Udp, 5000, 0, 60)), server);
    let grant = grant.expect("the matching reply");
    assert_eq!((grant.internal_port, grant.external_port), (5000, 22222));
    assert_eq!(grant.epoch, 42);
}

#[tokio::test]
async fn reply_from_another_address_is_ignored() {
    let fake = UdpSocket::bind(LOOPBACK).await.expect("bind");
    let impostor = UdpSocket::bind(LOOPBACK).await.expect("bind impostor");
    let client = client_for(fake.local_addr().expect("addr"), Duration::from_secs(1));
    let server = async {
        let peer = recv_request(&fake).await;
        impostor
            .send_to(&map_reply(5000, 11111, ResultCode::Success), peer)
            .await
            .expect("impostor send");
        fake.send_to(&map_reply(5000, 22222, ResultCode::Success), peer)
            .await
            .expect("send right");
    };
    let (grant, ()) = tokio::join!(client.map(ask(Protocol::Udp, 5000, 0, 60)), server);
    assert_eq!(grant.expect("gateway's reply").external_port, 22222);
}

#[tokio::test]
async fn c20_undefined_result_code_is_reported() {
    let fake = UdpSocket::bind(LOOPBACK).await.expect("bind");
    let client = client_for(fake.local_addr().expect("addr"), Duration::from_secs(1));
    let server = async {
        let peer = recv_request(&fake).await;
        let mut reply = map_reply(5000, 0, ResultCode::Success);
        reply[2..4].copy_from_slice(&17u16.to_be_bytes());
        fake.send_to(&reply, peer).await.expect("send");
    };
    let (res, ()) = tokio::join!(client.map(ask(Protocol::Udp, 5000, 0, 60)), server);
    assert!(
        matches!(res, Err(UpstreamError::UnknownResult { code: 17, .. })),
        "{res:?}"
    );
}

#[tokio::test]
async fn late_reply_to_the_first_send_still_counts() {
    let (gw, client) = gateway(GatewayConfig::default()).await;
    // Replies arrive after the first retransmission went out; the answer to either is taken.
    gw.set_latency(Duration::from_millis(400));
    let started = Instant::now();
    let grant = client
        .map(ask(Protocol::Udp, 40009, 0, 60))
        .await
        .expect("map");
    assert!(started.elapsed() < Duration::from_millis(700));
    assert_ne!(grant.external_port, 0);
}

#[tokio::test]
async fn expired_mapping_disappears_after_its_lifetime() {
    let (gw, client) = gateway(GatewayConfig {
        max_lifetime: 1,
        ..GatewayConfig::default()
    })
    .await;
    let grant = client
        .map(ask(Protocol::Udp, 40010, 0, 60))
        .await
        .expect("map");
    assert_eq!(grant.lifetime, 1);
    assert_eq!(gw.mappings().len(), 1);
    let started = Instant::now();
    assert!(
        gw.wait_for_mappings(|m| m.is_empty(), Duration::from_secs(2))
            .await,
        "mapping still there"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn c45_lose_state_clears_mappings_and_restarts_the_epoch() {
    let (gw, client) = gateway(GatewayConfig::default()).await;
    client
        .map(ask(Protocol::Udp, 40011, 0, 60))
        .await
        .expect("map");
    // The epoch counts whole seconds: let one pass so the reset is visible.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = client.external_address().await.expect("address").epoch;
    assert!(before >= 1);
    gw.lose_state();
    assert!(gw.mappings().is_empty());
    let after = client.external_address().await.expect("address").epoch;
    assert_eq!(after, 0);
}

#[tokio::test]
async fn exhausted_port_range_is_out_of_resources() {
    let (_gw, client) = gateway(GatewayConfig {
        port_range: 50000..=50000,
        ..GatewayConfig::default()
    })
    .await;
    let first = client
        .map(ask(Protocol::Udp, 40012, 0, 60))
        .await
        .expect("map");
    assert_eq!(first.external_port, 50000);
    let err = client
        .map(ask(Protocol::Udp, 40013, 0, 60))
        .await
        .expect_err("no port left");
    assert!(
        matches!(
            err,
            UpstreamError::Rejected {
                result: ResultCode::OutOfResources,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn c05_c16_emulator_answers_bad_version_and_opcode_like_the_codec() {
    let (gw, _) = gateway(GatewayConfig::default()).await;
    let raw = UdpSocket::bind(LOOPBACK).await.expect("bind");
    raw.connect(gw.local_addr()).await.expect("connect");
    let mut buf = [0u8; 64];
    // Version 1: 8 bytes, op 128, result 1 (erratum 3618).
    raw.send(&[1, 0]).await.expect("send");
    let n = tokio::time::timeout(Duration::from_secs(1), raw.recv(&mut buf))
        .await
        .expect("answer")
        .expect("recv");
    assert_eq!(&buf[..4], &[0, 128, 0, 1]);
    assert_eq!(n, 8);
    // Opcode 7: echoed with the top bit set and result 5.
    raw.send(&[0, 7, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .expect("send");
    let n = tokio::time::timeout(Duration::from_secs(1), raw.recv(&mut buf))
        .await
        .expect("answer")
        .expect("recv");
    assert_eq!(n, 12);
    assert_eq!(&buf[..4], &[0, 0x87, 0, 5]);
    assert_eq!(gw.requests_received(), 2);
    assert_eq!(gw.map_requests(), 0);
}
