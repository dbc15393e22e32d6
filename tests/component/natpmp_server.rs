//! The NAT-PMP front end over real UDP on loopback, with a scripted upstream: the server-level
//! rules of docs/conformance.md (C-numbers in the test names).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use double_natpmp::parse_cidr_list;
use double_natpmp::RefusedSources;
use double_natpmp::ShutdownTrigger;
use double_natpmp::{AddressReply, MapGrant, Upstream, UpstreamError, UpstreamMap};
use double_natpmp::{MapHandler, MapReply, NoMappings};
use double_natpmp::{Server, ServerConfig};
use double_natpmp_codec::natpmp::epoch::Epoch;
use double_natpmp_codec::natpmp::wire::{MapRequest, Protocol, ResultCode};
use tokio::net::UdpSocket;

use crate::common;

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

    async fn map(&self, _: UpstreamMap) -> Result<MapGrant, UpstreamError> {
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
    stats: Arc<double_natpmp::ServerStats>,
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

/// The settings of a server on loopback that lets `allowed` ask.
fn config(allowed: &str) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        allowed_clients: parse_cidr_list(allowed).unwrap(),
        blocked_sources: Arc::default(),
        max_inflight: 16,
        client_rate_limit: 10_000,
        address_refresh: Duration::from_secs(3600),
    }
}

/// [`start`], with a look at the bound server before it runs.
async fn start_with<H: MapHandler>(
    upstream: Arc<ScriptedUpstream>,
    handler: H,
    allowed: &str,
    epoch: Arc<Epoch>,
    before_run: impl FnOnce(&Server<ScriptedUpstream, H>),
) -> Running {
    start_config(config(allowed), upstream, handler, epoch, before_run).await
}

/// [`start_with`] with settings of the test's own.
async fn start_config<H: MapHandler>(
    config: ServerConfig,
    upstream: Arc<ScriptedUpstream>,
    handler: H,
    epoch: Arc<Epoch>,
    before_run: impl FnOnce(&Server<ScriptedUpstream, H>),
) -> Running {
    let server = Server::bind(config, epoch, upstream, Arc::new(handler))
        .await
        .unwrap();
    before_run(&server);
    run(server)
}

/// Runs a bound server.
fn run<U: Upstream, H: MapHandler>(server: Server<U, H>) -> Running {
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
    client_at("127.0.0.1", server).await
}

/// A client socket on the loopback address `ip` (any of 127.0.0.0/8 works on Linux).
async fn client_at(ip: &str, server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).await.unwrap();
    s.connect(server).await.unwrap();
    s
}

/// A handler that grants like [`Granting`] and counts the requests it was given.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicUsize>);

impl MapHandler for Counting {
    async fn handle_map(&self, client: Ipv4Addr, request: MapRequest) -> MapReply {
        self.0.fetch_add(1, Ordering::SeqCst);
        Granting.handle_map(client, request).await
    }
}

/// Waits until `counter` reaches `n`.
async fn reaches(counter: &std::sync::atomic::AtomicU64, n: u64, what: &str) {
    let deadline = Instant::now() + WAIT;
    while counter.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "{what}: stuck at {}",
            counter.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
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

/// The VPN gateway (or the router's own tunnel address) is inside the default ALLOWED_CLIENTS
/// (10.0.0.0/8); its requests must still get silence and make no mapping (a port mapped for the
/// gateway would be forwarded back into the tunnel).
#[tokio::test]
async fn requests_from_a_blocked_source_inside_allowed_clients_get_no_reply_and_no_mapping() {
    let handler = Counting::default();
    let srv = start_config(
        ServerConfig {
            blocked_sources: Arc::new(RefusedSources::new(Some(Ipv4Addr::new(127, 0, 0, 2)))),
            ..config("127.0.0.0/8")
        },
        upstream_at(Some("198.51.101.7")),
        handler.clone(),
        Arc::new(Epoch::new()),
        |_| {},
    )
    .await;
    let blocked = client_at("127.0.0.2", srv.addr).await;
    let map = [0, 2, 0, 0, 0x1A, 0xE1, 0, 0, 0, 0, 0x0E, 0x10];
    blocked.send(&map).await.unwrap();
    blocked.send(&[0, 0]).await.unwrap();
    reaches(&srv.stats.dropped_blocked, 2, "blocked drops").await;
    // A LAN client next to it is served as usual.
    let lan = client(srv.addr).await;
    assert_eq!(exchange(&lan, &map).await.len(), 16);

    let mut buf = [0u8; 64];
    assert!(
        blocked.try_recv(&mut buf).is_err(),
        "a blocked source got a reply"
    );
    assert_eq!(
        handler.0.load(Ordering::SeqCst),
        1,
        "only the LAN client's request reached the mapping core"
    );
    assert_eq!(srv.stats.replied.load(Ordering::SeqCst), 1);
    assert_eq!(srv.stats.dropped_blocked.load(Ordering::SeqCst), 2);
    assert_eq!(srv.stats.dropped_not_allowed.load(Ordering::SeqCst), 0);
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

/// Whether RFC 6886 asks for an answer to `packet`, written from the RFC (and erratum 3618) as
/// docs/conformance.md reads it, not from our codec.
fn deserves_reply(packet: &[u8]) -> bool {
    match packet {
        // Too short to be a request (C-08).
        [] | [_] => false,
        // A response: never answered, whatever the version (C-15).
        [_, op, ..] if *op >= 128 => false,
        // Another version: result 1 (C-05, C-12).
        [version, ..] if *version != 0 => true,
        // The external address; trailing bytes ignored (C-09).
        [_, 0, ..] => true,
        // A mapping request needs its 12 bytes (C-08).
        [_, 1 | 2, ..] => packet.len() >= 12,
        // Any other opcode: echoed with result 5 (C-16).
        _ => true,
    }
}

#[tokio::test]
async fn a_flood_of_malformed_datagrams_gets_exactly_the_replies_the_rfc_asks_for() {
    let srv = start_config(
        // Room for every datagram of a batch at once: this test is about parsing, not load.
        ServerConfig {
            max_inflight: 4096,
            ..config("127.0.0.0/8")
        },
        upstream_at(Some("198.51.101.7")),
        Granting,
        Arc::new(Epoch::new()),
        |_| {},
    )
    .await;
    let sock = Arc::new(client(srv.addr).await);
    let replies = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let reader = {
        let (sock, replies) = (sock.clone(), replies.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok(n) = sock.recv(&mut buf).await {
                replies.lock().unwrap().push(buf[..n].to_vec());
            }
        })
    };
    // 3,000 datagrams of every length 0..1200 with arbitrary bytes (fixed seed: reproducible),
    // half of them version 0 with every opcode. Sent in batches that the server reads before
    // the next (loopback drops what overflows a socket buffer, and exact counts need all).
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut expected = 0u64;
    for i in 0..3000u32 {
        let len = (next() % 1200) as usize;
        let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 && len >= 2 {
            packet[0] = 0;
        }
        expected += u64::from(deserves_reply(&packet));
        sock.send(&packet).await.unwrap();
        if i % 20 == 19 {
            reaches(&srv.stats.received, u64::from(i) + 1, "datagrams read").await;
        }
    }
    assert!(
        expected > 100,
        "the flood should hold answerable datagrams too"
    );
    reaches(&srv.stats.received, 3000, "datagrams read").await;
    reaches(&srv.stats.replied, expected, "replies sent").await;
    let deadline = Instant::now() + WAIT;
    while (replies.lock().unwrap().len() as u64) < expected {
        assert!(
            Instant::now() < deadline,
            "replies lost on the way to the client"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Nothing more comes: no datagram was answered twice, no unanswerable one answered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(replies.lock().unwrap().len() as u64, expected);
    assert_eq!(srv.stats.replied.load(Ordering::SeqCst), expected);
    assert_eq!(srv.stats.dropped_busy.load(Ordering::SeqCst), 0);

    // And it still serves: a valid request gets its 12-byte success reply.
    sock.send(&[0, 0]).await.unwrap();
    reaches(
        &srv.stats.replied,
        expected + 1,
        "the reply after the flood",
    )
    .await;
    let deadline = Instant::now() + WAIT;
    let last = loop {
        if let Some(last) = replies.lock().unwrap().get(expected as usize) {
            break last.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the server stopped answering after the flood"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(last.len(), 12);
    assert_eq!(&last[..4], &[0, 128, 0, 0]);
    assert!(!srv.task.is_finished(), "the server task ended");
    reader.abort();
}

// ---------------------------------------------------------------------------------------------
// No request starves another (slots, the shared address exchange, the per-client rate)

/// The upstream client's default budget: what one exchange with a dark gateway costs.
const BUDGET: Duration = Duration::from_secs(2);

/// A VPN gateway that is dark: every address request fails after the budget, counted.
#[derive(Default)]
struct DarkGateway {
    asked: AtomicUsize,
}

impl Upstream for DarkGateway {
    async fn external_address(&self) -> Result<AddressReply, UpstreamError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(BUDGET).await;
        Err(UpstreamError::Timeout {
            gateway: "127.0.0.1:1".parse().unwrap(),
            after: BUDGET,
        })
    }

    async fn map(&self, _: UpstreamMap) -> Result<MapGrant, UpstreamError> {
        unreachable!("the server never maps by itself")
    }
}

/// The mapping core against in-process fakes, with a live 60 s UDP lease of 127.0.0.2:6881.
async fn core_with_a_live_lease() -> (common::fakes::FakeUpstream, common::fakes::Orch, u16) {
    let (_router, upstream, orch) = common::fakes::fresh().await;
    let lease = orch
        .handle_map(
            Ipv4Addr::new(127, 0, 0, 2),
            common::fakes::map(Protocol::Udp, 6881, 0, 60),
        )
        .await;
    assert_eq!(lease.result, ResultCode::Success);
    (upstream, orch, lease.external_port)
}

/// Sends `packet` from `n` sockets of 127.0.0.1 (each its own source port, so none is a
/// retransmission of another) and waits until the server has read them all.
async fn flood(srv: &Running, packet: &[u8], n: usize) -> Vec<UdpSocket> {
    let before = srv.stats.received.load(Ordering::SeqCst);
    let mut socks = Vec::new();
    for _ in 0..n {
        let sock = client(srv.addr).await;
        sock.send(packet).await.unwrap();
        socks.push(sock);
    }
    reaches(&srv.stats.received, before + n as u64, "flood read").await;
    socks
}

/// 127.0.0.2 renews its live lease; the reply must come within a second (a bound on the wait,
/// not a pause).
async fn renewal_is_answered_within_a_second(srv: &Running, external_port: u16) {
    let renewer = client_at("127.0.0.2", srv.addr).await;
    let renew = [0, 1, 0, 0, 0x1A, 0xE1, 0, 0, 0, 0, 0, 60];
    renewer.send(&renew).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(1), renewer.recv(&mut buf))
        .await
        .expect("the renewal of a live lease got no reply within 1 s")
        .unwrap();
    assert_eq!(n, 16);
    assert_eq!(&buf[..4], &[0, 129, 0, 0], "result 0 (C-17)");
    assert_eq!(&buf[8..10], &6881u16.to_be_bytes());
    assert_eq!(
        &buf[10..12],
        &external_port.to_be_bytes(),
        "the lease's port"
    );
}

/// C-17, C-21: hundreds of address requests from one host, from as many source ports, while
/// the VPN gateway is dark. They wait for one shared exchange in address slots of their own,
/// not in request slots, so another client's renewal of a live lease is answered at once; those
/// that found an address slot all get result 3 with 0.0.0.0 after that one exchange, and the
/// rest are dropped (past the client's rate, C-17a, or past the address slots).
#[tokio::test]
async fn c17_c21_a_flood_of_address_requests_while_the_gateway_is_dark_starves_no_renewal() {
    let (_upstream, orch, external_port) = core_with_a_live_lease().await;
    let gateway = Arc::new(DarkGateway::default());
    let server = Server::bind(
        ServerConfig {
            client_rate_limit: 50,
            ..config("127.0.0.0/8")
        },
        Arc::new(Epoch::new()),
        gateway.clone(),
        Arc::new(orch),
    )
    .await
    .unwrap();
    let srv = run(server);
    let socks = flood(&srv, &[0, 0], 300).await;

    renewal_is_answered_within_a_second(&srv, external_port).await;

    let dropped = srv.stats.dropped_rate_limited.load(Ordering::SeqCst);
    assert!(
        dropped >= 150,
        "the client's rate lets in about 100: {dropped} dropped"
    );
    // Those let in wait in the address slots (MAX_INFLIGHT of them); the rest find none.
    let let_in = 300 - dropped - srv.stats.dropped_busy.load(Ordering::SeqCst);
    assert_eq!(
        let_in,
        config("127.0.0.0/8").max_inflight as u64,
        "every address slot waits"
    );
    reaches(&srv.stats.replied, 1 + let_in, "address replies").await;
    let mut answered = 0;
    for sock in &socks {
        let mut buf = [0u8; 64];
        if let Ok(n) = sock.try_recv(&mut buf) {
            assert_eq!(n, 12);
            assert_eq!(&buf[..4], &[0, 128, 0, 3], "result 3");
            assert_eq!(&buf[8..12], &[0, 0, 0, 0], "no address (C-21)");
            answered += 1;
        }
    }
    assert_eq!(answered, let_in, "every request let in is answered");
    // The background refresh's exchange at start, and at most one a request began before it.
    assert!(
        gateway.asked.load(Ordering::SeqCst) <= 2,
        "the waiters shared one exchange: {} were made",
        gateway.asked.load(Ordering::SeqCst)
    );
}

/// C-17: creates waiting on a slow gateway hold every request slot (a 17th is dropped); a
/// renewal of a live lease is still answered at once, from its lease, and a delete still finds
/// a slot (one of those kept for deletes) and reaches the mapping core.
#[tokio::test]
async fn c17_renewals_and_deletes_are_served_while_slow_creates_hold_every_request_slot() {
    let (upstream, orch, external_port) = core_with_a_live_lease().await;
    upstream.state().delay = Duration::from_secs(30);
    let server = Server::bind(
        config("127.0.0.0/8"),
        Arc::new(Epoch::new()),
        upstream_at(Some("198.51.101.7")),
        Arc::new(orch),
    )
    .await
    .unwrap();
    let srv = run(server);
    let mut creates = Vec::new();
    for port in 7000..7017u16 {
        let sock = client(srv.addr).await;
        let [hi, lo] = port.to_be_bytes();
        sock.send(&[0, 1, 0, 0, hi, lo, 0, 0, 0, 0, 0, 60])
            .await
            .unwrap();
        creates.push(sock);
    }
    reaches(&srv.stats.dropped_busy, 1, "the create that found no slot").await;

    renewal_is_answered_within_a_second(&srv, external_port).await;

    let exchanges = upstream.exchanges();
    let deleter = client_at("127.0.0.2", srv.addr).await;
    deleter
        .send(&[0, 1, 0, 0, 0x1A, 0xE1, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while upstream.exchanges() == exchanges {
        assert!(
            Instant::now() < deadline,
            "the delete never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        srv.stats.dropped_busy.load(Ordering::SeqCst),
        1,
        "only the create beyond the slots was dropped"
    );
}

/// C-17a: address requests past the client's rate (a burst of twice CLIENT_RATE_LIMIT, then
/// the rate) are dropped, not answered; another client is answered as usual.
#[tokio::test]
async fn c17a_address_requests_over_the_clients_rate_are_dropped_and_others_are_still_answered() {
    let srv = start_config(
        ServerConfig {
            client_rate_limit: 5,
            ..config("127.0.0.0/8")
        },
        upstream_at(Some("198.51.101.7")),
        NoMappings,
        Arc::new(Epoch::new()),
        |_| {},
    )
    .await;
    let started = Instant::now();
    let socks = flood(&srv, &[0, 0], 40).await;
    let refilled = (5.0 * started.elapsed().as_secs_f64()).ceil() as u64;
    let dropped = srv.stats.dropped_rate_limited.load(Ordering::SeqCst);
    let let_in = 40 - dropped;
    assert!(
        (10..=10 + refilled).contains(&let_in),
        "a burst of 10 (and {refilled} refilled) let in, not {let_in}"
    );
    reaches(&srv.stats.replied, let_in, "replies").await;
    let answered = socks
        .iter()
        .filter(|s| s.try_recv(&mut [0u8; 64]).is_ok())
        .count() as u64;
    assert_eq!(answered, let_in, "the dropped ones got no reply");

    let other = client_at("127.0.0.3", srv.addr).await;
    let reply = exchange(&other, &[0, 0]).await;
    assert_eq!(&reply[..4], &[0, 128, 0, 0]);
    assert_eq!(&reply[8..12], &[198, 51, 101, 7]);
}
