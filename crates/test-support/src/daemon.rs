//! The whole daemon in-process (`daemon::start`) against both emulators on loopback, with the
//! status settings a test asks for, plus what the status tests need to talk to it: a NAT-PMP
//! client on 127.0.0.x, an HTTP client (hyper, a fresh connection per request), and the
//! Prometheus project's own OpenMetrics parser (the `prometheus-client` Python package in the
//! test command's `.venv`) to read `/metrics`.
//!
//! Network safety: everything is bound to and sent to loopback only.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use double_natpmp::daemon::{self, DaemonError, Running};
use double_natpmp::DaemonArgs;
use double_natpmp::MappingEvent;
use double_natpmp::ShutdownTrigger;
use double_natpmp_codec::natpmp::wire::{
    encode_request, parse_response, MapRequest, MapResponse, Protocol, Request, Response,
    MAP_REQUEST_LEN, MAX_PACKET_LEN,
};
use double_natpmp_emulators::gateway::{Gateway, GatewayConfig};
use double_natpmp_emulators::routeros::{RouterSim, RouterSimConfig, SimNatRule, SimRoute};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request as HttpRequest, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UdpSocket;

/// The router's VPN interface in these tests.
pub const IFACE: &str = "wg-proton";

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {limit:?}"),
    }
}

#[derive(clap::Parser)]
struct Flags {
    #[command(flatten)]
    args: DaemonArgs,
}

/// Both emulators and the daemon.
pub struct Lab {
    /// Shared, so that an [`EmulatedPath`](double_natpmp_emulators::path::EmulatedPath) can
    /// read both tables.
    pub router: Arc<RouterSim>,
    pub gateway: Arc<Gateway>,
    pub daemon: Running,
    pub stop: Option<ShutdownTrigger>,
}

/// The router emulator's settings: the loopback gateway is "on the VPN".
pub fn router_config() -> RouterSimConfig {
    let mut cfg = RouterSimConfig::default();
    cfg.routes.push(SimRoute {
        dst: Ipv4Addr::new(127, 0, 0, 0),
        prefix_len: 8,
        interface: IFACE.into(),
        gateway: Ipv4Addr::LOCALHOST,
    });
    cfg
}

/// A gateway emulator with a quota large enough not to matter.
pub fn gateway_config() -> GatewayConfig {
    GatewayConfig {
        quota_per_peer: 1000,
        ..GatewayConfig::default()
    }
}

/// Starts the emulators and the daemon with `flags` (`name`, `value`) on top of the usual ones
/// (STATUS_ADDR on 127.0.0.1:0 unless given).
pub async fn start(gateway: GatewayConfig, flags: &[(&str, String)]) -> Lab {
    match try_start(router_config(), gateway, flags).await {
        Ok(lab) => lab,
        Err((_, _, e)) => panic!("daemon did not start: {e}"),
    }
}

/// The API token the forwards tests use (16 characters or more, as API_TOKEN requires).
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A daemon with the forwards API on ([`TOKEN`]) for the clients 127.0.0.0/24, against the
/// emulators with `gateway`.
pub async fn start_with_token(gateway: GatewayConfig) -> Lab {
    start(
        gateway,
        &[
            ("api-token", TOKEN.into()),
            ("allowed-clients", "127.0.0.0/24".into()),
        ],
    )
    .await
}

/// [`start`] with the router emulator's settings of the test's own; a failed start gives the
/// error, with the emulators (which outlive the daemon's attempt).
pub async fn try_start(
    router: RouterSimConfig,
    gateway: GatewayConfig,
    flags: &[(&str, String)],
) -> Result<Lab, (Arc<RouterSim>, Arc<Gateway>, DaemonError)> {
    let any: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    let router = Arc::new(
        RouterSim::start(router, any)
            .await
            .expect("router emulator"),
    );
    let gateway = Arc::new(
        Gateway::start(gateway, any)
            .await
            .expect("gateway emulator"),
    );
    let mut argv: Vec<String> = vec!["double-natpmp".into()];
    let mut flag = |name: &str, value: String| {
        // A test's own value of a flag replaces the usual one.
        if let Some(at) = argv.iter().position(|a| *a == format!("--{name}")) {
            argv[at + 1] = value;
        } else {
            argv.push(format!("--{name}"));
            argv.push(value);
        }
    };
    flag("vpn-gateway", gateway.local_addr().to_string());
    flag("mikrotik-api-address", router.local_addr().to_string());
    flag("mikrotik-api-password", "admin".into());
    flag("mikrotik-api-timeout", "1s".into());
    flag("mikrotik-in-interface", IFACE.into());
    flag("listen-addr", "127.0.0.1:0".into());
    flag("allowed-clients", "127.0.0.0/8".into());
    flag("upstream-timeout", "1s".into());
    flag("shutdown-timeout", "5s".into());
    if !flags.iter().any(|(n, _)| *n == "status-addr") {
        flag("status-addr", "127.0.0.1:0".into());
    }
    for (name, value) in flags {
        flag(name, value.clone());
    }
    let args = match Flags::try_parse_from(&argv) {
        Ok(f) => f.args,
        Err(e) => panic!("test flags do not parse: {e}"),
    };
    let (stop, stopped) = ShutdownTrigger::new();
    let daemon = match within(
        Duration::from_secs(10),
        "daemon start",
        daemon::start(args, stopped),
    )
    .await
    {
        Ok(d) => d,
        Err(e) => return Err((router, gateway, e)),
    };
    Ok(Lab {
        router,
        gateway,
        daemon,
        stop: Some(stop),
    })
}

impl Lab {
    /// The status server's address.
    pub fn status(&self) -> SocketAddr {
        self.daemon.status.expect("the status server runs")
    }

    /// Stops the daemon and waits until it removed its mappings.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.trigger();
        }
        let done = &mut self.daemon.done;
        match within(Duration::from_secs(15), "daemon stop", done).await {
            Ok(Ok(())) => {}
            other => panic!("daemon stopped badly: {other:?}"),
        }
    }

    /// Our rules on the router.
    pub fn our_rules(&self) -> Vec<SimNatRule> {
        our_sim_rules(&self.router)
    }
}

/// Our rules on a router emulator (comment with our marker).
pub fn our_sim_rules(router: &RouterSim) -> Vec<SimNatRule> {
    router
        .nat_rules()
        .into_iter()
        .filter(|r| {
            r.fields
                .get("comment")
                .is_some_and(|c| c.starts_with("double-natpmp:"))
        })
        .collect()
}

/// Waits (bounded) for the first event that `pick` accepts.
pub async fn wait_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<MappingEvent>,
    limit: Duration,
    what: &str,
    mut pick: impl FnMut(&MappingEvent) -> Option<T>,
) -> T {
    within(limit, what, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(v) = pick(&e) {
                        return v;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("{what}: events ended: {e}"),
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// NAT-PMP

/// A NAT-PMP client socket on 127.0.0.`host`.
pub struct Client {
    sock: UdpSocket,
    daemon: SocketAddr,
}

impl Client {
    pub async fn on(host: u8, daemon: SocketAddr) -> Client {
        let sock = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, host), 0))
            .await
            .expect("client socket");
        Client { sock, daemon }
    }

    /// One request; retransmits after 250 ms doubling (RFC 6886 §3.1) until answered.
    pub async fn ask(&self, req: MapRequest) -> MapResponse {
        let mut buf = [0u8; MAP_REQUEST_LEN];
        let len = encode_request(&Request::Map(req), &mut buf);
        let mut wait = Duration::from_millis(250);
        for _ in 0..6 {
            self.sock
                .send_to(&buf[..len], self.daemon)
                .await
                .expect("send");
            let deadline = tokio::time::Instant::now() + wait;
            let mut rbuf = [0u8; MAX_PACKET_LEN];
            loop {
                let Ok(got) =
                    tokio::time::timeout_at(deadline, self.sock.recv_from(&mut rbuf)).await
                else {
                    break;
                };
                let (n, from) = got.expect("receive");
                if from != self.daemon {
                    continue;
                }
                if let Ok(Response::Map(m)) = parse_response(&rbuf[..n]) {
                    if m.protocol == req.protocol && m.internal_port == req.internal_port {
                        return m;
                    }
                }
            }
            wait *= 2;
        }
        panic!("no reply to {req:?}");
    }
}

/// A mapping request.
pub fn map(protocol: Protocol, internal: u16, lifetime: u32) -> MapRequest {
    MapRequest {
        protocol,
        internal_port: internal,
        suggested_external_port: 0,
        lifetime,
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One HTTP/1.1 request on a fresh connection: (status, headers, body).
pub async fn http(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, hyper::HeaderMap, String) {
    within(Duration::from_secs(10), path, async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let driver = tokio::spawn(conn);
        let mut req = HttpRequest::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
            .expect("request");
        let res = send.send_request(req).await.expect("send request");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        driver.abort();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    })
    .await
}

/// GET `path` and parse its JSON; the status must be `want`.
pub async fn get_json(addr: SocketAddr, path: &str, want: StatusCode) -> serde_json::Value {
    let (status, headers, body) = http(addr, Method::GET, path, &[], None).await;
    assert_eq!(status, want, "GET {path}: {body}");
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    assert!(
        content_type.is_some_and(|t| t.starts_with("application/json")),
        "GET {path}: {content_type:?}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

// ---------------------------------------------------------------------------------------------
// /metrics, read by the Prometheus project's OpenMetrics parser

/// The Python with the `prometheus_client` package: the test command's `.venv`.
pub fn metrics_parser() -> Option<std::path::PathBuf> {
    let python = crate::repo_root().join(".venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([family.name, family.type, s.name, s.labels, s.value])
print(json.dumps(out))
"#;

/// One sample: (family, type, sample name, labels, value).
pub type Sample = (String, String, String, BTreeMap<String, String>, f64);

/// Parses an OpenMetrics exposition strictly; panics with the parser's complaint.
pub fn parse_metrics(python: &Path, text: &str) -> Vec<Sample> {
    use std::io::Write;
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser JSON")
}

/// The value of the sample `name` whose labels include `labels` (0 when there is none).
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(_, _, n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.4)
        .sum()
}
