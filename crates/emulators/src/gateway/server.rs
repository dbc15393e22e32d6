//! The emulated gateway's socket loop and the [`Gateway`] handle tests hold: one tokio task
//! reads datagrams, applies them to the [`MappingTable`] and answers; the handle switches modes,
//! inspects the table and waits for events.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::counter::Counter;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{GatewayConfig, Mode};
use super::table::{GatewayMapping, MappingTable};
use double_natpmp_codec::natpmp::epoch::Epoch;
use double_natpmp_codec::natpmp::wire::{
    encode_response, error_reply, parse_request, MapResponse, Request, Response, ResultCode,
    MAX_PACKET_LEN,
};

#[derive(Debug)]
struct State {
    config: GatewayConfig,
    mode: Mode,
    table: MappingTable,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    epoch: Epoch,
    requests: Counter,
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
        let removed = self.state().table.purge_expired(now);
        if removed > 0 {
            tracing::debug!(removed, "gateway emulator: mappings expired");
            self.bump();
        }
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.state().table.next_expiry()
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
        let origin = std::time::Instant::now()
            .checked_sub(config.up_for)
            .unwrap_or_else(std::time::Instant::now);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                config,
                mode: Mode::Normal,
                table: MappingTable::default(),
            }),
            epoch: Epoch::starting_at(origin),
            requests: Counter::new(),
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
        self.shared.state().table.snapshot(Instant::now())
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
        self.shared.requests.get()
    }

    /// Well-formed mapping requests (op 1 or 2) received so far.
    pub fn map_requests(&self) -> u64 {
        self.shared.map_requests.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` datagrams were received; `false` if `timeout` passed first.
    pub async fn wait_for_requests(&self, n: u64, timeout: Duration) -> bool {
        self.shared.requests.wait_for(n, timeout).await
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
    shared.requests.bump();
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
            let (reply, changed) = {
                let st = &mut *shared.state();
                st.table
                    .serve_map(&st.config, from.ip(), m, epoch, Instant::now())
            };
            if changed {
                shared.bump();
            }
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
            crate::delay::sleep(latency).await;
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
