//! The whole daemon (`daemon::start`) over real sockets against both emulators: a NAT-PMP client
//! socket on 127.0.0.x -> the daemon on 127.0.0.1:0 -> the RouterOS API emulator and the
//! ProtonVPN-like gateway emulator, each on 127.0.0.1:0. The same scenarios as
//! `mapping_inprocess.rs`, but every layer speaks its real wire protocol, and what a user would
//! see is read from the emulators' tables (`nat_rules()`, `mappings()`) and command counters.
//! Rule numbers (C-xx) refer to docs/conformance.md.
//!
//! Network safety: everything is bound to and sent to loopback only.

use crate::common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use clap::Parser;
use double_natpmp::daemon::{self, DaemonError, Running};
use double_natpmp::DaemonArgs;
use double_natpmp::ShutdownTrigger;
use double_natpmp::{RuleComment, RuleKind};
use double_natpmp_codec::natpmp::wire::{
    encode_request, parse_response, MapRequest, MapResponse, Protocol, Request, Response,
    ResultCode, MAP_REQUEST_LEN, MAX_PACKET_LEN,
};
use double_natpmp_emulators::gateway::{Gateway, GatewayConfig, Mode};
use double_natpmp_emulators::routeros::{RouterSim, RouterSimConfig, SimNatRule, SimUser};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use common::daemon::{gateway_config, our_sim_rules, router_config, within, IFACE};

const ADD: &str = "/ip/firewall/nat/add";
/// The daemon's upstream budget in these tests (UPSTREAM_TIMEOUT).
const UPSTREAM_BUDGET: Duration = Duration::from_secs(1);
/// Scheduling slack added to every real-clock bound: on a busy 2-core CI machine a task can
/// wait this long for its turn. A bound is the daemon's own limit plus this, never tighter.
const SLACK: Duration = Duration::from_millis(1500);
/// How long a test client waits for one answer it must get.
const REPLY_WAIT: Duration = Duration::from_secs(6);

fn localhost(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, host)
}

// ---------------------------------------------------------------------------------------------
// The lab: both emulators and the daemon, all on loopback

#[derive(clap::Parser)]
struct Flags {
    #[command(flatten)]
    args: DaemonArgs,
}

/// How to set the lab up.
struct Setup {
    router: RouterSimConfig,
    gateway: GatewayConfig,
    /// MIKROTIK_IN_INTERFACE; `None` lets the daemon discover it.
    in_interface: Option<&'static str>,
    /// Extra `--flag value` pairs.
    flags: Vec<(&'static str, String)>,
    /// Rules the admin typed before the daemon started.
    foreign_rules: Vec<Vec<(&'static str, &'static str)>>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            router: router_config(),
            // A quota large enough not to matter unless a test lowers it.
            gateway: gateway_config(),
            in_interface: Some(IFACE),
            flags: Vec::new(),
            foreign_rules: Vec::new(),
        }
    }
}

struct Lab {
    router: RouterSim,
    gateway: Gateway,
    daemon: Running,
    stop: ShutdownTrigger,
}

fn daemon_args(setup: &Setup, router: SocketAddr, gateway: SocketAddr) -> DaemonArgs {
    let mut argv: Vec<String> = vec!["double-natpmp".into()];
    let mut flag = |name: &str, value: String| {
        argv.push(format!("--{name}"));
        argv.push(value);
    };
    flag("vpn-gateway", gateway.to_string());
    flag("mikrotik-api-address", router.to_string());
    flag("mikrotik-api-user", "admin".into());
    flag("mikrotik-api-password", "admin".into());
    flag("mikrotik-api-timeout", "1s".into());
    flag("listen-addr", "127.0.0.1:0".into());
    flag("allowed-clients", "127.0.0.0/8".into());
    flag(
        "upstream-timeout",
        format!("{}ms", UPSTREAM_BUDGET.as_millis()),
    );
    flag("upstream-retry", "250ms".into());
    flag("shutdown-timeout", "5s".into());
    // One attempt per create unless a test sets CREATE_PATIENCE: these tests measure a single
    // transaction's bounds and undo (the patience has its own tests here and in
    // tests/component/create_patience.rs).
    if !setup
        .flags
        .iter()
        .any(|(name, _)| *name == "create-patience")
    {
        flag("create-patience", "0s".into());
    }
    // Tests run hundreds of mappings from a few loopback clients: lift the per-client limits
    // (limits_* tests set their own).
    flag("max-mappings-per-client", "65535".into());
    flag("client-rate-limit", "10000".into());
    if let Some(iface) = setup.in_interface {
        flag("mikrotik-in-interface", iface.into());
    }
    for (name, value) in &setup.flags {
        flag(name, value.clone());
    }
    match Flags::try_parse_from(&argv) {
        Ok(f) => f.args,
        Err(e) => panic!("test flags do not parse: {e}"),
    }
}

/// Starts the emulators and the daemon; on a failed start, the emulators come back with the
/// error (so they outlive the daemon's attempt).
async fn try_start(setup: Setup) -> Result<Lab, (RouterSim, Gateway, DaemonError)> {
    let any: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    let router = match RouterSim::start(setup.router.clone(), any).await {
        Ok(r) => r,
        Err(e) => panic!("router emulator: {e}"),
    };
    let gateway = match Gateway::start(setup.gateway.clone(), any).await {
        Ok(g) => g,
        Err(e) => panic!("gateway emulator: {e}"),
    };
    for rule in &setup.foreign_rules {
        router.insert_nat_rule(rule);
    }
    match start_daemon(&setup, &router, &gateway).await {
        Ok((daemon, stop)) => Ok(Lab {
            router,
            gateway,
            daemon,
            stop,
        }),
        Err(e) => Err((router, gateway, e)),
    }
}

/// Starts a daemon against running emulators (a first start, or a restart) and zeroes the
/// router's counters: the start (identity, resource, reconcile) is not what tests measure.
async fn start_daemon(
    setup: &Setup,
    router: &RouterSim,
    gateway: &Gateway,
) -> Result<(Running, ShutdownTrigger), DaemonError> {
    let args = daemon_args(setup, router.local_addr(), gateway.local_addr());
    let (stop, stopped) = ShutdownTrigger::new();
    let daemon = within(
        Duration::from_secs(10),
        "daemon start",
        daemon::start(args, stopped),
    )
    .await?;
    router.reset_counters();
    Ok((daemon, stop))
}

async fn start(setup: Setup) -> Lab {
    match try_start(setup).await {
        Ok(lab) => lab,
        Err((_, _, e)) => panic!("daemon did not start: {e}"),
    }
}

/// Waits (bounded) until the daemon's background undo work has finished.
async fn settled(lab: &Lab) {
    within(
        Duration::from_secs(10),
        "background undo",
        lab.daemon.orchestrator.settled(),
    )
    .await;
}

/// Switches the gateway emulator to `mode` (bounded).
async fn gateway_mode(lab: &Lab, mode: Mode) {
    within(
        Duration::from_secs(2),
        "gateway mode",
        lab.gateway.set_mode(mode),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

fn field<'a>(rule: &'a SimNatRule, name: &str) -> &'a str {
    rule.fields.get(name).map(String::as_str).unwrap_or("")
}

fn router_port(rule: &SimNatRule) -> u16 {
    field(rule, "dst-port").parse().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// A NAT-PMP client on loopback

struct Client {
    sock: UdpSocket,
    daemon: SocketAddr,
}

impl Client {
    /// A client socket on 127.0.0.`host`, a fresh port.
    async fn on(host: u8, daemon: SocketAddr) -> Client {
        match UdpSocket::bind((localhost(host), 0)).await {
            Ok(sock) => Client { sock, daemon },
            Err(e) => panic!("client socket on 127.0.0.{host}: {e}"),
        }
    }

    async fn send(&self, req: MapRequest) {
        let mut buf = [0u8; MAP_REQUEST_LEN];
        let len = encode_request(&Request::Map(req), &mut buf);
        if let Err(e) = self.sock.send_to(&buf[..len], self.daemon).await {
            panic!("send to the daemon: {e}");
        }
    }

    /// The next mapping reply for `req`, or `None` when `wait` passes first.
    async fn reply_for(&self, req: MapRequest, wait: Duration) -> Option<MapResponse> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = [0u8; MAX_PACKET_LEN];
        loop {
            let got = tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await;
            let (n, from) = match got {
                Err(_) => return None,
                Ok(Err(e)) => panic!("client receive: {e}"),
                Ok(Ok(v)) => v,
            };
            if from != self.daemon {
                continue;
            }
            if let Ok(Response::Map(m)) = parse_response(&buf[..n]) {
                if m.protocol == req.protocol && m.internal_port == req.internal_port {
                    return Some(m);
                }
            }
        }
    }

    /// One request, one wait long enough for the daemon's own budgets (no retransmission, so
    /// command and exchange counts are exact).
    async fn ask(&self, req: MapRequest) -> MapResponse {
        self.send(req).await;
        match self.reply_for(req, REPLY_WAIT).await {
            Some(m) => m,
            None => panic!("no reply to {req:?} within {REPLY_WAIT:?}"),
        }
    }

    /// Like a real client (RFC 6886 §3.1): retransmits after 250 ms, doubling, until answered.
    async fn ask_retransmitting(&self, req: MapRequest) -> MapResponse {
        let mut interval = Duration::from_millis(250);
        for _ in 0..6 {
            self.send(req).await;
            if let Some(m) = self.reply_for(req, interval).await {
                return m;
            }
            interval *= 2;
        }
        panic!("no reply to {req:?} after 6 tries");
    }
}

fn map(protocol: Protocol, internal: u16, suggested: u16, lifetime: u32) -> MapRequest {
    MapRequest {
        protocol,
        internal_port: internal,
        suggested_external_port: suggested,
        lifetime,
    }
}

fn success(reply: MapResponse) -> MapResponse {
    assert_eq!(reply.result, ResultCode::Success, "{reply:?}");
    assert_ne!(reply.external_port, 0, "{reply:?}");
    reply
}

// ---------------------------------------------------------------------------------------------
// New mappings, renewals, lifetimes

#[tokio::test]
async fn new_mapping_costs_one_router_command_and_one_upstream_exchange_and_writes_the_exact_rule()
{
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    let exchanges = lab.gateway.map_requests();

    let reply = success(client.ask(map(Protocol::Tcp, 6881, 6881, 60)).await);

    assert_eq!(
        lab.router.command_count(),
        1,
        "exactly one RouterOS command"
    );
    assert_eq!(lab.router.command_count_for(ADD), 1);
    assert_eq!(
        lab.gateway.map_requests() - exchanges,
        1,
        "exactly one upstream exchange"
    );
    assert_eq!(reply.lifetime, 60);

    let rules = our_sim_rules(&lab.router);
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules[0];
    let r = router_port(rule);
    // C-25/C-26: the rule forwards the router port to the request's source, that protocol only.
    assert_eq!(field(rule, "chain"), "dstnat");
    assert_eq!(field(rule, "action"), "dst-nat");
    assert_eq!(field(rule, "protocol"), "tcp");
    assert_eq!(field(rule, "in-interface"), IFACE);
    assert_eq!(r, 6881, "the suggested port was free on the router");
    assert_eq!(field(rule, "to-addresses"), "127.0.0.10");
    assert_eq!(field(rule, "to-ports"), "6881");
    assert_eq!(field(rule, "disabled"), "false");
    let comment = RuleComment::parse(field(rule, "comment"));
    assert_eq!(
        comment.map(|c| (
            c.key.client,
            c.key.protocol,
            c.key.internal_port,
            c.router_port
        )),
        Some((localhost(10), Protocol::Tcp, 6881, r)),
        "comment: {}",
        field(rule, "comment")
    );

    // The gateway maps the router port, and the client gets the gateway's external port.
    let up = lab.gateway.mappings();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].peer, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(up[0].protocol, Protocol::Tcp);
    assert_eq!(up[0].internal_port, r);
    assert_eq!(up[0].external_port, reply.external_port);
}

#[tokio::test]
async fn c29_retransmit_and_renewal_keep_the_external_port_with_zero_router_commands() {
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    let first = success(client.ask(map(Protocol::Udp, 6881, 6881, 3600)).await);
    lab.router.reset_counters();
    let exchanges = lab.gateway.map_requests();

    // A retransmit, then a renewal suggesting another port, then one from a new source port.
    let again = success(client.ask(map(Protocol::Udp, 6881, 6881, 3600)).await);
    let renewal = success(client.ask(map(Protocol::Udp, 6881, 1234, 3600)).await);
    let other_socket = Client::on(10, lab.daemon.listen).await;
    let from_new_port = success(other_socket.ask(map(Protocol::Udp, 6881, 0, 3600)).await);

    for r in [again, renewal, from_new_port] {
        assert_eq!(r.external_port, first.external_port, "{r:?}");
    }
    assert_eq!(
        lab.router.command_count(),
        0,
        "a renewal costs zero RouterOS commands"
    );
    assert_eq!(our_sim_rules(&lab.router).len(), 1, "still one rule");
    assert_eq!(
        lab.gateway.mappings().len(),
        1,
        "still one upstream mapping"
    );
    assert_eq!(
        lab.gateway.map_requests() - exchanges,
        0,
        "renewals are answered from the lease: the keeper keeps the upstream mapping"
    );
}

#[tokio::test]
async fn c30_lifetime_3600_is_answered_as_the_gateways_60() {
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    let reply = success(client.ask(map(Protocol::Tcp, 7000, 0, 3600)).await);
    assert_eq!(reply.lifetime, 60);
    let short = success(client.ask(map(Protocol::Tcp, 7001, 0, 30)).await);
    assert_eq!(short.lifetime, 30, "never more than asked");
    let up = lab.gateway.mappings();
    assert!(
        up.iter().all(|m| m.expires_in <= Duration::from_secs(60)),
        "{up:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Deletes

#[tokio::test]
async fn c33_delete_removes_the_rule_and_the_upstream_mapping_and_answers_zero() {
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    success(client.ask(map(Protocol::Tcp, 6881, 0, 60)).await);
    assert_eq!(our_sim_rules(&lab.router).len(), 1);

    // The suggested external port is ignored on deletion (C-33).
    let reply = client.ask(map(Protocol::Tcp, 6881, 9999, 0)).await;
    assert_eq!(
        (reply.result, reply.external_port, reply.lifetime),
        (ResultCode::Success, 0, 0)
    );
    assert!(our_sim_rules(&lab.router).is_empty(), "rule gone");
    assert!(lab.gateway.mappings().is_empty(), "upstream mapping gone");
    assert_eq!(lab.daemon.orchestrator.lease_count(), 0);
}

#[tokio::test]
async fn c36_delete_all_removes_only_that_protocol_of_that_client() {
    let lab = start(Setup::default()).await;
    let a = Client::on(10, lab.daemon.listen).await;
    let b = Client::on(11, lab.daemon.listen).await;
    success(a.ask(map(Protocol::Udp, 21000, 0, 60)).await);
    success(a.ask(map(Protocol::Udp, 21001, 0, 60)).await);
    let a_tcp = success(a.ask(map(Protocol::Tcp, 22000, 0, 60)).await);
    let b_udp = success(b.ask(map(Protocol::Udp, 21000, 0, 60)).await);
    assert_eq!(our_sim_rules(&lab.router).len(), 4);

    let reply = a.ask(map(Protocol::Udp, 0, 0, 0)).await;
    assert_eq!(
        (reply.result, reply.external_port, reply.lifetime),
        (ResultCode::Success, 0, 0)
    );

    let mut left: Vec<(String, String, String)> = our_sim_rules(&lab.router)
        .iter()
        .map(|r| {
            (
                field(r, "protocol").to_owned(),
                field(r, "to-addresses").to_owned(),
                field(r, "to-ports").to_owned(),
            )
        })
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            ("tcp".into(), "127.0.0.10".into(), "22000".into()),
            ("udp".into(), "127.0.0.11".into(), "21000".into()),
        ]
    );
    let mut up: Vec<(Protocol, u16)> = lab
        .gateway
        .mappings()
        .iter()
        .map(|m| (m.protocol, m.external_port))
        .collect();
    up.sort();
    let mut want = vec![
        (Protocol::Udp, b_udp.external_port),
        (Protocol::Tcp, a_tcp.external_port),
    ];
    want.sort();
    assert_eq!(
        up, want,
        "only the deleted client's UDP mappings left upstream"
    );
}

#[tokio::test]
async fn c35_delete_of_a_port_held_by_a_foreign_rule_answers_2_and_keeps_the_rule() {
    let lab = start(Setup {
        foreign_rules: vec![vec![
            ("chain", "dstnat"),
            ("action", "dst-nat"),
            ("protocol", "tcp"),
            ("in-interface", IFACE),
            ("dst-port", "2222"),
            ("to-addresses", "127.0.0.10"),
            ("to-ports", "22"),
            ("comment", "ssh for my laptop"),
        ]],
        ..Setup::default()
    })
    .await;
    let client = Client::on(10, lab.daemon.listen).await;
    let reply = client.ask(map(Protocol::Tcp, 22, 0, 0)).await;
    assert_eq!(reply.result, ResultCode::NotAuthorized, "{reply:?}");
    let rules = lab.router.nat_rules();
    assert_eq!(rules.len(), 1, "the foreign rule is untouched: {rules:?}");
    assert_eq!(field(&rules[0], "comment"), "ssh for my laptop");
    assert_eq!(lab.router.command_count(), 0, "nothing asked of the router");
}

// ---------------------------------------------------------------------------------------------
// Expiry

#[tokio::test]
async fn c32_expiry_of_a_short_lifetime_removes_both_layers() {
    let lab = start(Setup {
        flags: vec![("expiry-grace", "0s".into())],
        ..Setup::default()
    })
    .await;
    let client = Client::on(10, lab.daemon.listen).await;
    let reply = success(client.ask(map(Protocol::Udp, 6881, 0, 2)).await);
    assert_eq!(reply.lifetime, 2);
    assert_eq!(our_sim_rules(&lab.router).len(), 1);
    let exchanges = lab.gateway.map_requests();
    lab.router.reset_counters();

    // Poll the router's table (the expiry runs in the background), bounded.
    let deadline = Instant::now() + Duration::from_secs(6);
    while !our_sim_rules(&lab.router).is_empty() {
        assert!(
            Instant::now() < deadline,
            "rule still there 6 s after a 2 s lifetime"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lab.router.command_count_for("/ip/firewall/nat/remove"), 1);
    assert!(
        lab.gateway
            .wait_for_mappings(|m| m.is_empty(), Duration::from_secs(2))
            .await,
        "upstream mapping gone"
    );
    // The expiry deleted it upstream too (not just left it to run out there).
    let deadline = Instant::now() + Duration::from_secs(2);
    while lab.gateway.map_requests() == exchanges {
        assert!(Instant::now() < deadline, "no upstream delete after expiry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lab.daemon.orchestrator.lease_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Failures: answered, never half made

#[tokio::test]
async fn upstream_silent_answers_3_within_the_budget_and_leaves_no_rule() {
    let lab = start(Setup::default()).await;
    gateway_mode(&lab, Mode::Silent).await;
    let client = Client::on(10, lab.daemon.listen).await;

    let started = Instant::now();
    let reply = client.ask(map(Protocol::Udp, 6881, 0, 60)).await;
    let took = started.elapsed();

    assert_eq!(reply.result, ResultCode::NetworkFailure, "{reply:?}");
    assert_eq!((reply.external_port, reply.lifetime), (0, 0));
    // The daemon's bound is UPSTREAM_TIMEOUT plus one second of slack; a rollback follows.
    assert!(
        took <= UPSTREAM_BUDGET + Duration::from_secs(1) + SLACK,
        "answered after {took:?}"
    );
    assert!(
        lab.gateway.map_requests() >= 1,
        "the daemon did ask upstream"
    );
    // The gateway may have made the mapping: the undo deletes it there first, then the rule.
    settled(&lab).await;
    assert!(our_sim_rules(&lab.router).is_empty(), "rule rolled back");
    assert_eq!(lab.router.command_count_for("/ip/firewall/nat/remove"), 1);
    assert_eq!(lab.daemon.orchestrator.lease_count(), 0);
}

#[tokio::test]
async fn upstream_quota_answers_4_and_leaves_no_rule() {
    let lab = start(Setup {
        gateway: GatewayConfig {
            quota_per_peer: 1,
            ..GatewayConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let client = Client::on(10, lab.daemon.listen).await;
    let first = success(client.ask(map(Protocol::Tcp, 6881, 0, 60)).await);

    let reply = client.ask(map(Protocol::Tcp, 6882, 0, 60)).await;

    assert_eq!(reply.result, ResultCode::OutOfResources, "{reply:?}");
    let rules = our_sim_rules(&lab.router);
    assert_eq!(rules.len(), 1, "the refused mapping's rule was rolled back");
    assert_eq!(field(&rules[0], "to-ports"), "6881");
    let up = lab.gateway.mappings();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].external_port, first.external_port);
}

#[tokio::test]
async fn router_trap_on_add_answers_3_and_makes_no_upstream_mapping() {
    let lab = start(Setup::default()).await;
    lab.router
        .set_trap_on_add(Some("failure: out of memory".into()));
    let client = Client::on(10, lab.daemon.listen).await;
    let exchanges = lab.gateway.map_requests();

    let reply = client.ask(map(Protocol::Tcp, 6881, 0, 60)).await;

    assert!(
        matches!(
            reply.result,
            ResultCode::NetworkFailure | ResultCode::NotAuthorized
        ),
        "{reply:?}"
    );
    // The gateway is asked at once with the router; its mapping is deleted before the reply.
    assert_eq!(
        lab.gateway.map_requests(),
        exchanges + 2,
        "the map and its rollback"
    );
    assert!(lab.gateway.mappings().is_empty());
    assert!(lab.router.nat_rules().is_empty());

    // The router works again: the same port is used, so nothing was left reserved.
    lab.router.set_trap_on_add(None);
    success(client.ask(map(Protocol::Tcp, 6881, 0, 60)).await);
    let rules = our_sim_rules(&lab.router);
    assert_eq!(rules.len(), 1);
    assert_eq!(router_port(&rules[0]), 6881);
}

#[tokio::test]
async fn router_permission_refusal_answers_2() {
    let lab = start(Setup {
        router: RouterSimConfig {
            users: vec![SimUser::new("admin", "admin", &["read", "api", "test"])],
            ..router_config()
        },
        ..Setup::default()
    })
    .await;
    let client = Client::on(10, lab.daemon.listen).await;
    let exchanges = lab.gateway.map_requests();

    let reply = client.ask(map(Protocol::Tcp, 6881, 0, 60)).await;

    assert_eq!(reply.result, ResultCode::NotAuthorized, "{reply:?}");
    assert_eq!(
        lab.gateway.map_requests(),
        exchanges + 2,
        "asked at once with the router, and rolled back"
    );
    assert!(lab.gateway.mappings().is_empty());
    assert!(lab.router.nat_rules().is_empty());
}

#[tokio::test]
async fn add_whose_reply_is_lost_answers_success_in_the_retry_window_with_exactly_one_rule() {
    let lab = start(Setup::default()).await;
    lab.router.cut_after_execute_next(ADD);
    let client = Client::on(10, lab.daemon.listen).await;
    let req = map(Protocol::Tcp, 6881, 0, 60);

    // natpmpc-like: send, then retransmit at 250 ms doubling until an answer comes.
    let started = Instant::now();
    let mut wait = Duration::from_millis(250);
    let reply = loop {
        client.send(req).await;
        if let Some(r) = client.reply_for(req, wait).await {
            break r;
        }
        wait *= 2;
        assert!(
            wait <= Duration::from_secs(4),
            "no answer within the retry window"
        );
    };
    assert_eq!(reply.result, ResultCode::Success, "{reply:?}");
    let answered = started.elapsed();
    assert_eq!(
        lab.router.command_count_for(ADD),
        1,
        "the add was not repeated: its rule was found by comment"
    );
    let rules = our_sim_rules(&lab.router);
    assert_eq!(rules.len(), 1, "exactly one rule: {rules:?}");
    assert!(
        started.elapsed() - answered < Duration::from_secs(2),
        "counted within 2 s of the reply"
    );
    assert_eq!(lab.gateway.mappings().len(), 1);
    // Nothing for the reconciler to clean up.
    let report = within(
        Duration::from_secs(5),
        "reconcile",
        lab.daemon.orchestrator.reconcile(),
    )
    .await;
    assert_eq!(
        report.map(|r| r.orphans_removed).map_err(|e| e.to_string()),
        Ok(0)
    );
    assert_eq!(our_sim_rules(&lab.router).len(), 1);
}

#[tokio::test]
async fn remove_whose_reply_is_lost_still_ends_both_layers_and_a_later_map_has_one_rule() {
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    success(client.ask(map(Protocol::Tcp, 6881, 0, 60)).await);
    lab.router.cut_after_execute_next("/ip/firewall/nat/remove");

    let reply = client.ask(map(Protocol::Tcp, 6881, 0, 0)).await;
    assert_eq!(reply.result, ResultCode::Success, "{reply:?}");
    assert!(our_sim_rules(&lab.router).is_empty(), "the rule is gone");
    assert!(
        lab.gateway.mappings().is_empty(),
        "the upstream mapping is gone"
    );
    assert_eq!(lab.daemon.orchestrator.lease_count(), 0);

    success(client.ask(map(Protocol::Tcp, 6881, 0, 60)).await);
    let rules = our_sim_rules(&lab.router);
    assert_eq!(
        rules.len(),
        1,
        "exactly one rule behind the new mapping: {rules:?}"
    );
    assert_eq!(lab.gateway.mappings().len(), 1);
}

#[tokio::test]
async fn router_down_answers_3_promptly_and_mappings_work_again_after_it_comes_up() {
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    success(client.ask(map(Protocol::Tcp, 6000, 0, 60)).await);

    within(Duration::from_secs(5), "go_down", lab.router.go_down()).await;
    let started = Instant::now();
    let reply = client.ask(map(Protocol::Tcp, 6001, 0, 60)).await;
    let took = started.elapsed();
    assert_eq!(reply.result, ResultCode::NetworkFailure, "{reply:?}");
    // MIKROTIK_API_TIMEOUT is 1 s and a refused connection is known at once.
    assert!(
        took < Duration::from_secs(1) + SLACK,
        "answered after {took:?}"
    );

    within(Duration::from_secs(5), "come_up", lab.router.come_up())
        .await
        .unwrap_or_else(|e| panic!("come_up: {e}"));
    // The pool may wait out its connect backoff (at most 5 s): retry, bounded.
    let deadline = Instant::now() + Duration::from_secs(8);
    let reply = loop {
        let reply = client.ask(map(Protocol::Tcp, 6002, 0, 60)).await;
        if reply.result == ResultCode::Success || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    success(reply);
    assert!(
        our_sim_rules(&lab.router)
            .iter()
            .any(|r| field(r, "to-ports") == "6002"),
        "the new mapping's rule is on the router"
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_get_two_hundred_distinct_router_ports_and_no_duplicate_rule(
) {
    let lab = start(Setup::default()).await;
    let exchanges = lab.gateway.map_requests();
    let mut set = JoinSet::new();
    for i in 0..200u16 {
        let daemon = lab.daemon.listen;
        set.spawn(async move {
            let client = Client::on(1, daemon).await;
            // Each suggests the next one's internal port, so router-port preferences collide.
            let req = map(Protocol::Udp, 30000 + i, 30000 + (i + 1) % 200, 60);
            client.ask_retransmitting(req).await
        });
    }
    let mut external = HashSet::new();
    let replies = within(Duration::from_secs(15), "200 replies", async {
        let mut n = 0;
        while let Some(reply) = set.join_next().await {
            let reply = success(reply.unwrap_or_else(|e| panic!("client task: {e}")));
            external.insert(reply.external_port);
            n += 1;
        }
        n
    })
    .await;
    assert_eq!(replies, 200);

    let rules = our_sim_rules(&lab.router);
    let ports: HashSet<u16> = rules.iter().map(router_port).collect();
    let targets: HashSet<&str> = rules.iter().map(|r| field(r, "to-ports")).collect();
    assert_eq!(rules.len(), 200, "no duplicate rule");
    assert_eq!(ports.len(), 200, "200 distinct router ports");
    assert_eq!(targets.len(), 200);
    assert_eq!(
        lab.router.command_count_for(ADD),
        200,
        "one add per mapping, even when a client retransmitted"
    );
    assert_eq!(external.len(), 200, "200 distinct external ports");
    let up = lab.gateway.mappings();
    assert_eq!(up.len(), 200);
    let up_ports: HashSet<u16> = up.iter().map(|m| m.internal_port).collect();
    assert_eq!(up_ports, ports, "the gateway maps exactly the router ports");
    assert!(lab.gateway.map_requests() - exchanges >= 200);
    assert_eq!(lab.daemon.orchestrator.lease_count(), 200);
}

// ---------------------------------------------------------------------------------------------
// Shutdown

#[tokio::test]
async fn graceful_shutdown_removes_every_rule_and_upstream_mapping_and_keeps_foreign_rules() {
    let lab = start(Setup {
        foreign_rules: vec![vec![
            ("chain", "dstnat"),
            ("action", "dst-nat"),
            ("protocol", "tcp"),
            ("in-interface", IFACE),
            ("dst-port", "8080"),
            ("to-addresses", "127.0.0.20"),
            ("to-ports", "80"),
            ("comment", "web server"),
        ]],
        ..Setup::default()
    })
    .await;
    let client = Client::on(10, lab.daemon.listen).await;
    for port in [5000, 5001, 5002] {
        success(client.ask(map(Protocol::Udp, port, 0, 60)).await);
    }
    success(client.ask(map(Protocol::Tcp, 5000, 0, 60)).await);
    assert_eq!(our_sim_rules(&lab.router).len(), 4);
    assert_eq!(lab.gateway.mappings().len(), 4);

    lab.stop.trigger();
    let done = within(Duration::from_secs(10), "daemon stop", lab.daemon.done).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("daemon stopped with an error: {e}"),
        Err(e) => panic!("daemon task failed: {e}"),
    }

    assert!(
        our_sim_rules(&lab.router).is_empty(),
        "every rule of ours removed"
    );
    assert!(
        lab.gateway.mappings().is_empty(),
        "every upstream mapping removed"
    );
    let rules = lab.router.nat_rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(field(&rules[0], "comment"), "web server");
    // The socket is closed: a request now goes unanswered.
    client.send(map(Protocol::Udp, 5003, 0, 60)).await;
    assert!(client
        .reply_for(map(Protocol::Udp, 5003, 0, 60), Duration::from_millis(300))
        .await
        .is_none());
}

// ---------------------------------------------------------------------------------------------
// In-interface discovery

#[tokio::test]
async fn without_mikrotik_in_interface_the_rule_uses_the_interface_found_by_route_check() {
    let lab = start(Setup {
        router: router_config(),
        in_interface: None,
        ..Setup::default()
    })
    .await;
    let client = Client::on(10, lab.daemon.listen).await;
    success(client.ask(map(Protocol::Tcp, 6881, 0, 60)).await);
    let rules = our_sim_rules(&lab.router);
    assert_eq!(rules.len(), 1);
    assert_eq!(field(&rules[0], "in-interface"), IFACE);
}

#[tokio::test]
async fn without_mikrotik_in_interface_and_without_test_policy_start_fails_with_a_hint() {
    let started = try_start(Setup {
        router: RouterSimConfig {
            users: vec![SimUser::new("admin", "admin", &["read", "write", "api"])],
            ..router_config()
        },
        in_interface: None,
        ..Setup::default()
    })
    .await;
    let err = match started {
        Ok(_) => panic!("the daemon started without a usable in-interface"),
        Err((_router, _gateway, e)) => e.to_string(),
    };
    assert!(err.contains("MIKROTIK_IN_INTERFACE"), "{err}");
    assert!(err.contains("'test'"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// More upstream faults, requests that change nothing, the reconciler

#[tokio::test]
async fn upstream_answering_too_late_leaves_no_mapping_at_the_gateway() {
    let lab = start(Setup::default()).await;
    // The gateway makes the mapping at once but answers after the daemon's budget.
    lab.gateway.set_latency(UPSTREAM_BUDGET * 3);
    let client = Client::on(10, lab.daemon.listen).await;

    let reply = client.ask(map(Protocol::Udp, 6881, 0, 60)).await;

    assert_eq!(reply.result, ResultCode::NetworkFailure, "{reply:?}");
    settled(&lab).await;
    assert!(our_sim_rules(&lab.router).is_empty(), "rule rolled back");
    // The daemon cannot know whether the gateway made it, so it deletes it there too.
    assert!(
        lab.gateway
            .wait_for_mappings(|m| m.is_empty(), Duration::from_secs(3))
            .await,
        "the gateway still forwards a port nobody owns: {:?}",
        lab.gateway.mappings()
    );
}

#[tokio::test]
async fn c40_gateway_not_listening_answers_3_promptly_and_leaves_no_rule() {
    let lab = start(Setup::default()).await;
    gateway_mode(&lab, Mode::Unreachable).await;
    let client = Client::on(10, lab.daemon.listen).await;

    let started = Instant::now();
    let reply = client.ask(map(Protocol::Tcp, 6881, 0, 60)).await;
    let took = started.elapsed();

    assert_eq!(reply.result, ResultCode::NetworkFailure, "{reply:?}");
    assert!(
        took <= UPSTREAM_BUDGET + Duration::from_secs(1) + SLACK,
        "answered after {took:?}"
    );
    assert!(our_sim_rules(&lab.router).is_empty(), "rule rolled back");
}

#[tokio::test]
async fn gateway_refusal_2_is_passed_on_and_leaves_no_rule() {
    let lab = start(Setup::default()).await;
    gateway_mode(&lab, Mode::Refuse(ResultCode::NotAuthorized)).await;
    let client = Client::on(10, lab.daemon.listen).await;

    let reply = client.ask(map(Protocol::Tcp, 6881, 0, 60)).await;

    assert_eq!(reply.result, ResultCode::NotAuthorized, "{reply:?}");
    assert!(our_sim_rules(&lab.router).is_empty(), "rule rolled back");
    assert_eq!(lab.daemon.orchestrator.lease_count(), 0);
}

#[tokio::test]
async fn c34_delete_of_a_mapping_that_does_not_exist_succeeds_without_any_command() {
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    let exchanges = lab.gateway.map_requests();
    let reply = client.ask(map(Protocol::Udp, 6881, 0, 0)).await;
    assert_eq!(
        (reply.result, reply.external_port, reply.lifetime),
        (ResultCode::Success, 0, 0)
    );
    assert_eq!(lab.router.command_count(), 0);
    assert_eq!(lab.gateway.map_requests(), exchanges);
}

#[tokio::test]
async fn c37_internal_port_zero_with_a_lifetime_answers_2_and_changes_nothing() {
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    let exchanges = lab.gateway.map_requests();
    let reply = client.ask(map(Protocol::Udp, 0, 1, 60)).await;
    assert_eq!(reply.result, ResultCode::NotAuthorized, "{reply:?}");
    assert_eq!(lab.router.command_count(), 0);
    assert_eq!(lab.gateway.map_requests(), exchanges);
    assert!(lab.router.nat_rules().is_empty());
}

#[tokio::test]
async fn a_port_used_by_a_foreign_rule_is_never_taken_for_a_mapping() {
    let lab = start(Setup {
        foreign_rules: vec![vec![
            ("chain", "dstnat"),
            ("action", "dst-nat"),
            ("protocol", "tcp"),
            ("in-interface", IFACE),
            ("dst-port", "6881"),
            ("to-addresses", "127.0.0.20"),
            ("to-ports", "6881"),
            ("comment", "someone else's torrent client"),
        ]],
        ..Setup::default()
    })
    .await;
    let client = Client::on(10, lab.daemon.listen).await;
    success(client.ask(map(Protocol::Tcp, 6881, 6881, 60)).await);
    let rules = our_sim_rules(&lab.router);
    assert_eq!(rules.len(), 1);
    let r = router_port(&rules[0]);
    assert_ne!(r, 6881, "the foreign rule's port was taken");
    assert!(
        (40000..=65000).contains(&r),
        "router port {r} outside ROUTER_PORT_MIN..MAX"
    );
    assert_eq!(lab.router.nat_rules().len(), 2, "the foreign rule stays");
}

#[tokio::test]
async fn start_adopts_our_rules_removes_the_original_tools_and_keeps_foreign_ones() {
    let lab = start(Setup {
        foreign_rules: vec![
            vec![
                ("chain", "dstnat"),
                ("action", "dst-nat"),
                ("protocol", "udp"),
                ("in-interface", IFACE),
                ("dst-port", "40010"),
                ("to-addresses", "127.0.0.10"),
                ("to-ports", "6881"),
                ("comment", "double-natpmp:v1 udp 127.0.0.10:6881 r=40010"),
            ],
            vec![
                ("chain", "dstnat"),
                ("action", "dst-nat"),
                ("protocol", "tcp"),
                ("in-interface", IFACE),
                ("dst-port", "40011"),
                ("to-addresses", "127.0.0.10"),
                ("to-ports", "6881"),
                ("comment", "double-natpmp-tcp-127.0.0.10-6881"),
            ],
            vec![
                ("chain", "dstnat"),
                ("action", "dst-nat"),
                ("protocol", "tcp"),
                ("in-interface", IFACE),
                ("dst-port", "8080"),
                ("to-addresses", "127.0.0.20"),
                ("to-ports", "80"),
                ("comment", "web server"),
            ],
        ],
        ..Setup::default()
    })
    .await;
    let comments: Vec<String> = lab
        .router
        .nat_rules()
        .iter()
        .map(|r| field(r, "comment").to_owned())
        .collect();
    // Our (version-1) rule is a lease again, its gateway mapping made before the daemon
    // answered anyone; the original tool's rule carries nothing to adopt and is removed.
    assert_eq!(
        comments,
        vec![
            "double-natpmp:v1 udp 127.0.0.10:6881 r=40010".to_owned(),
            "web server".to_owned()
        ]
    );
    let leases = lab.daemon.orchestrator.leases();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].lease.router_port, 40010);
    let up = lab.gateway.mappings();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].internal_port, 40010);
    assert_eq!(leases[0].lease.external_port, up[0].external_port);
    // The client's renewal finds its mapping, with no router command.
    let client = Client::on(10, lab.daemon.listen).await;
    let renewal = success(client.ask(map(Protocol::Udp, 6881, 0, 60)).await);
    assert_eq!(renewal.external_port, up[0].external_port);
    assert_eq!(lab.router.command_count(), 0);
}

#[tokio::test]
async fn reconcile_recreates_a_live_rule_the_admin_deleted_and_renewal_still_costs_no_command() {
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    let first = success(client.ask(map(Protocol::Tcp, 6881, 0, 60)).await);
    let old = our_sim_rules(&lab.router)[0].id.clone();
    assert!(lab.router.delete_nat_rule(&old));

    let report = within(
        Duration::from_secs(5),
        "reconcile",
        lab.daemon.orchestrator.reconcile(),
    )
    .await;
    assert_eq!(
        report.map(|r| r.recreated).map_err(|e| e.to_string()),
        Ok(1)
    );
    let rules = our_sim_rules(&lab.router);
    assert_eq!(rules.len(), 1);
    assert_ne!(rules[0].id, old);
    assert_eq!(router_port(&rules[0]), 6881);
    assert_eq!(field(&rules[0], "to-addresses"), "127.0.0.10");

    lab.router.reset_counters();
    let renewal = success(client.ask(map(Protocol::Tcp, 6881, 0, 60)).await);
    assert_eq!(renewal.external_port, first.external_port);
    assert_eq!(lab.router.command_count(), 0);
    // A later delete removes the recreated rule (the lease follows the new id).
    let reply = client.ask(map(Protocol::Tcp, 6881, 0, 0)).await;
    assert_eq!(reply.result, ResultCode::Success);
    assert!(our_sim_rules(&lab.router).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The router misbehaving, the gateway losing state, other clients

#[tokio::test]
async fn shutdown_while_the_router_is_down_still_ends_and_the_next_start_adopts_the_rules() {
    let setup = Setup::default();
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    success(client.ask(map(Protocol::Udp, 5000, 0, 60)).await);
    success(client.ask(map(Protocol::Tcp, 5001, 0, 60)).await);

    within(Duration::from_secs(5), "go_down", lab.router.go_down()).await;
    lab.stop.trigger();
    // SHUTDOWN_TIMEOUT is 5 s.
    let done = within(Duration::from_secs(7), "daemon stop", lab.daemon.done).await;
    assert!(matches!(done, Ok(Ok(()))), "daemon stopped badly: {done:?}");
    assert!(
        lab.gateway.mappings().is_empty(),
        "upstream mappings removed although the router was down"
    );
    assert_eq!(
        our_sim_rules(&lab.router).len(),
        2,
        "the router could not be told"
    );

    within(Duration::from_secs(5), "come_up", lab.router.come_up())
        .await
        .unwrap_or_else(|e| panic!("come_up: {e}"));
    let restarted = start_daemon(&setup, &lab.router, &lab.gateway).await;
    assert!(restarted.is_ok(), "restart failed: {:?}", restarted.err());
    let Ok((daemon, _stop)) = restarted else {
        return;
    };
    assert_eq!(
        daemon.orchestrator.lease_count(),
        our_sim_rules(&lab.router).len(),
        "the restart adopts the rules left behind (their clients' renewals find them)"
    );
}

#[tokio::test]
async fn router_hanging_answers_3_within_the_api_timeout_and_recovers() {
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    lab.router.set_hang(true);

    let started = Instant::now();
    let reply = client.ask(map(Protocol::Tcp, 6881, 0, 60)).await;
    let took = started.elapsed();
    assert_eq!(reply.result, ResultCode::NetworkFailure, "{reply:?}");
    // MIKROTIK_API_TIMEOUT is 1 s; the orchestrator's own bound is twice that.
    assert!(
        took <= Duration::from_secs(2) + SLACK,
        "answered after {took:?}"
    );
    // The gateway was asked at once with the router; its mapping is deleted in the
    // background (the rule's fate is unknown until the router answers again).
    assert!(
        lab.gateway
            .wait_for_mappings(|m| m.is_empty(), Duration::from_secs(10))
            .await,
        "no upstream mapping left: {:?}",
        lab.gateway.mappings()
    );

    lab.router.set_hang(false);
    let deadline = Instant::now() + Duration::from_secs(8);
    let reply = loop {
        let reply = client.ask(map(Protocol::Tcp, 6881, 0, 60)).await;
        if reply.result == ResultCode::Success || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    success(reply);
    assert_eq!(our_sim_rules(&lab.router).len(), 1, "exactly one rule");
}

#[tokio::test]
async fn a_gateway_that_lost_its_state_is_healed_by_the_daemon_and_renewals_report_the_new_port() {
    let lab = start(Setup {
        flags: vec![("address-refresh", "1s".into())],
        gateway: GatewayConfig {
            quota_per_peer: 1000,
            up_for: Duration::from_secs(3600),
            ..GatewayConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let client = Client::on(10, lab.daemon.listen).await;
    let first = success(client.ask(map(Protocol::Udp, 6881, 0, 60)).await);
    let mut events = lab.daemon.orchestrator.subscribe();
    lab.gateway.lose_state();
    lab.router.reset_counters();

    // No client asks: the next address refresh shows the reset epoch (C-48), and the daemon
    // makes the mapping again by itself.
    assert!(
        lab.gateway
            .wait_for_mappings(|m| m.len() == 1, Duration::from_secs(5))
            .await,
        "the daemon did not heal the gateway's mappings"
    );
    let renewal = success(client.ask(map(Protocol::Udp, 6881, 0, 60)).await);

    let up = lab.gateway.mappings();
    assert_eq!(up.len(), 1, "mapped again upstream: {up:?}");
    assert_eq!(
        renewal.external_port, up[0].external_port,
        "the client is told the port that really forwards (was {})",
        first.external_port
    );
    assert_eq!(our_sim_rules(&lab.router).len(), 1);
    assert_eq!(
        lab.router.command_count_for(ADD),
        0,
        "healing the gateway never touches the rule"
    );
    if renewal.external_port != first.external_port {
        // The keeper records the moved port in the rule's comment (for a restart).
        within(Duration::from_secs(5), "the comment update", async {
            loop {
                match events.recv().await {
                    Ok(double_natpmp::MappingEvent::RouterCommand { what, .. })
                        if what.starts_with("record the new external port") =>
                    {
                        break
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    _ => {}
                }
            }
        })
        .await;
    }
    assert_eq!(
        lab.router.command_count_for("/ip/firewall/nat/set"),
        u64::from(renewal.external_port != first.external_port),
        "the only router command records a moved external port in the rule's comment"
    );
}

#[tokio::test]
async fn delete_while_the_router_is_down_answers_3_and_the_rule_goes_when_it_is_back() {
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    success(client.ask(map(Protocol::Tcp, 6881, 0, 60)).await);
    within(Duration::from_secs(5), "go_down", lab.router.go_down()).await;

    let reply = client.ask(map(Protocol::Tcp, 6881, 0, 0)).await;

    assert_eq!(reply.result, ResultCode::NetworkFailure, "{reply:?}");
    // Upstream first: the gateway no longer forwards the port, then the rule could not go.
    assert!(
        lab.gateway.mappings().is_empty(),
        "{:?}",
        lab.gateway.mappings()
    );
    assert_eq!(our_sim_rules(&lab.router).len(), 1);
    assert_eq!(lab.daemon.orchestrator.lease_count(), 0);

    within(Duration::from_secs(5), "come_up", lab.router.come_up())
        .await
        .unwrap_or_else(|e| panic!("come_up: {e}"));
    // The pool backs off from a router that refused connections; the reconciler retries.
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        match lab.daemon.orchestrator.reconcile().await {
            Ok(r) => break r,
            Err(e) if Instant::now() > deadline => panic!("reconcile never succeeded: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert_eq!(report.orphans_removed, 1);
    assert!(our_sim_rules(&lab.router).is_empty());
}

#[tokio::test]
async fn another_client_cannot_delete_a_mapping_that_is_not_its_own() {
    let lab = start(Setup::default()).await;
    let owner = Client::on(10, lab.daemon.listen).await;
    let other = Client::on(11, lab.daemon.listen).await;
    success(owner.ask(map(Protocol::Tcp, 6881, 0, 60)).await);

    let one = other.ask(map(Protocol::Tcp, 6881, 0, 0)).await;
    let all = other.ask(map(Protocol::Tcp, 0, 0, 0)).await;

    // Nothing of its own to delete: success (C-34), and the owner's mapping is untouched.
    assert_eq!(one.result, ResultCode::Success, "{one:?}");
    assert_eq!(all.result, ResultCode::Success, "{all:?}");
    assert_eq!(our_sim_rules(&lab.router).len(), 1);
    assert_eq!(lab.gateway.mappings().len(), 1);
}

#[tokio::test]
async fn router_port_range_exhausted_answers_4() {
    let lab = start(Setup {
        flags: vec![
            ("router-port-min", "40000".into()),
            ("router-port-max", "40001".into()),
        ],
        ..Setup::default()
    })
    .await;
    // Ports below 1024 are never used as preferences, so these draw from the range.
    let mut replies = Vec::new();
    for host in [10, 11, 12] {
        let client = Client::on(host, lab.daemon.listen).await;
        replies.push(client.ask(map(Protocol::Tcp, 80, 0, 60)).await.result);
    }
    assert_eq!(
        replies,
        vec![
            ResultCode::Success,
            ResultCode::Success,
            ResultCode::OutOfResources
        ]
    );
    let mut ports: Vec<u16> = our_sim_rules(&lab.router).iter().map(router_port).collect();
    ports.sort_unstable();
    assert_eq!(ports, vec![40000, 40001]);
}

#[tokio::test]
async fn shutdown_finishes_a_request_in_flight_then_removes_its_mapping() {
    let lab = start(Setup::default()).await;
    lab.gateway.set_latency(Duration::from_millis(400));
    let client = Client::on(10, lab.daemon.listen).await;
    let req = map(Protocol::Tcp, 6881, 0, 60);
    client.send(req).await;
    // Wait (bounded poll) until the transaction is past the router: it now waits for the
    // gateway's late answer.
    let deadline = Instant::now() + Duration::from_secs(3);
    while our_sim_rules(&lab.router).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the request never reached the router"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lab.stop.trigger();

    let reply = client.reply_for(req, REPLY_WAIT).await;
    let done = within(Duration::from_secs(10), "daemon stop", lab.daemon.done).await;
    assert!(matches!(done, Ok(Ok(()))), "daemon stopped badly: {done:?}");
    let reply = reply.unwrap_or_else(|| panic!("the request in flight was never answered"));
    assert_eq!(reply.result, ResultCode::Success, "{reply:?}");
    assert!(
        our_sim_rules(&lab.router).is_empty(),
        "its rule was removed at stop"
    );
    assert!(
        lab.gateway
            .wait_for_mappings(|m| m.is_empty(), Duration::from_secs(1))
            .await,
        "its upstream mapping was removed at stop: {:?}",
        lab.gateway.mappings()
    );
}

#[tokio::test]
async fn c17_retransmits_while_the_gateway_is_silent_are_each_answered_3_and_leave_no_rule() {
    let lab = start(Setup::default()).await;
    gateway_mode(&lab, Mode::Silent).await;
    let client = Client::on(10, lab.daemon.listen).await;
    let req = map(Protocol::Udp, 6881, 0, 60);

    // A real client retransmits after 250 ms while the first try is still in flight.
    client.send(req).await;
    let early = client.reply_for(req, Duration::from_millis(250)).await;
    assert!(
        early.is_none(),
        "answered before the upstream budget: {early:?}"
    );
    client.send(req).await;
    for n in 1..=2 {
        let reply = client
            .reply_for(req, REPLY_WAIT)
            .await
            .unwrap_or_else(|| panic!("datagram {n} never answered"));
        assert_eq!(reply.result, ResultCode::NetworkFailure, "{reply:?}");
    }
    settled(&lab).await;
    assert!(our_sim_rules(&lab.router).is_empty(), "no rule left behind");
    assert_eq!(lab.daemon.orchestrator.lease_count(), 0);
    // The copy that waited behind the first try got its answer without a second transaction:
    // a dead gateway does not turn retransmissions into router load.
    assert_eq!(lab.router.command_count_for("/ip/firewall/nat/add"), 1);
    assert_eq!(lab.router.command_count_for("/ip/firewall/nat/remove"), 1);
}

/// C-17b: a gateway silent for longer than CREATE_PATIENCE. The client retransmits as
/// libtorrent does (250 ms × n apart); no copy is answered while the daemon keeps trying, every
/// copy gets 3 once the window ends, and neither the rule made meanwhile nor a gateway mapping
/// is left.
#[tokio::test]
async fn c17b_a_gateway_silent_past_create_patience_gets_3_as_the_window_ends_and_leaves_nothing() {
    const PATIENCE: Duration = Duration::from_secs(3);
    let lab = start(Setup {
        flags: vec![("create-patience", "3s".into())],
        ..Setup::default()
    })
    .await;
    gateway_mode(&lab, Mode::Silent).await;
    let client = Client::on(10, lab.daemon.listen).await;
    let req = map(Protocol::Udp, 6881, 0, 60);

    let started = Instant::now();
    let mut sent = 0;
    for n in 1..=4u32 {
        client.send(req).await;
        sent += 1;
        let early = client.reply_for(req, Duration::from_millis(250) * n).await;
        assert!(early.is_none(), "answered while still trying: {early:?}");
    }
    for n in 1..=sent {
        let reply = client
            .reply_for(req, PATIENCE + SLACK)
            .await
            .unwrap_or_else(|| panic!("datagram {n} never answered"));
        assert_eq!(reply.result, ResultCode::NetworkFailure, "{reply:?}");
    }
    let took = started.elapsed();
    assert!(
        took >= PATIENCE && took <= PATIENCE + SLACK,
        "answered after {took:?}"
    );
    assert!(
        lab.gateway.map_requests() >= 2,
        "the gateway was asked again within the window"
    );
    // The gateway answers again; whatever the daemon may have made is undone.
    gateway_mode(&lab, Mode::Normal).await;
    settled(&lab).await;
    assert!(our_sim_rules(&lab.router).is_empty(), "no rule left");
    assert!(lab.gateway.mappings().is_empty(), "no gateway mapping left");
    assert_eq!(lab.daemon.orchestrator.lease_count(), 0);
    // The rule was made once and removed once: kept, not churned, while the gateway was asked.
    assert_eq!(lab.router.command_count_for(ADD), 1);
    assert_eq!(lab.router.command_count_for("/ip/firewall/nat/remove"), 1);
}

// ---------------------------------------------------------------------------------------------
// The mapping core's promises over real sockets: identity by comment, the in-interface proof,
// teardown order

#[tokio::test]
async fn renumbered_ids_after_a_reboot_never_touch_a_foreign_rule_on_delete_expiry_or_reconcile() {
    let lab = start(Setup::default()).await;
    let client = Client::on(10, lab.daemon.listen).await;
    let admin_rule = lab.router.insert_nat_rule(&[
        ("chain", "dstnat"),
        ("action", "dst-nat"),
        ("protocol", "udp"),
        ("in-interface", "ether1"),
        ("dst-port", "53"),
        ("to-addresses", "127.0.0.53"),
    ]);
    // Three leases: one deleted, one expired, one left for the reconciler to keep.
    success(client.ask(map(Protocol::Tcp, 7001, 0, 60)).await);
    success(client.ask(map(Protocol::Tcp, 7002, 0, 2)).await);
    success(client.ask(map(Protocol::Tcp, 7003, 0, 60)).await);
    let held: Vec<String> = lab
        .daemon
        .orchestrator
        .leases()
        .iter()
        .filter_map(|l| l.lease.rule_id(RuleKind::DstNat).map(|id| id.to_string()))
        .collect();
    assert_eq!(held, ["*2", "*3", "*4"], "ids as the daemon holds them");

    // A reboot: the admin's rule went, the router renumbered, and the admin added new rules,
    // which now carry the ids the daemon holds.
    within(Duration::from_secs(5), "go_down", lab.router.go_down()).await;
    assert!(lab.router.delete_nat_rule(&admin_rule));
    lab.router.renumber_ids();
    let foreign: Vec<String> = (0..4)
        .map(|i| {
            let port = (9000 + i).to_string();
            lab.router.insert_nat_rule(&[
                ("chain", "dstnat"),
                ("action", "dst-nat"),
                ("protocol", "tcp"),
                ("in-interface", "ether1"),
                ("dst-port", port.as_str()),
                ("to-addresses", "127.0.0.99"),
                ("comment", "admin's port forward"),
            ])
        })
        .collect();
    within(Duration::from_secs(5), "come_up", lab.router.come_up())
        .await
        .unwrap_or_else(|e| panic!("come_up: {e}"));
    let now_ids: HashSet<String> = lab.router.nat_rules().into_iter().map(|r| r.id).collect();
    assert!(
        held.iter().any(|id| foreign.contains(id)) || held.iter().all(|id| now_ids.contains(id)),
        "the held ids name other rules now"
    );

    // Delete: the lease's own rule goes, by comment.
    let deleted = client.ask(map(Protocol::Tcp, 7001, 0, 0)).await;
    assert_eq!(deleted.result, ResultCode::Success, "{deleted:?}");
    // Expiry: the 2 s lease lapses (plus the test's expiry grace).
    let deadline = Instant::now() + Duration::from_secs(15);
    while lab.daemon.orchestrator.lease_count() > 1 && Instant::now() < deadline {
        lab.daemon.orchestrator.expire_due().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lab.daemon.orchestrator.lease_count(), 1, "7002 expired");
    // Reconcile: the last lease's rule is re-bound, not recreated, and nothing foreign goes.
    let report = within(
        Duration::from_secs(5),
        "reconcile",
        lab.daemon.orchestrator.reconcile(),
    )
    .await
    .map_err(|e| e.to_string());
    assert_eq!(
        report.map(|r| (r.orphans_removed, r.recreated, r.rebound)),
        Ok((0, 0, 1))
    );
    let rules = lab.router.nat_rules();
    for id in &foreign {
        assert!(
            rules.iter().any(|r| &r.id == id),
            "foreign rule {id} was removed: {rules:?}"
        );
    }
    let ours = our_sim_rules(&lab.router);
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(
        router_port(&ours[0]),
        7003,
        "the lease's own rule is the one kept"
    );
    assert_eq!(
        lab.daemon.orchestrator.leases()[0]
            .lease
            .rule_id(RuleKind::DstNat)
            .map(|id| id.to_string())
            .unwrap_or_default(),
        ours[0].id,
        "the lease holds the rule's current id"
    );
}

// Multi-threaded: the emulators keep running while the test waits for the daemon's log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_route_off_the_tunnel_adds_no_rule_and_the_log_names_the_interface_and_the_fix() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    // The default emulator routes 127.0.0.1 (the gateway) out of ether1, an ethernet port.
    let any: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    let router = RouterSim::start(RouterSimConfig::default(), any)
        .await
        .unwrap_or_else(|e| panic!("router emulator: {e}"));
    let gateway = Gateway::start(GatewayConfig::default(), any)
        .await
        .unwrap_or_else(|e| panic!("gateway emulator: {e}"));
    let listen = UdpSocket::bind("127.0.0.1:0")
        .await
        .and_then(|s| s.local_addr())
        .unwrap_or_else(|e| panic!("free port: {e}"));
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_double-natpmp"))
            .env_clear()
            .env("VPN_GATEWAY", gateway.local_addr().to_string())
            .env("MIKROTIK_API_ADDRESS", router.local_addr().to_string())
            .env("MIKROTIK_API_USER", "admin")
            .env("MIKROTIK_API_PASSWORD", "admin")
            .env("LISTEN_ADDR", listen.to_string())
            .env("ALLOWED_CLIENTS", "127.0.0.0/8")
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("daemon: {e}")),
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for pipe in [
        child
            .0
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .0
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let wait_for = |needle: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => eprintln!("daemon: {line}"),
                Err(_) => panic!("no log line containing {needle:?}"),
            }
        }
    };
    let line = wait_for("no new mappings until this is fixed");
    assert!(line.contains("'ether1'"), "names the interface: {line}");
    assert!(line.contains("type ether"), "says why: {line}");
    assert!(
        line.contains("/ip route add dst-address="),
        "gives the fix: {line}"
    );
    wait_for("NAT-PMP server listening");

    let client = Client::on(10, listen).await;
    let reply = client.ask(map(Protocol::Tcp, 6881, 0, 60)).await;
    assert_eq!(reply.result, ResultCode::NetworkFailure, "{reply:?}");
    assert_eq!(
        router.command_count_for(ADD),
        0,
        "no dst-nat rule is ever added"
    );
    assert!(router.nat_rules().is_empty());
    assert!(
        gateway.mappings().is_empty(),
        "the gateway was not asked either"
    );
}

#[tokio::test]
async fn a_failed_upstream_delete_keeps_the_router_port_reserved_until_it_is_known_free() {
    let lab = start(Setup::default()).await;
    let owner = Client::on(10, lab.daemon.listen).await;
    success(owner.ask(map(Protocol::Udp, 6881, 6881, 60)).await);
    gateway_mode(&lab, Mode::Silent).await;
    let reply = owner.ask(map(Protocol::Udp, 6881, 0, 0)).await;
    assert_eq!(reply.result, ResultCode::Success, "{reply:?}");
    assert_eq!(lab.daemon.orchestrator.lease_count(), 0);
    assert_eq!(
        our_sim_rules(&lab.router).len(),
        1,
        "the rule stays while the gateway may still forward the port"
    );

    gateway_mode(&lab, Mode::Normal).await;
    // Another client asks for the same port before the drain's retry: it gets another one.
    let other = Client::on(11, lab.daemon.listen).await;
    success(other.ask(map(Protocol::Udp, 6881, 6881, 60)).await);
    let leases = lab.daemon.orchestrator.leases();
    assert_eq!(leases.len(), 1);
    assert_ne!(leases[0].lease.router_port, 6881, "6881 was still draining");

    // The drain's retry reaches the gateway: the old mapping and rule go, the port is free.
    settled(&lab).await;
    let ours = our_sim_rules(&lab.router);
    assert_eq!(ours.len(), 1, "only the other client's rule: {ours:?}");
    assert_ne!(router_port(&ours[0]), 6881);
    assert!(
        lab.gateway
            .mappings()
            .iter()
            .all(|m| m.internal_port != 6881),
        "{:?}",
        lab.gateway.mappings()
    );
    assert!(!lab.daemon.orchestrator.table().is_used(Protocol::Udp, 6881));
}

// ---------------------------------------------------------------------------------------------
// Both directions (issue 12) over the real wire protocol

#[tokio::test]
async fn udp_srcnat_writes_the_exact_src_nat_rule_before_the_admins_masquerade() {
    let lab = start(Setup {
        flags: vec![("udp-srcnat", "true".into())],
        foreign_rules: vec![vec![
            ("chain", "srcnat"),
            ("action", "masquerade"),
            ("out-interface", IFACE),
            ("comment", "masquerade the tunnel"),
        ]],
        ..Setup::default()
    })
    .await;
    let client = Client::on(10, lab.daemon.listen).await;
    lab.router.reset_counters();
    success(client.ask(map(Protocol::Udp, 6881, 40123, 60)).await);
    assert_eq!(lab.router.command_count_for(ADD), 2, "dst-nat and src-nat");
    let rules = lab.router.nat_rules();
    let srcnat: Vec<&SimNatRule> = rules
        .iter()
        .filter(|r| field(r, "chain") == "srcnat")
        .collect();
    assert_eq!(srcnat.len(), 2, "{rules:?}");
    let ours = srcnat[0];
    for (name, value) in [
        ("action", "masquerade"),
        ("protocol", "udp"),
        ("src-address", "127.0.0.10"),
        ("src-port", "6881"),
        ("out-interface", IFACE),
        ("to-ports", "40123"),
        (
            "comment",
            "double-natpmp:v2 udp 127.0.0.10:6881 r=40123 l=60 k=snat",
        ),
    ] {
        assert_eq!(field(ours, name), value, "{name} of {ours:?}");
    }
    assert_eq!(
        field(srcnat[1], "comment"),
        "masquerade the tunnel",
        "ours comes first"
    );

    // A delete takes it away with the dst-nat rule; the admin's masquerade stays.
    let deleted = client.ask(map(Protocol::Udp, 6881, 0, 0)).await;
    assert_eq!(deleted.result, ResultCode::Success);
    assert!(
        our_sim_rules(&lab.router).is_empty(),
        "{:?}",
        lab.router.nat_rules()
    );
    assert_eq!(lab.router.nat_rules().len(), 1);
}

#[tokio::test]
async fn a_twin_on_the_same_router_port_gets_the_tcp_mappings_external_port_as_a_companion() {
    // A ProtonVPN-like gateway forwards one port for both protocols: the twin, on the TCP
    // mapping's router port, is its companion and takes no quota slot.
    let lab = start(Setup {
        flags: vec![("map-both-protocols", "true".into())],
        gateway: GatewayConfig {
            quota_per_peer: 1,
            ..GatewayConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let client = Client::on(10, lab.daemon.listen).await;
    let reply = success(client.ask(map(Protocol::Tcp, 51413, 0, 60)).await);
    settled(&lab).await;
    let rules = our_sim_rules(&lab.router);
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules.iter().all(|r| router_port(r) == 51413), "{rules:?}");
    let up = lab.gateway.mappings();
    assert_eq!(up.len(), 2, "{up:?}");
    assert!(
        up.iter().all(|m| m.external_port == reply.external_port),
        "{up:?}"
    );
}

#[tokio::test]
async fn map_both_protocols_over_the_wire_keeps_the_tcp_mapping_when_the_gateway_refuses_its_twin()
{
    let lab = start(Setup {
        flags: vec![("map-both-protocols", "true".into())],
        gateway: GatewayConfig {
            quota_per_peer: 1,
            ..GatewayConfig::default()
        },
        // The admin's UDP 51413 on the tunnel: the twin needs another router port, so it is
        // no companion at the gateway, and the quota (one port) is used up.
        foreign_rules: vec![vec![
            ("chain", "dstnat"),
            ("action", "dst-nat"),
            ("protocol", "udp"),
            ("in-interface", IFACE),
            ("dst-port", "51413"),
            ("to-addresses", "192.168.88.77"),
        ]],
        ..Setup::default()
    })
    .await;
    let client = Client::on(10, lab.daemon.listen).await;
    let reply = success(client.ask(map(Protocol::Tcp, 51413, 0, 60)).await);
    settled(&lab).await;
    // The twin was refused and undone: only the TCP mapping, on both layers.
    let rules = our_sim_rules(&lab.router);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(field(&rules[0], "protocol"), "tcp");
    let up = lab.gateway.mappings();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].external_port, reply.external_port);
    assert_eq!(lab.daemon.orchestrator.lease_count(), 1);
}
