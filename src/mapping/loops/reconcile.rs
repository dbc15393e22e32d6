//! The reconciler: brings the router's NAT rules of ours (dst-nat, and the src-nat rules of
//! UDP_SRCNAT) and our leases back in line, at start and every `reconcile_interval` (default
//! 10 min).
//!
//! One pass:
//! 1. list the router's addresses (`/ip/address/print`): they, and the network and broadcast
//!    addresses of their subnets, are refused as clients from now on (see [`crate::refused`]);
//!    the VPN interface's among them are the router's tunnel address. Then prove the VPN
//!    in-interface again (see `interface.rs`): while it is unusable, new mappings are
//!    answered 3;
//! 2. note the newest lease's serial (a lease live now has one at most this), then list the
//!    interface-list members, every dst-nat rule, every src-nat rule and the router services
//!    (four commands). Each dst-nat rule is sorted as it arrives, against the lease table as
//!    it is at that moment (a transaction's port is held from before its add until its lease
//!    is live, so no rule of a running transaction looks orphaned): 10,000 rules are never
//!    held at once, only the few to remove;
//! 3. a rule is ours only by its comment (our marker, or the original tool's `double-natpmp-`
//!    prefix). A rule whose comment names a live lease (key and router port) is that lease's
//!    rule: its id is re-bound if the router shows another one now (a reboot renumbers), and a
//!    second copy is removed. A rule of ours that no lease owns and whose port no transaction
//!    holds is an orphan, and is removed (an add whose answer was lost, a failed rollback, a
//!    restart);
//!    A src-nat rule of ours is its lease's only while the lease wants one (a UDP mapping under
//!    UDP_SRCNAT); with the setting turned off, the rules left by an earlier run are orphans;
//! 4. a live lease whose rule is missing from the listing (someone deleted it, or UDP_SRCNAT
//!    was turned on since the rule was made) gets its rule recreated (a src-nat rule placed
//!    before the masquerade again, see `srcnat.rs`); only leases that were live with the same serial before the listing started
//!    count, so a mapping made during the listing is never duplicated;
//! 5. the table gets the listing's view: the ports of every foreign rule that can catch tunnel
//!    traffic (see `ports.rs`), of our rules that could not be removed, and of enabled services.
//!
//! Foreign rules (no marker, or `dynamic`) are never touched, whatever their id. Each change is
//! logged at `info`. A src-nat rule of ours that a foreign rule above it shadows (the
//! masquerade was moved on top) is logged at `warn` with the fix; `double-natpmp check` says
//! the same.

use std::collections::HashSet;
use std::sync::Arc;

use tracing::{info, warn};

use crate::mapping::core::Core;
use crate::mapping::error::MappingError;
use crate::mapping::events::MappingEvent;
use crate::mapping::router::interface::prove;
use crate::mapping::router::layers::Added;
use crate::mapping::router::rule::{dst_nat_rule, src_nat_rule, wanted_rules, RuleOwner};
use crate::mapping::router::seam::{NatRule, Router, RuleId};
use crate::mapping::router::srcnat::{describe, shadowed, OutScope};
use crate::mapping::store::key::MappingKey;
use crate::mapping::store::lease::RuleKind;
use crate::mapping::store::ports::{parse_port_list, RouterView, TunnelScope};
use crate::mapping::store::table::Hold;
use crate::natpmp::upstream::Upstream;
use double_natpmp_codec::protocol::Protocol;

/// What one reconcile pass found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// dst-nat rules on the router.
    pub rules_seen: usize,
    /// Of those, rules that are not ours.
    pub foreign_rules: usize,
    /// Of the foreign rules, those that can catch traffic from the tunnel.
    pub foreign_on_tunnel: usize,
    /// Rules of ours without a live lease, removed.
    pub orphans_removed: usize,
    /// Rules of ours without a live lease that could not be removed (retried next pass).
    pub orphans_left: usize,
    /// Rules of live leases recreated after someone deleted them.
    pub recreated: usize,
    /// Recreations that failed (retried next pass).
    pub recreate_failed: usize,
    /// Lease rules whose id the router changed, re-bound by comment.
    pub rebound: usize,
    /// src-nat rules on the router.
    pub srcnat_rules_seen: usize,
    /// src-nat rules of ours that a foreign rule above them takes the traffic from.
    pub srcnat_shadowed: usize,
    /// Whether the VPN interface is usable after this pass.
    pub interface_ok: bool,
}

/// The single (protocol, router port) an own rule holds, if it names exactly one (a
/// dst-nat rule's dst-port, a src-nat rule's to-ports).
fn single_port(kind: RuleKind, rule: &NatRule) -> Option<(Protocol, u16)> {
    let protocol = Protocol::parse(rule.protocol.as_deref()?)?;
    let port = match kind {
        RuleKind::DstNat => rule.dst_port.as_deref()?,
        RuleKind::SrcNat => rule.to_ports.as_deref()?,
    };
    Some((protocol, port.trim().parse().ok()?))
}

/// Marks the ports of an own rule that could not be removed as used.
fn keep_ports_used(view: &mut RouterView, rule: &NatRule) {
    let protocols: Vec<Protocol> = match rule.protocol.as_deref().map(Protocol::parse) {
        Some(Some(p)) => vec![p],
        _ => Protocol::ALL.to_vec(),
    };
    let ranges = rule
        .dst_port
        .as_deref()
        .and_then(parse_port_list)
        .unwrap_or_default();
    for p in protocols {
        for r in &ranges {
            for port in r.clone() {
                view.add_used(p, port);
            }
        }
    }
}

/// What the table says of a listed rule of ours, looked up as the rule arrives.
enum Verdict {
    /// The rule of this live lease (serial), under the id the lease knows (`true`) or another.
    Owned(u64, bool),
    /// Its port is in flight or draining: the transaction (or the drain) owns the rule.
    Held,
    /// Nobody owns it.
    Orphan,
}

/// Sorts listed rules one at a time, as the listing arrives (10,000 rules are never held
/// whole): a foreign rule only adds its ports to the view, a rule of ours is matched to its
/// lease at once, and only the rules to remove are kept.
struct Sorter<'a, R, U> {
    core: &'a Core<R, U>,
    scope: &'a TunnelScope,
    view: RouterView,
    /// The lease each listed rule of ours belongs to, by comment and kind.
    present: HashSet<(MappingKey, RuleKind)>,
    /// The ids of the src-nat rules of ours kept as their lease's.
    kept: HashSet<RuleId>,
    /// Rules of ours to remove (orphans and second copies), with their chain.
    doomed: Vec<(RuleKind, NatRule)>,
    foreign: usize,
    foreign_on_tunnel: usize,
    rebound: usize,
}

impl<'a, R, U> Sorter<'a, R, U> {
    fn new(core: &'a Core<R, U>, scope: &'a TunnelScope) -> Self {
        Sorter {
            core,
            scope,
            view: RouterView::new(),
            present: HashSet::new(),
            kept: HashSet::new(),
            doomed: Vec::new(),
            foreign: 0,
            foreign_on_tunnel: 0,
            rebound: 0,
        }
    }

    fn sort(&mut self, chain: RuleKind, rule: &NatRule) {
        let table = &self.core.table;
        match RuleOwner::of(rule.comment.as_deref(), rule.dynamic) {
            RuleOwner::Ours(Some(c)) => {
                let wanted =
                    c.kind == chain && wanted_rules(&self.core.config, &c.key).contains(&c.kind);
                let at = (c.key.protocol, c.router_port);
                let verdict = table.look(&c.key, at, |lease, hold| {
                    match lease.filter(|l| wanted && l.router_port == c.router_port) {
                        Some(l) => Verdict::Owned(
                            l.serial,
                            rule.id
                                .as_ref()
                                .is_none_or(|id| l.rule_id(c.kind) == Some(id)),
                        ),
                        None if hold.is_some_and(|h| !matches!(h, Hold::Leased(_))) => {
                            Verdict::Held
                        }
                        None => Verdict::Orphan,
                    }
                });
                match verdict {
                    // A second rule with the same comment is removed.
                    Verdict::Owned(serial, same_id) if self.present.insert((c.key, c.kind)) => {
                        if let Some(id) = &rule.id {
                            if chain == RuleKind::SrcNat {
                                self.kept.insert(id.clone());
                            }
                            if !same_id {
                                rebind(self.core, c.key, serial, c.kind, id.clone());
                                self.rebound += 1;
                            }
                        }
                        return;
                    }
                    Verdict::Held => {
                        if chain == RuleKind::DstNat {
                            self.view.add_used(c.key.protocol, c.router_port);
                        }
                        return;
                    }
                    Verdict::Owned(..) | Verdict::Orphan => {}
                }
            }
            RuleOwner::Ours(None) | RuleOwner::OriginalTool => {
                let held = single_port(chain, rule).is_some_and(|(p, port)| {
                    matches!(
                        table.hold(p, port),
                        Some(Hold::InFlight(_)) | Some(Hold::Draining(_))
                    )
                });
                if held {
                    return;
                }
            }
            RuleOwner::Foreign => {
                if chain == RuleKind::DstNat {
                    self.foreign += 1;
                    if self.scope.catches(rule) {
                        self.foreign_on_tunnel += 1;
                        self.view.add_foreign_rule(rule);
                    }
                }
                return;
            }
        }
        self.doomed.push((chain, rule.clone()));
    }
}

/// One reconcile pass (see the module docs).
pub(crate) async fn pass<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
) -> Result<ReconcileReport, MappingError> {
    let Some(_gate) = core.enter().await else {
        return Err(MappingError::ShuttingDown);
    };
    let mut report = ReconcileReport::default();
    let addresses = core
        .layers
        .router_call(
            "list the router's addresses",
            core.layers.router.addresses(),
        )
        .await?;
    core.refused.set_router_addresses(&addresses);
    let proof = Box::pin(prove(&core.layers, &core.config, &addresses)).await?;
    report.interface_ok = proof.is_ok();
    core.set_interface(proof);

    let generation = core.table.begin_refresh();
    // Which leases were live before the listing: only those may have their rules recreated.
    let before = core.table.last_serial();
    let layers = &core.layers;
    // The members first: sorting a dst-nat rule as it arrives needs the tunnel's scope.
    let members = layers
        .router_call(
            "list the interface-list members",
            layers.router.list_members(),
        )
        .await?;
    let scope = TunnelScope::new(&core.config.in_interface, &members);
    let mut sorter = Sorter::new(core, &scope);
    report.rules_seen = layers
        .router_call(
            "list the dst-nat rules",
            layers
                .router
                .scan_dstnat(|rule| sorter.sort(RuleKind::DstNat, &rule)),
        )
        .await?;
    let src_rules = layers
        .router_call("list the src-nat rules", layers.router.list_srcnat())
        .await?;
    report.srcnat_rules_seen = src_rules.len();
    for rule in &src_rules {
        sorter.sort(RuleKind::SrcNat, rule);
    }
    let services = layers
        .router_call("list the router services", layers.router.services())
        .await?;
    let Sorter {
        mut view,
        present,
        kept,
        doomed,
        ..
    } = sorter;
    report.foreign_rules = sorter.foreign;
    report.foreign_on_tunnel = sorter.foreign_on_tunnel;
    report.rebound = sorter.rebound;
    view.add_services(&services);
    for (chain, rule) in doomed {
        let removed = match &rule.id {
            Some(id) => match layers
                .router_call("remove an orphaned rule", layers.router.remove_rule(id))
                .await
            {
                Ok(()) => true,
                Err(e) if e.is_not_found() => true,
                Err(e) => {
                    warn!(rule = %id, comment = ?rule.comment, "could not remove an orphaned rule: {e}");
                    false
                }
            },
            None => false,
        };
        if removed {
            report.orphans_removed += 1;
            info!(
                rule = ?rule.id,
                chain = chain.as_str(),
                comment = ?rule.comment,
                dst_port = ?rule.dst_port,
                to = ?rule.to_addresses,
                "removed orphaned rule (no live mapping owns it)"
            );
        } else {
            report.orphans_left += 1;
            if chain == RuleKind::DstNat {
                keep_ports_used(&mut view, &rule);
            }
        }
    }
    let out = OutScope::new(&core.config.in_interface, &members);
    let live = shadowed(&src_rules, &out)
        .into_iter()
        .filter(|s| s.ours_id.as_ref().is_some_and(|id| kept.contains(id)));
    for s in live {
        report.srcnat_shadowed += 1;
        warn!(rule = ?s.ours_id, client = %s.ours.key.client, internal_port = s.ours.key.internal_port, before = %describe(&s.by), "a src-nat rule above ours takes the client's outbound UDP first, so it leaves with another port; move ours above it (/ip firewall nat move {} destination={})", s.ours_id.as_ref().map_or("<ours>", |i| i.as_str()), s.by.id.as_ref().map_or("<its id>", |i| i.as_str()));
    }
    core.set_members(members);

    // A lease live before the listing and still live with the same serial after it, whose
    // rule the listing did not show. (`recreate` checks the serial again under the key's lock.)
    let mut missing = Vec::new();
    core.table.each_live_since(before, |key, lease| {
        for &kind in wanted_rules(&core.config, key) {
            if !present.contains(&(*key, kind)) {
                missing.push((*key, lease.serial, kind));
            }
        }
    });
    for (key, serial, kind) in missing {
        match recreate(core, key, serial, kind).await {
            Ok(true) => report.recreated += 1,
            Ok(false) => {}
            Err(e) => {
                report.recreate_failed += 1;
                warn!(mapping = %key, "could not recreate a deleted rule: {e}");
            }
        }
    }

    core.table.apply_refresh(generation, view);
    core.events.emit(MappingEvent::Reconciled {
        orphans_removed: report.orphans_removed,
        recreated: report.recreated,
        interface_ok: report.interface_ok,
    });
    Ok(report)
}

/// The router shows the lease's rule of `kind` under another id (or has it at all, after a
/// recreate): remember that one.
fn rebind<R, U>(core: &Core<R, U>, key: MappingKey, serial: u64, kind: RuleKind, id: RuleId) {
    core.table.update(&key, |l| {
        if l.serial != serial {
            return;
        }
        if let Some(old) = l.rules.get(kind) {
            info!(mapping = %key, old_rule = %old, rule = %id, "the router shows our rule under another id: re-bound by comment");
        }
        l.rules.set(kind, id);
    });
}

/// Recreates the rule of `kind` of a live lease whose rule vanished; `Ok(false)` when the
/// lease changed meanwhile.
async fn recreate<R: Router, U: Upstream>(
    core: &Core<R, U>,
    key: MappingKey,
    serial: u64,
    kind: RuleKind,
) -> Result<bool, MappingError> {
    let _lock = core.locks.lock(key).await;
    let Some(lease) = core.table.get(&key).filter(|l| l.serial == serial) else {
        return Ok(false);
    };
    let comment = lease.comment.for_kind(kind);
    let added = match kind {
        RuleKind::DstNat => {
            let rule = dst_nat_rule(&core.config, &comment);
            core.layers.add_rule(&rule, &comment).await
        }
        RuleKind::SrcNat => {
            let scope = core.out_scope();
            core.layers
                .add_src_rule(
                    &scope,
                    |anchor| src_nat_rule(&core.config, &comment, anchor),
                    &comment,
                )
                .await
        }
    };
    let id = match added {
        Added::Yes(id) => id,
        Added::No(e) | Added::Unknown(e) => return Err(e),
    };
    let old = lease.rule_id(kind).cloned();
    rebind(core, key, serial, kind, id.clone());
    info!(
        mapping = %key,
        router_port = lease.router_port,
        old_rule = ?old,
        rule = %id,
        kind = kind.as_str(),
        "recreated a missing rule of a live mapping"
    );
    Ok(true)
}
