//! Mapping benchmark: how close a new mapping and a renewal come to their network floor, how
//! throughput scales with concurrent clients, and what the daemon costs at 10,000 mappings and
//! while idle, for two gateway profiles (BENCHMARKS.md holds the last full run).
//!
//! The daemon runs as its own process (the `double-natpmp` binary cargo built next to this
//! bench, configured through the environment), so its memory, CPU time and wake-ups, read from
//! `/proc/<pid>`, are its own and not the emulators'. The RouterOS API emulator and the NAT-PMP
//! gateway emulator run inside this process on 127.0.0.1:0, each holding its replies for an
//! injected delay (one router RTT per API command, one upstream RTT per NAT-PMP exchange, exact
//! to 0.2 ms: `emulators::delay`); the bench measures the round trips they really take on a bare
//! session and prints them beside the nominal ones. Clients are UDP sockets on 127.0.0.x in
//! this process. Nothing leaves loopback.
//!
//! Profiles: `proton` (the gateway as ProtonVPN's: 60 s lifetime, 5 ports per peer, random
//! external ports: what a home user sees) and `bulk` (quota 1,000,000, 3600 s: for scale).
//!
//! Floors: the router port is chosen locally, so a new mapping needs one RouterOS command and
//! one upstream exchange that do not depend on each other: its floor is max(router RTT,
//! upstream RTT) (issue 14; today's daemon asks one after the other). A delete needs the
//! gateway's delete, the rule's lookup by comment (a read, which may run with it) and then the
//! rule's remove: its floor is max(router RTT, upstream RTT) + router RTT. A renewal answered
//! from the lease needs no round trip. With a pool of P RouterOS connections, new mappings cannot
//! complete faster than P / router RTT per second.
//!
//! Run:
//! - `scripts/bench.sh` (release build, then `cargo bench --bench mapping`): the full run;
//! - `cargo bench --bench mapping -- --quick` (or `BENCH_QUICK=1`): a short run;
//! - `-- --rtt 2/10 --rtt 5/20` (chosen scenarios), `--profile proton|bulk`, `--only
//!   latency|scale|idle` (parts, repeatable), `--pool 8`;
//! - `-- --throughput-only --rtt 5/20 --clients 256`: where the concurrent phase spends its time;
//! - `BENCH_DAEMON=path/to/double-natpmp`: measure another build of the daemon;
//!   `BENCH_DAEMON_ENV="MAX_INFLIGHT=1024"`: extra settings for it;
//! - `cargo test --bench mapping` (and `cargo test --all-targets`) run the smoke mode: cargo
//!   passes no `--bench` flag then, so the bench runs a few seconds against the debug binary.
//!
//! The tables go to stdout and to `<target dir>/bench-mapping.md` (`bench-mapping-quick.md` for
//! short runs). The exit status is non-zero when the benchmark cannot complete (the daemon does
//! not start or answer, a mapping fails, a reconcile pass never comes); a missed target is
//! reported, never a failure.

mod client;
mod harness;
mod latency;
mod report;
mod scale;

use std::process::ExitCode;

use harness::{daemon_exe, target_dir, BenchError};

/// How long and what to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// `full`, `quick` or `smoke` (under `cargo test`).
    pub mode: Mode,
    /// (router RTT, upstream RTT) pairs in milliseconds.
    pub scenarios: Vec<(u64, u64)>,
    /// Gateway profiles to run.
    pub profiles: Vec<Profile>,
    /// Parts to run.
    pub parts: Vec<Part>,
    /// RouterOS connection pool size given to the daemon.
    pub pool: u16,
    /// Concurrency levels of the throughput measurement (`--clients N`, repeatable).
    pub clients: Vec<usize>,
    /// `--throughput-only`: only the bulk profile's concurrent phase, with where it spends its
    /// time (completions over time, retransmissions, router adds).
    pub throughput_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    Quick,
    Smoke,
}

/// The gateway the daemon maps at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// ProtonVPN-shaped: 60 s lifetime, 5 ports per peer, random external ports.
    Proton,
    /// Scale: quota 1,000,000, 3600 s lifetime, random external ports.
    Bulk,
}

/// Parts of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// New mappings, renewals, throughput, for every profile and scenario.
    Latency,
    /// 10,000 mappings: memory, reconcile, a start with their rules on the router.
    Scale,
    /// 100 leases renewing every 30 s: CPU and wake-ups.
    Idle,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Proton => "proton",
            Profile::Bulk => "bulk",
        }
    }
    pub fn title(self) -> &'static str {
        match self {
            Profile::Proton => {
                "Proton profile (60 s lifetime, 5 ports per peer, random external ports)"
            }
            Profile::Bulk => {
                "Bulk profile (quota 1,000,000, 3600 s lifetime, random external ports)"
            }
        }
    }
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Quick => "quick",
            Mode::Smoke => "smoke (cargo test)",
        }
    }
    /// Sequential samples for new mappings and renewals (bulk), at a scenario's RTT.
    pub fn samples(self, rtt: (u64, u64)) -> usize {
        match (self, rtt) {
            (Mode::Full, _) => 1000,
            (Mode::Quick, _) => 200,
            (Mode::Smoke, (0, 0)) => 50,
            (Mode::Smoke, _) => 15,
        }
    }
    /// Map-and-delete cycles of the proton profile (5 ports per peer: each new mapping is
    /// deleted before the next), and its renewals.
    pub fn proton_cycles(self) -> usize {
        match self {
            Mode::Full => 300,
            Mode::Quick => 80,
            Mode::Smoke => 8,
        }
    }
    /// Mappings each concurrency level creates in total.
    pub fn throughput_total(self, clients: usize) -> usize {
        let per_client = match (self, clients) {
            (Mode::Full, 1) => 200,
            (Mode::Full, 16) => 50,
            (Mode::Full, _) => 10,
            (Mode::Quick, 1) => 40,
            (Mode::Quick, 16) => 10,
            (Mode::Quick, _) => 2,
            (Mode::Smoke, 1) => 10,
            (Mode::Smoke, _) => 1,
        };
        per_client * clients
    }
    /// Live-mapping counts at which the daemon's RSS is read; the last is the scale count.
    pub fn memory_points(self) -> &'static [usize] {
        match self {
            Mode::Full => &[1_000, 10_000],
            Mode::Quick => &[1_000, 2_000],
            Mode::Smoke => &[300],
        }
    }
    /// RECONCILE_INTERVAL of the scale daemon, seconds.
    pub fn reconcile_interval(self) -> u64 {
        match self {
            Mode::Full => 10,
            Mode::Quick => 3,
            Mode::Smoke => 1,
        }
    }
    /// Idle: how long the quiet window and the renewal window last, seconds.
    pub fn idle_windows(self) -> (f64, f64) {
        match self {
            Mode::Full => (20.0, 60.0),
            Mode::Quick => (5.0, 15.0),
            Mode::Smoke => (0.3, 0.6),
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
    let mut profiles = Vec::new();
    let mut parts = Vec::new();
    let mut pool = 4u16;
    let mut clients = Vec::new();
    let mut throughput_only = false;
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
            "--profile" => profiles.push(match it.next().map(String::as_str) {
                Some("proton") => Profile::Proton,
                Some("bulk") => Profile::Bulk,
                _ => return Err(BenchError::Setup("--profile needs proton or bulk".into())),
            }),
            "--only" => parts.push(match it.next().map(String::as_str) {
                Some("latency") => Part::Latency,
                Some("scale") => Part::Scale,
                Some("idle") => Part::Idle,
                _ => {
                    return Err(BenchError::Setup(
                        "--only needs latency, scale or idle".into(),
                    ))
                }
            }),
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
            "--calibrate" => {
                return Err(BenchError::Setup(
                    "--calibrate is gone: the emulators' delays are exact now (emulators::delay)"
                        .into(),
                ))
            }
            // cargo's own flags (--bench) and test-harness flags are not ours.
            _ => {}
        }
    }
    if scenarios.is_empty() {
        scenarios = match mode {
            // Every code path, the injected delay included, in little time.
            Mode::Smoke => vec![(0, 0), (1, 2)],
            _ => vec![(0, 0), (5, 20), (20, 5)],
        };
    }
    if profiles.is_empty() {
        profiles = vec![Profile::Proton, Profile::Bulk];
    }
    if parts.is_empty() {
        parts = vec![Part::Latency, Part::Scale, Part::Idle];
    }
    if clients.is_empty() {
        clients = vec![1, 16, 256];
    }
    Ok(Options {
        mode,
        scenarios,
        profiles,
        parts,
        pool,
        clients,
        throughput_only,
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
        Ok(text) => {
            println!("{text}");
            let out = target_dir().join(if opts.throughput_only {
                "bench-throughput.md"
            } else if opts.mode == Mode::Full {
                "bench-mapping.md"
            } else {
                "bench-mapping-quick.md"
            });
            match std::fs::write(&out, &text) {
                Ok(()) => eprintln!("bench mapping: tables written to {}", out.display()),
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

async fn run(opts: &Options) -> Result<String, BenchError> {
    let started = report::RunInfo::now();
    if opts.throughput_only {
        let mut scenarios = Vec::new();
        for &rtt in &opts.scenarios {
            eprintln!(
                "bench mapping: throughput, router {} ms / upstream {} ms",
                rtt.0, rtt.1
            );
            scenarios.push(latency::measure(opts, Profile::Bulk, rtt).await?);
        }
        return Ok(report::render_throughput(opts, &started, &scenarios));
    }
    let latency = async {
        let mut v = Vec::new();
        if opts.parts.contains(&Part::Latency) {
            for &profile in &opts.profiles {
                for &rtt in &opts.scenarios {
                    eprintln!(
                        "bench mapping: {} profile, router {} ms / upstream {} ms",
                        profile.name(),
                        rtt.0,
                        rtt.1
                    );
                    v.push(latency::measure(opts, profile, rtt).await?);
                }
            }
        }
        Ok::<_, BenchError>(v)
    };
    let scale = async {
        if !opts.parts.contains(&Part::Scale) {
            return Ok(None);
        }
        eprintln!("bench mapping: scale (bulk profile, 0/0 ms)");
        scale::measure_scale(opts).await.map(Some)
    };
    let idle = async {
        if !opts.parts.contains(&Part::Idle) {
            return Ok(None);
        }
        eprintln!("bench mapping: idle (100 leases renewing every 30 s)");
        scale::measure_idle(opts).await.map(Some)
    };
    // A smoke run only proves that every part completes: the parts run at once, so the test
    // command waits seconds, not the sum. Measuring runs keep them apart.
    let (latency, scale, idle) = if opts.mode == Mode::Smoke {
        tokio::join!(latency, scale, idle)
    } else {
        (latency.await, scale.await, idle.await)
    };
    let results = report::Results {
        latency: latency?,
        scale: scale?,
        idle: idle?,
    };
    Ok(report::render(opts, &started, &results))
}
