//! The UDP front end LAN clients talk to.
//!
//! One socket, bound to LISTEN_ADDR; every reply leaves from it, so the router's connection
//! tracking rewrites the source back to the gateway address the client asked (RFC 6886 §3.1;
//! docs/conformance.md §1K, Q-05). Requests from outside ALLOWED_CLIENTS are dropped silently (C-39),
//! and so, checked first, are requests from [`ServerConfig::blocked_sources`] (sources that are
//! not real clients: the VPN gateway, the router's and the daemon's own addresses, the network
//! and broadcast addresses of the router's subnets, C-39a), which the default private ranges
//! would let in.
//!
//! Concurrency is bounded by a semaphore of MAX_INFLIGHT permits. A datagram that arrives when
//! every permit is taken is dropped, not queued: NAT-PMP clients retransmit (250 ms, doubling),
//! so a burst is absorbed by the clients' own retry schedule and memory stays bounded.
//!
//! A datagram identical to one still being served for the same peer (address and port) is a
//! client's retransmission: it takes no permit and starts no work; it is only counted, and the
//! first copy's reply is sent once more for it (`InFlight`, C-17: every datagram is answered).
//! Otherwise, under load (a busy router pool), every waiting request's retransmissions would
//! take permits, push fresh requests out, and leave their clients in retransmission back-off
//! (up to seconds).
//!
//! Opcode 0 is answered from a cached upstream address ([`AddressCache`]); mapping opcodes go to
//! a [`MapHandler`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::cidr::CidrList;
use crate::natpmp::address_cache::AddressCache;
use crate::natpmp::epoch::Epoch;
use crate::natpmp::handler::MapHandler;
use crate::natpmp::upstream::Upstream;
use crate::natpmp::wire::{
    self, MapResponse, Request, RequestError, Response, ResultCode, MAX_PACKET_LEN,
};
use crate::refused::RefusedSources;
use crate::shutdown::Shutdown;

/// Settings of the front end.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Who may ask (C-39).
    pub allowed_clients: CidrList,
    /// Who may never ask, whatever `allowed_clients` says (C-39a): shared with the mapping
    /// core, whose reconcile pass refreshes it.
    pub blocked_sources: Arc<RefusedSources>,
    /// Requests handled at once.
    pub max_inflight: usize,
    /// Upstream address refresh interval.
    pub address_refresh: Duration,
}

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Replies sent.
    pub replied: AtomicU64,
    /// Datagrams dropped: sender outside ALLOWED_CLIENTS.
    pub dropped_not_allowed: AtomicU64,
    /// Datagrams dropped: sender one of [`ServerConfig::blocked_sources`].
    pub dropped_blocked: AtomicU64,
    /// Datagrams dropped: every in-flight permit taken.
    pub dropped_busy: AtomicU64,
    /// Datagrams that were a copy of a request from the same peer still being served (a
    /// retransmission): no work of their own; the first copy's reply is sent again for each.
    pub coalesced: AtomicU64,
    /// Datagrams dropped by protocol rule (short, responses).
    pub dropped_invalid: AtomicU64,
    /// Version-≠0 probes answered (PCP clients fall back on this, P-02).
    pub unsupported_version: AtomicU64,
}

/// Why the server could not run.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (LISTEN_ADDR): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The socket failed while receiving.
    #[error("NAT-PMP socket on {addr} failed: {source}")]
    Socket {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The NAT-PMP server.
pub struct Server<U, H> {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    config: ServerConfig,
    epoch: Arc<Epoch>,
    addresses: Arc<AddressCache<U>>,
    handler: Arc<H>,
    permits: Arc<Semaphore>,
    in_flight: InFlight,
    stats: Arc<ServerStats>,
}

/// The requests being served, by peer and exact bytes, with how many copies of each arrived
/// meanwhile, so a retransmission that arrives while its first copy is in progress is
/// recognised and answered with that copy's reply.
#[derive(Clone, Default)]
struct InFlight(Arc<StdMutex<HashMap<InFlightKey, u32>>>);

/// A request's identity: its sender and its exact bytes.
type InFlightKey = (SocketAddr, Vec<u8>);

/// Most extra replies sent for copies of one request: a client following RFC 6886 §3.1
/// retransmits at most 8 times, and a flood of copies must not turn into a burst of replies.
const MAX_COPIES_ANSWERED: u32 = 8;

/// A request's entry in [`InFlight`]; removed when the reply is sent, or on drop.
struct InFlightEntry {
    set: InFlight,
    key: Option<InFlightKey>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InFlightKey, u32>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still valid.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `packet` from `peer`; `None` (and the copy counted) when an identical one is
    /// still being served.
    fn claim(&self, peer: SocketAddr, packet: &[u8]) -> Option<InFlightEntry> {
        let key = (peer, packet.to_vec());
        let mut map = self.lock();
        if let Some(copies) = map.get_mut(&key) {
            *copies = copies.saturating_add(1);
            return None;
        }
        map.insert(key.clone(), 0);
        Some(InFlightEntry {
            set: self.clone(),
            key: Some(key),
        })
    }
}

impl InFlightEntry {
    /// Removes the entry (a copy arriving from now on is a request of its own) and returns how
    /// many copies arrived while it was served, at most [`MAX_COPIES_ANSWERED`].
    fn finish(&mut self) -> u32 {
        let copies = match self.key.take() {
            Some(key) => self.set.lock().remove(&key).unwrap_or(0),
            None => 0,
        };
        copies.min(MAX_COPIES_ANSWERED)
    }
}

impl Drop for InFlightEntry {
    fn drop(&mut self) {
        self.finish();
    }
}

struct Shared<U, H> {
    socket: Arc<UdpSocket>,
    epoch: Arc<Epoch>,
    addresses: Arc<AddressCache<U>>,
    handler: Arc<H>,
    stats: Arc<ServerStats>,
}

impl<U: Upstream, H: MapHandler> Server<U, H> {
    /// Binds the socket.
    pub async fn bind(
        config: ServerConfig,
        epoch: Arc<Epoch>,
        upstream: Arc<U>,
        handler: Arc<H>,
    ) -> Result<Server<U, H>, ServerError> {
        let socket = UdpSocket::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = socket.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let permits = Arc::new(Semaphore::new(config.max_inflight.max(1)));
        Ok(Server {
            socket: Arc::new(socket),
            local_addr,
            epoch,
            addresses: Arc::new(AddressCache::new(upstream)),
            handler,
            permits,
            in_flight: InFlight::default(),
            stats: Arc::new(ServerStats::default()),
            config,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// The external-address cache.
    pub fn addresses(&self) -> Arc<AddressCache<U>> {
        self.addresses.clone()
    }

    /// A source address on this host: loopback, or the address the socket is bound to.
    fn is_local(&self, ip: Ipv4Addr) -> bool {
        ip.is_loopback() || self.local_addr.ip() == std::net::IpAddr::V4(ip)
    }

    /// Serves until `shutdown` fires, then waits for the requests in flight and returns.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), ServerError> {
        info!(listen = %self.local_addr, allowed = %self.config.allowed_clients, "NAT-PMP server listening");
        let shared = Arc::new(Shared {
            socket: self.socket.clone(),
            epoch: self.epoch.clone(),
            addresses: self.addresses.clone(),
            handler: self.handler.clone(),
            stats: self.stats.clone(),
        });
        let refresher = {
            let addresses = self.addresses.clone();
            let every = self.config.address_refresh;
            let stop = shutdown.clone();
            tokio::spawn(async move { addresses.refresh_loop(every, stop).await })
        };
        let mut buf = [0u8; MAX_PACKET_LEN];
        let result = loop {
            let (len, peer) = tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    // ICMP errors from earlier replies surface here on Linux; they say nothing
                    // about this socket's health.
                    Err(e) if is_transient(&e) => continue,
                    Err(source) => break Err(ServerError::Socket { addr: self.local_addr, source }),
                },
                _ = shutdown.recv() => break Ok(()),
            };
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            let client = match peer {
                // Before ALLOWED_CLIENTS, whose default private ranges hold the tunnel's 10.x
                // network: silence, as for any source that may not ask (RFC 6886 §3.3, C-39a).
                SocketAddr::V4(v4)
                    if self
                        .config
                        .blocked_sources
                        .drops_datagram(*v4.ip(), buf[..len].starts_with(&[0, 0])) =>
                {
                    self.stats.dropped_blocked.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, "dropped NAT-PMP request from a source that is not a real client");
                    continue;
                }
                SocketAddr::V4(v4) if self.config.allowed_clients.contains(*v4.ip()) => *v4.ip(),
                // The host itself may ask for the address (`double-natpmp health`), whatever
                // ALLOWED_CLIENTS says; it cannot map ports.
                SocketAddr::V4(v4)
                    if self.is_local(*v4.ip()) && buf[..len].starts_with(&[0, 0]) =>
                {
                    *v4.ip()
                }
                _ => {
                    // C-39: only LAN clients; everyone else gets silence.
                    self.stats
                        .dropped_not_allowed
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, "dropped NAT-PMP request from outside ALLOWED_CLIENTS");
                    continue;
                }
            };
            let Some(mut entry) = self.in_flight.claim(peer, &buf[..len]) else {
                self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "retransmission of a request still in progress: it gets that request's reply");
                continue;
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.stats.dropped_busy.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "dropped NAT-PMP request: MAX_INFLIGHT requests in progress");
                continue;
            };
            let packet = buf[..len].to_vec();
            let shared = shared.clone();
            tokio::spawn(async move {
                shared.serve(client, peer, &packet, &mut entry).await;
                drop(permit);
            });
        };
        refresher.abort();
        // Finish what is in flight: every permit back means every task is done.
        let all = u32::try_from(self.config.max_inflight.max(1)).unwrap_or(u32::MAX);
        let _ = self.permits.acquire_many(all).await;
        info!("NAT-PMP server stopped");
        result
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock
    )
}

/// A reply's bytes: one of ours inline (at most [`wire::MAP_REPLY_LEN`]), or the echo of an
/// unsupported opcode's request (C-16), which can be as long as the request.
enum ReplyBytes {
    Ours([u8; wire::MAP_REPLY_LEN], usize),
    Echo(Vec<u8>),
}

impl ReplyBytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            ReplyBytes::Ours(bytes, len) => &bytes[..*len],
            ReplyBytes::Echo(bytes) => bytes,
        }
    }
}

/// The bytes of a reply of ours.
fn encoded(response: &Response) -> ReplyBytes {
    let mut out = [0u8; wire::MAP_REPLY_LEN];
    let len = wire::encode_response(response, &mut out);
    ReplyBytes::Ours(out, len)
}

impl<U: Upstream, H: MapHandler> Shared<U, H> {
    /// Serves one request and sends its reply, once for the request and once more for each
    /// copy of it that arrived meanwhile (`entry`).
    async fn serve(
        &self,
        client: Ipv4Addr,
        peer: SocketAddr,
        packet: &[u8],
        entry: &mut InFlightEntry,
    ) {
        // The reply's bytes are written after the work, never held across it: a 1100-byte
        // buffer here would sit in every request's task while it waits for the router and
        // the gateway. A reply is at most MAP_REPLY_LEN bytes, but for the echo of an
        // unsupported opcode (C-16).
        let reply = match wire::parse_request(packet) {
            Ok(Request::ExternalAddress) => {
                // Boxed: it may have to ask the gateway, and a map request's task need not
                // carry that room.
                let response = match Box::pin(self.addresses.get()).await {
                    Some(address) => Response::ExternalAddress {
                        result: ResultCode::Success,
                        epoch: self.epoch.sssoe(),
                        address,
                    },
                    None => Response::ExternalAddress {
                        result: ResultCode::NetworkFailure,
                        epoch: self.epoch.sssoe(),
                        address: Ipv4Addr::UNSPECIFIED,
                    },
                };
                encoded(&response)
            }
            Ok(Request::Map(request)) => {
                let reply = self.handler.handle_map(client, request).await;
                let response = Response::Map(MapResponse {
                    protocol: request.protocol,
                    result: reply.result,
                    // Taken after the work: the reply reports the epoch at the time it is sent.
                    epoch: self.epoch.sssoe(),
                    internal_port: request.internal_port,
                    external_port: reply.external_port,
                    lifetime: reply.lifetime,
                });
                encoded(&response)
            }
            Err(err) => {
                if let RequestError::UnsupportedVersion { version } = err {
                    self.stats
                        .unsupported_version
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, version, "unsupported version (a PCP probe if 2): answering result 1");
                }
                let mut out = [0u8; MAX_PACKET_LEN];
                match wire::error_reply(&err, packet, self.epoch.sssoe(), &mut out) {
                    Some(len) => ReplyBytes::Echo(out[..len].to_vec()),
                    None => {
                        self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, error = %err, "dropped datagram");
                        return;
                    }
                }
            }
        };
        for _ in 0..=entry.finish() {
            match self.socket.send_to(reply.as_slice(), peer).await {
                Ok(_) => {
                    self.stats.replied.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    warn!(%peer, error = %e, "cannot send NAT-PMP reply");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::parse_cidr_list;
    use crate::natpmp::handler::MapReply;
    use crate::natpmp::upstream::{AddressReply, MapGrant, UpstreamError};
    use crate::natpmp::wire::{
        encode_request, parse_response, MapRequest, Protocol, MAP_REQUEST_LEN,
    };
    use crate::shutdown::ShutdownTrigger;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Notify;

    const WAIT: Duration = Duration::from_secs(5);

    struct NoUpstream;

    impl Upstream for NoUpstream {
        async fn external_address(&self) -> Result<AddressReply, UpstreamError> {
            Err(UpstreamError::Timeout {
                gateway: "127.0.0.1:1".parse().unwrap(),
                after: Duration::from_millis(1),
            })
        }
        async fn map(
            &self,
            _: Protocol,
            _: u16,
            _: u16,
            _: u32,
        ) -> Result<MapGrant, UpstreamError> {
            unreachable!("the server never maps by itself")
        }
    }

    /// Grants every request, but only once the test releases it; counts the calls.
    #[derive(Default)]
    struct Gated {
        calls: AtomicUsize,
        entered: Notify,
        release: Notify,
    }

    impl MapHandler for Arc<Gated> {
        async fn handle_map(&self, _client: Ipv4Addr, request: MapRequest) -> MapReply {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.entered.notify_one();
            self.release.notified().await;
            MapReply {
                result: ResultCode::Success,
                external_port: request.internal_port,
                lifetime: 60,
            }
        }
    }

    fn map_packet(internal_port: u16) -> Vec<u8> {
        let mut out = [0u8; MAP_REQUEST_LEN];
        let req = Request::Map(MapRequest {
            protocol: Protocol::Udp,
            internal_port,
            suggested_external_port: 0,
            lifetime: 60,
        });
        let len = encode_request(&req, &mut out);
        out[..len].to_vec()
    }

    async fn recv_map_port(sock: &UdpSocket) -> u16 {
        let mut buf = [0u8; MAX_PACKET_LEN];
        let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
            .await
            .expect("no reply from the server")
            .unwrap();
        match parse_response(&buf[..n]).unwrap() {
            Response::Map(m) => m.internal_port,
            other => panic!("not a map reply: {other:?}"),
        }
    }

    /// Sends `packet` and waits until the server has counted it as received.
    async fn send_counted(sock: &UdpSocket, packet: &[u8], stats: &ServerStats) {
        let before = stats.received.load(Ordering::SeqCst);
        sock.send(packet).await.unwrap();
        tokio::time::timeout(WAIT, async {
            while stats.received.load(Ordering::SeqCst) == before {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the server did not receive the datagram");
    }

    /// C-17, C-29: a client's retransmission of a request still in progress is not served a
    /// second time and takes no permit (here there is only one); it gets the first copy's reply.
    /// Once answered, the same request is served again (a renewal), and the same bytes from
    /// another socket are a request of their own.
    #[tokio::test]
    async fn c17_c29_retransmission_of_a_request_in_progress_gets_its_reply_without_a_permit() {
        let gated = Arc::new(Gated::default());
        let server = Server::bind(
            ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                allowed_clients: parse_cidr_list("127.0.0.0/8").unwrap(),
                blocked_sources: Arc::default(),
                max_inflight: 1,
                address_refresh: Duration::from_secs(3600),
            },
            Arc::new(Epoch::new()),
            Arc::new(NoUpstream),
            Arc::new(gated.clone()),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        let stats = server.stats();
        let in_flight = server.in_flight.clone();
        let (stop, rx) = ShutdownTrigger::new();
        let task = tokio::spawn(server.run(rx));
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(addr).await.unwrap();
        let packet = map_packet(5000);

        sock.send(&packet).await.unwrap();
        tokio::time::timeout(WAIT, gated.entered.notified())
            .await
            .unwrap();
        send_counted(&sock, &packet, &stats).await;
        send_counted(&sock, &packet, &stats).await;
        assert_eq!(stats.coalesced.load(Ordering::SeqCst), 2);
        assert_eq!(stats.dropped_busy.load(Ordering::SeqCst), 0);
        gated.release.notify_one();
        for _ in 0..3 {
            assert_eq!(recv_map_port(&sock).await, 5000, "one reply per datagram");
        }
        assert_eq!(gated.calls.load(Ordering::SeqCst), 1);

        // Answered and forgotten: the same request again is a new one (a renewal).
        tokio::time::timeout(WAIT, async {
            while !in_flight.lock().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        sock.send(&packet).await.unwrap();
        tokio::time::timeout(WAIT, gated.entered.notified())
            .await
            .unwrap();
        assert_eq!(gated.calls.load(Ordering::SeqCst), 2);
        // The same bytes from another socket are another client's request: not a copy (it
        // finds the only permit taken).
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        other.connect(addr).await.unwrap();
        send_counted(&other, &packet, &stats).await;
        assert_eq!(stats.coalesced.load(Ordering::SeqCst), 2);
        assert_eq!(stats.dropped_busy.load(Ordering::SeqCst), 1);
        gated.release.notify_one();
        assert_eq!(recv_map_port(&sock).await, 5000);

        stop.trigger();
        let _ = tokio::time::timeout(WAIT, task).await;
    }
}
