//! A NAT-PMP gateway emulator with ProtonVPN-like behaviour.
//!
//! It keeps a mapping table and answers NAT-PMP like ProtonVPN's gateway is reported to
//! (ARCHITECTURE.md, NATPMP_CONFORMANCE.md U-05, C-37): lifetimes capped at 60 s, a random
//! external port for each new mapping, the internal port honoured, a per-peer quota answered with
//! result 4, mappings that really expire, and an epoch (SSSoE) that restarts when state is lost.
//! It does not forward any traffic; it only keeps the table.
//!
//! Tests drive it with [`Gateway::set_mode`] (stop answering, answer a chosen result code, or
//! close the socket so the OS answers ICMP port unreachable), [`Gateway::lose_state`], and await
//! it with [`Gateway::wait_for_requests`] and [`Gateway::wait_for_mappings`].
//!
//! Table rules, per peer IP address (every exchange of a NAT-PMP client uses a new source port,
//! so the peer is its address, not its socket address):
//!
//! - op 0 answers [`GatewayConfig::external_address`];
//! - a new mapping gets a random free external port from [`GatewayConfig::port_range`] (or the
//!   suggested one with [`GatewayConfig::honour_suggested`]) and lifetime
//!   `min(asked, max_lifetime)`;
//! - a renewal (same peer, protocol, internal port) keeps its external port, with a new expiry;
//! - the other protocol of an internal port the peer already maps gets the same external port
//!   and does not count against the quota (Proton forwards one port for both protocols);
//! - lifetime 0 deletes (C-33, C-34: also when nothing was there), internal port 0 with
//!   lifetime 0 deletes all of the peer's mappings of that protocol (C-36);
//! - internal port 0 with lifetime > 0 is Proton's "symmetric default port" (C-37): a random
//!   port P forwarded to P, answered with internal port 0 and external port P;
//! - over [`GatewayConfig::quota_per_peer`] distinct internal ports: result 4.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::natpmp::epoch::Epoch;
use crate::natpmp::wire::{
    encode_response, error_reply, parse_request, MapRequest, MapResponse, Protocol, Request,
    Response, ResultCode, MAX_PACKET_LEN,
};

/// How the emulated gateway behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The VPN exit address reported by op 0.
    pub external_address: Ipv4Addr,
    /// Granted lifetimes are capped at this many seconds (Proton: 60).
    pub max_lifetime: u32,
    /// How many distinct internal ports one peer may map (TCP and UDP of one internal port
    /// count once); the next gets result 4 (Proton: about 5).
    pub quota_per_peer: usize,
    /// External ports are drawn from this range.
    pub port_range: RangeInclusive<u16>,
    /// `true`: a new mapping gets its suggested external port when free; `false` (Proton):
    /// always a random one.
    pub honour_suggested: bool,
    /// Delay before each reply is sent.
    pub latency: Duration,
}

impl Default for GatewayConfig {
    /// ProtonVPN-like: 60 s, 5 ports, random ports in 32768..=65535, no latency; the exit
    /// address is from TEST-NET-2 (RFC 5737), never routed.
    fn default() -> Self {
        GatewayConfig {
            external_address: Ipv4Addr::new(198, 51, 100, 7),
            max_lifetime: 60,
            quota_per_peer: 5,
            port_range: 32768..=65535,
            honour_suggested: false,
            latency: Duration::ZERO,
        }
    }
}

/// What the gateway does with requests, set with [`Gateway::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Serve requests normally.
    #[default]
    Normal,
    /// Read and count requests, never answer.
    Silent,
    /// Answer every address and mapping request with this result code (external port and
    /// lifetime 0, address 0.0.0.0 unless the code is success), without touching the table.
    Refuse(ResultCode),
    /// Close the socket, so the OS answers ICMP port unreachable (C-40: port forwarding off).
    /// Any other mode reopens it on the same address.
    Unreachable,
}

/// One mapping in the gateway's table, as [`Gateway::mappings`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayMapping {
    /// The peer's IP address.
    pub peer: IpAddr,
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The port on the peer the mapping forwards to (P itself for a symmetric default port).
    pub internal_port: u16,
    /// The external port.
    pub external_port: u16,
    /// Time left before it expires (never zero: expired mappings are not shown).
    pub expires_in: Duration,
    /// Made with internal port 0 (Proton's symmetric default port, C-37).
    pub symmetric: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    peer: IpAddr,
    protocol: Protocol,
    internal_port: u16,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    external_port: u16,
    expires_at: Instant,
    symmetric: bool,
}

#[derive(Debug)]
struct State {
    config: GatewayConfig,
    mode: Mode,
    table: HashMap<Key, Entry>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    epoch: Epoch,
    requests: watch::Sender<u64>,
    map_requests: AtomicU64,
    /// Bumped on every change of the table, for [`Gateway::wait_for_mappings`].
    generation: watch::Sender<u64>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a test panicked elsewhere; the table is still consistent
        // because every mutation is a single HashMap call.
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn purge_expired(&self, now: Instant) {
        let removed = {
            let mut st = self.state();
            let before = st.table.len();
            st.table.retain(|_, e| e.expires_at > now);
            before - st.table.len()
        };
        if removed > 0 {
            tracing::debug!(removed, "gateway emulator: mappings expired");
            self.bump();
        }
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.state().table.values().map(|e| e.expires_at).min()
    }
}

enum Command {
    SetMode(Mode, oneshot::Sender<io::Result<()>>),
}

/// A running NAT-PMP gateway emulator. Dropping it stops its task.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    task: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Binds `bind` (use `127.0.0.1:0` in tests) and serves NAT-PMP on it from a tokio task.
    pub async fn start(config: GatewayConfig, bind: SocketAddr) -> io::Result<Gateway> {
        if config.port_range.is_empty() || *config.port_range.start() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "gateway emulator: the external port range must be non-empty and exclude 0",
            ));
        }
        let socket = UdpSocket::bind(bind).await?;
        let local_addr = socket.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                config,
                mode: Mode::Normal,
                table: HashMap::new(),
            }),
            epoch: Epoch::new(),
            requests: watch::Sender::new(0),
            map_requests: AtomicU64::new(0),
            generation: watch::Sender::new(0),
        });
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run(shared.clone(), Arc::new(socket), local_addr, rx));
        Ok(Gateway {
            shared,
            local_addr,
            commands: tx,
            task: Some(task),
        })
    }

    /// The address it answers on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The live mappings, sorted; an expired one is never shown.
    pub fn mappings(&self) -> Vec<GatewayMapping> {
        let now = Instant::now();
        let mut v: Vec<GatewayMapping> = self
            .shared
            .state()
            .table
            .iter()
            .filter(|(_, e)| e.expires_at > now)
            .map(|(k, e)| GatewayMapping {
                peer: k.peer,
                protocol: k.protocol,
                internal_port: k.internal_port,
                external_port: e.external_port,
                expires_in: e.expires_at - now,
                symmetric: e.symmetric,
            })
            .collect();
        v.sort();
        v
    }

    /// Forgets every mapping and restarts the epoch at 0, like a gateway reboot (C-45).
    pub fn lose_state(&self) {
        self.shared.state().table.clear();
        self.shared.epoch.reset();
        self.shared.bump();
    }

    /// The gateway's current SSSoE.
    pub fn epoch(&self) -> u32 {
        self.shared.epoch.sssoe()
    }

    /// Switches behaviour; returns once the gateway task applied it (for
    /// [`Mode::Unreachable`]: once the socket is closed). Fails if the socket cannot be reopened.
    pub async fn set_mode(&self, mode: Mode) -> io::Result<()> {
        let stopped = || io::Error::new(io::ErrorKind::BrokenPipe, "gateway emulator stopped");
        let (ack, done) = oneshot::channel();
        self.commands
            .send(Command::SetMode(mode, ack))
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Delay before each later reply.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.state().config.latency = latency;
    }

    /// Datagrams received so far (any content, in any mode but [`Mode::Unreachable`]).
    pub fn requests_received(&self) -> u64 {
        *self.shared.requests.borrow()
    }

    /// Well-formed mapping requests (op 1 or 2) received so far.
    pub fn map_requests(&self) -> u64 {
        self.shared.map_requests.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` datagrams were received; `false` if `timeout` passed first.
    pub async fn wait_for_requests(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.shared.requests.subscribe();
        let reached = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await,
            Ok(Ok(_))
        );
        reached
    }

    /// Waits until `pred` holds for [`Gateway::mappings`]; `false` if `timeout` passed first.
    /// Re-checked on every table change (new, renewed, deleted, expired, lost).
    pub async fn wait_for_mappings<F>(&self, mut pred: F, timeout: Duration) -> bool
    where
        F: FnMut(&[GatewayMapping]) -> bool,
    {
        let mut rx = self.shared.generation.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                if pred(&self.mappings()) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// Stops the gateway and waits for its task to end; the port is free afterwards.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // The task was aborted: a JoinError (cancelled) is the expected outcome.
            let _ = task.await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn recv_opt(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut socket = Some(socket);
    let mut buf = [0u8; 2048];
    loop {
        let next = shared.next_expiry();
        tokio::select! {
            r = recv_opt(socket.as_deref(), &mut buf) => match r {
                Ok((n, from)) => {
                    if let Some(s) = &socket {
                        handle(&shared, s, &buf[..n], from);
                    }
                }
                // ICMP errors from earlier replies surface here on Linux; keep serving.
                Err(e) => tracing::debug!(error = %e, "gateway emulator: recv"),
            },
            _ = sleep_opt(next) => shared.purge_expired(Instant::now()),
            cmd = commands.recv() => match cmd {
                None => return,
                Some(Command::SetMode(mode, ack)) => {
                    let mut result = Ok(());
                    if mode == Mode::Unreachable {
                        socket = None;
                    } else if socket.is_none() {
                        match UdpSocket::bind(local_addr).await {
                            Ok(s) => socket = Some(Arc::new(s)),
                            Err(e) => result = Err(e),
                        }
                    }
                    shared.state().mode = mode;
                    // The caller may have given up waiting; nothing to do then.
                    let _ = ack.send(result);
                }
            },
        }
    }
}

/// Serves one datagram.
fn handle(shared: &Arc<Shared>, socket: &Arc<UdpSocket>, packet: &[u8], from: SocketAddr) {
    shared.requests.send_modify(|c| *c += 1);
    let epoch = shared.epoch.sssoe();
    let mut out = [0u8; MAX_PACKET_LEN];
    let request = parse_request(packet);
    if let Ok(Request::Map(_)) = request {
        shared.map_requests.fetch_add(1, Ordering::Relaxed);
    }
    shared.purge_expired(Instant::now());
    let (mode, latency) = {
        let st = shared.state();
        (st.mode, st.config.latency)
    };
    let len = match (mode, request) {
        (Mode::Silent | Mode::Unreachable, _) => None,
        (_, Err(e)) => error_reply(&e, packet, epoch, &mut out),
        (Mode::Refuse(result), Ok(req)) => {
            let resp = match req {
                Request::ExternalAddress => Response::ExternalAddress {
                    result,
                    epoch,
                    address: shared.state().config.external_address,
                },
                Request::Map(m) => Response::Map(MapResponse {
                    protocol: m.protocol,
                    result,
                    epoch,
                    internal_port: m.internal_port,
                    external_port: 0,
                    lifetime: 0,
                }),
            };
            Some(encode_response(&resp, &mut out))
        }
        (Mode::Normal, Ok(Request::ExternalAddress)) => {
            let address = shared.state().config.external_address;
            Some(encode_response(
                &Response::ExternalAddress {
                    result: ResultCode::Success,
                    epoch,
                    address,
                },
                &mut out,
            ))
        }
        (Mode::Normal, Ok(Request::Map(m))) => {
            let reply = serve_map(shared, from.ip(), m, epoch);
            Some(encode_response(&Response::Map(reply), &mut out))
        }
    };
    let Some(len) = len else { return };
    let reply = out[..len].to_vec();
    if latency.is_zero() {
        send(socket, &reply, from);
    } else {
        // A Weak handle: a delayed reply must not keep a closed (Unreachable) socket alive.
        let weak: Weak<UdpSocket> = Arc::downgrade(socket);
        tokio::spawn(async move {
            tokio::time::sleep(latency).await;
            if let Some(s) = weak.upgrade() {
                send(&s, &reply, from);
            }
        });
    }
}

fn send(socket: &UdpSocket, reply: &[u8], to: SocketAddr) {
    // UDP send never waits for the peer; a full buffer or an ICMP error just loses the reply,
    // as it would on a real network.
    if let Err(e) = socket.try_send_to(reply, to) {
        tracing::debug!(error = %e, %to, "gateway emulator: reply not sent");
    }
}

/// Applies a mapping request to the table and builds the reply.
fn serve_map(shared: &Shared, peer: IpAddr, m: MapRequest, epoch: u32) -> MapResponse {
    let now = Instant::now();
    let mut reply = MapResponse {
        protocol: m.protocol,
        result: ResultCode::Success,
        epoch,
        internal_port: m.internal_port,
        external_port: 0,
        lifetime: 0,
    };
    let mut st = shared.state();
    let key = Key {
        peer,
        protocol: m.protocol,
        internal_port: m.internal_port,
    };

    if m.is_delete_all() {
        // C-36: this peer's mappings of this protocol only.
        st.table
            .retain(|k, _| !(k.peer == peer && k.protocol == m.protocol));
        drop(st);
        shared.bump();
        return reply;
    }
    if m.is_delete() {
        // C-33, C-34: the suggested port is ignored; deleting nothing is a success too.
        st.table.remove(&key);
        drop(st);
        shared.bump();
        return reply;
    }

    let lifetime = m.lifetime.min(st.config.max_lifetime);
    let expires_at = now + Duration::from_secs(u64::from(lifetime));
    let symmetric = m.internal_port == 0;

    // Renewal: same peer, protocol and internal port (for symmetric: the peer's symmetric
    // mapping of this protocol) keeps its external port.
    let existing = if symmetric {
        st.table
            .iter()
            .find(|(k, e)| k.peer == peer && k.protocol == m.protocol && e.symmetric)
            .map(|(k, _)| *k)
    } else {
        st.table.contains_key(&key).then_some(key)
    };
    if let Some(k) = existing {
        if let Some(e) = st.table.get_mut(&k) {
            e.expires_at = expires_at;
            reply.external_port = e.external_port;
            reply.lifetime = lifetime;
        }
        drop(st);
        shared.bump();
        return reply;
    }

    // The companion protocol of a port this peer already maps: same external port, no quota.
    let other = match m.protocol {
        Protocol::Udp => Protocol::Tcp,
        Protocol::Tcp => Protocol::Udp,
    };
    let companion = st
        .table
        .iter()
        .find(|(k, e)| {
            k.peer == peer
                && k.protocol == other
                && if symmetric {
                    e.symmetric
                } else {
                    k.internal_port == m.internal_port && !e.symmetric
                }
        })
        .map(|(k, e)| (k.internal_port, e.external_port));

    let (internal_port, external_port) = match companion {
        Some(found) => found,
        None => {
            let slots: std::collections::HashSet<u16> = st
                .table
                .keys()
                .filter(|k| k.peer == peer)
                .map(|k| k.internal_port)
                .collect();
            if slots.len() >= st.config.quota_per_peer {
                reply.result = ResultCode::OutOfResources;
                return reply;
            }
            let Some(port) = pick_port(&st, peer, m) else {
                reply.result = ResultCode::OutOfResources;
                return reply;
            };
            if symmetric {
                (port, port)
            } else {
                (m.internal_port, port)
            }
        }
    };
    st.table.insert(
        Key {
            peer,
            protocol: m.protocol,
            internal_port,
        },
        Entry {
            external_port,
            expires_at,
            symmetric,
        },
    );
    drop(st);
    shared.bump();
    tracing::debug!(%peer, protocol = %m.protocol, internal_port, external_port, lifetime,
        "gateway emulator: new mapping");
    reply.external_port = external_port;
    reply.lifetime = lifetime;
    reply
}

/// A free external port: the suggestion if honoured and free, else random in the range.
fn pick_port(st: &State, peer: IpAddr, m: MapRequest) -> Option<u16> {
    let used: std::collections::HashSet<u16> = st.table.values().map(|e| e.external_port).collect();
    let free = |p: u16| {
        !used.contains(&p)
            // A symmetric port P forwards to P: that key must be free too.
            && (m.internal_port != 0
                || !st.table.contains_key(&Key {
                    peer,
                    protocol: m.protocol,
                    internal_port: p,
                }))
    };
    let range = &st.config.port_range;
    if st.config.honour_suggested
        && m.suggested_external_port != 0
        && range.contains(&m.suggested_external_port)
        && free(m.suggested_external_port)
    {
        return Some(m.suggested_external_port);
    }
    // Random start, then the first free port cyclically: random while the range is sparse,
    // and it still finds the last free port of a nearly full range.
    let (lo, hi) = (*range.start(), *range.end());
    let size = u32::from(hi - lo) + 1;
    let start = fastrand::u32(0..size);
    (0..size)
        .map(|i| {
            // Fits: the offset is below `size`, so lo + offset <= hi.
            lo + ((start + i) % size) as u16
        })
        .find(|&p| free(p))
}
