//! The reconciler: brings the router's dst-nat rules on the VPN in-interface and our leases back
//! in line, at start and every `reconcile_interval` (default 10 min).
//!
//! One pass:
//! 1. snapshot our holds, list the dst-nat rules of the in-interface (one command), snapshot the
//!    holds again;
//! 2. a rule of ours (our marker, or the original tool's `double-natpmp-` prefix) that no live
//!    lease owns (its id is no lease's rule) and whose port no transaction has in flight is an
//!    orphan: it is removed (an add whose answer was lost, a failed rollback, a restart);
//! 3. a live lease whose rule is missing from the listing (someone deleted it) gets its rule
//!    recreated; only leases that existed with the same rule before the listing started count,
//!    so a mapping made during the listing is never duplicated;
//! 4. the port index gets the listing's view (foreign ports and targets, plus ours that could
//!    not be removed).
//!
//! Foreign rules (no marker, or `dynamic`) are never touched. Each change is logged at `info`.

use std::collections::HashSet;
use std::sync::Arc;

use tracing::{info, warn};

use crate::mapping::error::MappingError;
use crate::mapping::lease::MappingKey;
use crate::mapping::orchestrator::Inner;
use crate::mapping::ports::{parse_port_list, Hold, RouterView};
use crate::mapping::rule::RuleOwner;
use crate::natpmp::upstream::Upstream;
use crate::natpmp::wire::Protocol;
use crate::routeros::api::{NatRule, Router, RuleId};

/// What one reconcile pass found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// dst-nat rules on the in-interface.
    pub rules_seen: usize,
    /// Of those, rules that are not ours.
    pub foreign_rules: usize,
    /// Rules of ours without a live lease, removed.
    pub orphans_removed: usize,
    /// Rules of ours without a live lease that could not be removed (retried next pass).
    pub orphans_left: usize,
    /// Rules of live leases recreated after someone deleted them.
    pub recreated: usize,
    /// Recreations that failed (retried next pass).
    pub recreate_failed: usize,
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

impl<R: Router, U: Upstream> Inner<R, U> {
    /// One reconcile pass (see the module docs).
    pub(super) async fn reconcile(self: &Arc<Self>) -> Result<ReconcileReport, MappingError> {
        let Some(_gate) = self.enter().await else {
            return Err(MappingError::ShuttingDown);
        };
        let mut report = ReconcileReport::default();
        let generation = self.ports.begin_refresh();
        let before = self.ports.holds();
        let rules = self
            .router_call(
                "list the dst-nat rules",
                self.router.list_dstnat(&self.config.in_interface),
            )
            .await?;
        let after = self.ports.holds();
        report.rules_seen = rules.len();

        let leased_ids: HashSet<&RuleId> = after
            .values()
            .filter_map(|h| match h {
                Hold::Leased { rule, .. } => Some(rule),
                Hold::InFlight(_) => None,
            })
            .collect();
        let in_flight: HashSet<(Protocol, u16)> = after
            .iter()
            .filter(|(_, h)| matches!(h, Hold::InFlight(_)))
            .map(|(k, _)| *k)
            .collect();

        let mut view = RouterView::new();
        let mut present: HashSet<&RuleId> = HashSet::new();
        for rule in &rules {
            if let Some(id) = &rule.id {
                present.insert(id);
            }
            let owner = RuleOwner::of(rule.comment.as_deref(), rule.dynamic);
            if !owner.is_ours() {
                report.foreign_rules += 1;
                view.add_foreign_rule(rule);
                continue;
            }
            if rule.id.as_ref().is_some_and(|id| leased_ids.contains(id)) {
                continue;
            }
            if single_port(rule).is_some_and(|p| in_flight.contains(&p)) {
                continue;
            }
            let removed = match &rule.id {
                Some(id) => match self
                    .router_call(
                        "remove an orphaned dst-nat rule",
                        self.router.remove_rule(id),
                    )
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

        let missing: Vec<(MappingKey, RuleId)> = before
            .iter()
            .filter_map(|(port, hold)| match hold {
                Hold::Leased { key, rule }
                    if after.get(port) == Some(hold) && !present.contains(rule) =>
                {
                    Some((*key, rule.clone()))
                }
                _ => None,
            })
            .collect();
        for (key, old) in missing {
            match self.recreate(key, &old).await {
                Ok(true) => report.recreated += 1,
                Ok(false) => {}
                Err(e) => {
                    report.recreate_failed += 1;
                    warn!(client = %key.client, proto = %key.protocol, internal_port = key.internal_port, "could not recreate a deleted rule: {e}");
                }
            }
        }

        self.ports.apply_refresh(generation, view);
        Ok(report)
    }

    /// Recreates the rule of a live lease whose rule `old` vanished; `Ok(false)` when the lease
    /// changed meanwhile.
    async fn recreate(&self, key: MappingKey, old: &RuleId) -> Result<bool, MappingError> {
        let _lock = self.lock_key(key).await;
        let Some(lease) = self.lease(&key) else {
            return Ok(false);
        };
        if &lease.rule != old {
            return Ok(false);
        }
        let rule = self.dst_nat_rule(key, lease.router_port);
        let id = self
            .router_call("recreate the dst-nat rule", self.router.add_dstnat(&rule))
            .await?;
        if let Some(mut l) = self.leases.get_mut(&key) {
            l.rule = id.clone();
        }
        self.ports
            .relabel(key.protocol, lease.router_port, id.clone());
        info!(
            client = %key.client,
            proto = %key.protocol,
            internal_port = key.internal_port,
            router_port = lease.router_port,
            old_rule = %old,
            rule = %id,
            "recreated the dst-nat rule someone deleted"
        );
        Ok(true)
    }
}
