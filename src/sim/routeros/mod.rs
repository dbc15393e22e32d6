//! A RouterOS API emulator that follows the real wire protocol and reply texts
//! (ROUTEROS_API.md §1, §2 and §5 "Emulator contract").
//!
//! [`RouterSim::start`] listens on a TCP port (api, or api-ssl when [`RouterSimConfig::tls`] is
//! set); each connection is its own task. Commands on one connection run one at a time, in
//! order; only `/ip/route/check` without `once` keeps running (streaming a row per second) until
//! `/cancel`. Tags are echoed as the second word of every reply sentence.
//!
//! Choices where the real behaviour is unknown (ROUTEROS_API.md "Unknowns"):
//! * a user without the `api` policy gets the bad-credentials trap, like a wrong password;
//! * a failed login leaves the connection open, so the client may retry;
//! * the pre-6.43 challenge login is not emulated: `/login` without a name is a failed login;
//! * `/ip/route/check` with no matching route answers `!re =status=unreachable`;
//! * `/cancel` of an unknown tag just answers `!done`;
//! * an interrupted connection: a command runs as soon as its sentence is complete, so a client
//!   that disconnects early still gets its command executed (at-least-once);
//! * `?<`/`?>` compare numbers numerically, `*HEX` ids by value, other text lexically; `?x=no`
//!   matches `x=false`;
//! * while [`RouterSim::set_hang`] is on, commands are read and counted but neither executed nor
//!   answered.

mod commands;
mod nft;
mod query;
pub mod schema;
mod table;

pub use commands::SimTrap;
pub use nft::NftMirror;
pub use table::SimNatRule;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use crate::routeros::wire::{decode_sentence, Command, Reply};
use commands::{done, execute, route_row, Outcome, RuleChange};
use table::NatTable;

/// How long one reply may take to write before the session is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `/cancel` waits for a streaming command to stop.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval between rows of a streaming `/ip/route/check`.
const STREAM_INTERVAL: Duration = Duration::from_secs(1);

/// A RouterOS user of the emulated router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimUser {
    /// Login name.
    pub name: String,
    /// Plain-text password.
    pub password: String,
    /// Group policies, e.g. `["read", "write", "api", "test"]`.
    pub policies: Vec<String>,
}

impl SimUser {
    /// A user with these policies.
    pub fn new(name: &str, password: &str, policies: &[&str]) -> SimUser {
        SimUser {
            name: name.to_owned(),
            password: password.to_owned(),
            policies: policies.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

/// A route `/ip/route/check` can find: `dst/prefix_len` via `gateway` on `interface`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRoute {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
    /// Outgoing interface.
    pub interface: String,
    /// Next hop.
    pub gateway: Ipv4Addr,
}

/// What the emulated router looks like.
#[derive(Clone, Debug)]
pub struct RouterSimConfig {
    /// Users that may log in. Default: `admin` / `admin` with read,write,api,test.
    pub users: Vec<SimUser>,
    /// Interface names `in-interface`/`out-interface` may name. Default: ether1, bridge, wg-proton.
    pub interfaces: Vec<String>,
    /// Routes for `/ip/route/check`. Default: 10.2.0.0/24 on wg-proton via 10.2.0.1, and
    /// 0.0.0.0/0 on ether1 (via 192.168.1.1).
    pub routes: Vec<SimRoute>,
    /// `/system/identity` name. Default `MikroTik`.
    pub identity: String,
    /// RouterOS version, e.g. `7.18.2 (stable)`; `!empty` is sent only from 7.18.
    pub version: String,
    /// Board name. Default `hAP ax2`.
    pub board: String,
    /// When set, connections speak TLS (api-ssl) with this server configuration.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// When set, dst-nat rules are mirrored into nftables in a namespace.
    pub nft_mirror: Option<NftMirror>,
    /// The RouterOS version whose command tree ([`schema`], e.g. `7.22.3`) decides which
    /// arguments a command takes: any other gets `unknown parameter <name>`, as on that
    /// RouterOS. Default: the newest version in the data (7.24); `None` checks nothing. Apart
    /// from `version` (the reported version string, which drives `!empty`), since the data
    /// starts at 7.19.6; [`RouterSim::start`] refuses a version the data does not have.
    pub command_tree: Option<String>,
}

impl Default for RouterSimConfig {
    fn default() -> Self {
        RouterSimConfig {
            users: vec![SimUser::new(
                "admin",
                "admin",
                &["read", "write", "api", "test"],
            )],
            interfaces: vec!["ether1".into(), "bridge".into(), "wg-proton".into()],
            routes: vec![
                SimRoute {
                    dst: Ipv4Addr::new(10, 2, 0, 0),
                    prefix_len: 24,
                    interface: "wg-proton".into(),
                    gateway: Ipv4Addr::new(10, 2, 0, 1),
                },
                SimRoute {
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix_len: 0,
                    interface: "ether1".into(),
                    gateway: Ipv4Addr::new(192, 168, 1, 1),
                },
            ],
            identity: "MikroTik".into(),
            version: "7.18.2 (stable)".into(),
            board: "hAP ax2".into(),
            tls: None,
            nft_mirror: None,
            command_tree: schema::newest_version(),
        }
    }
}

/// Injected faults; see the setters on [`RouterSim`].
#[derive(Debug, Default)]
struct Faults {
    latency: Duration,
    trap_on_add: Option<String>,
    close_mid_reply: HashMap<String, u32>,
    cut_after_execute: HashMap<String, u32>,
    hang: bool,
    refuse_logins: bool,
    empty_sentence_before_reply: bool,
}

/// Consumes one armed "next" fault for `path`.
fn take_armed(armed: &mut HashMap<String, u32>, path: &str) -> bool {
    match armed.get_mut(path) {
        Some(n) if *n > 0 => {
            *n -= 1;
            if *n == 0 {
                armed.remove(path);
            }
            true
        }
        _ => false,
    }
}

/// State shared by the handle, the listener and every session.
pub(crate) struct Shared {
    config: RouterSimConfig,
    version: Mutex<String>,
    table: Mutex<NatTable>,
    faults: Mutex<Faults>,
    started: Instant,
    commands: AtomicU64,
    per_path: Mutex<HashMap<String, u64>>,
    logins: AtomicU64,
    login_attempts: AtomicU64,
    sessions: AtomicUsize,
    /// Session and streaming tasks; aborted on `go_down` and drop.
    tasks: Mutex<JoinSet<()>>,
    /// The nftables mirror, when configured.
    nft: Option<nft::Mirror>,
}

/// Locks a std mutex, ignoring poisoning: every critical section here leaves the data
/// consistent, so a panicked holder (only possible in tests) does not make it unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn mirror(&self, changes: Vec<RuleChange>) {
        if let Some(m) = &self.nft {
            m.send(changes);
        }
    }
}

/// A running emulated router. Dropping it stops the listener and every session.
pub struct RouterSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RouterSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RouterSim {
    /// Listens on `bind` (use `127.0.0.1:0` in tests) and serves until dropped.
    pub async fn start(config: RouterSimConfig, bind: SocketAddr) -> io::Result<RouterSim> {
        if let Some(v) = &config.command_tree {
            schema::command_tree()
                .and_then(|t| t.at(v).map(|_| ()))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let nft = match &config.nft_mirror {
            Some(m) => Some(nft::Mirror::start(m.clone())?),
            None => None,
        };
        let shared = Arc::new(Shared {
            nft,
            version: Mutex::new(config.version.clone()),
            config,
            table: Mutex::new(NatTable::new()),
            faults: Mutex::new(Faults::default()),
            started: Instant::now(),
            commands: AtomicU64::new(0),
            per_path: Mutex::new(HashMap::new()),
            logins: AtomicU64::new(0),
            login_attempts: AtomicU64::new(0),
            sessions: AtomicUsize::new(0),
            tasks: Mutex::new(JoinSet::new()),
        });
        let accept = tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(RouterSim {
            shared,
            addr,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Command sentences received after login (all paths, `/cancel` and `/quit` included).
    pub fn command_count(&self) -> u64 {
        self.shared.commands.load(Ordering::SeqCst)
    }

    /// Command sentences with this path received after login, e.g. `/ip/firewall/nat/add`.
    pub fn command_count_for(&self, path: &str) -> u64 {
        lock(&self.shared.per_path).get(path).copied().unwrap_or(0)
    }

    /// Successful logins.
    pub fn login_count(&self) -> u64 {
        self.shared.logins.load(Ordering::SeqCst)
    }

    /// `/login` commands received, successful or not.
    pub fn login_attempt_count(&self) -> u64 {
        self.shared.login_attempts.load(Ordering::SeqCst)
    }

    /// Connections open right now (logged in or not).
    pub fn open_sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// Zeroes the command and login counters (not `open_sessions`).
    pub fn reset_counters(&self) {
        self.shared.commands.store(0, Ordering::SeqCst);
        self.shared.logins.store(0, Ordering::SeqCst);
        self.shared.login_attempts.store(0, Ordering::SeqCst);
        lock(&self.shared.per_path).clear();
    }

    /// The NAT table in rule order.
    pub fn nat_rules(&self) -> Vec<SimNatRule> {
        lock(&self.shared.table).rows().to_vec()
    }

    /// Adds a rule as if the admin typed it (no validation; pass `("dynamic", "true")` for a
    /// dynamic rule, `("invalid", "true")` for an invalid one). Returns its id.
    pub fn insert_nat_rule(&self, fields: &[(&str, &str)]) -> String {
        let id = lock(&self.shared.table).insert_raw(fields);
        if let Some(rule) = self.nat_rules().into_iter().find(|r| r.id == id) {
            self.shared.mirror(vec![RuleChange::Added(rule)]);
        }
        id
    }

    /// Deletes a rule behind the client's back. False when there was no such rule.
    pub fn delete_nat_rule(&self, id: &str) -> bool {
        let removed = lock(&self.shared.table).remove_raw(id);
        match removed {
            Some(rule) => {
                self.shared.mirror(vec![RuleChange::Removed(rule)]);
                true
            }
            None => false,
        }
    }

    /// Delay before every reply (the command itself runs at once).
    pub fn set_latency(&self, d: Duration) {
        lock(&self.shared.faults).latency = d;
    }

    /// While `Some`, every `/ip/firewall/nat/add` fails with `!trap =message=<m>` + `!done`
    /// and adds nothing.
    pub fn set_trap_on_add(&self, message: Option<String>) {
        lock(&self.shared.faults).trap_on_add = message;
    }

    /// The next command with this path (on any connection) runs, then its reply is cut off
    /// half way and the connection closed. Calling it twice arms two commands.
    pub fn close_mid_reply_next(&self, path: &str) {
        *lock(&self.shared.faults)
            .close_mid_reply
            .entry(path.to_owned())
            .or_default() += 1;
    }

    /// The next command with this path (on any connection) runs, then the connection closes
    /// before any reply. Calling it twice arms two commands.
    pub fn cut_after_execute_next(&self, path: &str) {
        *lock(&self.shared.faults)
            .cut_after_execute
            .entry(path.to_owned())
            .or_default() += 1;
    }

    /// While on, commands are read (and counted) but neither run nor answered; connections
    /// stay open.
    pub fn set_hang(&self, on: bool) {
        lock(&self.shared.faults).hang = on;
    }

    /// While on, every login gets the bad-credentials trap.
    pub fn set_refuse_logins(&self, on: bool) {
        lock(&self.shared.faults).refuse_logins = on;
    }

    /// While on, an empty sentence (a lone 0x00) precedes every reply sentence; clients must
    /// skip it (GO `TestRunEmptySentence`).
    pub fn set_empty_sentence_before_reply(&self, on: bool) {
        lock(&self.shared.faults).empty_sentence_before_reply = on;
    }

    /// Changes the reported version; `!empty` follows it (on from 7.18).
    pub fn set_version(&self, version: &str) {
        *lock(&self.shared.version) = version.to_owned();
    }

    /// Resolves once every NAT change so far has been applied to the nftables mirror
    /// (at once when there is no mirror).
    pub async fn nft_synced(&self) {
        if let Some(m) = &self.shared.nft {
            m.synced().await;
        }
    }

    /// Closes the listener and every session; new connections are refused until
    /// [`RouterSim::come_up`].
    pub async fn go_down(&self) {
        let accept = lock(&self.accept).take();
        if let Some(h) = accept {
            h.abort();
            let _ = h.await;
        }
        let mut tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        tasks.shutdown().await;
    }

    /// Listens again on the same address after [`RouterSim::go_down`]. The NAT table survives.
    pub async fn come_up(&self) -> io::Result<()> {
        if lock(&self.accept).is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await?;
        let h = tokio::spawn(accept_loop(self.shared.clone(), listener));
        let mut slot = lock(&self.accept);
        if slot.is_some() {
            // A concurrent come_up won; ours is surplus.
            h.abort();
        } else {
            *slot = Some(h);
        }
        Ok(())
    }

    /// Stops everything and waits until every connection is closed.
    pub async fn shutdown(self) {
        self.go_down().await;
    }
}

impl Drop for RouterSim {
    fn drop(&mut self) {
        if let Some(h) = lock(&self.accept).take() {
            h.abort();
        }
        lock(&self.shared.tasks).abort_all();
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                let mut tasks = lock(&shared.tasks);
                // Reap finished sessions so the set does not grow without bound.
                while tasks.try_join_next().is_some() {}
                tasks.spawn(session(shared.clone(), sock, peer));
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!("RouterOS emulator cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts a connection as open for as long as it lives.
struct SessionGuard(Arc<Shared>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn session(shared: Arc<Shared>, sock: TcpStream, peer: SocketAddr) {
    shared.sessions.fetch_add(1, Ordering::SeqCst);
    let _guard = SessionGuard(shared.clone());
    match shared.config.tls.clone() {
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            match timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                Ok(Ok(tls)) => serve(shared, tls, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, "emulator TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "emulator TLS handshake timed out"),
            }
        }
        None => serve(shared, sock, peer).await,
    }
}

type Writer<S> = Arc<tokio::sync::Mutex<WriteHalf<S>>>;

async fn write_bytes<S: AsyncWrite>(w: &Writer<S>, bytes: &[u8]) -> io::Result<()> {
    let mut g = w.lock().await;
    match timeout(WRITE_TIMEOUT, async {
        g.write_all(bytes).await?;
        g.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client does not read its replies",
        )),
    }
}

fn encode(replies: &[Reply], empty_first: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    for r in replies {
        if empty_first {
            buf.push(0);
        }
        r.encode(&mut buf);
    }
    buf
}

/// A running streaming command.
struct StreamHandle {
    /// Send (or drop) to stop it.
    cancel: oneshot::Sender<()>,
    /// Resolves when it has stopped writing.
    exited: oneshot::Receiver<()>,
}

enum Next {
    Continue,
    Close,
}

struct Session<S> {
    shared: Arc<Shared>,
    writer: Writer<S>,
    user: Option<SimUser>,
    /// Streaming commands by tag. Dropping the map stops them.
    streams: HashMap<Option<String>, StreamHandle>,
    peer: SocketAddr,
}

async fn serve<S>(shared: Arc<Shared>, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let mut s = Session {
        shared,
        writer: Arc::new(tokio::sync::Mutex::new(wr)),
        user: None,
        streams: HashMap::new(),
        peer,
    };
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        loop {
            match decode_sentence(&buf) {
                Ok(Some((words, used))) => {
                    buf.drain(..used);
                    if words.is_empty() {
                        continue; // Empty sentences are ignored (§1.2).
                    }
                    match s.handle(words).await {
                        Ok(Next::Continue) => {}
                        Ok(Next::Close) => return s.close().await,
                        Err(e) => {
                            tracing::debug!(peer = %s.peer, "emulator session ends: {e}");
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // §1.1: a control byte (or an absurd word) ends the session with !fatal.
                    let _ = s.send(&[Reply::fatal(e.to_string())]).await;
                    return s.close().await;
                }
            }
        }
        // Real routers have no idle timeout (ROUTEROS_API.md §1.7), so the wait for the
        // client's next command is deliberately unbounded.
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    async fn send(&self, replies: &[Reply]) -> io::Result<()> {
        let empty_first = lock(&self.shared.faults).empty_sentence_before_reply;
        write_bytes(&self.writer, &encode(replies, empty_first)).await
    }

    async fn close(&mut self) {
        self.streams.clear();
        let mut g = self.writer.lock().await;
        let _ = timeout(WRITE_TIMEOUT, g.shutdown()).await;
    }

    fn count(&self, path: &str) {
        self.shared.commands.fetch_add(1, Ordering::SeqCst);
        *lock(&self.shared.per_path)
            .entry(path.to_owned())
            .or_default() += 1;
    }

    async fn handle(&mut self, words: Vec<Vec<u8>>) -> io::Result<Next> {
        let cmd = match Command::from_words(&words) {
            Ok(c) => c,
            Err(_) if self.user.is_none() => return self.fatal("not logged in").await,
            Err(_) => {
                // A sentence whose first word is not a command.
                self.count(&String::from_utf8_lossy(&words[0]));
                self.send(&SimTrap::NoSuchCommand.replies(&None)).await?;
                return Ok(Next::Continue);
            }
        };
        let logged_in = self.user.is_some();
        if !logged_in && cmd.path != "/login" && cmd.path != "/quit" {
            return self.fatal("not logged in").await;
        }
        if logged_in {
            self.count(&cmd.path);
        }
        let (hang, latency) = {
            let f = lock(&self.shared.faults);
            (f.hang, f.latency)
        };
        if hang {
            return Ok(Next::Continue);
        }
        match cmd.path.as_str() {
            "/quit" => {
                sleep(latency).await;
                self.fatal("session terminated on request").await
            }
            "/cancel" => {
                let replies = self.cancel(&cmd).await;
                sleep(latency).await;
                self.send(&replies).await?;
                Ok(Next::Continue)
            }
            "/login" => {
                let replies = self.login(&cmd);
                self.deliver(&cmd.path, replies, latency).await
            }
            _ => {
                let Some(user) = self.user.clone() else {
                    return self.fatal("not logged in").await;
                };
                let mut changes = Vec::new();
                let outcome = execute(&self.shared, &user, &cmd, &mut changes);
                if !changes.is_empty() {
                    self.shared.mirror(changes);
                    // Like a router, whose rule is in force when `!done` arrives: the reply
                    // waits until the nftables mirror has applied the change.
                    if let Some(m) = &self.shared.nft {
                        m.synced().await;
                    }
                }
                match outcome {
                    Outcome::Replies(r) => self.deliver(&cmd.path, r, latency).await,
                    Outcome::StreamRouteCheck(dst) => {
                        sleep(latency).await;
                        self.start_stream(cmd.tag.clone(), dst);
                        Ok(Next::Continue)
                    }
                }
            }
        }
    }

    async fn fatal(&mut self, reason: &str) -> io::Result<Next> {
        self.send(&[Reply::fatal(reason)]).await?;
        Ok(Next::Close)
    }

    /// Sends the replies of an executed command, applying the armed faults.
    async fn deliver(
        &mut self,
        path: &str,
        replies: Vec<Reply>,
        latency: Duration,
    ) -> io::Result<Next> {
        let (cut, mid, empty_first) = {
            let mut f = lock(&self.shared.faults);
            let cut = take_armed(&mut f.cut_after_execute, path);
            let mid = !cut && take_armed(&mut f.close_mid_reply, path);
            (cut, mid, f.empty_sentence_before_reply)
        };
        if cut {
            return Ok(Next::Close);
        }
        sleep(latency).await;
        let bytes = encode(&replies, empty_first);
        if mid {
            let half = (bytes.len() / 2).max(1);
            write_bytes(&self.writer, &bytes[..half]).await?;
            return Ok(Next::Close);
        }
        write_bytes(&self.writer, &bytes).await?;
        Ok(Next::Continue)
    }

    fn login(&mut self, cmd: &Command) -> Vec<Reply> {
        self.shared.login_attempts.fetch_add(1, Ordering::SeqCst);
        let refuse = lock(&self.shared.faults).refuse_logins;
        let (name, password) = (cmd.get("name"), cmd.get("password"));
        let user = self.shared.config.users.iter().find(|u| {
            Some(u.name.as_str()) == name
                && Some(u.password.as_str()) == password
                && u.policies.iter().any(|p| p == "api")
        });
        match user {
            Some(u) if !refuse => {
                self.user = Some(u.clone());
                self.shared.logins.fetch_add(1, Ordering::SeqCst);
                vec![done(&cmd.tag)]
            }
            _ => SimTrap::BadLogin.replies(&cmd.tag),
        }
    }

    /// `/cancel [=tag=T]`: trap for each target, `!done` for the cancel, `!done` for each
    /// target (ROUTEROS_API.md §1.6).
    async fn cancel(&mut self, cmd: &Command) -> Vec<Reply> {
        let targets: Vec<(Option<String>, StreamHandle)> = match cmd.get("tag") {
            Some(t) => {
                let key = Some(t.to_owned());
                self.streams
                    .remove(&key)
                    .map(|h| (key, h))
                    .into_iter()
                    .collect()
            }
            None => self.streams.drain().collect(),
        };
        let mut tags = Vec::new();
        for (tag, h) in targets {
            let _ = h.cancel.send(());
            let _ = timeout(CANCEL_TIMEOUT, h.exited).await;
            tags.push(tag);
        }
        let mut replies: Vec<Reply> = tags.iter().map(|t| SimTrap::Interrupted.trap(t)).collect();
        replies.push(done(&cmd.tag));
        replies.extend(tags.iter().map(done));
        replies
    }

    fn start_stream(&mut self, tag: Option<String>, dst: Ipv4Addr) {
        let (cancel_tx, mut cancel_rx) = oneshot::channel::<()>();
        let (exit_tx, exit_rx) = oneshot::channel::<()>();
        let shared = self.shared.clone();
        let writer = self.writer.clone();
        let row_tag = tag.clone();
        lock(&self.shared.tasks).spawn(async move {
            let _exit = exit_tx; // dropped when the task ends: wakes `/cancel`
            loop {
                let empty_first = lock(&shared.faults).empty_sentence_before_reply;
                let row = route_row(&shared, dst, &row_tag);
                if write_bytes(&writer, &encode(&[row], empty_first))
                    .await
                    .is_err()
                {
                    break;
                }
                tokio::select! {
                    _ = &mut cancel_rx => break,
                    _ = tokio::time::sleep(STREAM_INTERVAL) => {}
                }
            }
        });
        // Reusing a running tag (undefined on real routers) silently stops the old stream.
        self.streams.insert(
            tag,
            StreamHandle {
                cancel: cancel_tx,
                exited: exit_rx,
            },
        );
    }
}

async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests;
