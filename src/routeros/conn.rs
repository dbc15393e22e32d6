//! One RouterOS API connection: connect, log in, run one command at a time.
//!
//! A [`Connector`] holds the settings ([`ApiConfig`]) and the prepared TLS client, and makes
//! [`Connection`]s. A connection runs one tagged command at a time and collects its replies up
//! to the `!done` (docs/routeros-api.md §1.2). Anything unexpected on the wire (a framing error, an
//! unknown reply word, a reply with a foreign tag, `!fatal`, a timeout, a dropped future) poisons
//! the connection: [`Connection::is_broken`] then says so and the pool never reuses it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::error::RouterError;
use super::tls::{TlsClient, TlsMode};
use double_natpmp_codec::routeros::wire::{Command, Reply, ReplyKind, SentenceDecoder};

/// How much room a read asks the socket for at least.
const READ_CHUNK: usize = 4096;

/// The API password. `Debug` and `Display` print `***` so it never reaches a log or an error.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself, for the login command only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Connection settings for the RouterOS API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `host:port`, e.g. `192.168.88.1:8728`.
    pub address: String,
    /// The API user.
    pub user: String,
    /// The API user's password.
    pub password: Password,
    /// Plain or api-ssl.
    pub tls: TlsMode,
    /// Limit for the TCP connect and the TLS handshake together.
    pub connect_timeout: Duration,
    /// Limit for one command (login included), from the first byte sent to the `!done`.
    pub command_timeout: Duration,
}

impl ApiConfig {
    /// Settings with plain TCP and 5 s connect and command timeouts.
    pub fn new(
        address: impl Into<String>,
        user: impl Into<String>,
        password: Password,
    ) -> ApiConfig {
        ApiConfig {
            address: address.into(),
            user: user.into(),
            password,
            tls: TlsMode::Plain,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
        }
    }
}

/// The replies to one command, up to and including its `!done`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The `!re` rows, in order.
    pub rows: Vec<Reply>,
    /// The `!trap`s, in order (usually none or one).
    pub traps: Vec<Reply>,
    /// The `!done` sentence (`=ret=` for `add`).
    pub done: Reply,
    /// Whether the router said `!empty` (RouterOS 7.18+, a print that matched nothing).
    pub empty: bool,
}

impl Response {
    /// The `=ret=` of the `!done`, if any.
    pub fn ret(&self) -> Option<&str> {
        self.done.get("ret")
    }
}

/// A byte stream the API runs over: TCP or TLS over TCP.
trait ApiStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ApiStream for T {}

/// Makes logged-in [`Connection`]s from one [`ApiConfig`].
#[derive(Clone)]
pub struct Connector {
    cfg: Arc<ApiConfig>,
    tls: Option<Arc<TlsClient>>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("cfg", &self.cfg)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    /// Prepares the connector: reads the CA file and builds the TLS client if TLS is on.
    /// Fails with [`RouterError::Connection`] when the TLS settings cannot be used.
    pub fn new(cfg: ApiConfig) -> Result<Connector, RouterError> {
        let tls = match &cfg.tls {
            TlsMode::Plain => None,
            mode => Some(Arc::new(TlsClient::new(mode, &cfg.address)?)),
        };
        Ok(Connector {
            cfg: Arc::new(cfg),
            tls,
        })
    }

    /// The settings.
    pub fn config(&self) -> &ApiConfig {
        &self.cfg
    }

    /// Connects (TCP, then TLS if configured) within `connect_timeout` and logs in within
    /// `command_timeout`.
    pub async fn connect(&self) -> Result<Connection, RouterError> {
        let cfg = &self.cfg;
        let started = Instant::now();
        let stream: Box<dyn ApiStream> =
            match tokio::time::timeout(cfg.connect_timeout, self.open()).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(RouterError::Timeout {
                        address: cfg.address.clone(),
                        what: "connect".into(),
                        after: cfg.connect_timeout,
                    })
                }
            };
        let mut conn = Connection {
            stream,
            buf: Vec::with_capacity(4096),
            decoder: SentenceDecoder::default(),
            next_tag: 1,
            poisoned: false,
            in_flight: false,
            address: cfg.address.clone(),
            command_timeout: cfg.command_timeout,
        };
        conn.login(&cfg.user, &cfg.password).await?;
        tracing::debug!(address = %cfg.address, elapsed = ?started.elapsed(), tls = self.tls.is_some(), "RouterOS API connected and logged in");
        Ok(conn)
    }

    async fn open(&self) -> Result<Box<dyn ApiStream>, RouterError> {
        let address = &self.cfg.address;
        let tcp =
            TcpStream::connect(address.as_str())
                .await
                .map_err(|e| RouterError::Connection {
                    address: address.clone(),
                    message: format!("cannot connect: {e}"),
                })?;
        // Commands are small and answered one at a time; do not let Nagle delay them.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(tls) => Ok(Box::new(tls.handshake(tcp, address).await?)),
        }
    }
}

/// One logged-in API connection. Runs one command at a time.
pub struct Connection {
    stream: Box<dyn ApiStream>,
    buf: Vec<u8>,
    /// Where the reply sentence in `buf` was read up to: each read resumes there.
    decoder: SentenceDecoder,
    next_tag: u64,
    poisoned: bool,
    in_flight: bool,
    address: String,
    command_timeout: Duration,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .field("broken", &self.is_broken())
            .finish()
    }
}

impl Connection {
    /// True when the connection must not be used again: a protocol error, a timeout, a
    /// `!fatal`, a closed socket, or a command whose future was dropped half-way.
    pub fn is_broken(&self) -> bool {
        self.poisoned || self.in_flight
    }

    /// The API address this connection talks to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Without waiting: has the router closed this idle connection or sent something
    /// unasked? Either makes it unusable (it is then poisoned). Used by the pool on recycle.
    pub async fn check_idle(&mut self) -> bool {
        if self.is_broken() {
            return false;
        }
        let mut byte = [0u8; 64];
        // Poll the read exactly once: an EOF, a reset or stray bytes that are already there
        // show up; "pending" means idle and healthy. (A zero `timeout` would do the same but
        // waits for the timer's next 1 ms tick on every checkout.) Dropping a pending read is
        // cancel-safe: nothing was consumed.
        let read = self.stream.read(&mut byte);
        let mut read = std::pin::pin!(read);
        let polled = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::future::Future::poll(read.as_mut(), cx) {
                std::task::Poll::Pending => None,
                std::task::Poll::Ready(r) => Some(r),
            })
        })
        .await;
        match polled {
            None => true,
            Some(Ok(0)) | Some(Err(_)) => {
                self.poisoned = true;
                false
            }
            Some(Ok(_)) => {
                tracing::debug!(address = %self.address, "RouterOS API sent data on an idle connection; dropping it");
                self.poisoned = true;
                false
            }
        }
    }

    /// Runs `cmd` (its `.tag` is set here) and collects the replies up to `!done`.
    ///
    /// `!trap`s come back inside the [`Response`], not as errors: the caller maps them (see
    /// `api`). Errors here are [`RouterError::Connection`], [`RouterError::Fatal`] and
    /// [`RouterError::Timeout`], and they poison the connection.
    pub async fn run(&mut self, cmd: Command) -> Result<Response, RouterError> {
        let mut rows = Vec::new();
        let mut resp = self.run_each(cmd, &mut |row| rows.push(row)).await?;
        resp.rows = rows;
        Ok(resp)
    }

    /// Like [`Connection::run`], but hands each `!re` row to `each` as it arrives, so a
    /// listing of thousands of rules is never held whole; the [`Response`]'s `rows` stay
    /// empty.
    pub async fn run_each(
        &mut self,
        cmd: Command,
        each: &mut (dyn FnMut(Reply) + Send),
    ) -> Result<Response, RouterError> {
        let path = cmd.path.clone();
        let started = Instant::now();
        let mut rows = 0usize;
        let mut counted = |row: Reply| {
            rows += 1;
            each(row);
        };
        let result = self.run_inner(cmd, &path, &mut counted).await;
        match &result {
            Ok(r) => tracing::debug!(
                address = %self.address, command = %path, elapsed = ?started.elapsed(),
                rows, traps = r.traps.len(), "RouterOS API command"
            ),
            Err(e) => tracing::debug!(
                address = %self.address, command = %path, elapsed = ?started.elapsed(),
                error = %e, "RouterOS API command failed"
            ),
        }
        result
    }

    async fn run_inner(
        &mut self,
        cmd: Command,
        path: &str,
        each: &mut (dyn FnMut(Reply) + Send),
    ) -> Result<Response, RouterError> {
        if self.is_broken() {
            return Err(self.conn_error("connection is no longer usable after an earlier error"));
        }
        let tag = self.next_tag.to_string();
        self.next_tag += 1;
        let cmd = cmd.tagged(tag.clone());
        let mut out = Vec::with_capacity(128);
        cmd.encode(&mut out);
        // Set before the first await: if the caller drops this future half-way, the connection
        // stays marked and is never reused (its replies would answer the next command).
        self.in_flight = true;
        let deadline = Instant::now() + self.command_timeout;
        let outcome = match tokio::time::timeout_at(deadline, self.exchange(&out, &tag, each)).await
        {
            Ok(r) => r,
            Err(_) => Err(RouterError::Timeout {
                address: self.address.clone(),
                what: format!("command {path}"),
                after: self.command_timeout,
            }),
        };
        match outcome {
            Ok(resp) => {
                self.in_flight = false;
                Ok(resp)
            }
            Err(e) => {
                self.poisoned = true;
                self.in_flight = false;
                Err(e)
            }
        }
    }

    async fn exchange(
        &mut self,
        out: &[u8],
        tag: &str,
        each: &mut (dyn FnMut(Reply) + Send),
    ) -> Result<Response, RouterError> {
        self.stream
            .write_all(out)
            .await
            .map_err(|e| self.conn_error(&format!("write failed: {e}")))?;
        self.stream
            .flush()
            .await
            .map_err(|e| self.conn_error(&format!("write failed: {e}")))?;
        let mut traps = Vec::new();
        let mut empty = false;
        loop {
            // A listing of 10,000 rules arrives faster than it is read: give the other tasks
            // of this thread their turn every so often (each row takes a unit of the task's
            // budget), so requests are not held up behind it.
            tokio::task::coop::consume_budget().await;
            let reply = self.read_reply().await?;
            if reply.kind == ReplyKind::Fatal {
                // `!fatal` is about the connection, not one command: no tag check.
                let reason = if reply.bare.is_empty() {
                    reply.get("message").unwrap_or("no reason given").to_owned()
                } else {
                    reply.bare.join(" ")
                };
                return Err(RouterError::Fatal {
                    address: self.address.clone(),
                    reason,
                });
            }
            if reply.tag.as_deref() != Some(tag) {
                return Err(self.conn_error(&format!(
                    "reply {} carries tag {:?} while waiting for tag {tag:?}; the connection is out of step",
                    reply.kind.word(),
                    reply.tag
                )));
            }
            match reply.kind {
                ReplyKind::Re => each(reply),
                ReplyKind::Trap => traps.push(reply),
                ReplyKind::Empty => empty = true,
                ReplyKind::Done => {
                    return Ok(Response {
                        rows: Vec::new(),
                        traps,
                        done: reply,
                        empty,
                    })
                }
                // Handled above.
                ReplyKind::Fatal => {}
            }
        }
    }

    /// Reads the next non-empty reply sentence. A sentence over the wire's size cap
    /// ([`MAX_SENTENCE_LEN`](double_natpmp_codec::routeros::wire::MAX_SENTENCE_LEN)) is a protocol error, found as soon
    /// as its length is announced; the caller then poisons the connection.
    async fn read_reply(&mut self) -> Result<Reply, RouterError> {
        loop {
            match self.decoder.decode(&self.buf) {
                Ok(Some((words, used))) => {
                    self.buf.drain(..used);
                    if words.is_empty() {
                        // docs/routeros-api.md §1.2: empty sentences are ignored.
                        continue;
                    }
                    return Reply::from_words(&words)
                        .map_err(|e| self.conn_error(&format!("protocol error: {e}")));
                }
                Ok(None) => {}
                Err(e) => return Err(self.conn_error(&format!("protocol error: {e}"))),
            }
            // Straight into the buffer's spare room: a 4 KiB array here would live in every
            // command's future (the pool holds one per caller, waiting ones included).
            self.buf.reserve(READ_CHUNK);
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| self.conn_error(&format!("read failed: {e}")))?;
            if n == 0 {
                return Err(
                    self.conn_error("the router closed the connection in the middle of a reply")
                );
            }
        }
    }

    /// Plain login (RouterOS 6.43+ and v7, docs/routeros-api.md §1.4).
    async fn login(&mut self, user: &str, password: &Password) -> Result<(), RouterError> {
        // Never log these attributes: the password is one of them.
        let cmd = Command::new("/login")
            .attr("name", user)
            .attr("password", password.expose());
        let address = self.address.clone();
        let refused = |message: String| RouterError::LoginRefused {
            user: user.to_owned(),
            address: address.clone(),
            message,
        };
        let resp = match self.run(cmd).await {
            Ok(r) => r,
            Err(RouterError::Timeout { address, after, .. }) => {
                return Err(RouterError::Timeout {
                    address,
                    what: "login".into(),
                    after,
                })
            }
            // A router that ends the session in answer to the login refuses it.
            Err(RouterError::Fatal { reason, .. }) => {
                return Err(refused(format!(
                    "the router closed the session (!fatal): {reason}"
                )))
            }
            Err(e) => return Err(e),
        };
        if let Some(trap) = resp.traps.first() {
            self.poisoned = true;
            let msg = trap.get("message").unwrap_or("login refused").to_owned();
            return Err(refused(msg));
        }
        if resp.ret().is_some() {
            self.poisoned = true;
            return Err(refused(
                "the router is older than RouterOS 6.43 and asks for the challenge login, which is not supported; upgrade RouterOS".into(),
            ));
        }
        Ok(())
    }

    fn conn_error(&self, message: &str) -> RouterError {
        RouterError::Connection {
            address: self.address.clone(),
            message: message.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
