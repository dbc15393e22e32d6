//! Set-up: the emulators in this process, the daemon as a child process, and what `/proc` says
//! about it (memory, CPU time, wake-ups).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use double_natpmp_emulators::gateway::{Gateway, GatewayConfig};
use double_natpmp_emulators::routeros::{RouterSim, RouterSimConfig, SimRoute};
use thiserror::Error;
use tokio::net::UdpSocket;

use crate::Profile;

/// The daemon binary cargo built for this bench (release profile under `cargo bench`).
const DAEMON_EXE: &str = env!("CARGO_BIN_EXE_double-natpmp");
/// Environment variable naming another daemon binary to measure (e.g. the static musl build).
pub const DAEMON_ENV: &str = "BENCH_DAEMON";
/// Environment variable with extra `NAME=value` settings for the daemon, separated by
/// whitespace (e.g. `MAX_INFLIGHT=1024 LOG_LEVEL=DEBUG`); they override the bench's own.
pub const DAEMON_ENV_EXTRA: &str = "BENCH_DAEMON_ENV";
/// Lifetime every client asks for (the proton gateway grants 60 s of it).
pub const LIFETIME: u32 = 3600;
/// How long the daemon may take to start answering.
const START_BUDGET: Duration = Duration::from_secs(60);
/// How often a starting daemon is asked for its address (the resolution of "first answer").
const START_POLL: Duration = Duration::from_millis(2);
/// Kernel clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// Why the benchmark could not complete.
#[derive(Debug, Error)]
pub enum BenchError {
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
    #[error("{0}")]
    Expectation(String),
    #[error("network error on the client side: {0}")]
    Io(#[from] std::io::Error),
    #[error("a client task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The daemon binary to run: `BENCH_DAEMON` when set, else the one cargo built.
pub fn daemon_exe() -> String {
    std::env::var(DAEMON_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DAEMON_EXE.to_owned())
}

/// Whether the daemon measured is a release build (the figures mean nothing otherwise).
pub fn release_daemon() -> bool {
    daemon_exe().contains("/release/") || std::env::var_os(DAEMON_ENV).is_some()
}

/// The `BENCH_DAEMON_ENV` settings.
fn extra_daemon_env() -> Vec<(String, String)> {
    std::env::var(DAEMON_ENV_EXTRA)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `<target>/<profile>/double-natpmp` → `<target>`.
pub fn target_dir() -> PathBuf {
    Path::new(DAEMON_EXE)
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// The gateway emulator's settings for a profile.
pub fn gateway_config(profile: Profile, upstream: Duration) -> GatewayConfig {
    match profile {
        // `GatewayConfig::default()` is the ProtonVPN shape: 60 s, 5 ports, random ports in
        // 32768..=65535, the suggested port ignored.
        Profile::Proton => GatewayConfig {
            latency: upstream,
            ..GatewayConfig::default()
        },
        Profile::Bulk => GatewayConfig {
            max_lifetime: LIFETIME,
            quota_per_peer: 1_000_000,
            port_range: 1024..=65535,
            latency: upstream,
            ..GatewayConfig::default()
        },
    }
}

/// The two emulators, in this process. The gateway runs on a runtime and a thread of its own,
/// as it would on its own machine: the router emulator's work (encoding a listing of 10,000
/// rules takes about 100 ms of one core) must not hold up the gateway's replies.
pub struct Emulators {
    /// Shared with the bench's watcher thread (see `scale.rs`).
    pub router: Arc<RouterSim>,
    pub gateway: Gateway,
    /// Dropped after the gateway (fields drop in order).
    _gateway_runtime: SideRuntime,
}

impl Emulators {
    pub async fn start(
        gateway: GatewayConfig,
        router_rtt: Duration,
    ) -> Result<Emulators, BenchError> {
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
        let router = Arc::new(RouterSim::start(config, any).await?);
        router.set_latency(router_rtt);
        let side = SideRuntime::start("bench-gateway")?;
        let gateway = side.handle.spawn(Gateway::start(gateway, any)).await??;
        Ok(Emulators {
            router,
            gateway,
            _gateway_runtime: side,
        })
    }
}

/// A current-thread runtime on a thread of its own, until dropped.
struct SideRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SideRuntime {
    fn start(name: &str) -> Result<SideRuntime, BenchError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                })
            })?;
        Ok(SideRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Settings of one daemon beyond the bench's defaults.
#[derive(Clone, Debug, Default)]
pub struct DaemonSettings {
    /// RECONCILE_INTERVAL in seconds (default: the daemon's, 10 min).
    pub reconcile_interval: Option<u64>,
    /// Names the log file: `bench-daemon-<tag>.log`.
    pub tag: String,
}

/// A daemon process; dropping it kills it.
pub struct Daemon {
    child: Child,
    pub listen: SocketAddr,
    log: PathBuf,
    /// From spawn to the first NAT-PMP answer.
    pub started_in: Duration,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU time of a process: `/proc/<pid>/stat` utime + stime (whole process, 10 ms ticks) and
/// the sum of its threads' `schedstat` run times (nanoseconds; live threads only).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub ticks_s: f64,
    pub sched_s: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            ticks_s: self.ticks_s - o.ticks_s,
            sched_s: self.sched_s - o.sched_s,
        }
    }
}

/// Context switches summed over a process's threads (`/proc/<pid>/task/*/status`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Switches {
    /// The thread blocked (slept): each one ends with a wake-up.
    pub voluntary: u64,
    /// The thread was preempted.
    pub involuntary: u64,
    pub threads: u64,
}

/// Resident memory of the daemon, KiB (`threads` is a count).
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
    pub file: u64,
    /// Peak RSS so far (VmHWM).
    pub peak: u64,
    pub threads: u64,
}

impl Daemon {
    /// Starts the daemon against `emu` and waits until it answers NAT-PMP.
    pub async fn spawn(
        emu: &Emulators,
        pool: u16,
        s: &DaemonSettings,
    ) -> Result<Daemon, BenchError> {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        // A free port for the daemon: bound and released at once (the daemon binds it next).
        let listen = std::net::UdpSocket::bind(any)?.local_addr()?;
        let log = target_dir().join(format!("bench-daemon-{}.log", s.tag));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| BenchError::Setup(format!("cannot create {}: {e}", log.display())))?;
        let exe = daemon_exe();
        let mut cmd = std::process::Command::new(&exe);
        cmd.env_clear()
            .env("VPN_GATEWAY", emu.gateway.local_addr().to_string())
            .env("MIKROTIK_API_ADDRESS", emu.router.local_addr().to_string())
            .env("MIKROTIK_API_USER", "admin")
            .env("MIKROTIK_API_PASSWORD", "admin")
            .env("MIKROTIK_IN_INTERFACE", "wg-proton")
            .env("MIKROTIK_POOL_SIZE", pool.to_string())
            .env("LISTEN_ADDR", listen.to_string())
            .env("ALLOWED_CLIENTS", "127.0.0.0/8")
            // The bench is one client making thousands of mappings: lift the per-client limits.
            .env("MAX_MAPPINGS", "100000")
            .env("MAX_MAPPINGS_PER_CLIENT", "65535")
            .env("CLIENT_RATE_LIMIT", "10000")
            .env("MAX_LIFETIME", LIFETIME.to_string())
            .env("ROUTER_PORT_MIN", "1024")
            .env("ROUTER_PORT_MAX", "65535")
            .env("LOG_LEVEL", "WARN");
        if let Some(i) = s.reconcile_interval {
            cmd.env("RECONCILE_INTERVAL", format!("{i}s"));
        }
        let spawned = Instant::now();
        let child = cmd
            .envs(extra_daemon_env())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot start {exe}: {e}")))?;
        let mut daemon = Daemon {
            child,
            listen,
            log,
            started_in: Duration::ZERO,
        };
        daemon.wait_until_answering(spawned).await?;
        Ok(daemon)
    }

    /// SIGKILL: the run is over, or this is the crash a restart is measured after (a graceful
    /// stop would remove every mapping and measure the emulators).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("{} (last lines:\n{tail}\n)", self.log.display())
    }

    /// Polls with opcode-0 requests every [`START_POLL`] until the daemon answers (it opens
    /// its NAT-PMP socket after its start reconcile, so any reply means it serves).
    async fn wait_until_answering(&mut self, spawned: Instant) -> Result<(), BenchError> {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let mut buf = [0u8; 64];
        while spawned.elapsed() < START_BUDGET {
            if let Some(status) = self.child.try_wait()? {
                return Err(BenchError::DaemonExited {
                    exe: daemon_exe(),
                    status: status.to_string(),
                    log: self.log_tail(),
                });
            }
            sock.send_to(&[0, 0], self.listen).await?;
            if let Ok(Ok((_, from))) =
                tokio::time::timeout(START_POLL, sock.recv_from(&mut buf)).await
            {
                if from == self.listen {
                    self.started_in = spawned.elapsed();
                    return Ok(());
                }
            }
        }
        Err(BenchError::DaemonSilent {
            listen: self.listen,
            budget: START_BUDGET,
            log: self.log_tail(),
        })
    }

    fn read(&self, file: &str) -> Result<String, BenchError> {
        let path = format!("/proc/{}/{file}", self.pid());
        std::fs::read_to_string(&path)
            .map_err(|e| BenchError::Setup(format!("cannot read {path}: {e}")))
    }

    fn threads(&self) -> Result<Vec<String>, BenchError> {
        let path = format!("/proc/{}/task", self.pid());
        let dir = std::fs::read_dir(&path)
            .map_err(|e| BenchError::Setup(format!("cannot list {path}: {e}")))?;
        Ok(dir
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }

    /// Resident set size, from /proc/<pid>/status.
    pub fn rss(&self) -> Result<Rss, BenchError> {
        let text = self.read("status")?;
        Ok(Rss {
            total: status_field(&text, "VmRSS:")
                .ok_or_else(|| BenchError::Setup("no VmRSS line in /proc/<pid>/status".into()))?,
            anon: status_field(&text, "RssAnon:").unwrap_or(0),
            file: status_field(&text, "RssFile:").unwrap_or(0),
            peak: status_field(&text, "VmHWM:").unwrap_or(0),
            threads: status_field(&text, "Threads:").unwrap_or(0),
        })
    }

    /// CPU time so far.
    pub fn cpu(&self) -> Result<Cpu, BenchError> {
        let stat = self.read("stat")?;
        // Fields after the command name (which may hold spaces) in parentheses: state is
        // field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
        let ticks_s = (tick(11) + tick(12)) / CLOCK_TICKS;
        let mut sched_ns = 0u64;
        for t in self.threads()? {
            if let Ok(s) = self.read(&format!("task/{t}/schedstat")) {
                sched_ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Ok(Cpu {
            ticks_s,
            sched_s: sched_ns as f64 / 1e9,
        })
    }

    /// Context switches of every live thread.
    pub fn switches(&self) -> Result<Switches, BenchError> {
        let mut s = Switches::default();
        for t in self.threads()? {
            if let Ok(text) = self.read(&format!("task/{t}/status")) {
                s.voluntary += status_field(&text, "voluntary_ctxt_switches:").unwrap_or(0);
                s.involuntary += status_field(&text, "nonvoluntary_ctxt_switches:").unwrap_or(0);
                s.threads += 1;
            }
        }
        Ok(s)
    }
}

fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Fresh internal ports, unique within a run, so the router port is the internal port
/// (docs/architecture.md §4: R = I preferred) and no run depends on the fallback range.
pub struct Ports {
    next: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports { next: 1024 }
    }

    pub fn take(&mut self, n: usize) -> Result<Vec<u16>, BenchError> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            if self.next == u16::MAX {
                return Err(BenchError::Setup(
                    "more mappings than internal ports in one run".into(),
                ));
            }
            v.push(self.next);
            self.next += 1;
        }
        Ok(v)
    }
}

/// Sorted samples with nearest-rank percentiles.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    pub fn of(mut v: Vec<Duration>) -> Stats {
        v.sort();
        Stats { sorted: v }
    }
    /// Nearest-rank percentile in milliseconds (0 when there are no samples).
    pub fn p(&self, pct: f64) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let rank = ((pct / 100.0) * self.sorted.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.sorted.len()) - 1;
        self.sorted[i].as_secs_f64() * 1000.0
    }
    pub fn len(&self) -> usize {
        self.sorted.len()
    }
}
