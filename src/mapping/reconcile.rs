//! The reconciler: brings the router's dst-nat rules and our leases back in line, at start and
//! every `reconcile_interval` (default 10 min).
//!
//! One pass:
//! 1. prove the VPN in-interface again (see `interface.rs`): while it is unusable, new mappings
//!    are answered 3;
//! 2. snapshot the table's holds and leases, list every dst-nat rule, the interface-list members
//!    and the router services (three commands), snapshot again;
//! 3. a rule is ours only by its comment (our marker, or the original tool's `double-natpmp-`
//!    prefix). A rule whose comment names a live lease (key and router port) is that lease's
//!    rule: its id is re-bound if the router shows another one now (a reboot renumbers), and a
//!    second copy is removed. A rule of ours that no lease owns and whose port no transaction
//!    holds is an orphan, and is removed (an add whose answer was lost, a failed rollback, a
//!    restart);
//! 4. a live lease whose rule is missing from the listing (someone deleted it) gets its rule
//!    recreated; only leases that were live with the same serial before the listing started
//!    count, so a mapping made during the listing is never duplicated;
//! 5. the table gets the listing's view: the ports of every foreign rule that can catch tunnel
//!    traffic (see `ports.rs`), of our rules that could not be removed, and of enabled services.
//!
//! Foreign rules (no marker, or `dynamic`) are never touched, whatever their id. Each change is
//! logged at `info`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::{info, warn};

use crate::mapping::core::Core;
use crate::mapping::error::MappingError;
use crate::mapping::events::MappingEvent;
use crate::mapping::interface::prove;
use crate::mapping::key::MappingKey;
use crate::mapping::layers::Added;
use crate::mapping::lease::{Lease, RuleKind};
use crate::mapping::ports::{parse_port_list, RouterView, TunnelScope};
use crate::mapping::rule::dst_nat_rule;
use crate::mapping::rule::RuleOwner;
use crate::mapping::table::Hold;
use crate::natpmp::upstream::Upstream;
use crate::natpmp::wire::Protocol;
use crate::routeros::api::{NatRule, Router, RuleId};

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
    /// Whether the VPN interface is usable after this pass.
    pub interface_ok: bool,
}

/// The single (protocol, port) an own rule holds, if it names exactly one.
fn single_port(rule: &NatRule) -> Option<(Protocol, u16)> {
    let protocol = Protocol::parse(rule.protocol.as_deref()?)?;
    let port = rule.dst_port.as_deref()?.trim().parse().ok()?;
    Some((protocol, port))
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

/// One reconcile pass (see the module docs).
pub async fn pass<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
) -> Result<ReconcileReport, MappingError> {
    let Some(_gate) = core.enter().await else {
        return Err(MappingError::ShuttingDown);
    };
    let mut report = ReconcileReport::default();
    let proof = Box::pin(prove(&core.layers, &core.config)).await?;
    report.interface_ok = proof.is_ok();
    core.set_interface(proof);

    let generation = core.table.begin_refresh();
    let before: HashMap<MappingKey, Lease> = core
        .table
        .snapshot()
        .into_iter()
        .map(|l| (l.key, l.lease))
        .collect();
    let layers = &core.layers;
    let rules = layers
        .router_call("list the dst-nat rules", layers.router.list_dstnat())
        .await?;
    let members = layers
        .router_call(
            "list the interface-list members",
            layers.router.list_members(),
        )
        .await?;
    let services = layers
        .router_call("list the router services", layers.router.services())
        .await?;
    let after: HashMap<MappingKey, Lease> = core
        .table
        .snapshot()
        .into_iter()
        .map(|l| (l.key, l.lease))
        .collect();
    let holds = core.table.holds();
    report.rules_seen = rules.len();

    let scope = TunnelScope::new(&core.config.in_interface, &members);
    let mut view = RouterView::new();
    view.add_services(&services);
    // The lease each listed rule of ours belongs to, by comment.
    let mut present: HashSet<MappingKey> = HashSet::new();
    for rule in &rules {
        let owner = RuleOwner::of(rule.comment.as_deref(), rule.dynamic);
        if !owner.is_ours() {
            report.foreign_rules += 1;
            if scope.catches(rule) {
                report.foreign_on_tunnel += 1;
                view.add_foreign_rule(rule);
            }
            continue;
        }
        if let RuleOwner::Ours(Some(c)) = owner {
            if let Some(lease) = after.get(&c.key).filter(|l| l.router_port == c.router_port) {
                if present.insert(c.key) {
                    if let Some(id) = &rule.id {
                        if lease.rule_id(RuleKind::DstNat) != Some(id) {
                            rebind(core, c.key, lease.serial, id.clone());
                            report.rebound += 1;
                        }
                    }
                    continue;
                }
                // A second rule with the same comment: fall through and remove it.
            } else if holds.contains_key(&(c.key.protocol, c.router_port))
                && !matches!(
                    holds.get(&(c.key.protocol, c.router_port)),
                    Some(Hold::Leased(_))
                )
            {
                // In flight or draining: its transaction (or drain) owns the rule.
                view.add_used(c.key.protocol, c.router_port);
                continue;
            }
        } else if single_port(rule).is_some_and(|p| {
            matches!(
                holds.get(&p),
                Some(Hold::InFlight(_)) | Some(Hold::Draining(_))
            )
        }) {
            continue;
        }
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
                comment = ?rule.comment,
                dst_port = ?rule.dst_port,
                to = ?rule.to_addresses,
                "removed orphaned rule (no live mapping owns it)"
            );
        } else {
            report.orphans_left += 1;
            keep_ports_used(&mut view, rule);
        }
    }

    let missing: Vec<(MappingKey, u64)> = before
        .iter()
        .filter(|(key, lease)| {
            after.get(key).is_some_and(|l| l.serial == lease.serial) && !present.contains(key)
        })
        .map(|(key, lease)| (*key, lease.serial))
        .collect();
    for (key, serial) in missing {
        match recreate(core, key, serial).await {
            Ok(true) => report.recreated += 1,
            Ok(false) => {}
            Err(e) => {
                report.recreate_failed += 1;
                warn!(client = %key.client, proto = %key.protocol, internal_port = key.internal_port, "could not recreate a deleted rule: {e}");
            }
        }
    }

    core.table.apply_refresh(generation, view);
    core.layers.events.emit(MappingEvent::Reconciled {
        orphans_removed: report.orphans_removed,
        recreated: report.recreated,
        interface_ok: report.interface_ok,
    });
    Ok(report)
}

/// The router shows the lease's rule under another id: remember that one.
fn rebind<R, U>(core: &Core<R, U>, key: MappingKey, serial: u64, id: RuleId) {
    core.table.update(&key, |l| {
        if l.serial == serial {
            if let Some(r) = l.rules.iter_mut().find(|r| r.kind == RuleKind::DstNat) {
                info!(client = %key.client, proto = %key.protocol, internal_port = key.internal_port, old_rule = %r.id, rule = %id, "the router shows our rule under another id: re-bound by comment");
                r.id = id;
            }
        }
    });
}

/// Recreates the rule of a live lease whose rule vanished; `Ok(false)` when the lease changed
/// meanwhile.
async fn recreate<R: Router, U: Upstream>(
    core: &Core<R, U>,
    key: MappingKey,
    serial: u64,
) -> Result<bool, MappingError> {
    let _lock = core.locks.lock(key).await;
    let Some(lease) = core.table.get(&key).filter(|l| l.serial == serial) else {
        return Ok(false);
    };
    let rule = dst_nat_rule(&core.config, &lease.comment);
    let id = match core.layers.add_rule(&rule, &lease.comment).await {
        Added::Yes(id) => id,
        Added::No(e) | Added::Unknown(e) => return Err(e),
    };
    let old = lease.rule_id(RuleKind::DstNat).cloned();
    rebind(core, key, serial, id.clone());
    info!(
        client = %key.client,
        proto = %key.protocol,
        internal_port = key.internal_port,
        router_port = lease.router_port,
        old_rule = ?old,
        rule = %id,
        "recreated the dst-nat rule someone deleted"
    );
    Ok(true)
}
