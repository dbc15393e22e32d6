//! Mapping benchmark: how close a new mapping and a renewal come to their network floor, how
//! throughput scales with concurrent clients, and what the daemon costs in memory and disk.
//!
//! The daemon runs as its own process (the `double-natpmp` binary cargo built next to this
//! bench, configured through the environment), so its resident memory is its own. The RouterOS
//! API emulator and the NAT-PMP gateway emulator run inside this process on 127.0.0.1:0, each
//! with an injected reply latency: one router RTT per API command, one upstream RTT per NAT-PMP
//! exchange. Clients are UDP sockets on 127.0.0.x in this process. Nothing leaves loopback.
//!
//! Floors: a new mapping needs one RouterOS command and one upstream exchange, so it cannot take
//! less than router RTT + upstream RTT; a renewal needs one upstream exchange. With a pool of P
//! RouterOS connections, new mappings cannot complete faster than P / router RTT per second.
//!
//! Run:
//! - `cargo bench --bench mapping` — the full run (release build), 0/0 and 5/20 ms;
//! - `cargo bench --bench mapping -- --quick` (or `BENCH_QUICK=1`) — a short run;
//! - `cargo bench --bench mapping -- --rtt 2/10 --rtt 5/20 --pool 8` — chosen scenarios;
//! - `BENCH_DAEMON=path/to/double-natpmp cargo bench --bench mapping` — measure another build
//!   of the daemon (e.g. the static musl binary) instead of the one cargo built;
//! - `cargo test --bench mapping` (and `cargo test --all-targets`) run the smoke mode: cargo
//!   passes no `--bench` flag then, so the bench runs a few seconds against the debug binary.
//!
//! The table goes to stdout and to `<target dir>/bench-mapping.md` (`bench-mapping-quick.md` for
//! short runs). The exit status is non-zero when the benchmark cannot complete (the daemon does
//! not start or answer, a mapping fails); a missed target is reported, never a failure.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use double_natpmp::natpmp::wire::{
    encode_request, parse_response, MapRequest, Protocol, Request, Response, ResultCode,
    MAP_REQUEST_LEN, MAX_PACKET_LEN,
};
use double_natpmp::routeros::api::RouterApi;
use double_natpmp::routeros::conn::{ApiConfig, Password};
use double_natpmp::routeros::wire::{decode_sentence, encode_sentence, Command};
use double_natpmp::sim::gateway::{Gateway, GatewayConfig};
use double_natpmp::sim::routeros::{RouterSim, RouterSimConfig, SimRoute};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The daemon binary cargo built for this bench (release profile under `cargo bench`).
const DAEMON_EXE: &str = env!("CARGO_BIN_EXE_double-natpmp");
/// Environment variable naming another daemon binary to measure (e.g. the static musl build).
const DAEMON_ENV: &str = "BENCH_DAEMON";

/// The daemon binary to run: `BENCH_DAEMON` when set, else the one cargo built.
fn daemon_exe() -> String {
    std::env::var(DAEMON_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DAEMON_EXE.to_owned())
}
/// Environment variable with extra `NAME=value` settings for the daemon, separated by
/// whitespace (e.g. `MAX_INFLIGHT=1024 LOG_LEVEL=DEBUG`); they override the bench's own.
const DAEMON_ENV_EXTRA: &str = "BENCH_DAEMON_ENV";

/// The `BENCH_DAEMON_ENV` settings.
fn extra_daemon_env() -> Vec<(String, String)> {
    std::env::var(DAEMON_ENV_EXTRA)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Lifetime every client asks for: long enough that nothing expires during a run.
const LIFETIME: u32 = 3600;
/// How long one client exchange may take, retransmissions included (the daemon answers a
/// failure within its own upstream and router timeouts, well inside this).
const EXCHANGE_BUDGET: Duration = Duration::from_secs(10);
/// First retransmission interval, doubling (RFC 6886 §3.1).
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// How long the daemon may take to start answering.
const START_BUDGET: Duration = Duration::from_secs(30);
/// Concurrent clients used to fill the table for the memory measurement.
const FILL_CLIENTS: usize = 64;
/// Concurrency levels of the throughput measurement.
const CONCURRENCY: [usize; 3] = [1, 16, 256];

/// Why the benchmark could not complete.
#[derive(Debug, Error)]
enum BenchError {
    #[error("cannot set up the benchmark: {0}")]
    Setup(String),
    #[error("the daemon ({exe}) exited before answering ({status}); its log: {log}")]
    DaemonExited {
        exe: String,
        status: String,
        log: String,
    },
    #[error("the daemon did not answer NAT-PMP on {listen} within {budget:?}; its log: {log}")]
    DaemonSilent {
        listen: SocketAddr,
        budget: Duration,
        log: String,
    },
    #[error("no reply to a mapping request for internal port {port} within {budget:?}")]
    NoReply { port: u16, budget: Duration },
    #[error("the mapping for internal port {port} failed: result {result} ({why})")]
    MappingFailed {
        port: u16,
        result: u16,
        why: &'static str,
    },
    #[error("the RouterOS emulator did not answer the baseline command: {0}")]
    Baseline(String),
    #[error("network error on the client side: {0}")]
    Io(#[from] std::io::Error),
    #[error("a client task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// How long and what to run.
#[derive(Clone, Debug)]
struct Options {
    /// `full`, `quick` or `smoke` (under `cargo test`).
    mode: Mode,
    /// (router RTT, upstream RTT) pairs in milliseconds.
    scenarios: Vec<(u64, u64)>,
    /// RouterOS connection pool size given to the daemon.
    pool: u16,
    /// Concurrency levels of the throughput measurement (`--clients N`, repeatable).
    clients: Vec<usize>,
    /// `--throughput-only`: skip memory and the sequential phases, and print where the
    /// throughput phase spends its time (completions over time, retransmissions, router adds).
    throughput_only: bool,
    /// `--calibrate`: inject each delay minus the emulator's measured overshoot (whole
    /// milliseconds), so the emulators' own round trips come close to the nominal RTTs.
    calibrate: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Full,
    Quick,
    Smoke,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Quick => "quick",
            Mode::Smoke => "smoke (cargo test)",
        }
    }
    /// Sequential samples for the new-mapping and renewal latencies.
    fn samples(self) -> usize {
        match self {
            Mode::Full => 1000,
            Mode::Quick => 200,
            Mode::Smoke => 100,
        }
    }
    /// Mappings each concurrency level creates in total.
    fn throughput_total(self, clients: usize) -> usize {
        let per_client = match (self, clients) {
            (Mode::Full, 1) => 200,
            (Mode::Full, 16) => 50,
            (Mode::Full, _) => 10,
            (_, 1) => 40,
            (_, 16) => 10,
            (_, _) => 2,
        };
        per_client * clients
    }
    /// Live-mapping counts at which the daemon's RSS is read.
    fn memory_points(self) -> &'static [usize] {
        match self {
            Mode::Full => &[1_000, 10_000],
            _ => &[1_000],
        }
    }
}

fn parse_options() -> Result<Options, BenchError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test` does not: then this is the smoke run.
    let under_bench = args.iter().any(|a| a == "--bench");
    let quick_env = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut mode = if !under_bench {
        Mode::Smoke
    } else if quick_env {
        Mode::Quick
    } else {
        Mode::Full
    };
    let mut scenarios = Vec::new();
    let mut pool = 4u16;
    let mut clients = Vec::new();
    let mut throughput_only = false;
    let mut calibrate = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" if mode == Mode::Full => mode = Mode::Quick,
            "--rtt" => {
                let v = it.next().ok_or_else(|| {
                    BenchError::Setup("--rtt needs ROUTER_MS/UPSTREAM_MS, e.g. 5/20".into())
                })?;
                scenarios.push(parse_rtt(v)?);
            }
            "--pool" => {
                pool = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|p| (1..=64).contains(p))
                    .ok_or_else(|| BenchError::Setup("--pool needs a number 1..=64".into()))?;
            }
            "--clients" => {
                clients.push(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .filter(|c| (1..=4096).contains(c))
                        .ok_or_else(|| {
                            BenchError::Setup("--clients needs a number 1..=4096".into())
                        })?,
                );
            }
            "--throughput-only" => throughput_only = true,
            "--calibrate" => calibrate = true,
            // cargo's own flags (--bench) and test-harness flags are not ours.
            _ => {}
        }
    }
    if scenarios.is_empty() {
        scenarios = vec![(0, 0), (5, 20)];
    }
    if clients.is_empty() {
        clients = CONCURRENCY.to_vec();
    }
    Ok(Options {
        mode,
        scenarios,
        pool,
        clients,
        throughput_only,
        calibrate,
    })
}

fn parse_rtt(v: &str) -> Result<(u64, u64), BenchError> {
    let bad = || {
        BenchError::Setup(format!(
            "--rtt '{v}': expected ROUTER_MS/UPSTREAM_MS, e.g. 5/20"
        ))
    };
    let (r, u) = v.split_once('/').ok_or_else(bad)?;
    Ok((
        r.trim().parse().map_err(|_| bad())?,
        u.trim().parse().map_err(|_| bad())?,
    ))
}

fn main() -> ExitCode {
    let opts = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench mapping: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench mapping: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "bench mapping: {} run, daemon binary {}",
        opts.mode.name(),
        daemon_exe()
    );
    match runtime.block_on(run(&opts)) {
        Ok(report) => {
            println!("{report}");
            let out = target_dir().join(if opts.throughput_only {
                "bench-throughput.md"
            } else if opts.calibrate {
                "bench-mapping-calibrated.md"
            } else if opts.mode == Mode::Full {
                "bench-mapping.md"
            } else {
                "bench-mapping-quick.md"
            });
            match std::fs::write(&out, &report) {
                Ok(()) => eprintln!("bench mapping: table written to {}", out.display()),
                Err(e) => eprintln!("bench mapping: cannot write {}: {e}", out.display()),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench mapping: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `<target>/<profile>/double-natpmp` → `<target>`.
fn target_dir() -> PathBuf {
    Path::new(DAEMON_EXE)
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// What one latency scenario measured.
struct ScenarioResult {
    router_ms: u64,
    upstream_ms: u64,
    /// The delays injected into the router and gateway emulators, ms (the nominal RTTs unless
    /// `--calibrate`).
    injected: (f64, f64),
    new: Stats,
    renew: Stats,
    cmds_per_new: f64,
    adds_per_new: f64,
    cmds_per_renewal: f64,
    /// Retransmissions during the sequential new-mapping and renewal phases.
    retransmits: u64,
    throughput: Vec<Throughput>,
    /// The emulators' own round trips measured from this process, without the daemon.
    router_rtt: Stats,
    upstream_rtt: Stats,
    /// The same RouterOS command through the daemon's own client (`RouterApi`: pool checkout
    /// with its idle check, tagged command); the difference to `router_rtt` is that client's cost.
    router_api_rtt: Stats,
}

struct Throughput {
    clients: usize,
    mappings: usize,
    elapsed: Duration,
    latency: Stats,
    retransmits: u64,
    /// When each mapping was answered, from the start, sorted.
    done_at: Vec<Duration>,
    /// Mappings that took 0, 1, 2 and 3 or more retransmissions.
    retransmit_histogram: [u64; 4],
    /// `/ip/firewall/nat/add` commands the router saw during this phase.
    adds: u64,
}

/// Resident memory of the daemon, KiB (`threads` is a count).
#[derive(Clone, Copy)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
    threads: u64,
}

struct MemoryResult {
    idle: Rss,
    points: Vec<(usize, Rss)>,
    fill_rate: f64,
}

async fn run(opts: &Options) -> Result<String, BenchError> {
    let memory = if opts.throughput_only {
        None
    } else {
        Some(measure_memory(opts).await?)
    };
    let mut scenarios = Vec::new();
    for &(r, u) in &opts.scenarios {
        eprintln!("bench mapping: scenario router {r} ms / upstream {u} ms");
        scenarios.push(measure_scenario(opts, r, u).await?);
    }
    Ok(match memory {
        Some(memory) => render(opts, &scenarios, &memory),
        None => render_throughput(opts, &scenarios),
    })
}

// ---------------------------------------------------------------------------------------------
// Set-up: emulators in this process, the daemon as a child process.

/// The emulators and the daemon of one measurement; dropping it kills the daemon.
struct Bench {
    router: RouterSim,
    gateway: Gateway,
    daemon: Daemon,
    next_port: u16,
}

struct Daemon {
    child: Child,
    listen: SocketAddr,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGKILL: the run is over and the emulators go away with it, so a graceful removal of
        // every mapping would only measure the emulators.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("{} (last lines:\n{tail}\n)", self.log.display())
    }

    /// Resident set size, from /proc/<pid>/status.
    fn rss(&self) -> Result<Rss, BenchError> {
        let path = format!("/proc/{}/status", self.child.id());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| BenchError::Setup(format!("cannot read {path}: {e}")))?;
        let field = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Ok(Rss {
            total: field("VmRSS:")
                .ok_or_else(|| BenchError::Setup(format!("no VmRSS line in {path}")))?,
            anon: field("RssAnon:").unwrap_or(0),
            file: field("RssFile:").unwrap_or(0),
            threads: field("Threads:").unwrap_or(0),
        })
    }
}

impl Bench {
    async fn start(opts: &Options, router_ms: u64, upstream_ms: u64) -> Result<Bench, BenchError> {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let mut config = RouterSimConfig::default();
        // The emulated gateway is on loopback: the router routes it through the tunnel, so the
        // daemon's in-interface check passes as on a real router.
        config.routes.insert(
            0,
            SimRoute {
                dst: Ipv4Addr::new(127, 0, 0, 0),
                prefix_len: 8,
                interface: "wg-proton".into(),
                gateway: Ipv4Addr::LOCALHOST,
            },
        );
        let router = RouterSim::start(config, any).await?;
        router.set_latency(Duration::from_millis(router_ms));
        let gateway = Gateway::start(
            GatewayConfig {
                max_lifetime: LIFETIME,
                quota_per_peer: 1_000_000,
                port_range: 1024..=65535,
                latency: Duration::from_millis(upstream_ms),
                ..GatewayConfig::default()
            },
            any,
        )
        .await?;
        // A free port for the daemon: bound and released at once (the daemon binds it next).
        let listen = std::net::UdpSocket::bind(any)?.local_addr()?;
        let log = target_dir().join(format!("bench-daemon-{router_ms}-{upstream_ms}.log"));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| BenchError::Setup(format!("cannot create {}: {e}", log.display())))?;
        let exe = daemon_exe();
        let child = std::process::Command::new(&exe)
            .env_clear()
            .env("VPN_GATEWAY", gateway.local_addr().to_string())
            .env("MIKROTIK_API_ADDRESS", router.local_addr().to_string())
            .env("MIKROTIK_API_USER", "admin")
            .env("MIKROTIK_API_PASSWORD", "admin")
            .env("MIKROTIK_IN_INTERFACE", "wg-proton")
            .env("MIKROTIK_POOL_SIZE", opts.pool.to_string())
            .env("LISTEN_ADDR", listen.to_string())
            .env("ALLOWED_CLIENTS", "127.0.0.0/8")
            .env("MAX_LIFETIME", LIFETIME.to_string())
            .env("ROUTER_PORT_MIN", "1024")
            .env("ROUTER_PORT_MAX", "65535")
            .env("LOG_LEVEL", "WARN")
            .envs(extra_daemon_env())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot start {exe}: {e}")))?;
        let mut daemon = Daemon { child, listen, log };
        wait_until_answering(&mut daemon).await?;
        Ok(Bench {
            router,
            gateway,
            daemon,
            // Internal ports are unique per run, so the router port is the internal port
            // (docs/architecture.md §4: R = I preferred) and no run depends on the fallback range.
            next_port: 1024,
        })
    }

    /// `n` fresh internal ports.
    fn ports(&mut self, n: usize) -> Result<Vec<u16>, BenchError> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            if self.next_port == u16::MAX {
                return Err(BenchError::Setup(
                    "more mappings than internal ports in one run".into(),
                ));
            }
            v.push(self.next_port);
            self.next_port += 1;
        }
        Ok(v)
    }
}

/// Polls with opcode-0 requests until the daemon answers (any reply means it serves).
async fn wait_until_answering(daemon: &mut Daemon) -> Result<(), BenchError> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let mut buf = [0u8; MAX_PACKET_LEN];
    let started = Instant::now();
    while started.elapsed() < START_BUDGET {
        if let Some(status) = daemon.child.try_wait()? {
            return Err(BenchError::DaemonExited {
                exe: daemon_exe(),
                status: status.to_string(),
                log: daemon.log_tail(),
            });
        }
        sock.send_to(&[0, 0], daemon.listen).await?;
        if let Ok(Ok((_, from))) =
            tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await
        {
            if from == daemon.listen {
                return Ok(());
            }
        }
    }
    Err(BenchError::DaemonSilent {
        listen: daemon.listen,
        budget: START_BUDGET,
        log: daemon.log_tail(),
    })
}

// ---------------------------------------------------------------------------------------------
// The client side.

/// One mapping exchange: its latency from the first send, and how many retransmissions it took.
struct Exchange {
    latency: Duration,
    retransmits: u32,
}

/// Asks for a UDP mapping of `port` and waits for the matching reply, retransmitting like a
/// NAT-PMP client. A reply other than success with an external port is an error.
async fn map(sock: &UdpSocket, to: SocketAddr, port: u16) -> Result<Exchange, BenchError> {
    let req = Request::Map(MapRequest {
        protocol: Protocol::Udp,
        internal_port: port,
        suggested_external_port: 0,
        lifetime: LIFETIME,
    });
    let mut out = [0u8; MAP_REQUEST_LEN];
    let len = encode_request(&req, &mut out);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let started = Instant::now();
    let deadline = started + EXCHANGE_BUDGET;
    let mut interval = FIRST_RETRY;
    let mut retransmits = 0u32;
    loop {
        sock.send_to(&out[..len], to).await?;
        let resend_at = (Instant::now() + interval).min(deadline);
        loop {
            let wait = resend_at.saturating_duration_since(Instant::now());
            let Ok(r) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await else {
                break;
            };
            let (n, from) = r?;
            let latency = started.elapsed();
            if from != to {
                continue;
            }
            // Replies to an earlier, retransmitted request of this socket name another port.
            let Ok(Response::Map(m)) = parse_response(&buf[..n]) else {
                continue;
            };
            if m.protocol != Protocol::Udp || m.internal_port != port {
                continue;
            }
            if m.result != ResultCode::Success {
                return Err(BenchError::MappingFailed {
                    port,
                    result: m.result.to_u16(),
                    why: m.result.describe(),
                });
            }
            if m.external_port == 0 || m.lifetime == 0 {
                return Err(BenchError::MappingFailed {
                    port,
                    result: 0,
                    why: "success without an external port or lifetime",
                });
            }
            return Ok(Exchange {
                latency,
                retransmits,
            });
        }
        if Instant::now() >= deadline {
            return Err(BenchError::NoReply {
                port,
                budget: EXCHANGE_BUDGET,
            });
        }
        retransmits += 1;
        interval *= 2;
    }
}

/// Maps `ports` one after another from one socket on `ip`.
async fn map_sequentially(
    ip: Ipv4Addr,
    to: SocketAddr,
    ports: Vec<u16>,
) -> Result<(Vec<Duration>, u64), BenchError> {
    let sock = UdpSocket::bind((ip, 0)).await?;
    let mut lat = Vec::with_capacity(ports.len());
    let mut retransmits = 0u64;
    for port in ports {
        let x = map(&sock, to, port).await?;
        lat.push(x.latency);
        retransmits += u64::from(x.retransmits);
    }
    Ok((lat, retransmits))
}

/// What [`map_concurrently`] saw.
struct Concurrent {
    /// Every mapping's latency.
    latencies: Vec<Duration>,
    /// Retransmissions in total.
    retransmits: u64,
    /// Wall time from the start to the last reply.
    elapsed: Duration,
    /// When each mapping was answered, from the start, sorted.
    done_at: Vec<Duration>,
    /// How many mappings took 0, 1, 2 and 3 or more retransmissions.
    retransmit_histogram: [u64; 4],
}

/// Maps `ports` with `clients` concurrent clients (client i on 127.0.0.(10 + i % 200)), and
/// returns every latency, the retransmissions, the wall time and when each reply came.
async fn map_concurrently(
    to: SocketAddr,
    ports: Vec<u16>,
    clients: usize,
) -> Result<Concurrent, BenchError> {
    let clients = clients.max(1);
    let mut shares: Vec<Vec<u16>> = vec![Vec::new(); clients];
    for (i, p) in ports.into_iter().enumerate() {
        shares[i % clients].push(p);
    }
    // Bind every socket first, so the clock measures mapping only.
    let mut socks = Vec::with_capacity(clients);
    for i in 0..clients {
        // 127.0.0.10..=127.0.0.209: distinct client addresses, all on loopback.
        let ip = Ipv4Addr::new(127, 0, 0, 10 + (i % 200) as u8);
        socks.push(UdpSocket::bind((ip, 0)).await?);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for (sock, share) in socks.into_iter().zip(shares) {
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let mut done = Vec::with_capacity(share.len());
            for port in share {
                let x = map(&sock, to, port).await?;
                done.push((x, Instant::now()));
            }
            Ok::<_, BenchError>(done)
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut out = Concurrent {
        latencies: Vec::new(),
        retransmits: 0,
        elapsed: Duration::ZERO,
        done_at: Vec::new(),
        retransmit_histogram: [0; 4],
    };
    while let Some(r) = tasks.join_next().await {
        for (x, at) in r?? {
            out.latencies.push(x.latency);
            out.retransmits += u64::from(x.retransmits);
            out.retransmit_histogram[(x.retransmits as usize).min(3)] += 1;
            out.done_at.push(at.saturating_duration_since(started));
        }
    }
    out.elapsed = started.elapsed();
    out.done_at.sort();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Measurements.

async fn measure_scenario(
    opts: &Options,
    router_ms: u64,
    upstream_ms: u64,
) -> Result<ScenarioResult, BenchError> {
    let mut bench = Bench::start(opts, router_ms, upstream_ms).await?;
    let to = bench.daemon.listen;
    let n = opts.mode.samples();
    let ports = bench.ports(n)?;
    let client = Ipv4Addr::new(127, 0, 0, 2);
    let (mut router_rtt, mut router_api_rtt, mut upstream_rtt) =
        measure_emulators(&bench, n.min(100)).await?;
    let mut injected = (router_ms as f64, upstream_ms as f64);
    if opts.calibrate {
        // The emulators sleep for the injected delay, and the timer overshoots by about a
        // millisecond; subtract the measured overshoot (whole milliseconds: the timer's
        // granularity) and measure again.
        let less = |nominal: u64, realised: f64| {
            let over = (realised - nominal as f64).round().max(0.0) as u64;
            nominal.saturating_sub(over)
        };
        let r = less(router_ms, router_rtt.p(50.0));
        let u = less(upstream_ms, upstream_rtt.p(50.0));
        bench.router.set_latency(Duration::from_millis(r));
        bench.gateway.set_latency(Duration::from_millis(u));
        injected = (r as f64, u as f64);
        (router_rtt, router_api_rtt, upstream_rtt) = measure_emulators(&bench, n.min(100)).await?;
    }

    let (mut new_lat, mut re_new, mut cmds_new, mut adds_new) = (Vec::new(), 0, 0, 0);
    let (mut renew_lat, mut re_renew, mut cmds_renew) = (Vec::new(), 0, 0);
    if !opts.throughput_only {
        bench.router.reset_counters();
        (new_lat, re_new) = map_sequentially(client, to, ports.clone()).await?;
        cmds_new = bench.router.command_count();
        adds_new = bench.router.command_count_for("/ip/firewall/nat/add");

        bench.router.reset_counters();
        (renew_lat, re_renew) = map_sequentially(client, to, ports).await?;
        cmds_renew = bench.router.command_count();
    }

    let mut throughput = Vec::new();
    let retransmits = re_new + re_renew;
    for &clients in &opts.clients {
        let total = opts.mode.throughput_total(clients);
        let ports = bench.ports(total)?;
        bench.router.reset_counters();
        let c = map_concurrently(to, ports, clients).await?;
        throughput.push(Throughput {
            clients,
            mappings: total,
            elapsed: c.elapsed,
            latency: Stats::of(c.latencies),
            retransmits: c.retransmits,
            done_at: c.done_at,
            retransmit_histogram: c.retransmit_histogram,
            adds: bench.router.command_count_for("/ip/firewall/nat/add"),
        });
    }
    Ok(ScenarioResult {
        router_ms,
        upstream_ms,
        injected,
        new: Stats::of(new_lat),
        renew: Stats::of(renew_lat),
        cmds_per_new: cmds_new as f64 / n as f64,
        adds_per_new: adds_new as f64 / n as f64,
        cmds_per_renewal: cmds_renew as f64 / n as f64,
        retransmits,
        throughput,
        router_rtt,
        upstream_rtt,
        router_api_rtt,
    })
}

/// The emulators' realised round trips, measured directly from this process: one RouterOS
/// command (`/system/identity/print`) on a bare logged-in TCP session, the same command through
/// the daemon's RouterOS client (`RouterApi`), and one NAT-PMP mapping exchange with the gateway
/// (as peer 127.0.0.3, so the daemon's own mappings are untouched). Timer granularity makes the
/// bare ones a little longer than the injected latency; that difference is part of any floor
/// measured on this machine.
async fn measure_emulators(bench: &Bench, n: usize) -> Result<(Stats, Stats, Stats), BenchError> {
    let addr = bench.router.local_addr();
    let mut raw = RawApi::login(addr).await?;
    let mut router = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        raw.call(&["/system/identity/print"]).await?;
        router.push(t.elapsed());
    }
    let cfg = ApiConfig::new(addr.to_string(), "admin", Password::new("admin"));
    let api = RouterApi::new(cfg, 1, Duration::from_secs(5))
        .map_err(|e| BenchError::Baseline(e.to_string()))?;
    let mut via_api = Vec::with_capacity(n);
    // The first command also connects and logs in: not a sample.
    for i in 0..=n {
        let t = Instant::now();
        api.run(Command::new("/system/identity/print"))
            .await
            .map_err(|e| BenchError::Baseline(e.to_string()))?;
        if i > 0 {
            via_api.push(t.elapsed());
        }
    }
    let sock = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 3), 0)).await?;
    let mut upstream = Vec::with_capacity(n);
    for i in 0..n {
        // Fits: n <= 100, so the port stays below 1124.
        let x = map(&sock, bench.gateway.local_addr(), 1024 + i as u16).await?;
        upstream.push(x.latency);
    }
    Ok((Stats::of(router), Stats::of(via_api), Stats::of(upstream)))
}

/// A bare RouterOS API session (plain TCP, one command at a time, only the shared word codec),
/// so the emulator's round trip is measured without the daemon's client code.
struct RawApi {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawApi {
    async fn login(addr: SocketAddr) -> Result<RawApi, BenchError> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| BenchError::Baseline(format!("connect to {addr} timed out")))??;
        stream.set_nodelay(true)?;
        let mut api = RawApi {
            stream,
            buf: Vec::new(),
        };
        api.call(&["/login", "=name=admin", "=password=admin"])
            .await?;
        Ok(api)
    }

    /// Sends one sentence and reads replies up to `!done`; a `!trap` or `!fatal` is an error.
    async fn call(&mut self, words: &[&str]) -> Result<(), BenchError> {
        let mut out = Vec::new();
        encode_sentence(words, &mut out);
        let fut = async {
            self.stream.write_all(&out).await?;
            let mut failed = None;
            loop {
                match decode_sentence(&self.buf)
                    .map_err(|e| BenchError::Baseline(format!("bad reply: {e}")))?
                {
                    Some((reply, used)) => {
                        self.buf.drain(..used);
                        match reply.first().map(Vec::as_slice) {
                            Some(b"!done") => {
                                return match failed {
                                    None => Ok(()),
                                    Some(w) => Err(BenchError::Baseline(w)),
                                }
                            }
                            Some(b"!trap") | Some(b"!fatal") => {
                                let text: Vec<String> = reply
                                    .iter()
                                    .map(|w| String::from_utf8_lossy(w).into_owned())
                                    .collect();
                                failed = Some(format!("{} answered {}", words[0], text.join(" ")));
                                if reply.first().map(Vec::as_slice) == Some(b"!fatal") {
                                    return Err(BenchError::Baseline(failed.unwrap_or_default()));
                                }
                            }
                            _ => {}
                        }
                    }
                    None => {
                        let mut chunk = [0u8; 4096];
                        let n = self.stream.read(&mut chunk).await?;
                        if n == 0 {
                            return Err(BenchError::Baseline(
                                "the emulator closed the connection".into(),
                            ));
                        }
                        self.buf.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .map_err(|_| BenchError::Baseline(format!("{} timed out", words[0])))?
    }
}

/// RSS of a fresh daemon (0/0 ms: memory does not depend on latency), idle and with live
/// mappings made by [`FILL_CLIENTS`] concurrent clients.
async fn measure_memory(opts: &Options) -> Result<MemoryResult, BenchError> {
    eprintln!("bench mapping: memory (fresh daemon, 0/0 ms)");
    let mut bench = Bench::start(opts, 0, 0).await?;
    // Let start-up work (reconcile, first address refresh) settle; this is a measurement pause,
    // not synchronisation.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = bench.daemon.rss()?;
    let mut points = Vec::new();
    let mut live = 0usize;
    let mut fill_time = Duration::ZERO;
    for &target in opts.mode.memory_points() {
        let ports = bench.ports(target - live)?;
        let filled = map_concurrently(bench.daemon.listen, ports, FILL_CLIENTS).await?;
        fill_time += filled.elapsed;
        live = target;
        points.push((live, bench.daemon.rss()?));
    }
    Ok(MemoryResult {
        idle,
        points,
        fill_rate: live as f64 / fill_time.as_secs_f64().max(1e-9),
    })
}

/// Sorted samples with nearest-rank percentiles.
struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    fn of(mut v: Vec<Duration>) -> Stats {
        v.sort();
        Stats { sorted: v }
    }
    /// Nearest-rank percentile in milliseconds (0 when there are no samples).
    fn p(&self, pct: f64) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let rank = ((pct / 100.0) * self.sorted.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.sorted.len()) - 1;
        self.sorted[i].as_secs_f64() * 1000.0
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

fn ratio(value: f64, floor: f64) -> String {
    if floor > 0.0 {
        format!("{:.2}×", value / floor)
    } else {
        "n/a".into()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn render(opts: &Options, scenarios: &[ScenarioResult], memory: &MemoryResult) -> String {
    let mut s = String::new();
    let pool = f64::from(opts.pool);
    let _ = writeln!(
        s,
        "## double-natpmp mapping benchmark ({} run)\n",
        opts.mode.name()
    );
    let _ = writeln!(s, "- machine: {}", machine());
    let _ = writeln!(
        s,
        "- daemon: `{}`, RouterOS pool {} connections, LOG_LEVEL=WARN; emulators in \
         the bench process on 127.0.0.1, one injected router RTT per API command and one \
         upstream RTT per NAT-PMP exchange",
        daemon_exe(),
        opts.pool
    );
    if opts.calibrate {
        let injected: Vec<String> = scenarios
            .iter()
            .map(|r| {
                format!(
                    "{}/{} → {}/{}",
                    r.router_ms, r.upstream_ms, r.injected.0, r.injected.1
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "- `--calibrate`: each injected delay is the nominal RTT minus the emulator's measured \
             timer overshoot (whole ms), so the realised round trips come close to the nominal \
             ones; nominal → injected: {}",
            injected.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "- {} sequential samples per latency; floor = router RTT + upstream RTT\n",
        opts.mode.samples()
    );

    let _ = writeln!(s, "### Latency (ms)\n");
    let _ = writeln!(
        s,
        "| router/upstream RTT | new p50 | new p95 | new p99 | p50 − floor | p99 − floor | p50/floor | p99/floor | renew p50 | renew p99 | renew p50/upstream | RouterOS cmds per new (nat/add) | RouterOS cmds per renewal | retransmits |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in scenarios {
        let floor = (r.router_ms + r.upstream_ms) as f64;
        let up = r.upstream_ms as f64;
        let _ = writeln!(
            s,
            "| {}/{} | {:.2} | {:.2} | {:.2} | {:+.2} | {:+.2} | {} | {} | {:.2} | {:.2} | {} | {:.2} ({:.2}) | {:.2} | {} |",
            r.router_ms,
            r.upstream_ms,
            r.new.p(50.0),
            r.new.p(95.0),
            r.new.p(99.0),
            r.new.p(50.0) - floor,
            r.new.p(99.0) - floor,
            ratio(r.new.p(50.0), floor),
            ratio(r.new.p(99.0), floor),
            r.renew.p(50.0),
            r.renew.p(99.0),
            ratio(r.renew.p(50.0), up),
            r.cmds_per_new,
            r.adds_per_new,
            r.cmds_per_renewal,
            r.retransmits,
        );
    }

    let _ = writeln!(
        s,
        "\n### The emulators' own round trips (ms), measured without the daemon\n"
    );
    let _ = writeln!(
        s,
        "Router cmd: `/system/identity/print` on a bare API session; the same through the \
         daemon's RouterOS client (pool checkout with its idle check) beside it. The injected \
         latency is a tokio sleep (1 ms timer granularity), so the realised floor (bare router \
         cmd + upstream) is a little above the nominal one. Daemon overhead = daemon p50 − \
         realised floor.\n"
    );
    let _ = writeln!(
        s,
        "| router/upstream RTT | router cmd p50 | router cmd p99 | same via the daemon's RouterApi p50 | upstream p50 | upstream p99 | realised floor p50 | new p50 − realised floor | renew p50 − realised upstream |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in scenarios {
        let floor = r.router_rtt.p(50.0) + r.upstream_rtt.p(50.0);
        let _ = writeln!(
            s,
            "| {}/{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:+.2} | {:+.2} |",
            r.router_ms,
            r.upstream_ms,
            r.router_rtt.p(50.0),
            r.router_rtt.p(99.0),
            r.router_api_rtt.p(50.0),
            r.upstream_rtt.p(50.0),
            r.upstream_rtt.p(99.0),
            floor,
            r.new.p(50.0) - floor,
            r.renew.p(50.0) - r.upstream_rtt.p(50.0),
        );
    }

    let _ = writeln!(
        s,
        "\n### Throughput: concurrent clients creating distinct mappings\n"
    );
    let _ = writeln!(
        s,
        "Ideal = min(clients / floor, pool / router RTT) mappings per second: one client waits \
         for each reply, and each new mapping holds one of the {} pooled connections for one \
         router RTT.\n",
        opts.pool
    );
    let _ = writeln!(
        s,
        "| router/upstream RTT | clients | mappings | seconds | mappings/s | ideal/s | ratio to ideal | latency p50 | latency p99 | retransmits |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for r in scenarios {
        let floor_s = (r.router_ms + r.upstream_ms) as f64 / 1000.0;
        for t in &r.throughput {
            let rate = t.mappings as f64 / t.elapsed.as_secs_f64().max(1e-9);
            let ideal = if r.router_ms > 0 && floor_s > 0.0 {
                Some((t.clients as f64 / floor_s).min(pool * 1000.0 / r.router_ms as f64))
            } else {
                None
            };
            let _ = writeln!(
                s,
                "| {}/{} | {} | {} | {:.2} | {:.0} | {} | {} | {:.2} | {:.2} | {} |",
                r.router_ms,
                r.upstream_ms,
                t.clients,
                t.mappings,
                t.elapsed.as_secs_f64(),
                rate,
                ideal.map_or("n/a".into(), |i| format!("{i:.0}")),
                ideal.map_or("n/a".into(), |i| format!("{:.0} %", 100.0 * rate / i)),
                t.latency.p(50.0),
                t.latency.p(99.0),
                t.retransmits,
            );
        }
    }

    let _ = writeln!(s, "\n### Memory and size\n");
    let _ = writeln!(s, "| what | value |");
    let _ = writeln!(s, "|---|---|");
    let rss_row = |s: &mut String, what: &str, r: &Rss| {
        let _ = writeln!(
            s,
            "| RSS {what} | {:.2} MiB (anonymous {:.2}, file-backed {:.2}; {} threads) |",
            mib(r.total),
            mib(r.anon),
            mib(r.file),
            r.threads
        );
    };
    rss_row(&mut s, "idle", &memory.idle);
    for (n, r) in &memory.points {
        rss_row(&mut s, &format!("with {n} live mappings"), r);
    }
    if let Some((n, r)) = memory.points.last() {
        let per = (r.total as f64 - memory.idle.total as f64) * 1024.0 / *n as f64;
        let _ = writeln!(s, "| RSS growth per mapping | {per:.0} bytes |");
    }
    let _ = writeln!(
        s,
        "| table fill rate (64 clients, 0/0 ms) | {:.0} mappings/s |",
        memory.fill_rate
    );
    let binary = release_binary();
    let _ = writeln!(s, "| daemon binary | {} |", binary.describe());

    let _ = writeln!(s, "\n### Targets\n");
    let _ = writeln!(
        s,
        "Nominal: against the injected RTTs. Realised: against the emulators' own round trips \
         measured without the daemon (the best any daemon could do on this machine).\n"
    );
    let _ = writeln!(s, "| target | measured | vs nominal | vs realised |");
    let _ = writeln!(s, "|---|---|---|---|");
    for r in scenarios
        .iter()
        .filter(|r| r.router_ms == 5 && r.upstream_ms == 20)
    {
        let floor = 25.0;
        let real_router = r.router_rtt.p(50.0);
        let real_up = r.upstream_rtt.p(50.0);
        let real_floor = real_router + real_up;
        let (p50, p99) = (r.new.p(50.0), r.new.p(99.0));
        let _ = writeln!(
            s,
            "| new mapping p50 ≤ floor + 1 ms (5/20) | {p50:.2} ms | {} (floor 25, {:+.2} ms) | {} (floor {real_floor:.2}, {:+.2} ms) |",
            verdict(p50 <= floor + 1.0),
            p50 - floor,
            verdict(p50 <= real_floor + 1.0),
            p50 - real_floor,
        );
        let _ = writeln!(
            s,
            "| new mapping p99 ≤ floor + 5 ms (5/20) | {p99:.2} ms | {} ({:+.2} ms) | {} ({:+.2} ms) |",
            verdict(p99 <= floor + 5.0),
            p99 - floor,
            verdict(p99 <= real_floor + 5.0),
            p99 - real_floor,
        );
        let rp50 = r.renew.p(50.0);
        let zero = r.cmds_per_renewal == 0.0;
        let _ = writeln!(
            s,
            "| renewal p50 ≤ upstream RTT + 1 ms, 0 RouterOS commands (5/20) | {rp50:.2} ms, {:.2} commands | {} ({:+.2} ms) | {} (upstream {real_up:.2}, {:+.2} ms) |",
            r.cmds_per_renewal,
            verdict(rp50 <= 21.0 && zero),
            rp50 - 20.0,
            verdict(rp50 <= real_up + 1.0 && zero),
            rp50 - real_up,
        );
        if let Some(t) = r.throughput.iter().find(|t| t.clients == 256) {
            let rate = t.mappings as f64 / t.elapsed.as_secs_f64().max(1e-9);
            let ideal = pool * 1000.0 / 5.0;
            let real_ideal = pool * 1000.0 / real_router.max(1e-9);
            let _ = writeln!(
                s,
                "| 256 clients ≥ 80 % of pool / router RTT (5/20) | {rate:.0}/s | {} ({:.0} % of {ideal:.0}/s) | {} ({:.0} % of {real_ideal:.0}/s) |",
                verdict(rate >= 0.8 * ideal),
                100.0 * rate / ideal,
                verdict(rate >= 0.8 * real_ideal),
                100.0 * rate / real_ideal,
            );
        }
    }
    let idle = mib(memory.idle.total);
    let v = verdict(idle <= 5.0);
    let _ = writeln!(s, "| RSS idle ≤ 5 MiB | {idle:.2} MiB | {v} | {v} |");
    if let Some((_, rss)) = memory.points.iter().find(|(n, _)| *n == 10_000) {
        let m = mib(rss.total);
        let v = verdict(m <= 12.0);
        let _ = writeln!(
            s,
            "| RSS ≤ 12 MiB with 10,000 mappings | {m:.2} MiB | {v} | {v} |"
        );
    }
    if let Some(size) = binary.size {
        let m = size as f64 / 1048576.0;
        let v = verdict(m <= 4.0 && binary.stripped == Some(true));
        let _ = writeln!(s, "| stripped binary ≤ 4 MiB | {m:.2} MiB | {v} | {v} |");
    }
    if !daemon_exe().contains("/release/") && std::env::var_os(DAEMON_ENV).is_none() {
        let _ = writeln!(
            s,
            "\nThis run used a debug build of the daemon (smoke mode): its latencies and memory \
             say nothing about the targets; run `cargo bench --bench mapping`."
        );
    }
    s
}

/// The `--throughput-only` report: for each scenario and concurrency level, the rate overall
/// and in the steady middle (10th to 90th percentile of the replies), how long the last 10 %
/// took, completions per 250 ms window, retransmissions, and the router's `nat/add` count.
fn render_throughput(opts: &Options, scenarios: &[ScenarioResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## double-natpmp throughput diagnosis\n");
    let _ = writeln!(s, "- machine: {}", machine());
    let extra = std::env::var(DAEMON_ENV_EXTRA).unwrap_or_default();
    let _ = writeln!(
        s,
        "- daemon: `{}`, RouterOS pool {}, extra environment `{extra}`\n",
        daemon_exe(),
        opts.pool
    );
    let _ = writeln!(
        s,
        "- injected router/upstream delay (ms): {}\n",
        scenarios
            .iter()
            .map(|r| format!("{}/{}", r.injected.0, r.injected.1))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in scenarios {
        let router = r.router_rtt.p(50.0);
        let _ = writeln!(
            s,
            "### {}/{} ms: bare router cmd p50 {router:.2} ms, via RouterApi {:.2} ms, upstream {:.2} ms\n",
            r.router_ms,
            r.upstream_ms,
            r.router_api_rtt.p(50.0),
            r.upstream_rtt.p(50.0)
        );
        for t in &r.throughput {
            let n = t.done_at.len();
            let at = |q: f64| {
                let i = ((q * n as f64) as usize).min(n.saturating_sub(1));
                t.done_at.get(i).copied().unwrap_or_default()
            };
            let (t10, t90) = (at(0.1), at(0.9));
            let steady = 0.8 * n as f64 / (t90 - t10).as_secs_f64().max(1e-9);
            let rate = n as f64 / t.elapsed.as_secs_f64().max(1e-9);
            let realised = f64::from(opts.pool) * 1000.0 / router.max(1e-9);
            let _ = writeln!(
                s,
                "- {} clients, {} mappings in {:.2} s: {rate:.0}/s overall, {steady:.0}/s \
                 between the 10th and 90th percentile reply ({:.0} % of the realised {realised:.0}/s); \
                 first 10 % took {:.2} s, last 10 % took {:.2} s; latency p50 {:.1} ms, p99 {:.1} ms; \
                 retransmissions per mapping 0/1/2/3+: {:?}; router nat/add commands: {}",
                t.clients,
                t.mappings,
                t.elapsed.as_secs_f64(),
                100.0 * steady / realised,
                t10.as_secs_f64(),
                (t.elapsed - t90.min(t.elapsed)).as_secs_f64(),
                t.latency.p(50.0),
                t.latency.p(99.0),
                t.retransmit_histogram,
                t.adds,
            );
            let window = Duration::from_millis(250);
            let mut counts = Vec::new();
            for d in &t.done_at {
                let i = (d.as_millis() / window.as_millis()) as usize;
                if counts.len() <= i {
                    counts.resize(i + 1, 0u32);
                }
                counts[i] += 1;
            }
            let per_s: Vec<String> = counts.iter().map(|c| format!("{}", c * 4)).collect();
            let _ = writeln!(s, "  - replies/s per 250 ms window: {}", per_s.join(" "));
        }
        let _ = writeln!(s);
    }
    s
}

/// The release binary, if built.
struct Binary {
    path: PathBuf,
    size: Option<u64>,
    stripped: Option<bool>,
}

impl Binary {
    fn describe(&self) -> String {
        match self.size {
            None => format!(
                "not built ({} missing; run `cargo build --release`)",
                self.path.display()
            ),
            Some(size) => format!(
                "`{}`: {:.2} MiB ({size} bytes), {}; profile.release: opt-level s, lto, codegen-units 1, panic abort, strip",
                self.path.display(),
                size as f64 / 1048576.0,
                match self.stripped {
                    Some(true) => "stripped (no .symtab)",
                    Some(false) => "NOT stripped (has .symtab)",
                    None => "strip state unknown",
                }
            ),
        }
    }
}

/// The release binary, or the `BENCH_DAEMON` one when that is set.
fn release_binary() -> Binary {
    let path = match std::env::var_os(DAEMON_ENV).filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("release").join("double-natpmp"),
    };
    let bytes = std::fs::read(&path).ok();
    Binary {
        size: bytes.as_ref().map(|b| b.len() as u64),
        stripped: bytes.as_deref().and_then(elf_has_symtab).map(|has| !has),
        path,
    }
}

/// Whether a little-endian ELF64 file has a symbol table section (`SHT_SYMTAB`); `None` when
/// it is not such a file.
fn elf_has_symtab(b: &[u8]) -> Option<bool> {
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8).map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
    };
    // "\x7fELF", class 2 (64-bit), data 1 (little-endian).
    if b.get(0..4) != Some(b"\x7fELF".as_slice()) || b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return None;
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3A)?);
    let shnum = usize::from(u16_at(0x3C)?);
    const SHT_SYMTAB: u32 = 2;
    Some((0..shnum).any(|i| u32_at(shoff + i * shentsize + 4) == Some(SHT_SYMTAB)))
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|d| d.trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), {date}, load average {load} at the end of the run")
}
