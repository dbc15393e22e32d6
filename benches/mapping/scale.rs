//! Scale and idle cost: a daemon with 10,000 live mappings (memory, a reconcile pass of
//! 10,000 rules quiet and under load, a start with those rules on the router), and a daemon
//! with 100 leases renewing every 30 s (CPU time and wake-ups).
//!
//! Everything is read from `/proc/<daemon pid>`: the emulators and the clients run in this
//! process, so their CPU is never counted as the daemon's.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use double_natpmp_emulators::gateway::GatewayConfig;
use double_natpmp_emulators::routeros::RouterSim;
use tokio::net::UdpSocket;

use crate::client::{map, map_concurrently, Concurrent};
use crate::harness::{
    gateway_config, BenchError, Cpu, Daemon, DaemonSettings, Emulators, Ports, Rss, Stats, Switches,
};
use crate::{Mode, Options, Profile};

/// Concurrent clients that fill the table.
const FILL_CLIENTS: usize = 64;
/// The first command of a reconcile pass (it reads the router's addresses, then proves the VPN
/// interface).
const PASS_FIRST: &str = "/ip/address/print";
/// The last command of a pass that finds one rule of a live lease missing: its recreation.
const PASS_LAST: &str = "/ip/firewall/nat/add";
/// How often the router's counters are read while a pass is awaited (a sleep of 200 µs takes
/// about 250 µs with the kernel's timer slack).
const WATCH_EVERY: Duration = Duration::from_micros(200);

/// What the scale daemon measured.
pub struct ScaleResult {
    pub idle: Rss,
    pub points: Vec<(usize, Rss)>,
    pub fill_rate: f64,
    pub quiet: QuietPass,
    pub loaded: LoadedPass,
    pub after_reconcile: Rss,
    pub restart: Restart,
}

impl ScaleResult {
    /// The scale count (the last memory point).
    pub fn count(&self) -> usize {
        self.points.last().map_or(0, |(n, _)| *n)
    }
}

/// A reconcile pass with nothing else to do.
pub struct QuietPass {
    pub rules: usize,
    /// From the pass's first command to its last, and when each came.
    pub times: PassTimes,
    /// The daemon's CPU time over the pass, less its idle rate over the same time.
    pub cpu: Cpu,
}

/// A reconcile pass while clients renew.
pub struct LoadedPass {
    pub times: PassTimes,
    /// Requests in flight at some moment of the pass.
    pub during: Stats,
    /// The others of the same load.
    pub without: Stats,
    /// Requests per second of the load.
    pub rate: f64,
}

/// A start with the scale daemon's rules on the router (it was killed with SIGKILL).
pub struct Restart {
    pub rules_before: usize,
    pub started_in: Duration,
    /// `nat/remove` commands of the start.
    pub removed: u64,
    pub rules_after: usize,
    /// The new daemon's CPU time until it answered.
    pub cpu: Cpu,
}

pub async fn measure_scale(opts: &Options) -> Result<ScaleResult, BenchError> {
    let mode = opts.mode;
    let interval = Duration::from_secs(mode.reconcile_interval());
    let emu = Emulators::start(
        gateway_config(Profile::Bulk, Duration::ZERO),
        Duration::ZERO,
    )
    .await?;
    let settings = DaemonSettings {
        reconcile_interval: Some(mode.reconcile_interval()),
        tag: "scale".into(),
    };
    let mut daemon = Daemon::spawn(&emu, opts.pool, &settings).await?;
    // Let start-up work (the first address refresh) settle; a measurement pause.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = daemon.rss()?;
    let mut ports = Ports::new();
    let (mut points, mut leases, mut fill_time) = (Vec::new(), Vec::new(), Duration::ZERO);
    for &target in mode.memory_points() {
        let batch = ports.take(target - leases.len())?;
        let Concurrent {
            elapsed, leases: l, ..
        } = map_concurrently(daemon.listen, batch, FILL_CLIENTS).await?;
        fill_time += elapsed;
        leases.extend(l);
        points.push((leases.len(), daemon.rss()?));
    }
    let fill_rate = leases.len() as f64 / fill_time.as_secs_f64().max(1e-9);

    eprintln!("bench mapping: reconcile of {} rules, quiet", leases.len());
    // A pass, then half an interval of quiet (the idle rate is read in its second half).
    wait_for_count(
        &emu.router,
        PASS_FIRST,
        interval * 2 + Duration::from_secs(5),
    )
    .await?;
    tokio::time::sleep(interval / 4).await;
    let (c0, t0) = (daemon.cpu()?, Instant::now());
    tokio::time::sleep(interval / 4).await;
    let (c1, t1) = (daemon.cpu()?, Instant::now());
    let idle_rate = per_second(c1 - c0, t1 - t0);
    let rules = emu.router.nat_rules();
    let rule_count = rules.len();
    let mut marks = rules.into_iter().filter(|r| {
        r.fields
            .get("comment")
            .is_some_and(|c| c.starts_with("double-natpmp:"))
    });
    let (Some(first), Some(second)) = (marks.next(), marks.next()) else {
        return Err(BenchError::Expectation(
            "the router shows fewer than two rules of ours after the fill".into(),
        ));
    };
    // The next pass finds this rule of a live lease missing and recreates it: its last step.
    let c0 = daemon.cpu()?;
    let t0 = Instant::now();
    emu.router.delete_nat_rule(&first.id);
    let pass = next_pass(&emu.router, interval + Duration::from_secs(5)).await?;
    let pass_end = pass.end;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (c1, t1) = (daemon.cpu()?, Instant::now());
    let since = (t1 - t0).as_secs_f64();
    let quiet = QuietPass {
        rules: rule_count,
        cpu: Cpu {
            ticks_s: (c1 - c0).ticks_s - idle_rate.ticks_s * since,
            sched_s: (c1 - c0).sched_s - idle_rate.sched_s * since,
        },
        times: pass,
    };

    eprintln!("bench mapping: reconcile of {rule_count} rules, under load");
    emu.router.delete_nat_rule(&second.id);
    let lead = (interval / 3).min(Duration::from_secs(1));
    tokio::time::sleep_until((pass_end + interval - lead).into()).await;
    let load = Load::start(daemon.listen, &leases, mode)?;
    let loaded_pass = next_pass(&emu.router, lead + Duration::from_secs(10)).await;
    tokio::time::sleep(lead).await;
    let samples = load.stop().await?;
    let loaded_pass = loaded_pass?;
    let (mut during, mut without) = (Vec::new(), Vec::new());
    for &(sent, latency) in &samples.done {
        if sent <= loaded_pass.end && sent + latency >= loaded_pass.start {
            during.push(latency);
        } else {
            without.push(latency);
        }
    }
    let loaded = LoadedPass {
        during: Stats::of(during),
        without: Stats::of(without),
        rate: samples.done.len() as f64 / samples.elapsed.as_secs_f64().max(1e-9),
        times: loaded_pass,
    };
    let after_reconcile = daemon.rss()?;

    eprintln!("bench mapping: a start with {rule_count} rules on the router");
    let rules_before = emu.router.nat_rules().len();
    daemon.kill();
    emu.router.reset_counters();
    let restarted = Daemon::spawn(
        &emu,
        opts.pool,
        &DaemonSettings {
            reconcile_interval: None,
            tag: "scale-restart".into(),
        },
    )
    .await?;
    let restart = Restart {
        rules_before,
        started_in: restarted.started_in,
        cpu: restarted.cpu()?,
        removed: emu.router.command_count_for("/ip/firewall/nat/remove"),
        rules_after: emu.router.nat_rules().len(),
    };
    Ok(ScaleResult {
        idle,
        points,
        fill_rate,
        quiet,
        loaded,
        after_reconcile,
        restart,
    })
}

fn per_second(c: Cpu, over: Duration) -> Cpu {
    let s = over.as_secs_f64().max(1e-9);
    Cpu {
        ticks_s: c.ticks_s / s,
        sched_s: c.sched_s / s,
    }
}

/// Waits until the router has seen one more command with `path`.
async fn wait_for_count(
    router: &RouterSim,
    path: &str,
    budget: Duration,
) -> Result<(), BenchError> {
    let before = router.command_count_for(path);
    let deadline = Instant::now() + budget;
    while router.command_count_for(path) == before {
        if Instant::now() > deadline {
            return Err(BenchError::Expectation(format!(
                "no {path} within {budget:?}: the daemon's reconcile pass did not come"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// When a reconcile pass started and ended, as the router saw it, and when each of its
/// commands arrived.
pub struct PassTimes {
    start: Instant,
    end: Instant,
    /// The pass's commands in the order they arrived, with when.
    pub steps: Vec<(&'static str, Duration)>,
}

impl PassTimes {
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }
}

/// The commands of a pass, in order (`/ip/route/check` only when the user may run it).
const PASS_COMMANDS: &[&str] = &[
    PASS_FIRST,
    "/interface/print",
    "/ip/route/check",
    "/ip/firewall/nat/print",
    "/interface/list/member/print",
    "/ip/service/print",
    PASS_LAST,
];

/// Watches the router for the next pass that recreates a rule: its start is the last
/// [`PASS_FIRST`] before the [`PASS_LAST`] that ends it. The counters are read every
/// [`WATCH_EVERY`] on a thread of its own that sleeps in between (neither the bench's runtime
/// nor `emulators::delay`, which would spin on a poll this frequent).
async fn next_pass(router: &Arc<RouterSim>, budget: Duration) -> Result<PassTimes, BenchError> {
    let router = Arc::clone(router);
    tokio::task::spawn_blocking(move || watch_pass(&router, budget)).await?
}

fn watch_pass(router: &RouterSim, budget: Duration) -> Result<PassTimes, BenchError> {
    let deadline = Instant::now() + budget;
    let mut counts: Vec<u64> = PASS_COMMANDS
        .iter()
        .map(|p| router.command_count_for(p))
        .collect();
    let mut start = None;
    let mut seen: Vec<(&'static str, Instant)> = Vec::new();
    loop {
        let now = Instant::now();
        for (i, path) in PASS_COMMANDS.iter().enumerate() {
            let c = router.command_count_for(path);
            if c == counts[i] {
                continue;
            }
            counts[i] = c;
            if *path == PASS_FIRST {
                start = Some(now);
                seen.clear();
            }
            seen.push((path, now));
            if *path == PASS_LAST {
                let Some(start) = start else {
                    return Err(BenchError::Expectation(
                        "a rule was recreated by a pass that started before the bench watched"
                            .into(),
                    ));
                };
                return Ok(PassTimes {
                    start,
                    end: now,
                    steps: seen.iter().map(|&(p, t)| (p, t - start)).collect(),
                });
            }
        }
        if now > deadline {
            return Err(BenchError::Expectation(format!(
                "no reconcile pass recreated the deleted rule within {budget:?}"
            )));
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

/// Clients renewing their leases at a steady pace until stopped. They run on a runtime and a
/// thread of their own: the emulator's work on the bench's runtime (encoding 10,000 rules for
/// the pass's listing takes about 100 ms of one core) must not be measured as the daemon's
/// latency.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Vec<(Instant, Duration)>, BenchError>>,
    started: Instant,
}

struct LoadSamples {
    /// (sent at, latency) of every renewal.
    done: Vec<(Instant, Duration)>,
    elapsed: Duration,
}

impl Load {
    /// Four clients (two in smoke runs), each renewing one of its leases every 4 ms (10 ms).
    fn start(to: SocketAddr, leases: &[(Ipv4Addr, u16)], mode: Mode) -> Result<Load, BenchError> {
        let (clients, period) = match mode {
            Mode::Smoke => (2, Duration::from_millis(10)),
            _ => (4, Duration::from_millis(4)),
        };
        let mut by_ip: BTreeMap<Ipv4Addr, Vec<u16>> = BTreeMap::new();
        for &(ip, port) in leases {
            by_ip.entry(ip).or_default().push(port);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let clients: Vec<(Ipv4Addr, Vec<u16>)> = by_ip.into_iter().take(clients).collect();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-load".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for (ip, ports) in clients {
                        let stop = flag.clone();
                        tasks.spawn(renew_until_stopped(to, ip, ports, period, stop));
                    }
                    let mut done = Vec::new();
                    while let Some(r) = tasks.join_next().await {
                        done.extend(r??);
                    }
                    Ok(done)
                })
            })?;
        Ok(Load {
            stop,
            thread,
            started: Instant::now(),
        })
    }

    async fn stop(self) -> Result<LoadSamples, BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        let thread = self.thread;
        let done = tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| BenchError::Setup("the load thread panicked".into()))??;
        Ok(LoadSamples { done, elapsed })
    }
}

/// One load client: renews `ports` in turn, one every `period`, until `stop`.
async fn renew_until_stopped(
    to: SocketAddr,
    ip: Ipv4Addr,
    ports: Vec<u16>,
    period: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Vec<(Instant, Duration)>, BenchError> {
    let sock = UdpSocket::bind((ip, 0)).await?;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut done = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let sent = Instant::now();
        let x = map(&sock, to, ports[i % ports.len()]).await?;
        done.push((sent, x.latency));
        i += 1;
    }
    Ok(done)
}

/// What the idle daemon cost over one window.
pub struct Window {
    pub seconds: f64,
    pub cpu: Cpu,
    pub switches: Switches,
    pub switches_end: Switches,
    /// NAT-PMP requests the daemon sent the gateway (its own: address refresh, keeper).
    pub upstream_requests: u64,
    /// Client renewals in the window, and their latencies.
    pub renewals: Stats,
}

impl Window {
    /// CPU time per minute, seconds.
    pub fn cpu_per_minute(&self) -> f64 {
        self.cpu.sched_s / self.seconds * 60.0
    }
    /// Share of one core, per cent.
    pub fn core_percent(&self) -> f64 {
        self.cpu.sched_s / self.seconds * 100.0
    }
    /// Voluntary context switches per second: each is a thread going to sleep, so one
    /// wake-up each.
    pub fn wakeups_per_s(&self) -> f64 {
        self.switches.voluntary as f64 / self.seconds
    }
    pub fn preempted_per_s(&self) -> f64 {
        self.switches.involuntary as f64 / self.seconds
    }
}

pub struct IdleResult {
    pub leases: usize,
    pub period: Duration,
    pub quiet: Window,
    pub renewing: Window,
    pub rss: Rss,
}

/// The leases of the idle measurement, and how often their clients renew.
const IDLE_LEASES: usize = 100;
const RENEW_EVERY: Duration = Duration::from_secs(30);

/// 100 leases over 10 client addresses, a gateway granting 60 s (so clients renew every 30 s,
/// as against Proton), 5/20 ms: a quiet window with no client traffic, then a window in which
/// each lease renews every 30 s, the renewals spread evenly.
pub async fn measure_idle(opts: &Options) -> Result<IdleResult, BenchError> {
    let (quiet_s, renew_s) = opts.mode.idle_windows();
    let gateway = GatewayConfig {
        max_lifetime: 60,
        ..gateway_config(Profile::Bulk, Duration::from_millis(20))
    };
    let emu = Emulators::start(gateway, Duration::from_millis(5)).await?;
    let daemon = Daemon::spawn(
        &emu,
        opts.pool,
        &DaemonSettings {
            reconcile_interval: None,
            tag: "idle".into(),
        },
    )
    .await?;
    let mut ports = Ports::new();
    let made = map_concurrently(daemon.listen, ports.take(IDLE_LEASES)?, 10).await?;
    let mut leases = made.leases;
    leases.sort();
    // Let the creation settle (replies sent, buffers freed); a measurement pause.
    tokio::time::sleep(match opts.mode {
        Mode::Smoke => Duration::from_millis(200),
        _ => Duration::from_secs(1),
    })
    .await;

    let quiet = window(&emu, &daemon, Duration::from_secs_f64(quiet_s), |_| None).await?;
    // Lease j renews at j × 30 s / 100 into the window, and every 30 s after.
    let step = RENEW_EVERY / IDLE_LEASES as u32;
    let mut socks = BTreeMap::new();
    for &(ip, _) in &leases {
        if let std::collections::btree_map::Entry::Vacant(e) = socks.entry(ip) {
            e.insert(UdpSocket::bind((ip, 0)).await?);
        }
    }
    let schedule: Vec<(Duration, Ipv4Addr, u16)> = {
        let mut s = Vec::new();
        let total = Duration::from_secs_f64(renew_s);
        for (j, &(ip, port)) in leases.iter().enumerate() {
            let mut at = step * j as u32;
            while at < total {
                s.push((at, ip, port));
                at += RENEW_EVERY;
            }
        }
        s.sort();
        s
    };
    let renewing = window(&emu, &daemon, Duration::from_secs_f64(renew_s), |start| {
        Some(renew_on_schedule(start, &schedule, &socks, daemon.listen))
    })
    .await?;
    Ok(IdleResult {
        leases: leases.len(),
        period: RENEW_EVERY,
        quiet,
        renewing,
        rss: daemon.rss()?,
    })
}

type Renewals<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Duration>, BenchError>> + 'a>>;

fn renew_on_schedule<'a>(
    start: Instant,
    schedule: &'a [(Duration, Ipv4Addr, u16)],
    socks: &'a BTreeMap<Ipv4Addr, UdpSocket>,
    to: SocketAddr,
) -> Renewals<'a> {
    Box::pin(async move {
        let mut lat = Vec::with_capacity(schedule.len());
        for &(at, ip, port) in schedule {
            tokio::time::sleep_until((start + at).into()).await;
            let sock = socks
                .get(&ip)
                .ok_or_else(|| BenchError::Setup(format!("no socket bound on {ip}")))?;
            lat.push(map(sock, to, port).await?.latency);
        }
        Ok(lat)
    })
}

/// The daemon's CPU time and context switches over `length`, while `work` (if any) runs.
async fn window<'a>(
    emu: &Emulators,
    daemon: &Daemon,
    length: Duration,
    work: impl FnOnce(Instant) -> Option<Renewals<'a>>,
) -> Result<Window, BenchError> {
    let requests0 = emu.gateway.requests_received();
    let (c0, s0) = (daemon.cpu()?, daemon.switches()?);
    let start = Instant::now();
    let renewals = match work(start) {
        Some(w) => {
            let (lat, ()) = tokio::join!(w, tokio::time::sleep_until((start + length).into()));
            lat?
        }
        None => {
            tokio::time::sleep_until((start + length).into()).await;
            Vec::new()
        }
    };
    let (c1, s1) = (daemon.cpu()?, daemon.switches()?);
    let seconds = start.elapsed().as_secs_f64();
    Ok(Window {
        seconds,
        cpu: c1 - c0,
        switches: Switches {
            voluntary: s1.voluntary.saturating_sub(s0.voluntary),
            involuntary: s1.involuntary.saturating_sub(s0.involuntary),
            threads: s1.threads,
        },
        switches_end: s1,
        // The daemon's own requests (the keeper's renewals, the address refresh): everything
        // the gateway saw, since a client's renewal is answered from the lease.
        upstream_requests: emu.gateway.requests_received() - requests0,
        renewals: Stats::of(renewals),
    })
}
