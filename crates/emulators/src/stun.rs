//! A STUN server emulator (RFC 8489 Binding, with RFC 5780's NAT behaviour discovery), for the
//! reachability self-test's tests and `double-natpmp demo` (docs/stun.md §6).
//!
//! Like coturn with two listening addresses it binds four UDP sockets: a primary and an
//! alternate IP (127.0.0.1 and 127.0.0.2 by default: all of 127.0.0.0/8 is loopback on Linux),
//! each on a primary and an alternate port. A Binding Request gets a success response with
//! XOR-MAPPED-ADDRESS (the request's source), RESPONSE-ORIGIN (the answering socket) and, with
//! [`StunConfig::rfc5780`], OTHER-ADDRESS (the socket with the other IP and the other port
//! than the one asked). CHANGE-REQUEST picks the answering socket (other IP and/or port);
//! RESPONSE-PORT sends the answer to the request's source IP at that port.
//!
//! Without RFC 5780 it answers like coturn 4.6.1 without its `rfc5780` line (docs/stun.md §7):
//! no OTHER-ADDRESS, a request carrying CHANGE-REQUEST gets error 420 (Unknown Attribute) from
//! the socket asked, and RESPONSE-PORT is ignored (the answer goes to the request's source).
//! Answering 420 rather than ignoring CHANGE-REQUEST is what coturn does and what RFC 8489
//! §6.3.1 asks of a server that does not know a comprehension-required attribute; it lets a
//! client say "inbound not tested" at once instead of after a full retransmission schedule.
//! Unlike coturn, the 420 names the attribute in UNKNOWN-ATTRIBUTES, as RFC 8489 §14.13 asks.
//!
//! Requests with other unknown comprehension-required attributes get 420 too; anything that is
//! not a Binding Request (responses, indications, other methods, garbage) is counted and
//! dropped.
//!
//! On loopback there is no NAT between a client and the server, so the demo gives the server a
//! [`NatPath`] ([`StunServer::start_behind`]): the address the internet would see a client's
//! packet come from (the reflexive address it answers) and where a packet to an address of the
//! internet side would arrive (its answer is sent there, or dropped when nothing forwards it).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::counter::Counter;
use double_natpmp_codec::stun::{
    binding_error, binding_success, decode_message, encode_message, kind, Attribute, Class,
    Message, Method,
};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// How the emulated STUN server behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StunConfig {
    /// The primary IP, where clients send their first request.
    pub primary_ip: IpAddr,
    /// The alternate IP (RFC 5780 needs two).
    pub alternate_ip: IpAddr,
    /// The primary and alternate port, bound on both IPs; `None` picks a free pair.
    pub ports: Option<(u16, u16)>,
    /// `true`: RFC 5780 (OTHER-ADDRESS, CHANGE-REQUEST, RESPONSE-PORT honoured); `false`:
    /// like coturn without `rfc5780`: CHANGE-REQUEST gets error 420, RESPONSE-PORT is ignored.
    pub rfc5780: bool,
    /// The SOFTWARE attribute of every answer, if any.
    pub software: Option<String>,
}

impl Default for StunConfig {
    /// RFC 5780 on 127.0.0.1 and 127.0.0.2, free ports.
    fn default() -> Self {
        StunConfig {
            primary_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            alternate_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            ports: None,
            rfc5780: true,
            software: Some("double-natpmp STUN emulator".to_owned()),
        }
    }
}

/// Both NAT layers between a client and the internet, as the demo emulates them on loopback.
pub trait NatPath: Send + Sync + 'static {
    /// The address the internet sees a packet from `source` to `destination` come from.
    fn outbound(&self, source: SocketAddr, destination: SocketAddr) -> SocketAddr;
    /// Where a packet from `source` on the internet to `destination` arrives; `None` when
    /// nothing forwards it.
    fn inbound(&self, source: SocketAddr, destination: SocketAddr) -> Option<SocketAddr>;
}

impl<T: NatPath> NatPath for Arc<T> {
    fn outbound(&self, source: SocketAddr, destination: SocketAddr) -> SocketAddr {
        T::outbound(self, source, destination)
    }
    fn inbound(&self, source: SocketAddr, destination: SocketAddr) -> Option<SocketAddr> {
        T::inbound(self, source, destination)
    }
}

/// No NAT: the internet sees the source, and a packet arrives where it was sent.
struct NoNat;

impl NatPath for NoNat {
    fn outbound(&self, source: SocketAddr, _destination: SocketAddr) -> SocketAddr {
        source
    }
    fn inbound(&self, _source: SocketAddr, destination: SocketAddr) -> Option<SocketAddr> {
        Some(destination)
    }
}

/// Attempts at finding a port free on both IPs when [`StunConfig::ports`] is `None`.
const PORT_PICKS: usize = 32;

/// The four sockets, indexed `[ip][port]`: 0 primary, 1 alternate.
type Sockets = [[UdpSocket; 2]; 2];

#[derive(Debug)]
struct Shared {
    sockets: Sockets,
    addrs: [[SocketAddr; 2]; 2],
    config: StunConfig,
    requests: Counter,
    path: Box<dyn NatPath>,
}

impl std::fmt::Debug for dyn NatPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatPath")
    }
}

/// A running STUN server emulator. Dropping it stops its tasks.
#[derive(Debug)]
pub struct StunServer {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl StunServer {
    /// Binds the four sockets and serves Binding Requests on each from a tokio task.
    pub async fn start(config: StunConfig) -> io::Result<StunServer> {
        StunServer::start_behind(config, NoNat).await
    }

    /// Like [`StunServer::start`], with the clients behind `path` (see the module docs).
    pub async fn start_behind(config: StunConfig, path: impl NatPath) -> io::Result<StunServer> {
        let ips = [config.primary_ip, config.alternate_ip];
        if ips[0] == ips[1] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "STUN emulator: the primary and alternate IP must differ",
            ));
        }
        let sockets = match config.ports {
            Some((p, a)) => bind_pair(ips, p, a).await?,
            None => pick_ports(ips).await?,
        };
        let addr = |s: &UdpSocket| s.local_addr();
        let addrs = [
            [addr(&sockets[0][0])?, addr(&sockets[0][1])?],
            [addr(&sockets[1][0])?, addr(&sockets[1][1])?],
        ];
        let shared = Arc::new(Shared {
            sockets,
            addrs,
            config,
            requests: Counter::new(),
            path: Box::new(path),
        });
        let mut tasks = Vec::with_capacity(4);
        for ip in 0..2 {
            for port in 0..2 {
                tasks.push(tokio::spawn(serve(shared.clone(), ip, port)));
            }
        }
        tracing::debug!(primary = %addrs[0][0], other = %addrs[1][1], "STUN emulator listening");
        Ok(StunServer { shared, tasks })
    }

    /// Primary IP, primary port: where a client sends its requests.
    pub fn primary(&self) -> SocketAddr {
        self.shared.addrs[0][0]
    }

    /// Alternate IP, alternate port: the OTHER-ADDRESS of an answer from [`Self::primary`].
    pub fn other(&self) -> SocketAddr {
        self.shared.addrs[1][1]
    }

    /// The four bound addresses: (primary IP, primary port), (primary IP, alternate port),
    /// (alternate IP, primary port), (alternate IP, alternate port).
    pub fn local_addrs(&self) -> [SocketAddr; 4] {
        let a = self.shared.addrs;
        [a[0][0], a[0][1], a[1][0], a[1][1]]
    }

    /// Datagrams received so far on any of the four sockets, whatever they held.
    pub fn requests_received(&self) -> u64 {
        self.shared.requests.get()
    }

    /// Waits until at least `n` datagrams were received; `false` if `timeout` passed first.
    pub async fn wait_for_requests(&self, n: u64, timeout: Duration) -> bool {
        self.shared.requests.wait_for(n, timeout).await
    }

    /// Stops the server and waits for its tasks to end; the ports are free afterwards.
    pub async fn shutdown(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            // The task was aborted: a JoinError (cancelled) is the expected outcome.
            let _ = task.await;
        }
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn bind_pair(ips: [IpAddr; 2], primary: u16, alternate: u16) -> io::Result<Sockets> {
    let bind = |ip, port| UdpSocket::bind(SocketAddr::new(ip, port));
    Ok([
        [bind(ips[0], primary).await?, bind(ips[0], alternate).await?],
        [bind(ips[1], primary).await?, bind(ips[1], alternate).await?],
    ])
}

/// Binds the primary IP on port 0 twice and tries the same two ports on the alternate IP,
/// again while one of them is taken there.
async fn pick_ports(ips: [IpAddr; 2]) -> io::Result<Sockets> {
    let mut last = None;
    for _ in 0..PORT_PICKS {
        let p0 = UdpSocket::bind(SocketAddr::new(ips[0], 0)).await?;
        let p1 = UdpSocket::bind(SocketAddr::new(ips[0], 0)).await?;
        let (primary, alternate) = (p0.local_addr()?.port(), p1.local_addr()?.port());
        let a0 = UdpSocket::bind(SocketAddr::new(ips[1], primary)).await;
        let a1 = UdpSocket::bind(SocketAddr::new(ips[1], alternate)).await;
        match (a0, a1) {
            (Ok(a0), Ok(a1)) => return Ok([[p0, p1], [a0, a1]]),
            (Err(e), _) | (_, Err(e)) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("STUN emulator: no free port pair")))
}

async fn serve(shared: Arc<Shared>, ip: usize, port: usize) {
    let mut buf = [0u8; 2048];
    loop {
        match shared.sockets[ip][port].recv_from(&mut buf).await {
            Ok((n, from)) => {
                shared.requests.bump();
                answer(&shared, ip, port, &buf[..n], from);
            }
            // ICMP errors from earlier answers surface here on Linux; keep serving.
            Err(e) => tracing::debug!(error = %e, "STUN emulator: recv"),
        }
    }
}

/// Serves one datagram received on socket `[ip][port]` from `from`.
fn answer(shared: &Shared, ip: usize, port: usize, datagram: &[u8], from: SocketAddr) {
    let request = match decode_message(datagram) {
        Ok(m) if m.class == Class::Request && m.method == Method::BINDING => m,
        Ok(_) => return,
        Err(e) => {
            tracing::debug!(error = %e, %from, "STUN emulator: not a STUN message");
            return;
        }
    };
    let id = request.transaction_id;
    // Where the internet sees the request come from.
    let from = shared.path.outbound(from, shared.addrs[ip][port]);
    let mut unknown = request.unknown_required.clone();
    let rfc5780 = shared.config.rfc5780;
    if !rfc5780 && request.change_request().is_some() {
        unknown.push(kind::CHANGE_REQUEST);
    }
    let (reply, from_ip, from_port, to) = if unknown.is_empty() {
        let change = request.change_request().unwrap_or_default();
        let (rip, rport) = (ip ^ usize::from(change.ip), port ^ usize::from(change.port));
        let to = match request.response_port().filter(|_| rfc5780) {
            Some(p) => SocketAddr::new(from.ip(), p),
            None => from,
        };
        let other = shared
            .config
            .rfc5780
            .then(|| shared.addrs[ip ^ 1][port ^ 1]);
        let reply = binding_success(id, from, shared.addrs[rip][rport], other);
        (reply, rip, rport, to)
    } else {
        // RFC 8489 §6.3.1.1: 420 with the attributes not understood; from where it was asked.
        let reply =
            binding_error(id, 420, "Unknown Attribute").with(Attribute::UnknownAttributes(unknown));
        (reply, ip, port, from)
    };
    let Some(to) = shared.path.inbound(shared.addrs[from_ip][from_port], to) else {
        tracing::debug!(%to, "STUN emulator: nothing forwards the answer's destination");
        return;
    };
    let reply = with_software(reply, &shared.config);
    let bytes = encode_message(&reply, true);
    // UDP send never waits for the peer; a full buffer or an ICMP error just loses the reply,
    // as it would on a real network.
    if let Err(e) = shared.sockets[from_ip][from_port].try_send_to(&bytes, to) {
        tracing::debug!(error = %e, %to, "STUN emulator: answer not sent");
    }
}

fn with_software(reply: Message, config: &StunConfig) -> Message {
    match &config.software {
        Some(s) => reply.with(Attribute::Software(s.clone())),
        None => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use double_natpmp_codec::stun::{encode_binding_request, ChangeRequest, TransactionId};

    const WAIT: Duration = Duration::from_secs(5);

    fn txid() -> TransactionId {
        let mut id = [0u8; 12];
        fastrand::fill(&mut id);
        TransactionId(id)
    }

    async fn client() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.expect("client socket")
    }

    /// Receives the answer to `id` on `socket`, with the address it came from.
    async fn answer_to(socket: &UdpSocket, id: TransactionId) -> (Message, SocketAddr) {
        let mut buf = [0u8; 1500];
        let (n, from) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("recv");
        let m = decode_message(&buf[..n]).expect("a STUN message");
        assert!(m.is_response_to(id), "{m:?}");
        (m, from)
    }

    #[tokio::test]
    async fn binding_request_is_answered_with_the_source_origin_and_other_address() {
        let server = StunServer::start(StunConfig::default())
            .await
            .expect("start");
        let c = client().await;
        let id = txid();
        let req = encode_binding_request(id, ChangeRequest::NONE, None);
        c.send_to(&req, server.primary()).await.expect("send");
        let (m, from) = answer_to(&c, id).await;
        assert_eq!(m.class, Class::Success);
        assert_eq!(from, server.primary());
        assert_eq!(m.xor_mapped_address(), c.local_addr().ok());
        assert_eq!(m.response_origin(), Some(server.primary()));
        assert_eq!(m.other_address(), Some(server.other()));
        assert_eq!(server.other().ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(m.software(), Some("double-natpmp STUN emulator"));
        assert!(m.has_fingerprint());
        assert_eq!(server.requests_received(), 1);
    }

    #[tokio::test]
    async fn change_request_and_response_port_answer_from_the_other_address_to_the_other_socket() {
        let server = StunServer::start(StunConfig::default())
            .await
            .expect("start");
        let (asking, listening) = (client().await, client().await);
        let port = listening.local_addr().expect("addr").port();
        let id = txid();
        let req = encode_binding_request(id, ChangeRequest::IP_AND_PORT, Some(port));
        asking.send_to(&req, server.primary()).await.expect("send");
        let (m, from) = answer_to(&listening, id).await;
        assert_eq!(from, server.other());
        assert_eq!(m.response_origin(), Some(server.other()));
        assert_eq!(m.xor_mapped_address(), asking.local_addr().ok());
    }

    #[tokio::test]
    async fn change_port_alone_answers_from_the_same_ip_at_the_alternate_port() {
        let server = StunServer::start(StunConfig::default())
            .await
            .expect("start");
        let c = client().await;
        let id = txid();
        let change = ChangeRequest {
            ip: false,
            port: true,
        };
        c.send_to(&encode_binding_request(id, change, None), server.primary())
            .await
            .expect("send");
        let (_, from) = answer_to(&c, id).await;
        let [_, primary_ip_alt_port, ..] = server.local_addrs();
        assert_eq!(from, primary_ip_alt_port);
        assert_eq!(from.ip(), server.primary().ip());
        assert_eq!(from.port(), server.other().port());
    }

    #[tokio::test]
    async fn without_rfc5780_there_is_no_other_address_response_port_is_ignored_and_change_request_gets_420(
    ) {
        let config = StunConfig {
            rfc5780: false,
            software: None,
            ..StunConfig::default()
        };
        let server = StunServer::start(config).await.expect("start");
        let c = client().await;
        let plain = txid();
        c.send_to(
            &encode_binding_request(plain, ChangeRequest::NONE, None),
            server.primary(),
        )
        .await
        .expect("send");
        let (m, _) = answer_to(&c, plain).await;
        assert_eq!(m.class, Class::Success);
        assert_eq!(m.other_address(), None);
        assert_eq!(m.xor_mapped_address(), c.local_addr().ok());

        let (listening, redirected) = (client().await, txid());
        let port = listening.local_addr().expect("addr").port();
        c.send_to(
            &encode_binding_request(redirected, ChangeRequest::NONE, Some(port)),
            server.primary(),
        )
        .await
        .expect("send");
        let (m, _) = answer_to(&c, redirected).await;
        assert_eq!(
            m.class,
            Class::Success,
            "RESPONSE-PORT is ignored, as coturn does"
        );

        let changed = txid();
        c.send_to(
            &encode_binding_request(changed, ChangeRequest::IP_AND_PORT, None),
            server.primary(),
        )
        .await
        .expect("send");
        let (m, from) = answer_to(&c, changed).await;
        assert_eq!(
            from,
            server.primary(),
            "an error comes from where it was asked"
        );
        assert_eq!(m.class, Class::Error);
        assert_eq!(m.error_code().map(|e| e.code), Some(420));
        assert!(m
            .attributes
            .contains(&Attribute::UnknownAttributes(vec![kind::CHANGE_REQUEST])));
    }

    #[tokio::test]
    async fn garbage_is_counted_and_unanswered_and_shutdown_frees_the_ports() {
        let server = StunServer::start(StunConfig::default())
            .await
            .expect("start");
        let c = client().await;
        c.send_to(b"not stun at all", server.primary())
            .await
            .expect("send");
        assert!(server.wait_for_requests(1, WAIT).await);
        let mut buf = [0u8; 64];
        let silent = tokio::time::timeout(Duration::from_millis(100), c.recv_from(&mut buf)).await;
        assert!(silent.is_err(), "garbage must not be answered");
        let addrs = server.local_addrs();
        server.shutdown().await;
        for a in addrs {
            UdpSocket::bind(a).await.expect("port free after shutdown");
        }
    }

    #[tokio::test]
    async fn fixed_ports_are_bound_on_both_ips() {
        let first = StunServer::start(StunConfig::default())
            .await
            .expect("start");
        let (p, a) = (first.primary().port(), first.other().port());
        first.shutdown().await;
        let config = StunConfig {
            ports: Some((p, a)),
            ..StunConfig::default()
        };
        let server = StunServer::start(config)
            .await
            .expect("the freed pair binds again");
        let ports = server.local_addrs().map(|s| s.port());
        assert_eq!(ports, [p, a, p, a]);
    }
}
