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
//! Concurrency is bounded by slots (MAX_INFLIGHT of them; see `slots.rs` for what each kind of
//! request holds). What can be answered at once is answered on the receive path and holds no
//! slot: an address request while the address is cached, a renewal answered from its lease
//! ([`MapHandler::answer_now`]), an error reply. An address request that must wait for the
//! gateway holds an address slot, not a request slot, and shares one exchange with every other
//! (so a host that floods them while the gateway is dark starves nobody); a delete finds a slot
//! kept for deletes when the others are taken. A datagram that finds no slot is dropped, not
//! queued: NAT-PMP clients retransmit (250 ms, doubling).
//!
//! Address requests are rate-limited per client (CLIENT_RATE_LIMIT, bursts of twice that), as
//! the mapping core limits mapping requests; one over the limit is dropped, not answered
//! (docs/conformance.md C-17a): a request of 2 bytes would otherwise draw a reply of 12 at any
//! rate, to any LAN address a sender puts in the source.
//!
//! A datagram identical to one still being served for the same peer (address and port) is a
//! client's retransmission: it takes no slot and starts no work; it is only counted, and the
//! first copy's reply is sent once more for it (`InFlight`, C-17: every datagram is answered).
//! Otherwise, under load (a busy router pool), every waiting request's retransmissions would
//! take slots, push fresh requests out, and leave their clients in retransmission back-off
//! (up to seconds).
//!
//! Opcode 0 is answered from a cached upstream address ([`AddressCache`]); mapping opcodes go to
//! a [`MapHandler`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cidr::CidrList;
use crate::natpmp::address_cache::AddressCache;
use crate::natpmp::handler::{MapHandler, MapReply};
use crate::natpmp::rate::ClientRate;
use crate::natpmp::slots::{InFlight, InFlightEntry, Lane, Slots};
use crate::natpmp::upstream::Upstream;
use crate::refused::RefusedSources;
use crate::shutdown::Shutdown;
use double_natpmp_codec::natpmp::epoch::Epoch;
use double_natpmp_codec::natpmp::wire::{
    self, MapRequest, MapResponse, Request, RequestError, Response, ResultCode, MAX_PACKET_LEN,
};

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
    /// Requests handled at once (and as many address requests waiting for the gateway).
    pub max_inflight: usize,
    /// Address requests one client may make per second (bursts of twice that).
    pub client_rate_limit: u32,
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
    /// Datagrams dropped: every slot the request may take was taken.
    pub dropped_busy: AtomicU64,
    /// Address requests dropped: the client asked more often than its rate allows.
    pub dropped_rate_limited: AtomicU64,
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
    local_addr: SocketAddr,
    config: ServerConfig,
    slots: Slots,
    address_rate: ClientRate,
    in_flight: InFlight,
    shared: Arc<Shared<U, H>>,
}

struct Shared<U, H> {
    socket: Arc<UdpSocket>,
    epoch: Arc<Epoch>,
    addresses: Arc<AddressCache<U>>,
    handler: Arc<H>,
    stats: Arc<ServerStats>,
}

/// What a request needs, once parsed.
enum Work {
    /// Its reply, ready now.
    Reply(ReplyBytes),
    /// The gateway's address, which is not cached.
    Address,
    /// The mapping core's answer.
    Map(MapRequest),
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
        Ok(Server {
            local_addr,
            slots: Slots::new(config.max_inflight),
            address_rate: ClientRate::new(config.client_rate_limit),
            in_flight: InFlight::default(),
            shared: Arc::new(Shared {
                socket: Arc::new(socket),
                epoch,
                addresses: Arc::new(AddressCache::new(upstream)),
                handler,
                stats: Arc::new(ServerStats::default()),
            }),
            config,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// The external-address cache.
    pub fn addresses(&self) -> Arc<AddressCache<U>> {
        self.shared.addresses.clone()
    }

    /// A source address on this host: loopback, or the address the socket is bound to.
    fn is_local(&self, ip: Ipv4Addr) -> bool {
        ip.is_loopback() || self.local_addr.ip() == std::net::IpAddr::V4(ip)
    }

    /// Who sent `packet` from `peer`, when they may ask at all.
    fn client(&self, peer: SocketAddr, packet: &[u8]) -> Option<Ipv4Addr> {
        let stats = &self.shared.stats;
        match peer {
            // Before ALLOWED_CLIENTS, whose default private ranges hold the tunnel's 10.x
            // network: silence, as for any source that may not ask (RFC 6886 §3.3, C-39a).
            SocketAddr::V4(v4)
                if self
                    .config
                    .blocked_sources
                    .drops_datagram(*v4.ip(), maps_nothing(packet)) =>
            {
                stats.dropped_blocked.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "dropped NAT-PMP request from a source that is not a real client");
                None
            }
            SocketAddr::V4(v4) if self.config.allowed_clients.contains(*v4.ip()) => Some(*v4.ip()),
            // The host itself may ask for the address, or send an opcode NAT-PMP does not
            // define (answered 5 at once: `double-natpmp health`), whatever ALLOWED_CLIENTS
            // says; it cannot map ports (opcodes 1 and 2).
            SocketAddr::V4(v4) if self.is_local(*v4.ip()) && maps_nothing(packet) => Some(*v4.ip()),
            _ => {
                // C-39: only LAN clients; everyone else gets silence.
                stats.dropped_not_allowed.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "dropped NAT-PMP request from outside ALLOWED_CLIENTS");
                None
            }
        }
    }

    /// What `packet` from `client` needs; `None` when it gets no reply at all.
    fn work(&self, client: Ipv4Addr, peer: SocketAddr, packet: &[u8]) -> Option<Work> {
        let shared = &self.shared;
        match wire::parse_request(packet) {
            Ok(Request::ExternalAddress) => {
                let now = Instant::now();
                if !self.address_rate.allow(client, now) {
                    // C-17a: over the rate an address request is dropped; the client's own
                    // retransmission is answered once its bucket has refilled.
                    shared
                        .stats
                        .dropped_rate_limited
                        .fetch_add(1, Ordering::Relaxed);
                    if self.address_rate.should_log(client, now) {
                        warn!(%client, per_second = self.address_rate.per_second(), "address requests dropped: more than CLIENT_RATE_LIMIT a second (logged once a minute per client)");
                    }
                    return None;
                }
                Some(match self.shared.addresses.cached() {
                    Some(address) => Work::Reply(shared.address_reply(Some(address))),
                    None => Work::Address,
                })
            }
            Ok(Request::Map(request)) => Some(match shared.handler.answer_now(client, request) {
                Some(reply) => Work::Reply(shared.map_reply(request, reply)),
                None => Work::Map(request),
            }),
            Err(err) => shared.error_reply(peer, packet, err).map(Work::Reply),
        }
    }

    /// Serves until `shutdown` fires, then waits for the requests in flight and returns.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), ServerError> {
        info!(listen = %self.local_addr, allowed = %self.config.allowed_clients, "NAT-PMP server listening");
        let refresher = {
            let addresses = self.shared.addresses.clone();
            let every = self.config.address_refresh;
            let stop = shutdown.clone();
            tokio::spawn(async move { addresses.refresh_loop(every, stop).await })
        };
        let stats = self.shared.stats.clone();
        let mut buf = [0u8; MAX_PACKET_LEN];
        let result = loop {
            let (len, peer) = tokio::select! {
                r = self.shared.socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    // ICMP errors from earlier replies surface here on Linux; they say nothing
                    // about this socket's health.
                    Err(e) if is_transient(&e) => continue,
                    Err(source) => break Err(ServerError::Socket { addr: self.local_addr, source }),
                },
                _ = shutdown.recv() => break Ok(()),
            };
            stats.received.fetch_add(1, Ordering::Relaxed);
            let packet = &buf[..len];
            let Some(client) = self.client(peer, packet) else {
                continue;
            };
            let Some(mut entry) = self.in_flight.claim(peer, packet) else {
                stats.coalesced.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "retransmission of a request still in progress: it gets that request's reply");
                continue;
            };
            let (lane, work) = match self.work(client, peer, packet) {
                None => continue,
                Some(Work::Reply(reply)) => {
                    self.shared.send(&reply, peer, &mut entry).await;
                    continue;
                }
                Some(Work::Address) => (Lane::Address, Work::Address),
                Some(Work::Map(request)) if request.is_delete() => {
                    (Lane::Delete, Work::Map(request))
                }
                Some(work) => (Lane::Map, work),
            };
            let Some(slot) = self.slots.take(lane) else {
                stats.dropped_busy.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, ?lane, "dropped NAT-PMP request: every slot it may take is in use (MAX_INFLIGHT)");
                continue;
            };
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let reply = match work {
                    Work::Map(request) => {
                        let reply = shared.handler.handle_map(client, request).await;
                        shared.map_reply(request, reply)
                    }
                    // Boxed: it may have to ask the gateway, and a map request's task need
                    // not carry that room.
                    _ => shared.address_reply(Box::pin(shared.addresses.get()).await),
                };
                shared.send(&reply, peer, &mut entry).await;
                drop(slot);
            });
        };
        refresher.abort();
        // Finish what is in flight: every slot back means every task is done.
        self.slots.drained().await;
        info!("NAT-PMP server stopped");
        result
    }
}

/// Whether `packet` is a version-0 datagram that can map no port: an address request, or an
/// opcode NAT-PMP does not define (answered 5 at once: the `double-natpmp health` probe). The
/// daemon's own host may send these, never a mapping request (opcodes 1 and 2).
fn maps_nothing(packet: &[u8]) -> bool {
    packet.first() == Some(&wire::VERSION) && !matches!(packet.get(1), Some(1 | 2))
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
    /// The address reply: the address, or result 3 with 0.0.0.0 (C-21). The epoch is taken
    /// when the reply is made, after any wait.
    fn address_reply(&self, address: Option<Ipv4Addr>) -> ReplyBytes {
        encoded(&match address {
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
        })
    }

    /// The mapping reply to `request`.
    fn map_reply(&self, request: MapRequest, reply: MapReply) -> ReplyBytes {
        encoded(&Response::Map(MapResponse {
            protocol: request.protocol,
            result: reply.result,
            // Taken after the work: the reply reports the epoch at the time it is sent.
            epoch: self.epoch.sssoe(),
            internal_port: request.internal_port,
            external_port: reply.external_port,
            lifetime: reply.lifetime,
        }))
    }

    /// The reply to a packet that is not a request we serve, if it gets one.
    fn error_reply(
        &self,
        peer: SocketAddr,
        packet: &[u8],
        err: RequestError,
    ) -> Option<ReplyBytes> {
        if let RequestError::UnsupportedVersion { version } = err {
            self.stats
                .unsupported_version
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, version, "unsupported version (a PCP probe if 2): answering result 1");
        }
        let mut out = [0u8; MAX_PACKET_LEN];
        match wire::error_reply(&err, packet, self.epoch.sssoe(), &mut out) {
            Some(len) => Some(ReplyBytes::Echo(out[..len].to_vec())),
            None => {
                self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, error = %err, "dropped datagram");
                None
            }
        }
    }

    /// Sends `reply`, once for the request and once more for each copy of it that arrived
    /// meanwhile (`entry`).
    async fn send(&self, reply: &ReplyBytes, peer: SocketAddr, entry: &mut InFlightEntry) {
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
    use crate::natpmp::upstream::{AddressReply, MapGrant, UpstreamError, UpstreamMap};
    use crate::shutdown::ShutdownTrigger;
    use double_natpmp_codec::natpmp::wire::{
        encode_request, parse_response, MapRequest, Protocol, MAP_REQUEST_LEN,
    };
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
        async fn map(&self, _: UpstreamMap) -> Result<MapGrant, UpstreamError> {
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
                client_rate_limit: 10_000,
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
