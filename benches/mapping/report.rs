//! The tables: the instrument (injected against realised round trips), one table of targets
//! per profile with the floor, the ratio and the previous run's figure, and the details.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::harness::{daemon_exe, release_daemon, target_dir, Rss, DAEMON_ENV, DAEMON_ENV_EXTRA};
use crate::latency::{ScenarioResult, PROTON_QUOTA};
use crate::scale::{IdleResult, PassTimes, ScaleResult, Window};
use crate::{Mode, Options, Profile};

/// Where a missed target's remedy lies, when it is not the bench's.
const NEEDS_PARALLEL: &str = "point 1 of issue 14 (lead): router and gateway at once";
const NEEDS_KEEPER: &str = "the keeper (issue 10)";
const NEEDS_ADOPTION: &str = "adoption of the rules at start (issue 10)";
const NEEDS_EARLY_LOOKUP: &str = "issue 20 point 7: the rule's lookup during the gateway's delete";
/// The scale the targets are set at.
const SCALE: usize = 10_000;

/// What every part measured.
#[derive(Default)]
pub struct Results {
    pub latency: Vec<ScenarioResult>,
    pub scale: Option<ScaleResult>,
    pub idle: Option<IdleResult>,
}

/// When the run started, on what.
pub struct RunInfo {
    date: String,
    load_start: String,
    commit: String,
}

impl RunInfo {
    pub fn now() -> RunInfo {
        let out = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        RunInfo {
            date: out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            load_start: load_average(),
            commit: out(
                "git",
                &[
                    "-C",
                    env!("CARGO_MANIFEST_DIR"),
                    "describe",
                    "--always",
                    "--dirty",
                ],
            ),
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

fn machine(info: &RunInfo) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpus} CPUs (`nproc`), \"{model}\" (/proc/cpuinfo model name); {}; load average {} at the start, {} at the end",
        info.date,
        info.load_start,
        load_average()
    )
}

fn header(s: &mut String, opts: &Options, info: &RunInfo, title: &str) {
    let _ = writeln!(s, "## double-natpmp {title} ({} run)\n", opts.mode.name());
    let _ = writeln!(s, "- machine: {}", machine(info));
    let extra = std::env::var(DAEMON_ENV_EXTRA).unwrap_or_default();
    let _ = writeln!(
        s,
        "- daemon: `{}` at `{}`, RouterOS pool {} connections, LOG_LEVEL=WARN{}; emulators in the \
         bench process on 127.0.0.1, one injected router RTT per API command and one upstream \
         RTT per NAT-PMP exchange (`emulators::delay`)",
        daemon_exe(),
        info.commit,
        opts.pool,
        if extra.is_empty() {
            String::new()
        } else {
            format!(", extra environment `{extra}`")
        }
    );
}

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

fn count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One row of a profile's targets table.
struct Target {
    label: String,
    floor: String,
    measured: String,
    ratio: String,
    verdict: String,
    depends: &'static str,
}

/// The measured figures of the last full run, from the committed BENCHMARKS.md: for each
/// profile's targets table, its rows by label.
struct Previous {
    text: String,
}

impl Previous {
    fn load() -> Previous {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
        Previous {
            text: std::fs::read_to_string(path).unwrap_or_default(),
        }
    }

    /// The "measured" cell of the row `label` in the targets table under the heading that
    /// names `profile`.
    fn get(&self, profile: Profile, label: &str) -> String {
        let mut in_profile = false;
        for line in self.text.lines() {
            if line.starts_with("### ") {
                in_profile = line.contains(profile.title_short());
                continue;
            }
            if !in_profile {
                continue;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // "| label | floor | measured | ..." splits into "", label, floor, measured, …
            if cells.len() > 4 && cells[1] == label {
                return cells[3].to_owned();
            }
        }
        "—".into()
    }
}

impl Profile {
    /// The words that start its section heading.
    fn title_short(self) -> &'static str {
        match self {
            Profile::Proton => "Proton profile",
            Profile::Bulk => "Bulk profile",
        }
    }
}

fn render_targets(s: &mut String, profile: Profile, targets: &[Target], previous: &Previous) {
    let _ = writeln!(
        s,
        "| target | floor or bound | measured | ratio | verdict | previous run | depends on |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for t in targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            t.label,
            t.floor,
            t.measured,
            t.ratio,
            t.verdict,
            previous.get(profile, &t.label),
            t.depends
        );
    }
}

/// The latency targets of one profile: new mappings at 5/20 and 20/5, one router command each,
/// deletes (proton), and the renewal from the lease at 5/20.
fn latency_targets(scenarios: &[&ScenarioResult]) -> Vec<Target> {
    let mut v = Vec::new();
    for r in scenarios
        .iter()
        .filter(|r| r.router_ms > 0 && r.new.len() > 0)
    {
        let rtt = format!("{}/{}", r.router_ms, r.upstream_ms);
        let floor = r.floor();
        for (pct, slack) in [(50.0, 1.0), (99.0, 5.0)] {
            let p = r.new.p(pct);
            v.push(Target {
                label: format!("new mapping p{pct:.0} ≤ max(R, U) + {slack:.0} ms at {rtt}"),
                floor: format!(
                    "{floor:.0} ms (realised {:.2}; R + U = {})",
                    r.realised_floor(),
                    r.router_ms + r.upstream_ms
                ),
                measured: format!("{p:.2} ms"),
                ratio: ratio(p, floor),
                verdict: verdict(p <= floor + slack).into(),
                depends: if p <= floor + slack {
                    ""
                } else {
                    NEEDS_PARALLEL
                },
            });
        }
        v.push(Target {
            label: format!("one router command per new mapping at {rtt}"),
            floor: "1".into(),
            measured: format!("{:.2} ({:.2} nat/add)", r.cmds_per_new, r.adds_per_new),
            ratio: ratio(r.cmds_per_new, 1.0),
            verdict: verdict(r.cmds_per_new <= 1.0 && r.adds_per_new <= 1.0).into(),
            depends: "",
        });
        if let Some(delete) = &r.delete {
            let p = delete.p(50.0);
            let floor = r.delete_floor();
            v.push(Target {
                label: format!("delete p50 ≤ max(R, U) + R + 1 ms at {rtt}"),
                floor: format!(
                    "{floor:.0} ms (realised {:.2}; U + 2R = {})",
                    r.realised_delete_floor(),
                    2 * r.router_ms + r.upstream_ms
                ),
                measured: format!("{p:.2} ms, {:.2} router cmds", r.cmds_per_delete),
                ratio: ratio(p, floor),
                verdict: verdict(p <= floor + 1.0).into(),
                depends: if p <= floor + 1.0 {
                    ""
                } else {
                    NEEDS_EARLY_LOOKUP
                },
            });
        }
        if (r.router_ms, r.upstream_ms) == (5, 20) {
            let p = r.renew.p(50.0);
            v.push(Target {
                label: "renewal answered from the lease: p50 ≤ 0.5 ms at 5/20".into(),
                floor: "0.5 ms (no round trip)".into(),
                measured: format!("{p:.2} ms, {:.2} router cmds", r.cmds_per_renewal),
                ratio: ratio(p, 0.5),
                verdict: verdict(p <= 0.5).into(),
                depends: if p <= 0.5 { "" } else { NEEDS_KEEPER },
            });
        }
    }
    v
}

fn bulk_targets(opts: &Options, results: &Results, scenarios: &[&ScenarioResult]) -> Vec<Target> {
    let mut v = latency_targets(scenarios);
    let pool = f64::from(opts.pool);
    for r in scenarios.iter().filter(|r| r.router_ms > 0) {
        if let Some(t) = r.throughput.iter().find(|t| t.clients == 256) {
            let ideal = pool * 1000.0 / r.router_ms as f64;
            let rate = t.rate();
            v.push(Target {
                label: format!(
                    "256 clients ≥ 80 % of pool / router RTT at {}/{}",
                    r.router_ms, r.upstream_ms
                ),
                floor: format!("{ideal:.0}/s ({} / {} ms)", opts.pool, r.router_ms),
                measured: format!("{rate:.0}/s"),
                ratio: ratio(rate, ideal),
                verdict: verdict(rate >= 0.8 * ideal).into(),
                depends: "",
            });
        }
    }
    if let Some(sc) = &results.scale {
        let idle = mib(sc.idle.total);
        v.push(Target {
            label: "RSS idle ≤ 5 MiB".into(),
            floor: "5 MiB".into(),
            measured: format!("{idle:.2} MiB"),
            ratio: ratio(idle, 5.0),
            verdict: verdict(idle <= 5.0).into(),
            depends: "",
        });
        let n = sc.count();
        let at_scale = n == SCALE;
        let scaled = |what: String| {
            if at_scale {
                what
            } else {
                format!("{what} at {}", count(n))
            }
        };
        let judge = |ok: bool| -> String {
            if at_scale {
                verdict(ok).into()
            } else {
                format!("n/a ({} mappings)", count(n))
            }
        };
        if let Some((_, rss)) = sc.points.last() {
            let m = mib(rss.total);
            v.push(Target {
                label: "RSS ≤ 8 MiB with 10,000 live mappings".into(),
                floor: "8 MiB".into(),
                measured: scaled(format!("{m:.2} MiB")),
                ratio: ratio(m, 8.0),
                verdict: judge(m <= 8.0),
                depends: "",
            });
        }
        let after = mib(sc.after_reconcile.total);
        v.push(Target {
            label: "RSS ≤ 8 MiB with 10,000 live mappings, after reconciles".into(),
            floor: "8 MiB".into(),
            measured: scaled(format!(
                "{after:.2} MiB (peak {:.2})",
                mib(sc.after_reconcile.peak)
            )),
            ratio: ratio(after, 8.0),
            verdict: judge(after <= 8.0),
            depends: "",
        });
        let cpu_ms = sc.quiet.cpu.sched_s * 1000.0;
        v.push(Target {
            label: "reconcile of 10,000 rules ≤ 200 ms CPU".into(),
            floor: "200 ms".into(),
            measured: scaled(format!(
                "{cpu_ms:.0} ms CPU in {:.0} ms",
                sc.quiet.times.duration().as_secs_f64() * 1000.0
            )),
            ratio: ratio(cpu_ms, 200.0),
            verdict: judge(cpu_ms <= 200.0),
            depends: "",
        });
        let (during, without) = (sc.loaded.during.p(99.0), sc.loaded.without.p(99.0));
        v.push(Target {
            label: "p99 of requests during a reconcile of 10,000 rules ≤ p99 without + 5 ms".into(),
            floor: format!("{without:.2} + 5 ms"),
            measured: scaled(format!("{during:.2} ms")),
            ratio: ratio(during, without + 5.0),
            verdict: judge(during <= without + 5.0),
            depends: "",
        });
        let secs = sc.restart.started_in.as_secs_f64();
        let adopted = sc.restart.rules_after >= sc.restart.rules_before;
        v.push(Target {
            label: "start that adopts 10,000 rules: first answer ≤ 3 s (0/0)".into(),
            floor: "3 s".into(),
            measured: scaled(format!(
                "{secs:.2} s ({})",
                if adopted {
                    "rules kept".to_owned()
                } else {
                    format!("removed {} rules, not adopted", sc.restart.removed)
                }
            )),
            ratio: ratio(secs, 3.0),
            verdict: if adopted {
                judge(secs <= 3.0)
            } else {
                format!("{} (not adopting)", judge(secs <= 3.0))
            },
            depends: NEEDS_ADOPTION,
        });
    }
    if let Some(idle) = &results.idle {
        let w = &idle.renewing;
        let pct = w.core_percent();
        v.push(Target {
            label: "idle with 100 leases renewing every 30 s ≤ 0.1 % of one core".into(),
            floor: "0.1 %".into(),
            measured: format!("{pct:.3} % ({:.3} s CPU per minute)", w.cpu_per_minute()),
            ratio: ratio(pct, 0.1),
            verdict: verdict(pct <= 0.1).into(),
            depends: "",
        });
        let (needed, allowed) = idle_wakeups_allowed(idle);
        let q = idle.quiet.wakeups_per_s();
        v.push(Target {
            label: "idle timer wake-ups no more than the leases' deadlines need".into(),
            floor: format!("{allowed:.2}/s ({needed:.2} own events/s)"),
            measured: format!(
                "{q:.2}/s with no client traffic; {:.2}/s renewing",
                w.wakeups_per_s()
            ),
            ratio: ratio(q, allowed),
            verdict: verdict(q <= allowed).into(),
            depends: "",
        });
    }
    let binary = release_binary();
    if let Some(size) = binary.size {
        let m = size as f64 / 1048576.0;
        v.push(Target {
            label: "stripped release binary ≤ 4 MiB".into(),
            floor: "4 MiB".into(),
            measured: format!("{m:.2} MiB"),
            ratio: ratio(m, 4.0),
            verdict: verdict(m <= 4.0 && binary.stripped == Some(true)).into(),
            depends: "",
        });
    }
    v
}

/// Wake-ups the quiet window may have: the daemon's own events in it (its requests to the
/// gateway: address refreshes, keeper renewals; no lease falls due while clients renew), each
/// allowed what a client renewal costs, plus one for the window's edges.
fn idle_wakeups_allowed(idle: &IdleResult) -> (f64, f64) {
    let q = &idle.quiet;
    let needed = q.upstream_requests as f64 / q.seconds;
    (
        needed,
        (q.upstream_requests as f64 * wakeups_per_renewal(idle) + 1.0) / q.seconds,
    )
}

/// Wake-ups one client renewal costs: the renewing window's, less the quiet rate, per renewal.
fn wakeups_per_renewal(idle: &IdleResult) -> f64 {
    let (q, w) = (&idle.quiet, &idle.renewing);
    let extra = w.switches.voluntary as f64 - q.wakeups_per_s() * w.seconds;
    extra.max(0.0) / (w.renewals.len().max(1) as f64)
}

pub fn render(opts: &Options, info: &RunInfo, results: &Results) -> String {
    let mut s = String::new();
    let previous = Previous::load();
    header(&mut s, opts, info, "mapping benchmark");
    let _ = writeln!(
        s,
        "- floors: a new mapping max(router RTT, upstream RTT) (the router port is chosen \
         locally, so the two round trips do not depend on each other); a delete max(router RTT, \
         upstream RTT) + router RTT (the rule's lookup by comment, a read, runs with the \
         gateway's delete; its remove after); a renewal answered from the lease none; \
         \"realised\" uses the round trips the emulators really take, below"
    );
    let _ = writeln!(
        s,
        "- previous run: the measured column of the same row in the committed BENCHMARKS.md"
    );
    if !release_daemon() {
        let _ = writeln!(
            s,
            "- **a debug build of the daemon (smoke mode)**: its figures say nothing about the \
             targets; run `scripts/bench.sh`"
        );
    }
    render_instrument(&mut s, &results.latency);

    for profile in [Profile::Proton, Profile::Bulk] {
        let scenarios: Vec<&ScenarioResult> = results
            .latency
            .iter()
            .filter(|r| r.profile == profile)
            .collect();
        let has_scale = results.scale.is_some() || results.idle.is_some();
        if scenarios.is_empty() && !(profile == Profile::Bulk && has_scale) {
            continue;
        }
        let _ = writeln!(s, "\n### {}\n", profile.title());
        let targets = match profile {
            Profile::Proton => latency_targets(&scenarios),
            Profile::Bulk => bulk_targets(opts, results, &scenarios),
        };
        render_targets(&mut s, profile, &targets, &previous);
        if profile == Profile::Proton {
            let _ = writeln!(
                s,
                "\nMemory, scale, idle cost and the binary do not depend on the gateway's quota: \
                 see the bulk profile."
            );
            render_proton_details(&mut s, &scenarios);
        } else {
            render_bulk_details(&mut s, opts, &scenarios);
            if let Some(sc) = &results.scale {
                render_scale(&mut s, opts.mode, sc);
            }
            if let Some(idle) = &results.idle {
                render_idle(&mut s, idle);
            }
        }
    }
    s
}

fn render_instrument(s: &mut String, scenarios: &[ScenarioResult]) {
    if scenarios.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n### The instrument: injected and realised round trips (ms)\n"
    );
    let _ = writeln!(
        s,
        "Measured from the bench process without the daemon: `/system/identity/print` on a bare \
         API session (only the shared word codec), the same through the daemon's RouterOS client \
         (`RouterApi`: pool checkout, idle check, tagged command), and one NAT-PMP exchange with \
         the gateway. Error = realised p50 − injected. \"Delay alone\": `emulators::delay::sleep` of \
         the same time in the bench process, without I/O; the rest of the error is loopback I/O \
         and waking the threads that wait for it (on this virtual machine, tens of microseconds \
         after a few idle milliseconds), which a daemon pays too. Before `emulators::delay` (tokio's \
         1 ms timer, measured at c2371a8 on this machine): 5 ms realised 6.27 ms (p99 6.50), \
         20 ms realised 21.21 ms (p99 21.62).\n"
    );
    let _ = writeln!(
        s,
        "| profile | injected router/upstream | router cmd p50 | p99 | error | delay alone p50 | via RouterApi p50 | NAT-PMP exchange p50 | p99 | error | delay alone p50 |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in scenarios {
        let x = &r.realised;
        let _ = writeln!(
            s,
            "| {} | {}/{} | {:.2} | {:.2} | {:+.2} | {:.3} | {:.2} | {:.2} | {:.2} | {:+.2} | {:.3} |",
            r.profile.name(),
            r.router_ms,
            r.upstream_ms,
            x.router.p(50.0),
            x.router.p(99.0),
            x.router.p(50.0) - r.router_ms as f64,
            x.delay_router.p(50.0),
            x.router_api.p(50.0),
            x.upstream.p(50.0),
            x.upstream.p(99.0),
            x.upstream.p(50.0) - r.upstream_ms as f64,
            x.delay_upstream.p(50.0),
        );
    }
}

fn render_proton_details(s: &mut String, scenarios: &[&ScenarioResult]) {
    if scenarios.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n#### Proton details (ms)\n");
    let _ = writeln!(
        s,
        "The gateway keeps {PROTON_QUOTA} ports per peer and the daemon is one peer, so each new \
         mapping is deleted before the next ({} cycles); renewals go round {PROTON_QUOTA} live \
         leases; then a sixth port is asked for while {PROTON_QUOTA} are mapped.\n",
        scenarios.first().map_or(0, |r| r.new.len())
    );
    let _ = writeln!(
        s,
        "| router/upstream RTT | new p50 | new p95 | new p99 | p50 − max(R, U) | p50 − realised max | router cmds per new (nat/add) | delete p50 | renew p50 | renew p99 | router cmds per renewal | sixth port: result, p50, router cmds (nat/add) | external ports | retransmits |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in scenarios {
        let q = r.over_quota.as_ref();
        let e = r.external.as_ref();
        let _ = writeln!(
            s,
            "| {}/{} | {:.2} | {:.2} | {:.2} | {:+.2} | {:+.2} | {:.2} ({:.2}) | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            r.router_ms,
            r.upstream_ms,
            r.new.p(50.0),
            r.new.p(95.0),
            r.new.p(99.0),
            r.new.p(50.0) - r.floor(),
            r.new.p(50.0) - r.realised_floor(),
            r.cmds_per_new,
            r.adds_per_new,
            r.delete.as_ref().map_or(0.0, |d| d.p(50.0)),
            r.renew.p(50.0),
            r.renew.p(99.0),
            r.cmds_per_renewal,
            q.map_or("—".into(), |q| format!(
                "{}, {:.2}, {:.2} ({:.2})",
                q.results
                    .iter()
                    .map(|(c, n)| format!("{c}×{n}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                q.latency.p(50.0),
                q.cmds_per,
                q.adds_per
            )),
            e.map_or("—".into(), |e| format!(
                "{} distinct of {}, {} equal to the internal port, {} in 32768–65535",
                e.distinct, e.samples, e.equal_to_internal, e.in_gateway_range
            )),
            r.retransmits,
        );
    }
}

fn render_bulk_details(s: &mut String, opts: &Options, scenarios: &[&ScenarioResult]) {
    if scenarios.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n#### Bulk latency (ms)\n");
    let _ = writeln!(
        s,
        "Sequential new mappings from one client ({} per scenario at the full run's size), then \
         the same ports renewed.\n",
        scenarios.first().map_or(0, |r| r.new.len())
    );
    let _ = writeln!(
        s,
        "| router/upstream RTT | new p50 | new p95 | new p99 | p50 − max(R, U) | p50 − realised max | p50 − realised R + U | router cmds per new (nat/add) | renew p50 | renew p99 | renew p50 − realised U | router cmds per renewal | retransmits |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in scenarios {
        let x = &r.realised;
        let _ = writeln!(
            s,
            "| {}/{} | {:.2} | {:.2} | {:.2} | {:+.2} | {:+.2} | {:+.2} | {:.2} ({:.2}) | {:.2} | {:.2} | {:+.2} | {:.2} | {} |",
            r.router_ms,
            r.upstream_ms,
            r.new.p(50.0),
            r.new.p(95.0),
            r.new.p(99.0),
            r.new.p(50.0) - r.floor(),
            r.new.p(50.0) - r.realised_floor(),
            r.new.p(50.0) - x.router.p(50.0) - x.upstream.p(50.0),
            r.cmds_per_new,
            r.adds_per_new,
            r.renew.p(50.0),
            r.renew.p(99.0),
            r.renew.p(50.0) - x.upstream.p(50.0),
            r.cmds_per_renewal,
            r.retransmits,
        );
    }
    let _ = writeln!(
        s,
        "\n#### Bulk throughput: concurrent clients creating distinct mappings\n"
    );
    let _ = writeln!(
        s,
        "Ideal = min(clients / max(R, U), pool / router RTT) mappings per second: one client waits \
         for each reply, and each new mapping holds one of the {} pooled connections for one \
         router RTT.\n",
        opts.pool
    );
    let _ = writeln!(
        s,
        "| router/upstream RTT | clients | mappings | seconds | mappings/s | ideal/s | ratio to ideal | latency p50 | latency p99 | retransmits |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    let pool = f64::from(opts.pool);
    for r in scenarios {
        for t in &r.throughput {
            let rate = t.rate();
            let ideal = (r.router_ms > 0).then(|| {
                (t.clients as f64 * 1000.0 / r.floor()).min(pool * 1000.0 / r.router_ms as f64)
            });
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
}

fn rss_cell(r: &Rss) -> String {
    format!(
        "{:.2} MiB (anonymous {:.2}, file-backed {:.2}; peak {:.2}; {} threads)",
        mib(r.total),
        mib(r.anon),
        mib(r.file),
        mib(r.peak),
        r.threads
    )
}

fn render_scale(s: &mut String, mode: Mode, sc: &ScaleResult) {
    let n = count(sc.count());
    let _ = writeln!(s, "\n#### Bulk scale: {n} live mappings (0/0 ms)\n");
    let _ = writeln!(
        s,
        "One daemon (RECONCILE_INTERVAL={} s) filled by 64 concurrent clients. CPU time is the \
         sum of the daemon's threads' `/proc/<pid>/task/*/schedstat` run time (ns), less its \
         idle rate; utime + stime from `/proc/<pid>/stat` (10 ms ticks) beside it. A pass is \
         timed from its first command (`/interface/print`) to its last (`nat/add` of a rule the \
         bench deleted, which the pass recreates), as the router sees them (read every 0.25 ms).\n",
        mode.reconcile_interval()
    );
    let _ = writeln!(s, "| what | value |");
    let _ = writeln!(s, "|---|---|");
    let _ = writeln!(s, "| RSS idle | {} |", rss_cell(&sc.idle));
    for (k, r) in &sc.points {
        let _ = writeln!(
            s,
            "| RSS with {} live mappings | {} |",
            count(*k),
            rss_cell(r)
        );
    }
    let _ = writeln!(
        s,
        "| RSS after the reconcile passes | {} |",
        rss_cell(&sc.after_reconcile)
    );
    if let Some((k, r)) = sc.points.last() {
        let per = (r.total as f64 - sc.idle.total as f64) * 1024.0 / *k as f64;
        let anon = (r.anon as f64 - sc.idle.anon as f64) * 1024.0 / *k as f64;
        let _ = writeln!(
            s,
            "| RSS growth per mapping | {per:.0} bytes ({anon:.0} anonymous) |"
        );
    }
    let _ = writeln!(
        s,
        "| table fill rate (64 clients) | {:.0} mappings/s |",
        sc.fill_rate
    );
    let q = &sc.quiet;
    let _ = writeln!(
        s,
        "| reconcile of {} rules, nothing else running | {:.1} ms; CPU {:.1} ms (ticks: {:.0} ms); commands at (ms): {} |",
        count(q.rules),
        q.times.duration().as_secs_f64() * 1000.0,
        q.cpu.sched_s * 1000.0,
        q.cpu.ticks_s * 1000.0,
        steps(&q.times)
    );
    let l = &sc.loaded;
    let _ = writeln!(
        s,
        "| reconcile under {:.0} renewals/s | {:.1} ms; requests in flight during it: {} (p50 {:.2}, p99 {:.2} ms); the others: {} (p50 {:.2}, p99 {:.2} ms); commands at (ms): {} |",
        l.rate,
        l.times.duration().as_secs_f64() * 1000.0,
        l.during.len(),
        l.during.p(50.0),
        l.during.p(99.0),
        l.without.len(),
        l.without.p(50.0),
        l.without.p(99.0),
        steps(&l.times)
    );
    let r = &sc.restart;
    let _ = writeln!(
        s,
        "| start with {} rules of ours on the router (after SIGKILL) | first answer {:.3} s; CPU {:.0} ms; {} `nat/remove`; rules left {} |",
        count(r.rules_before),
        r.started_in.as_secs_f64(),
        r.cpu.sched_s * 1000.0,
        r.removed,
        count(r.rules_after)
    );
}

/// `print 0.0, route/check 0.3, …`: when each command of a pass came, from its start.
fn steps(t: &PassTimes) -> String {
    t.steps
        .iter()
        .map(|(path, at)| {
            let short = path.trim_start_matches('/').replace("ip/firewall/", "");
            format!("{short} {:.1}", at.as_secs_f64() * 1000.0)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn window_row(s: &mut String, what: &str, w: &Window) {
    let _ = writeln!(
        s,
        "| {what} | {:.1} | {:.1} ms ({:.0} ms in ticks) | {:.2} ms | {:.4} % | {:.2} | {:.2} | {} | {} | {} |",
        w.seconds,
        w.cpu.sched_s * 1000.0,
        w.cpu.ticks_s * 1000.0,
        w.cpu_per_minute() * 1000.0,
        w.core_percent(),
        w.wakeups_per_s(),
        w.preempted_per_s(),
        w.switches_end.threads,
        w.upstream_requests,
        if w.renewals.len() > 0 {
            format!("{} (p50 {:.2} ms)", w.renewals.len(), w.renewals.p(50.0))
        } else {
            "0".into()
        },
    );
}

fn render_idle(s: &mut String, idle: &IdleResult) {
    let _ = writeln!(
        s,
        "\n#### Bulk idle: {} leases, clients renewing every {} s (5/20 ms)\n",
        idle.leases,
        idle.period.as_secs()
    );
    let _ = writeln!(
        s,
        "A fresh daemon; the gateway grants 60 s as Proton's does, so a client renews every \
         30 s; the renewals are spread evenly. CPU as above. Wake-ups: the voluntary context \
         switches of the daemon's threads (`/proc/<pid>/task/*/status`), each a thread that went \
         to sleep and was woken again; preemptions beside them. The quiet window has no client \
         traffic: its wake-ups are the daemon's own timers and its own upstream requests \
         (address refresh every 60 s). One client renewal costs {:.1} wake-ups (renewing \
         window less the quiet rate). RSS at the end: {}.\n",
        wakeups_per_renewal(idle),
        rss_cell(&idle.rss)
    );
    let _ = writeln!(
        s,
        "| window | seconds | CPU | per minute | of one core | wake-ups/s | preempted/s | threads | daemon's own upstream requests | client renewals |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    window_row(s, "quiet (no client traffic)", &idle.quiet);
    window_row(s, "renewing", &idle.renewing);
}

/// The `--throughput-only` report: for each scenario and concurrency level, the rate overall
/// and in the steady middle (10th to 90th percentile of the replies), how long the last 10 %
/// took, completions per 250 ms window, retransmissions, and the router's `nat/add` count.
pub fn render_throughput(opts: &Options, info: &RunInfo, scenarios: &[ScenarioResult]) -> String {
    let mut s = String::new();
    header(&mut s, opts, info, "throughput diagnosis");
    let _ = writeln!(s);
    for r in scenarios {
        let router = r.realised.router.p(50.0);
        let _ = writeln!(
            s,
            "### {}/{} ms: bare router cmd p50 {router:.2} ms, via RouterApi {:.2} ms, upstream {:.2} ms\n",
            r.router_ms,
            r.upstream_ms,
            r.realised.router_api.p(50.0),
            r.realised.upstream.p(50.0)
        );
        for t in &r.throughput {
            let n = t.done_at.len();
            let at = |q: f64| {
                let i = ((q * n as f64) as usize).min(n.saturating_sub(1));
                t.done_at.get(i).copied().unwrap_or_default()
            };
            let (t10, t90) = (at(0.1), at(0.9));
            let steady = 0.8 * n as f64 / (t90 - t10).as_secs_f64().max(1e-9);
            let realised = f64::from(opts.pool) * 1000.0 / router.max(1e-9);
            let _ = writeln!(
                s,
                "- {} clients, {} mappings in {:.2} s: {:.0}/s overall, {steady:.0}/s \
                 between the 10th and 90th percentile reply ({:.0} % of the realised {realised:.0}/s); \
                 first 10 % took {:.2} s, last 10 % took {:.2} s; latency p50 {:.1} ms, p99 {:.1} ms; \
                 retransmissions per mapping 0/1/2/3+: {:?}; router nat/add commands: {}",
                t.clients,
                t.mappings,
                t.elapsed.as_secs_f64(),
                t.rate(),
                100.0 * steady / realised,
                t10.as_secs_f64(),
                (t.elapsed - t90.min(t.elapsed)).as_secs_f64(),
                t.latency.p(50.0),
                t.latency.p(99.0),
                t.retransmit_histogram,
                t.adds,
            );
            let window = std::time::Duration::from_millis(250);
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
    size: Option<u64>,
    stripped: Option<bool>,
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
