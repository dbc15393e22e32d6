//! The fault matrix: every fault at every step of a mapping's life, each cell followed by a
//! recovery that is awaited and checked (issue "never lose a mapping", point 6).
//!
//! Faults: the connection cut before a command, cut after it ran (a lost reply), a router that
//! does not answer, a `!trap`, a silent gateway, a gateway that refuses (ICMP), a gateway that
//! loses its state, and a SIGKILL of the daemon (its background stops, a new start adopts).
//! Steps: router add, upstream map, rollback, keeper renewal, client renewal, delete, expiry,
//! reconcile. In each cell the fault is active while the step runs; then it ends, a client
//! that keeps renewing renews for a few minutes (virtual time: tokio's paused clock runs every
//! timeout and lifetime exactly and at once) and the reconciler runs. Checked after each cell:
//!
//! * no orphan rule: every rule of ours on the router belongs to a live lease, once;
//! * no upstream mapping without a lease;
//! * every renewing client is still mapped (lease, rule and gateway mapping);
//! * every request was answered (within a bound, never silence).
//!
//! The totals are printed and must all be zero. The matrix runs twice: with the default
//! settings, and with UDP_SRCNAT and MAP_BOTH_PROTOCOLS (every UDP mapping also owns a src-nat
//! rule placed before a masquerade, and the renewing client's TCP mapping has a UDP twin that
//! must live, be kept and end with it; a rule of ours is then an orphan unless its lease owns
//! a rule of that kind).

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::fakes::*;
use double_natpmp::MappingConfig;
use double_natpmp::{MapHandler, MapReply};
use double_natpmp::{RuleComment, RuleKind};
use double_natpmp_codec::natpmp::wire::{MapRequest, Protocol, ResultCode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    CutBefore,
    CutAfter,
    RouterTimeout,
    Trap,
    UpstreamSilent,
    UpstreamRefusing,
    UpstreamStateLoss,
    Sigkill,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    RouterAdd,
    UpstreamMap,
    Rollback,
    KeeperRenewal,
    ClientRenewal,
    Delete,
    Expiry,
    Reconcile,
}

const FAULTS: [Fault; 8] = [
    Fault::CutBefore,
    Fault::CutAfter,
    Fault::RouterTimeout,
    Fault::Trap,
    Fault::UpstreamSilent,
    Fault::UpstreamRefusing,
    Fault::UpstreamStateLoss,
    Fault::Sigkill,
];

const STEPS: [Step; 8] = [
    Step::RouterAdd,
    Step::UpstreamMap,
    Step::Rollback,
    Step::KeeperRenewal,
    Step::ClientRenewal,
    Step::Delete,
    Step::Expiry,
    Step::Reconcile,
];

/// How long a request may take before it counts as unanswered (virtual time).
const ANSWER_BOUND: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    asked: usize,
    answered: usize,
}

/// The renewing client: lan(10), TCP 6881.
fn renewing() -> MapRequest {
    map(Protocol::Tcp, 6881, 0, 60)
}

fn renewing_key() -> double_natpmp::MappingKey {
    double_natpmp::MappingKey {
        client: lan(10),
        protocol: Protocol::Tcp,
        internal_port: 6881,
    }
}

struct Cell {
    router: FakeRouter,
    upstream: FakeUpstream,
    orch: Orch,
    tally: Tally,
}

impl Cell {
    async fn ask(&mut self, host: u8, req: MapRequest) -> Option<MapReply> {
        self.tally.asked += 1;
        let reply = tokio::time::timeout(ANSWER_BOUND, self.orch.handle_map(lan(host), req))
            .await
            .ok();
        if reply.is_some() {
            self.tally.answered += 1;
        }
        reply
    }

    fn arm(&self, fault: Fault, step: Step) {
        let router_fault = match fault {
            Fault::CutBefore => Some(RouterFault::CutBefore),
            Fault::CutAfter => Some(RouterFault::CutAfter),
            Fault::RouterTimeout => Some(RouterFault::Timeout),
            Fault::Trap => Some(RouterFault::Trap),
            _ => None,
        };
        if let Some(f) = router_fault {
            let mut s = self.router.state();
            s.fault = Some(f);
            // A rollback follows a successful add: the fault meets its removes.
            s.fault_only_removes = step == Step::Rollback;
        }
        match fault {
            Fault::UpstreamSilent => self.upstream.state().fault = Some(UpFault::Silent),
            Fault::UpstreamRefusing => self.upstream.state().fault = Some(UpFault::Refused),
            Fault::UpstreamStateLoss => self.upstream.lose_state(),
            _ => {}
        }
        if step == Step::Rollback && router_fault.is_some() {
            // The gateway refuses the mapping, so the rule must be rolled back.
            self.upstream.state().fault = Some(UpFault::Quota);
        }
    }

    fn disarm(&self) {
        {
            let mut s = self.router.state();
            s.fault = None;
            s.fault_only_removes = false;
        }
        self.upstream.state().fault = None;
    }

    /// The step's action.
    async fn act(&mut self, step: Step) {
        match step {
            Step::RouterAdd | Step::UpstreamMap | Step::Rollback => {
                self.ask(10, renewing()).await;
            }
            Step::KeeperRenewal => tokio::time::sleep(Duration::from_secs(35)).await,
            Step::ClientRenewal => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                self.ask(10, renewing()).await;
            }
            Step::Delete => {
                self.ask(11, map(Protocol::Udp, 7000, 0, 0)).await;
            }
            Step::Expiry => tokio::time::sleep(Duration::from_secs(20)).await,
            Step::Reconcile => {
                let _ = self.orch.reconcile().await;
            }
        }
    }
}

/// The settings a matrix runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// The defaults.
    Plain,
    /// UDP_SRCNAT and MAP_BOTH_PROTOCOLS.
    BothWays,
}

fn settings(variant: Variant) -> MappingConfig {
    MappingConfig {
        udp_srcnat: variant == Variant::BothWays,
        map_both_protocols: variant == Variant::BothWays,
        ..config()
    }
}

/// Runs one cell; returns (orphans, lost, unanswered).
async fn cell(fault: Fault, step: Step, variant: Variant) -> (usize, usize, usize) {
    let router = FakeRouter::default();
    if variant == Variant::BothWays {
        router.seed_masquerade(IFACE);
    }
    let upstream = FakeUpstream::new();
    let orch = start_with(&router, &upstream, settings(variant)).await;
    let mut c = Cell {
        router,
        upstream,
        orch,
        tally: Tally::default(),
    };
    // What exists before the step.
    let creates_a = !matches!(step, Step::RouterAdd | Step::UpstreamMap | Step::Rollback);
    if creates_a {
        c.ask(10, renewing()).await;
    }
    if step == Step::Delete {
        c.ask(11, map(Protocol::Udp, 7000, 0, 60)).await;
    }
    if step == Step::Expiry {
        c.ask(12, map(Protocol::Tcp, 7001, 0, 10)).await;
    }
    if step == Step::Reconcile {
        // An orphan of ours, and a live rule someone deleted.
        let orphan = RuleComment::new(
            double_natpmp::MappingKey {
                client: lan(13),
                protocol: Protocol::Tcp,
                internal_port: 7002,
            },
            7002,
            60,
        );
        c.router
            .seed("tcp", "7002", lan(13), Some("7002"), Some(&orphan.encode()));
        if let Some(id) = c.router.our_rules().first().and_then(|r| r.id.clone()) {
            c.router.delete_by_hand(&id);
        }
    }

    if fault == Fault::Sigkill {
        // The daemon dies in the middle of the step: its work stops where it is.
        let orch = c.orch.clone();
        let action = tokio::spawn({
            let router = c.router.clone();
            let upstream = c.upstream.clone();
            async move {
                let mut inner = Cell {
                    router,
                    upstream,
                    orch,
                    tally: Tally::default(),
                };
                inner.act(step).await;
                inner.tally
            }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        action.abort();
        let _ = action.await;
        c.orch.abandon();
        c.orch = start_with(&c.router, &c.upstream, settings(variant)).await;
    } else {
        c.arm(fault, step);
        c.act(step).await;
        c.disarm();
    }

    // Recovery: the renewing client keeps renewing; the reconciler runs; drains finish.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(25)).await;
        c.ask(10, renewing()).await;
    }
    for _ in 0..10 {
        if c.orch.reconcile().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    c.orch.settled().await;
    let last = c.ask(10, renewing()).await;

    let owned: HashSet<(double_natpmp::MappingKey, u16, RuleKind)> = c
        .orch
        .leases()
        .iter()
        .flat_map(|l| {
            l.lease
                .rules
                .iter()
                .map(|r| (l.key, l.lease.router_port, r.kind))
                .collect::<Vec<_>>()
        })
        .collect();
    let leases: HashSet<(double_natpmp::MappingKey, u16)> = c
        .orch
        .leases()
        .iter()
        .map(|l| (l.key, l.lease.router_port))
        .collect();
    let ours: Vec<RuleComment> = c
        .router
        .our_rules()
        .iter()
        .filter_map(|r| r.comment.as_deref().and_then(RuleComment::parse))
        .collect();
    let mut seen = HashSet::new();
    let orphans = ours
        .iter()
        .filter(|r| {
            !owned.contains(&(r.key, r.router_port, r.kind))
                || !seen.insert((r.key, r.router_port, r.kind))
        })
        .count();
    let lease_ports: HashSet<(Protocol, u16)> =
        leases.iter().map(|(k, r)| (k.protocol, *r)).collect();
    let mut lost = c
        .upstream
        .mapped()
        .keys()
        .filter(|p| !lease_ports.contains(p))
        .count();
    // The renewing client is still mapped on both layers.
    let a = c
        .orch
        .leases()
        .into_iter()
        .find(|l| l.key == renewing_key());
    let a_ok = last.is_some_and(|r| r.result == ResultCode::Success)
        && a.as_ref().is_some_and(|l| {
            ours.iter()
                .any(|r| r.key == l.key && r.router_port == l.lease.router_port)
                && c.upstream
                    .mapped()
                    .contains_key(&(Protocol::Tcp, l.lease.router_port))
        });
    if !a_ok {
        lost += 1;
    }
    if variant == Variant::BothWays && a_ok {
        // Its UDP twin lives with it on both layers, with its src-nat rule.
        let twin_key = double_natpmp::MappingKey {
            protocol: Protocol::Udp,
            ..renewing_key()
        };
        let twin = c.orch.leases().into_iter().find(|l| l.key == twin_key);
        let twin_ok = twin.is_some_and(|t| {
            let kinds: HashSet<RuleKind> = ours
                .iter()
                .filter(|r| r.key == t.key && r.router_port == t.lease.router_port)
                .map(|r| r.kind)
                .collect();
            kinds.len() == 2
                && c.upstream
                    .mapped()
                    .contains_key(&(Protocol::Udp, t.lease.router_port))
        });
        if !twin_ok {
            lost += 1;
        }
    }
    if orphans + lost > 0 || c.tally.asked != c.tally.answered {
        eprintln!(
            "fault matrix ({variant:?}): {fault:?} at {step:?}: orphans {orphans}, lost {lost}, unanswered {}; rules {:?}, upstream {:?}, leases {:?}, last {last:?}",
            c.tally.asked - c.tally.answered,
            c.router.our_rules(),
            c.upstream.mapped(),
            c.orch.leases()
        );
    }
    (orphans, lost, c.tally.asked - c.tally.answered)
}

async fn matrix(variant: Variant) -> (usize, (usize, usize, usize)) {
    let mut totals = (0, 0, 0);
    let mut cells = 0;
    for fault in FAULTS {
        for step in STEPS {
            let (o, l, u) = cell(fault, step, variant).await;
            totals.0 += o;
            totals.1 += l;
            totals.2 += u;
            cells += 1;
        }
    }
    eprintln!(
        "fault matrix ({variant:?}): {} faults x {} steps = {cells} cells: orphans {}, lost mappings {}, unanswered requests {}",
        FAULTS.len(),
        STEPS.len(),
        totals.0,
        totals.1,
        totals.2
    );
    (cells, totals)
}

#[tokio::test(start_paused = true)]
async fn every_fault_at_every_step_recovers_with_no_orphan_no_lost_mapping_and_every_request_answered(
) {
    let (cells, totals) = matrix(Variant::Plain).await;
    assert_eq!(cells, 64);
    assert_eq!(
        totals,
        (0, 0, 0),
        "orphans, lost mappings, unanswered requests"
    );
}

#[tokio::test(start_paused = true)]
async fn with_src_nat_rules_and_twins_every_fault_at_every_step_recovers_the_same_way() {
    let (cells, totals) = matrix(Variant::BothWays).await;
    assert_eq!(cells, 64);
    assert_eq!(
        totals,
        (0, 0, 0),
        "orphans, lost mappings (twins included), unanswered requests"
    );
}
