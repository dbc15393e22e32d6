//! One API session of the emulated router: the listener's accept loop, TLS, login, reading
//! sentences, running each command and writing its replies (with the injected faults).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

use std::collections::HashMap;

use super::commands::{done, execute, route_row, Outcome};
use super::config::SimUser;
use super::state::{lock, take_armed, Shared};
use super::trap::SimTrap;
use double_natpmp_codec::routeros::wire::{decode_sentence, Command, Reply};

/// How long one reply may take to write before the session is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `/cancel` waits for a streaming command to stop.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval between rows of a streaming `/ip/route/check`.
const STREAM_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
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
        // Real routers have no idle timeout (docs/routeros-api.md §1.7), so the wait for the
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
    /// target (docs/routeros-api.md §1.6).
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
    crate::delay::sleep(d).await;
}
