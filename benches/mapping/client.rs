//! The client side: NAT-PMP clients of the daemon, and the bare sessions that measure the
//! emulators' own round trips.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use double_natpmp::RouterApi;
use double_natpmp::{ApiConfig, Password};
use double_natpmp_codec::natpmp::wire::{
    encode_request, parse_response, MapRequest, Protocol, Request, Response, ResultCode,
    MAP_REQUEST_LEN, MAX_PACKET_LEN,
};
use double_natpmp_codec::routeros::wire::{decode_sentence, encode_sentence, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::harness::{BenchError, Emulators, Stats, LIFETIME};

/// How long one client exchange may take, retransmissions included (the daemon answers a
/// failure within its own upstream and router timeouts, well inside this).
const EXCHANGE_BUDGET: Duration = Duration::from_secs(10);
/// First retransmission interval, doubling (RFC 6886 §3.1).
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// One mapping exchange: its latency from the first send, how many retransmissions it took,
/// and what the reply said.
#[derive(Clone, Copy, Debug)]
pub struct Exchange {
    pub latency: Duration,
    pub retransmits: u32,
    pub result: ResultCode,
    pub external_port: u16,
    pub lifetime: u32,
}

/// Asks for a UDP mapping of `port` for `lifetime` seconds (0: delete) and waits for the
/// matching reply, retransmitting like a NAT-PMP client.
pub async fn exchange(
    sock: &UdpSocket,
    to: SocketAddr,
    port: u16,
    lifetime: u32,
) -> Result<Exchange, BenchError> {
    let req = Request::Map(MapRequest {
        protocol: Protocol::Udp,
        internal_port: port,
        suggested_external_port: 0,
        lifetime,
    });
    let mut out = [0u8; MAP_REQUEST_LEN];
    let len = encode_request(&req, &mut out);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let started = Instant::now();
    let deadline = started + EXCHANGE_BUDGET;
    let mut interval = FIRST_RETRY;
    let mut retransmits = 0u32;
    loop {
        sock.send_to(&out[..len], to).await?;
        let resend_at = (Instant::now() + interval).min(deadline);
        loop {
            let wait = resend_at.saturating_duration_since(Instant::now());
            let Ok(r) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await else {
                break;
            };
            let (n, from) = r?;
            let latency = started.elapsed();
            if from != to {
                continue;
            }
            // Replies to an earlier, retransmitted request of this socket name another port.
            let Ok(Response::Map(m)) = parse_response(&buf[..n]) else {
                continue;
            };
            if m.protocol != Protocol::Udp || m.internal_port != port {
                continue;
            }
            return Ok(Exchange {
                latency,
                retransmits,
                result: m.result,
                external_port: m.external_port,
                lifetime: m.lifetime,
            });
        }
        if Instant::now() >= deadline {
            return Err(BenchError::NoReply {
                port,
                budget: EXCHANGE_BUDGET,
            });
        }
        retransmits += 1;
        interval *= 2;
    }
}

/// A mapping (or renewal) of `port` that must succeed with an external port.
pub async fn map(sock: &UdpSocket, to: SocketAddr, port: u16) -> Result<Exchange, BenchError> {
    let x = exchange(sock, to, port, LIFETIME).await?;
    if x.result != ResultCode::Success {
        return Err(BenchError::MappingFailed {
            port,
            result: x.result.to_u16(),
            why: x.result.describe(),
        });
    }
    if x.external_port == 0 || x.lifetime == 0 {
        return Err(BenchError::MappingFailed {
            port,
            result: 0,
            why: "success without an external port or lifetime",
        });
    }
    Ok(x)
}

/// Deletes the mapping of `port` (lifetime 0); it must succeed.
pub async fn delete(sock: &UdpSocket, to: SocketAddr, port: u16) -> Result<Exchange, BenchError> {
    let x = exchange(sock, to, port, 0).await?;
    if x.result != ResultCode::Success {
        return Err(BenchError::MappingFailed {
            port,
            result: x.result.to_u16(),
            why: x.result.describe(),
        });
    }
    Ok(x)
}

/// Maps `ports` one after another from one socket on `ip`: the latencies and retransmissions.
pub async fn map_sequentially(
    ip: Ipv4Addr,
    to: SocketAddr,
    ports: &[u16],
) -> Result<(Vec<Duration>, u64), BenchError> {
    let sock = UdpSocket::bind((ip, 0)).await?;
    let mut lat = Vec::with_capacity(ports.len());
    let mut retransmits = 0u64;
    for &port in ports {
        let x = map(&sock, to, port).await?;
        lat.push(x.latency);
        retransmits += u64::from(x.retransmits);
    }
    Ok((lat, retransmits))
}

/// The address of concurrent client `i`: 127.0.0.10..=127.0.0.209, all on loopback.
pub fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + (i % 200) as u8)
}

/// What [`map_concurrently`] saw.
pub struct Concurrent {
    /// Every mapping's latency.
    pub latencies: Vec<Duration>,
    /// Retransmissions in total.
    pub retransmits: u64,
    /// Wall time from the start to the last reply.
    pub elapsed: Duration,
    /// When each mapping was answered, from the start, sorted.
    pub done_at: Vec<Duration>,
    /// How many mappings took 0, 1, 2 and 3 or more retransmissions.
    pub retransmit_histogram: [u64; 4],
    /// The leases made: (client address, internal port).
    pub leases: Vec<(Ipv4Addr, u16)>,
}

/// Maps `ports` with `clients` concurrent clients (client i on [`client_ip`]`(i)`, taking
/// every `clients`-th port).
pub async fn map_concurrently(
    to: SocketAddr,
    ports: Vec<u16>,
    clients: usize,
) -> Result<Concurrent, BenchError> {
    let clients = clients.max(1);
    let mut shares: Vec<Vec<u16>> = vec![Vec::new(); clients];
    for (i, p) in ports.into_iter().enumerate() {
        shares[i % clients].push(p);
    }
    // Bind every socket first, so the clock measures mapping only.
    let mut socks = Vec::with_capacity(clients);
    for i in 0..clients {
        socks.push(UdpSocket::bind((client_ip(i), 0)).await?);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (sock, share)) in socks.into_iter().zip(shares).enumerate() {
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let mut done = Vec::with_capacity(share.len());
            for port in share {
                let x = map(&sock, to, port).await?;
                done.push((x, Instant::now(), (client_ip(i), port)));
            }
            Ok::<_, BenchError>(done)
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut out = Concurrent {
        latencies: Vec::new(),
        retransmits: 0,
        elapsed: Duration::ZERO,
        done_at: Vec::new(),
        retransmit_histogram: [0; 4],
        leases: Vec::new(),
    };
    while let Some(r) = tasks.join_next().await {
        for (x, at, lease) in r?? {
            out.latencies.push(x.latency);
            out.retransmits += u64::from(x.retransmits);
            out.retransmit_histogram[(x.retransmits as usize).min(3)] += 1;
            out.done_at.push(at.saturating_duration_since(started));
            out.leases.push(lease);
        }
    }
    out.elapsed = started.elapsed();
    out.done_at.sort();
    Ok(out)
}

/// The emulators' own round trips, measured from this process without the daemon.
pub struct Realised {
    /// `/system/identity/print` on a bare logged-in API session (the shared word codec only).
    pub router: Stats,
    /// The same through the daemon's RouterOS client (`RouterApi`: pool checkout with its idle
    /// check, tagged command); the difference is that client's cost.
    pub router_api: Stats,
    /// One NAT-PMP exchange with the gateway (a renewal of one port, as peer 127.0.0.3, so the
    /// daemon's mappings and quota are untouched).
    pub upstream: Stats,
    /// The emulators' delay alone (`emulators::delay::sleep` of the router RTT and of the upstream
    /// RTT, in this process, no I/O): what is left of the realised round trips is loopback I/O
    /// and waking the threads that wait for it.
    pub delay_router: Stats,
    pub delay_upstream: Stats,
}

/// Measures [`Realised`] with `n` samples each; `injected` is (router RTT, upstream RTT).
pub async fn measure_emulators(
    emu: &Emulators,
    n: usize,
    injected: (Duration, Duration),
) -> Result<Realised, BenchError> {
    let addr = emu.router.local_addr();
    let mut raw = RawApi::login(addr).await?;
    let mut router = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        raw.call(&["/system/identity/print"]).await?;
        router.push(t.elapsed());
    }
    let cfg = ApiConfig::new(addr.to_string(), "admin", Password::new("admin"));
    let api = RouterApi::new(cfg, 1, Duration::from_secs(5))
        .map_err(|e| BenchError::Baseline(e.to_string()))?;
    let mut via_api = Vec::with_capacity(n);
    // The first command also connects and logs in: not a sample.
    for i in 0..=n {
        let t = Instant::now();
        api.run(Command::new("/system/identity/print"))
            .await
            .map_err(|e| BenchError::Baseline(e.to_string()))?;
        if i > 0 {
            via_api.push(t.elapsed());
        }
    }
    let sock = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 3), 0)).await?;
    let mut upstream = Vec::with_capacity(n);
    for _ in 0..n {
        upstream.push(map(&sock, emu.gateway.local_addr(), 1024).await?.latency);
    }
    let mut delays = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for (d, out) in [injected.0, injected.1].into_iter().zip(delays.iter_mut()) {
        for _ in 0..n {
            let t = Instant::now();
            double_natpmp_emulators::delay::sleep(d).await;
            out.push(t.elapsed());
        }
    }
    let [delay_router, delay_upstream] = delays;
    Ok(Realised {
        router: Stats::of(router),
        router_api: Stats::of(via_api),
        upstream: Stats::of(upstream),
        delay_router: Stats::of(delay_router),
        delay_upstream: Stats::of(delay_upstream),
    })
}

/// A bare RouterOS API session (plain TCP, one command at a time, only the shared word codec),
/// so the emulator's round trip is measured without the daemon's client code.
struct RawApi {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawApi {
    async fn login(addr: SocketAddr) -> Result<RawApi, BenchError> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| BenchError::Baseline(format!("connect to {addr} timed out")))??;
        stream.set_nodelay(true)?;
        let mut api = RawApi {
            stream,
            buf: Vec::new(),
        };
        api.call(&["/login", "=name=admin", "=password=admin"])
            .await?;
        Ok(api)
    }

    /// Sends one sentence and reads replies up to `!done`; a `!trap` or `!fatal` is an error.
    async fn call(&mut self, words: &[&str]) -> Result<(), BenchError> {
        let mut out = Vec::new();
        encode_sentence(words, &mut out);
        let fut = async {
            self.stream.write_all(&out).await?;
            let mut failed = None;
            loop {
                match decode_sentence(&self.buf)
                    .map_err(|e| BenchError::Baseline(format!("bad reply: {e}")))?
                {
                    Some((reply, used)) => {
                        self.buf.drain(..used);
                        let first = reply.first().map(Vec::as_slice);
                        match first {
                            Some(b"!done") => {
                                return match failed {
                                    None => Ok(()),
                                    Some(w) => Err(BenchError::Baseline(w)),
                                }
                            }
                            Some(b"!trap") | Some(b"!fatal") => {
                                let text: Vec<String> = reply
                                    .iter()
                                    .map(|w| String::from_utf8_lossy(w).into_owned())
                                    .collect();
                                let what = format!("{} answered {}", words[0], text.join(" "));
                                if first == Some(b"!fatal".as_slice()) {
                                    return Err(BenchError::Baseline(what));
                                }
                                failed = Some(what);
                            }
                            _ => {}
                        }
                    }
                    None => {
                        let mut chunk = [0u8; 4096];
                        let n = self.stream.read(&mut chunk).await?;
                        if n == 0 {
                            return Err(BenchError::Baseline(
                                "the emulator closed the connection".into(),
                            ));
                        }
                        self.buf.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .map_err(|_| BenchError::Baseline(format!("{} timed out", words[0])))?
    }
}
