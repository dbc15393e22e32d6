//! The NAT-PMP front end over real UDP on loopback, with a scripted upstream: the server-level
//! rules of NATPMP_CONFORMANCE.md (C-numbers in the test names).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use double_natpmp::cidr::parse_cidr_list;
use double_natpmp::natpmp::epoch::Epoch;
use double_natpmp::natpmp::handler::{MapHandler, MapReply, NoMappings};
use double_natpmp::natpmp::server::{Server, ServerConfig};
use double_natpmp::natpmp::upstream::{AddressReply, MapGrant, Upstream, UpstreamError};
use double_natpmp::natpmp::wire::{MapRequest, Protocol, ResultCode};
use double_natpmp::shutdown::ShutdownTrigger;
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(5);

/// An upstream whose external-address answer the test sets, counting the questions.
#[derive(Default)]
struct ScriptedUpstream {
    address: Mutex<Option<Ipv4Addr>>,
    asked: AtomicUsize,
}

impl Upstream for ScriptedUpstream {
    async fn external_address(&self) -> Result<AddressReply, UpstreamError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let address = *self.address.lock().unwrap();
        address
            .map(|address| AddressReply { epoch: 1, address })
            .ok_or(UpstreamError::Timeout {
                gateway: "127.0.0.1:1".parse().unwrap(),
                after: Duration::from_millis(1),
            })
    }

    async fn map(&self, _: Protocol, _: u16, _: u16, _: u32) -> Result<MapGrant, UpstreamError> {
        unreachable!("the server never maps by itself")
    }
}

/// A handler that grants 60 s on external port 40000 + internal port % 1000.
struct Granting;

impl MapHandler for Granting {
    async fn handle_map(&self, _client: Ipv4Addr, request: MapRequest) -> MapReply {
        MapReply {
            result: ResultCode::Success,
            external_port: 40000 + request.internal_port % 1000,
            lifetime: request.lifetime.min(60),
        }
    }
}

struct Running {
    addr: SocketAddr,
    stop: ShutdownTrigger,
    stats: Arc<double_natpmp::natpmp::server::ServerStats>,
    task: tokio::task::JoinHandle<()>,
}

async fn start<H: MapHandler>(
    upstream: Arc<ScriptedUpstream>,
    handler: H,
    allowed: &str,
    epoch: Arc<Epoch>,
) -> Running {
    start_with(upstream, handler, allowed, epoch, |_| {}).await
}

/// [`start`] with the usual upstream (198.51.101.7), loopback clients and a fresh epoch.
async fn start_lan<H: MapHandler>(handler: H) -> Running {
    start(
        upstream_at(Some("198.51.101.7")),
        handler,
        "127.0.0.0/8",
        Arc::new(Epoch::new()),
    )
    .await
}

/// [`start`], with a look at the bound server before it runs.
async fn start_with<H: MapHandler>(
    upstream: Arc<ScriptedUpstream>,
    handler: H,
    allowed: &str,
    epoch: Arc<Epoch>,
    before_run: impl FnOnce(&Server<ScriptedUpstream, H>),
) -> Running {
    let server = Server::bind(
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allowed_clients: parse_cidr_list(allowed).unwrap(),
            max_inflight: 16,
            address_refresh: Duration::from_secs(3600),
        },
        epoch,
        upstream,
        Arc::new(handler),
    )
    .await
    .unwrap();
    before_run(&server);
    let addr = server.local_addr();
    let stats = server.stats();
    let (stop, rx) = ShutdownTrigger::new();
    let task = tokio::spawn(async move {
        server.run(rx).await.unwrap();
    });
    Running {
        addr,
        stop,
        stats,
        task,
    }
}

async fn client(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(server).await.unwrap();
    s
}

async fn exchange(sock: &UdpSocket, packet: &[u8]) -> Vec<u8> {
    sock.send(packet).await.unwrap();
    recv(sock).await
}

async fn recv(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .expect("no reply from the server")
        .unwrap();
    buf[..n].to_vec()
}

fn upstream_at(addr: Option<&str>) -> Arc<ScriptedUpstream> {
    let u = ScriptedUpstream::default();
    *u.address.lock().unwrap() = addr.map(|a| a.parse().unwrap());
    Arc::new(u)
}

#[tokio::test]
async fn c01_c03_c23_address_reply_is_12_bytes_from_the_same_socket_with_the_upstream_address() {
    let up = upstream_at(Some("198.51.101.7"));
    let srv = start(
        up.clone(),
        NoMappings,
        "127.0.0.0/8",
        Arc::new(Epoch::new()),
    )
    .await;
    let sock = client(srv.addr).await;
    // A connected socket only receives datagrams whose source is the server's address (C-01).
    let reply = exchange(&sock, &[0, 0]).await;
    assert_eq!(reply.len(), 12);
    assert_eq!(&reply[..4], &[0, 128, 0, 0]);
    assert_eq!(&reply[8..], &[198, 51, 101, 7]);
    // Cached: a second request does not ask the upstream again.
    let again = exchange(&sock, &[0, 0]).await;
    assert_eq!(&again[8..], &[198, 51, 101, 7]);
    assert_eq!(
        up.asked.load(Ordering::SeqCst),
        1,
        "address asked once, then cached"
    );
}

#[tokio::test]
async fn c21_upstream_unreachable_gives_result_3_and_zero_address_then_recovers() {
    let up = upstream_at(None);
    let srv = start(
        up.clone(),
        NoMappings,
        "127.0.0.0/8",
        Arc::new(Epoch::new()),
    )
    .await;
    let sock = client(srv.addr).await;
    let reply = exchange(&sock, &[0, 0]).await;
    assert_eq!(reply.len(), 12);
    assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 3);
    assert_eq!(&reply[8..], &[0, 0, 0, 0]);
    // After an error the next request asks again.
    *up.address.lock().unwrap() = Some("198.51.101.9".parse().unwrap());
    let reply = exchange(&sock, &[0, 0]).await;
    assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 0);
    assert_eq!(&reply[8..], &[198, 51, 101, 9]);
}

#[tokio::test]
async fn c12_c14_pcp_probe_gets_8_byte_erratum_reply_with_current_epoch() {
    let epoch = Arc::new(Epoch::starting_at(
        Instant::now() - Duration::from_secs(5000),
    ));
    let srv = start(
        upstream_at(Some("198.51.101.7")),
        NoMappings,
        "127.0.0.0/8",
        epoch,
    )
    .await;
    let sock = client(srv.addr).await;
    let mut pcp = vec![0u8; 60];
    pcp[0] = 2;
    pcp[1] = 1;
    let reply = exchange(&sock, &pcp).await;
    assert_eq!(reply.len(), 8);
    assert_eq!(&reply[..4], &[0, 128, 0, 1]);
    let sssoe = u32::from_be_bytes([reply[4], reply[5], reply[6], reply[7]]);
    assert!(
        (5000..5010).contains(&sssoe),
        "SSSoE {sssoe} is not the current epoch"
    );
}

#[tokio::test]
async fn c04_c18_c24_map_reply_is_16_bytes_echoing_protocol_and_internal_port() {
    let srv = start_lan(Granting).await;
    let sock = client(srv.addr).await;
    let reply = exchange(
        &sock,
        &[
            0x00, 0x02, 0x00, 0x00, 0x1A, 0xE1, 0x1A, 0xE1, 0x00, 0x00, 0x0E, 0x10,
        ],
    )
    .await;
    assert_eq!(reply.len(), 16);
    assert_eq!(&reply[..4], &[0, 130, 0, 0]);
    assert_eq!(&reply[8..10], &6881u16.to_be_bytes());
    assert_eq!(&reply[10..12], &40881u16.to_be_bytes());
    assert_eq!(&reply[12..16], &60u32.to_be_bytes());
}

#[tokio::test]
async fn c17_map_without_backend_gets_result_3_not_silence() {
    let srv = start_lan(NoMappings).await;
    let sock = client(srv.addr).await;
    let reply = exchange(&sock, &[0, 1, 0, 0, 0x13, 0x88, 0, 0, 0, 0, 0, 60]).await;
    assert_eq!(reply.len(), 16);
    assert_eq!(&reply[..4], &[0, 129, 0, 3]);
    assert_eq!(&reply[8..10], &5000u16.to_be_bytes());
    assert_eq!(
        &reply[10..],
        &[0, 0, 0, 0, 0, 0],
        "no port, no lifetime on failure"
    );
}

#[tokio::test]
async fn c08_c15_c16_silence_for_short_and_response_packets_echo_for_unknown_opcode() {
    let srv = start_lan(Granting).await;
    let sock = client(srv.addr).await;
    // Each packet that must go unanswered is followed by one that must be answered; the first
    // datagram back must be the answer to the second, so nothing came for the first.
    let silent: &[&[u8]] = &[
        &[0],
        &[0, 1],
        &[0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0, 129, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0, 255],
    ];
    for (i, packet) in silent.iter().enumerate() {
        sock.send(packet).await.unwrap();
        let mut op7 = vec![0u8, 7, 0, 0, 1, 2, 3, 4, 5, 6, 7, i as u8];
        let reply = exchange(&sock, &op7).await;
        op7[1] = 0x87;
        op7[2] = 0;
        op7[3] = 5;
        assert_eq!(
            reply, op7,
            "packet {packet:?} was answered, or op 7 was not echoed"
        );
    }
    assert_eq!(
        srv.stats.dropped_invalid.load(Ordering::SeqCst),
        silent.len() as u64
    );
    // C-09: trailing bytes ignored.
    let reply = exchange(&sock, &[0, 0, 9, 9]).await;
    assert_eq!(reply.len(), 12);
}

#[tokio::test]
async fn c39_requests_from_outside_allowed_clients_are_dropped_silently() {
    // 127.0.0.1 is not in the allowed networks: nothing must come back.
    let srv = start(
        upstream_at(Some("198.51.101.7")),
        Granting,
        "192.168.88.0/24",
        Arc::new(Epoch::new()),
    )
    .await;
    let sock = client(srv.addr).await;
    // The host itself may ask for the address (health checks)...
    assert_eq!(exchange(&sock, &[0, 0]).await.len(), 12);
    // ...but a mapping request from outside ALLOWED_CLIENTS gets silence.
    sock.send(&[0, 2, 0, 0, 0x1A, 0xE1, 0, 0, 0, 0, 0x0E, 0x10])
        .await
        .unwrap();
    // The drop is counted when the datagram is read; wait for that event, then check that no
    // reply is queued on the client socket.
    let deadline = Instant::now() + WAIT;
    while srv.stats.dropped_not_allowed.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "server never saw the request");
        tokio::task::yield_now().await;
    }
    let mut buf = [0u8; 64];
    assert!(
        sock.try_recv(&mut buf).is_err(),
        "a reply was sent to a disallowed client"
    );
    assert_eq!(
        srv.stats.replied.load(Ordering::SeqCst),
        1,
        "only the address request was answered"
    );
}

#[tokio::test]
async fn shutdown_finishes_and_returns() {
    let srv = start_lan(Granting).await;
    let sock = client(srv.addr).await;
    assert_eq!(exchange(&sock, &[0, 0]).await.len(), 12);
    srv.stop.trigger();
    tokio::time::timeout(WAIT, srv.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn c48_address_replies_feed_the_upstream_epoch_to_the_observer() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let srv = start_with(
        upstream_at(Some("198.51.101.7")),
        NoMappings,
        "127.0.0.0/8",
        Arc::new(Epoch::new()),
        move |server| {
            server
                .addresses()
                .set_epoch_observer(Arc::new(move |e| record.lock().unwrap().push(e)));
        },
    )
    .await;
    let addr = srv.addr;
    let sock = client(addr).await;
    assert_eq!(exchange(&sock, &[0, 0]).await.len(), 12);
    assert_eq!(
        seen.lock().unwrap().first(),
        Some(&1),
        "the upstream's SSSoE was observed"
    );
}

#[tokio::test]
async fn a_flood_of_malformed_datagrams_neither_crashes_nor_blocks_the_server() {
    let srv = start_lan(Granting).await;
    let sock = client(srv.addr).await;
    // 3,000 datagrams of every length 0..1200 with arbitrary bytes (fixed seed: reproducible),
    // many of them version 0 with every opcode, sent without waiting for replies.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..3000u32 {
        let len = (next() % 1200) as usize;
        let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 && len >= 2 {
            packet[0] = 0;
        }
        let _ = sock.send(&packet).await;
    }
    // Drain whatever replies came, then the server must still answer a valid request.
    let mut buf = [0u8; 2048];
    while sock.try_recv(&mut buf).is_ok() {}
    let deadline = Instant::now() + WAIT;
    loop {
        sock.send(&[0, 0]).await.unwrap();
        let n = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await;
        if let Ok(Ok(n)) = n {
            if n == 12 && buf[..4] == [0, 128, 0, 0] {
                break;
            }
            // A late reply to one of the flood's datagrams: read on.
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "the server stopped answering after the flood"
        );
    }
    assert!(srv.stats.received.load(Ordering::SeqCst) >= 1);
    assert!(!srv.task.is_finished(), "the server task ended");
}
