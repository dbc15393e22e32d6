//! coturn (Debian's `turnserver`) as a real STUN server with RFC 5780, in a network namespace,
//! to test the STUN codec against a real peer (docs/stun.md §7).
//!
//! A test process cannot open sockets in another namespace without `setns(2)`, which std does
//! not offer, so a test runs itself again inside the namespace: [`in_namespace`] makes a
//! [`Netns`], re-executes the current test binary filtered to that one test under
//! `ip netns exec`, and fails if the copy fails; in the copy it returns the namespace's name.
//! There [`Coturn::start`] adds the lab addresses to the namespace's loopback, starts
//! turnserver, and waits until it answers a Binding Request; [`exchange`] is a blocking STUN
//! transaction with RFC 8489's retransmissions. Dropping the [`Coturn`] kills the one process
//! it started; dropping the outer [`Netns`] removes the namespace and anything left in it.
//!
//! For the namespace lab ([`Lab`]), [`LabCoturn`] starts coturn in the lab's internet host from
//! outside, so the daemon's probes cross both NAT layers to reach it.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use double_natpmp_codec::stun::{
    decode_message, encode_binding_request, ChangeRequest, Message, Retransmission, TransactionId,
};

use crate::lab::{which, Host, Lab, Netns, INET_IP};

/// coturn's primary listening IP.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// coturn's second listening IP (RFC 5780 only).
pub const ALT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// The address the test's own sockets bind.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
/// coturn's listening port (on every listening IP).
pub const PORT: u16 = 3478;
/// coturn's alternate port (on every listening IP, RFC 5780 only).
pub const ALT_PORT: u16 = 3479;

/// Set in the copy of a test that [`in_namespace`] runs inside the namespace: its name.
const INSIDE_ENV: &str = "DNP_STUN_LAB_NETNS";
/// How long coturn may take to answer its first Binding Request.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Whether coturn does RFC 5780.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoturnMode {
    /// Two listening IPs, both ports, and the `rfc5780` line (docs/stun.md §7).
    Rfc5780,
    /// One listening IP and port, no `rfc5780` line: a plain RFC 8489 server.
    Plain,
}

/// Whether this process may run the coturn lab: root, `ip` and `turnserver`. Under CI=true a
/// missing piece fails the test (`skip`), otherwise it is skipped loudly.
pub fn available(test: &str) -> bool {
    if !crate::is_root() {
        return crate::skip::skip(test, "needs root for network namespaces");
    }
    if which("ip").is_none() || which("turnserver").is_none() {
        return crate::skip::skip(
            test,
            "needs ip and turnserver (Debian's coturn; the test command installs it)",
        );
    }
    true
}

/// Runs test `name` of the module `module` (pass `module_path!()`) inside a fresh namespace.
/// Outside, returns `None` after the copy inside passed (or after a loud skip); inside, returns
/// `Some(namespace name)`: the caller then does the test's work.
pub fn in_namespace(module: &str, name: &str) -> Option<String> {
    if let Ok(ns) = std::env::var(INSIDE_ENV) {
        return Some(ns);
    }
    if !available(name) {
        return None;
    }
    let ns = Netns::new();
    // libtest names a test by its path without the crate: `stun_coturn::name`.
    let path = match module.split_once("::") {
        Some((_, rest)) => format!("{rest}::{name}"),
        None => name.to_owned(),
    };
    let exe = std::env::current_exe().expect("the test binary's own path");
    let out = ns
        .command(&["timeout", "120"])
        .arg(exe)
        .args([path.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE_ENV, &ns.name)
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- {path} inside {}:\n{stdout}{stderr}---", ns.name);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{path} failed inside {} ({}); its output is above",
        ns.name,
        out.status
    );
    None
}

/// A running coturn; dropping it kills that process.
pub struct Coturn {
    child: Child,
    mode: CoturnMode,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Coturn {
    /// Starts coturn in namespace `ns`, which must be this process's own (call it in the copy
    /// [`in_namespace`] runs): adds [`SERVER_IP`], [`ALT_IP`] and [`CLIENT_IP`] to its
    /// loopback, writes the config of docs/stun.md §7, and waits (bounded) until every
    /// listening address answers a Binding Request.
    pub fn start(ns: &str, mode: CoturnMode) -> Coturn {
        let own = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino());
        let named = std::fs::metadata(format!("/run/netns/{ns}")).map(|m| m.ino());
        assert!(
            matches!((&own, &named), (Ok(a), Ok(b)) if a == b),
            "Coturn::start must run inside namespace {ns} (see in_namespace)"
        );
        for ip in [SERVER_IP, ALT_IP, CLIENT_IP] {
            let out = Command::new("ip")
                .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
                .output()
                .expect("ip addr add");
            let already = String::from_utf8_lossy(&out.stderr).contains("File exists");
            assert!(out.status.success() || already, "ip addr add {ip}: {out:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("turn.conf");
        std::fs::write(&conf, config(mode)).expect("write turn.conf");
        let log = dir.path().join("turn.log");
        let child = spawn_turnserver(None, &conf, &log);
        let mut coturn = Coturn {
            child,
            mode,
            log,
            _dir: dir,
        };
        coturn.wait_ready();
        coturn
    }

    /// Where clients send: [`SERVER_IP`]:[`PORT`].
    pub fn primary(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(SERVER_IP), PORT)
    }

    /// The OTHER-ADDRESS coturn announces with RFC 5780: [`ALT_IP`]:[`ALT_PORT`].
    pub fn other(&self) -> Option<SocketAddr> {
        (self.mode == CoturnMode::Rfc5780).then_some(SocketAddr::new(IpAddr::V4(ALT_IP), ALT_PORT))
    }

    /// The PID of the turnserver process this started.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// coturn's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls every listening address with a Binding Request until each answers.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        let socket = client_socket();
        let poll = Retransmission {
            rto: Duration::from_millis(50),
            requests: 1,
            last_wait_factor: 2,
        };
        let mut targets = vec![self.primary()];
        targets.extend(self.other());
        for target in targets {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "turnserver exited ({status}) before answering:\n{}",
                        self.log()
                    );
                }
                let id = txid();
                let req = encode_binding_request(id, ChangeRequest::NONE, None);
                if exchange(&socket, &socket, target, &req, id, poll).is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "turnserver did not answer at {target} within {READY_WITHIN:?}:\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        // Only the process this started; the namespace's owner sweeps the rest.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(mode: CoturnMode) -> String {
    let mut c = format!("listening-ip={SERVER_IP}\n");
    if mode == CoturnMode::Rfc5780 {
        c += &format!("listening-ip={ALT_IP}\n");
    }
    c += &format!("listening-port={PORT}\n");
    if mode == CoturnMode::Rfc5780 {
        c += &format!("alt-listening-port={ALT_PORT}\n");
    }
    c += "no-tls\nno-dtls\nno-cli\nstun-only\n";
    if mode == CoturnMode::Rfc5780 {
        c += "rfc5780\n";
    }
    c
}

/// A UDP socket on [`CLIENT_IP`], any port.
pub fn client_socket() -> UdpSocket {
    UdpSocket::bind((CLIENT_IP, 0)).expect("bind a client socket on 10.99.0.3")
}

/// A random transaction id, from /dev/urandom (no random-number crate here); the clock and a
/// counter stand in if it cannot be read.
pub fn txid() -> TransactionId {
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut id = [0u8; 12];
    let read = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut id));
    if read.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        id[..8].copy_from_slice(&nanos.to_be_bytes());
        id[8..].copy_from_slice(&(COUNTER.fetch_add(1, Ordering::Relaxed) as u32).to_be_bytes());
    }
    TransactionId(id)
}

/// One STUN transaction: sends `request` (whose transaction id is `id`) from `from` to `to`
/// on `rule`'s schedule and returns the first answer to `id` that arrives on `listen`, with
/// its source; `None` when the schedule ends first. Other datagrams are ignored.
pub fn exchange(
    from: &UdpSocket,
    listen: &UdpSocket,
    to: SocketAddr,
    request: &[u8],
    id: TransactionId,
    rule: Retransmission,
) -> Option<(Message, SocketAddr)> {
    let mut buf = [0u8; 1500];
    for wait in rule.waits() {
        from.send_to(request, to).expect("send a Binding Request");
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            listen
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            let Ok((n, source)) = listen.recv_from(&mut buf) else {
                break;
            };
            match decode_message(&buf[..n]) {
                Ok(m) if m.is_response_to(id) => return Some((m, source)),
                _ => continue,
            }
        }
    }
    None
}

/// In the namespace lab (`tests/lab/reachability.rs`): coturn's second listening address on
/// the lab's internet host (RFC 5780 only), beside `lab::INET_IP`; its OTHER-ADDRESS is this
/// address at [`ALT_PORT`].
pub const LAB_ALT_IP: &str = "198.51.101.2";

/// How long (seconds) coturn may take to answer its first Binding Request.
const LAB_READY_WITHIN_S: u32 = 10;

/// Polls each `ip:port` given as an argument with a Binding Request (no attributes, RFC 8489
/// §6) until it answers, within the deadline given first; exits non-zero otherwise.
const LAB_READY: &str = r#"
import os, socket, sys, time
deadline = time.monotonic() + float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.1)
for target in sys.argv[2:]:
    ip, port = target.rsplit(':', 1)
    while True:
        tid = os.urandom(12)
        s.sendto(b'\x00\x01\x00\x00\x21\x12\xa4\x42' + tid, (ip, int(port)))
        try:
            while True:
                data, _ = s.recvfrom(1500)
                if data[8:20] == tid:
                    break
            break
        except socket.timeout:
            if time.monotonic() > deadline:
                sys.exit('no answer from ' + target)
print('ready', flush=True)
"#;

/// coturn running in a [`Lab`]'s internet host, started from outside with `ip netns exec`
/// (unlike [`Coturn`], which runs in the namespace its test re-runs in); dropping it kills that
/// one process (the lab sweeps the rest of its namespaces).
pub struct LabCoturn {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LabCoturn {
    /// Starts coturn in `lab`'s internet host on [`INET_IP`](crate::lab::INET_IP):[`PORT`]; with
    /// [`CoturnMode::Rfc5780`] also on [`LAB_ALT_IP`] (added to `inet0`) and [`ALT_PORT`], with the
    /// `rfc5780` line. Waits (bounded) until every listening address answers a Binding Request
    /// sent from inside the namespace.
    pub fn start(lab: &Lab, mode: CoturnMode) -> LabCoturn {
        let rfc5780 = mode == CoturnMode::Rfc5780;
        if rfc5780 {
            lab.sh(
                Host::Inet,
                &format!("ip addr add {LAB_ALT_IP}/24 dev inet0"),
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("turn.conf");
        let mut c = format!("listening-ip={INET_IP}\n");
        if rfc5780 {
            c += &format!("listening-ip={LAB_ALT_IP}\n");
        }
        c += &format!("listening-port={PORT}\n");
        if rfc5780 {
            c += &format!("alt-listening-port={ALT_PORT}\nrfc5780\n");
        }
        c += "no-tls\nno-dtls\nno-cli\nstun-only\n";
        c += &format!("pidfile={}\n", dir.path().join("turn.pid").display());
        std::fs::write(&conf, c).expect("write turn.conf");
        let log = dir.path().join("turn.log");
        let child = spawn_turnserver(Some(&lab.ns(Host::Inet)), &conf, &log);
        let coturn = LabCoturn {
            child,
            log,
            _dir: dir,
        };
        let mut targets = vec![format!("{INET_IP}:{PORT}")];
        if rfc5780 {
            targets.push(format!("{LAB_ALT_IP}:{ALT_PORT}"));
        }
        let within = LAB_READY_WITHIN_S.to_string();
        let mut argv = vec!["python3", "-c", LAB_READY, within.as_str()];
        argv.extend(targets.iter().map(String::as_str));
        let out = lab.exec(Host::Inet, &argv);
        assert!(
            out.status.success(),
            "coturn did not answer at {targets:?} within {LAB_READY_WITHIN_S} s: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            coturn.log()
        );
        coturn
    }

    /// What STUN_SERVERS names for it: `198.51.101.1:3478`.
    pub fn server(&self) -> String {
        format!("{INET_IP}:{PORT}")
    }

    /// coturn's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LabCoturn {
    fn drop(&mut self) {
        // Only the process this started; the lab sweeps its namespaces.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts turnserver with `conf`, its log going to `log`; inside namespace `netns` when given
/// (`ip netns exec` execs turnserver, so the child is coturn itself).
fn spawn_turnserver(netns: Option<&str>, conf: &std::path::Path, log: &std::path::Path) -> Child {
    let turnserver = which("turnserver").expect("turnserver is not installed");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(turnserver);
            c
        }
        None => Command::new(turnserver),
    };
    cmd.args([
        "-c",
        conf.to_str().unwrap_or_default(),
        "--log-file",
        "stdout",
    ])
    .stdin(Stdio::null())
    .stdout(File::create(log).expect("turn.log"))
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn turnserver")
}
