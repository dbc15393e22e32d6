//! One profile at one injected RTT: new mappings, renewals, and (bulk) concurrent clients; for
//! the proton profile also deletes, requests over the gateway's quota, and the external ports.

use std::net::Ipv4Addr;
use std::time::Duration;

use double_natpmp_codec::natpmp::wire::ResultCode;
use tokio::net::UdpSocket;

use crate::client::{
    delete, exchange, map, map_concurrently, map_sequentially, measure_emulators, Realised,
};
use crate::harness::{gateway_config, BenchError, Daemon, DaemonSettings, Emulators, Ports, Stats};
use crate::{Mode, Options, Profile};

/// The proton gateway's quota: distinct internal ports per peer.
pub const PROTON_QUOTA: usize = 5;
const ADD: &str = "/ip/firewall/nat/add";

/// What one profile at one RTT measured.
pub struct ScenarioResult {
    pub profile: Profile,
    pub router_ms: u64,
    pub upstream_ms: u64,
    pub realised: Realised,
    pub new: Stats,
    /// RouterOS commands per new mapping, all and `nat/add`.
    pub cmds_per_new: f64,
    pub adds_per_new: f64,
    pub renew: Stats,
    pub cmds_per_renewal: f64,
    /// Retransmissions during the sequential phases.
    pub retransmits: u64,
    /// Proton: deletes after each new mapping.
    pub delete: Option<Stats>,
    /// Proton: RouterOS commands per delete (the rule's lookup by comment and its remove).
    pub cmds_per_delete: f64,
    /// Proton: requests for a sixth port while five are mapped.
    pub over_quota: Option<OverQuota>,
    /// Proton: the external ports the new mappings got.
    pub external: Option<ExternalPorts>,
    /// Bulk: concurrent clients.
    pub throughput: Vec<Throughput>,
}

impl ScenarioResult {
    /// max(router RTT, upstream RTT), ms: the floor of a new mapping.
    pub fn floor(&self) -> f64 {
        self.router_ms.max(self.upstream_ms) as f64
    }
    /// The same from the realised round trips.
    pub fn realised_floor(&self) -> f64 {
        self.realised
            .router
            .p(50.0)
            .max(self.realised.upstream.p(50.0))
    }
    /// max(router RTT, upstream RTT) + router RTT, ms: the floor of a delete (the gateway's
    /// delete and, with it, the rule's lookup by comment; then the rule's remove).
    pub fn delete_floor(&self) -> f64 {
        self.floor() + self.router_ms as f64
    }
    /// The same from the realised round trips.
    pub fn realised_delete_floor(&self) -> f64 {
        self.realised_floor() + self.realised.router.p(50.0)
    }
}

pub struct OverQuota {
    pub latency: Stats,
    /// Result codes seen and how often.
    pub results: Vec<(u16, usize)>,
    pub cmds_per: f64,
    pub adds_per: f64,
}

pub struct ExternalPorts {
    pub samples: usize,
    pub distinct: usize,
    pub equal_to_internal: usize,
    pub in_gateway_range: usize,
}

pub struct Throughput {
    pub clients: usize,
    pub mappings: usize,
    pub elapsed: Duration,
    pub latency: Stats,
    pub retransmits: u64,
    /// When each mapping was answered, from the start, sorted.
    pub done_at: Vec<Duration>,
    /// Mappings that took 0, 1, 2 and 3 or more retransmissions.
    pub retransmit_histogram: [u64; 4],
    /// `/ip/firewall/nat/add` commands the router saw during this phase.
    pub adds: u64,
}

impl Throughput {
    pub fn rate(&self) -> f64 {
        self.mappings as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub async fn measure(
    opts: &Options,
    profile: Profile,
    (router_ms, upstream_ms): (u64, u64),
) -> Result<ScenarioResult, BenchError> {
    let emu = Emulators::start(
        gateway_config(profile, Duration::from_millis(upstream_ms)),
        Duration::from_millis(router_ms),
    )
    .await?;
    let settings = DaemonSettings {
        tag: format!("{}-{router_ms}-{upstream_ms}", profile.name()),
        ..DaemonSettings::default()
    };
    let daemon = Daemon::spawn(&emu, opts.pool, &settings).await?;
    let mut ports = Ports::new();
    let n = opts.mode.samples((router_ms, upstream_ms));
    let injected = (
        Duration::from_millis(router_ms),
        Duration::from_millis(upstream_ms),
    );
    let realised = measure_emulators(&emu, n.clamp(15, 100), injected).await?;
    let mut r = ScenarioResult {
        profile,
        router_ms,
        upstream_ms,
        realised,
        new: Stats::default(),
        cmds_per_new: 0.0,
        adds_per_new: 0.0,
        renew: Stats::default(),
        cmds_per_renewal: 0.0,
        retransmits: 0,
        delete: None,
        cmds_per_delete: 0.0,
        over_quota: None,
        external: None,
        throughput: Vec::new(),
    };
    match profile {
        Profile::Proton => proton(opts.mode, &emu, &daemon, &mut ports, &mut r).await?,
        Profile::Bulk => bulk(opts, &emu, &daemon, &mut ports, n, &mut r).await?,
    }
    Ok(r)
}

/// New mappings one after another from 127.0.0.2, then the same ports renewed, then the
/// concurrency levels, each on fresh ports.
async fn bulk(
    opts: &Options,
    emu: &Emulators,
    daemon: &Daemon,
    ports: &mut Ports,
    n: usize,
    r: &mut ScenarioResult,
) -> Result<(), BenchError> {
    let to = daemon.listen;
    let client = Ipv4Addr::new(127, 0, 0, 2);
    if !opts.throughput_only {
        let seq = ports.take(n)?;
        emu.router.reset_counters();
        let (new, re_new) = map_sequentially(client, to, &seq).await?;
        r.cmds_per_new = emu.router.command_count() as f64 / n as f64;
        r.adds_per_new = emu.router.command_count_for(ADD) as f64 / n as f64;
        emu.router.reset_counters();
        let (renew, re_renew) = map_sequentially(client, to, &seq).await?;
        r.cmds_per_renewal = emu.router.command_count() as f64 / n as f64;
        r.new = Stats::of(new);
        r.renew = Stats::of(renew);
        r.retransmits = re_new + re_renew;
    }
    for &clients in &opts.clients {
        let total = opts.mode.throughput_total(clients);
        let batch = ports.take(total)?;
        emu.router.reset_counters();
        let c = map_concurrently(to, batch, clients).await?;
        r.throughput.push(Throughput {
            clients,
            mappings: total,
            elapsed: c.elapsed,
            latency: Stats::of(c.latencies),
            retransmits: c.retransmits,
            done_at: c.done_at,
            retransmit_histogram: c.retransmit_histogram,
            adds: emu.router.command_count_for(ADD),
        });
    }
    Ok(())
}

/// The gateway keeps 5 ports per peer, and the daemon is one peer: each new mapping is deleted
/// before the next; renewals go round five live leases; then a sixth port is asked for.
async fn proton(
    mode: Mode,
    emu: &Emulators,
    daemon: &Daemon,
    ports: &mut Ports,
    r: &mut ScenarioResult,
) -> Result<(), BenchError> {
    let to = daemon.listen;
    let sock = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).await?;
    let cycles = mode.proton_cycles();
    let (mut new, mut del, mut externals) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cmds, mut adds, mut delete_cmds) = (0u64, 0u64, 0u64);
    for port in ports.take(cycles)? {
        let (c0, a0) = (
            emu.router.command_count(),
            emu.router.command_count_for(ADD),
        );
        let x = map(&sock, to, port).await?;
        cmds += emu.router.command_count() - c0;
        adds += emu.router.command_count_for(ADD) - a0;
        r.retransmits += u64::from(x.retransmits);
        new.push(x.latency);
        externals.push((port, x.external_port));
        let c0 = emu.router.command_count();
        let d = delete(&sock, to, port).await?;
        delete_cmds += emu.router.command_count() - c0;
        r.retransmits += u64::from(d.retransmits);
        del.push(d.latency);
    }
    r.new = Stats::of(new);
    r.delete = Some(Stats::of(del));
    r.cmds_per_delete = delete_cmds as f64 / cycles as f64;
    r.cmds_per_new = cmds as f64 / cycles as f64;
    r.adds_per_new = adds as f64 / cycles as f64;
    let mut distinct: Vec<u16> = externals.iter().map(|&(_, e)| e).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let range = gateway_config(Profile::Proton, Duration::ZERO).port_range;
    r.external = Some(ExternalPorts {
        samples: externals.len(),
        distinct: distinct.len(),
        equal_to_internal: externals.iter().filter(|(i, e)| i == e).count(),
        in_gateway_range: externals.iter().filter(|(_, e)| range.contains(e)).count(),
    });

    let live = ports.take(PROTON_QUOTA)?;
    for &port in &live {
        map(&sock, to, port).await?;
    }
    emu.router.reset_counters();
    let mut renew = Vec::with_capacity(cycles);
    for i in 0..cycles {
        let x = map(&sock, to, live[i % live.len()]).await?;
        r.retransmits += u64::from(x.retransmits);
        renew.push(x.latency);
    }
    r.cmds_per_renewal = emu.router.command_count() as f64 / cycles as f64;
    r.renew = Stats::of(renew);

    // A sixth port: the gateway answers 4 (out of resources); the daemon undoes its rule.
    let tries = (cycles / 10).clamp(3, 30);
    let sixth = ports.take(1)?[0];
    let (mut lat, mut results) = (Vec::new(), Vec::<(u16, usize)>::new());
    emu.router.reset_counters();
    for _ in 0..tries {
        let x = exchange(&sock, to, sixth, crate::harness::LIFETIME).await?;
        if x.result == ResultCode::Success {
            return Err(BenchError::Expectation(format!(
                "the proton gateway mapped a sixth port ({sixth}) for one peer"
            )));
        }
        lat.push(x.latency);
        let code = x.result.to_u16();
        match results.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => results.push((code, 1)),
        }
    }
    r.over_quota = Some(OverQuota {
        latency: Stats::of(lat),
        results,
        cmds_per: emu.router.command_count() as f64 / tries as f64,
        adds_per: emu.router.command_count_for(ADD) as f64 / tries as f64,
    });
    for &port in &live {
        delete(&sock, to, port).await?;
    }
    Ok(())
}
