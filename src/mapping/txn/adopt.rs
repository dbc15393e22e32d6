//! A start without loss: the router is the database.
//!
//! At start, before the first reconcile pass and before any client is answered, every rule of
//! ours whose comment we can read (version 2, or version 1 of an earlier release) becomes a
//! live lease again: its key and router port from the comment, the client lifetime from `l=`
//! (MAX_LIFETIME for a version-1 rule), the last external port from `e=` when known. The rules
//! stay in place, so the data plane never stops. Then each adopted lease's upstream mapping is
//! made again (suggesting the last external port; a gateway that still has the mapping answers
//! with it), a bounded number at once. A lease whose client does not come back is removed at
//! the end of its lifetime as usual; one whose gateway mapping cannot be made is kept and the
//! keeper retries it.
//!
//! A dst-nat rule brings its src-nat rule along (UDP_SRCNAT; one more listing, of the
//! `srcnat` chain); a missing one is restored by the reconcile pass, one no longer wanted is
//! removed by it. A twin (`o=twin`, MAP_BOTH_PROTOCOLS) is adopted as the twin of its TCP
//! mapping, and only when that one was adopted too (and the setting is still on).
//!
//! Rules of the original tool (`double-natpmp-…`) carry no data: the reconcile pass removes
//! them. A second rule with the same identity is left to the reconcile pass too (it removes
//! the copy).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::mapping::core::Core;
use crate::mapping::error::MappingError;
use crate::mapping::router::rule::{wanted_rules, RuleComment, RuleOwner};
use crate::mapping::router::seam::{NatRule, Router, RuleId};
use crate::mapping::store::key::MappingKey;
use crate::mapping::store::lease::{reply_lifetime, Lease, Origin, OwnedRule, RuleKind};
use crate::natpmp::upstream::{Upstream, UpstreamMap};
use double_natpmp_codec::protocol::Protocol;

/// Upstream mappings made again at once after a restart.
const PARALLEL: usize = 64;
/// The first retry of an adopted lease whose upstream mapping could not be made.
const RETRY: Duration = Duration::from_secs(1);

/// What a start found on the router and made of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AdoptReport {
    /// Rules of ours that became live leases again.
    pub adopted: usize,
    /// Of those, leases whose upstream mapping was made again.
    pub upstream_ok: usize,
    /// Of those, leases whose external port is the one they had before.
    pub same_external_port: usize,
}

/// A listed dst-nat rule of ours that can become a lease: its comment, and its id.
fn candidate<R, U>(core: &Core<R, U>, rule: &NatRule) -> Option<(RuleComment, RuleId)> {
    let RuleOwner::Ours(Some(comment)) = RuleOwner::of(rule.comment.as_deref(), rule.dynamic)
    else {
        return None;
    };
    let id = rule.id.clone()?;
    // The rule must still say what its comment says.
    let dst_port_ok =
        rule.dst_port.as_deref().map(str::trim) == Some(comment.router_port.to_string().as_str());
    let protocol_ok = rule.protocol.as_deref() == Some(comment.key.protocol.as_str());
    if !dst_port_ok || !protocol_ok || comment.kind != RuleKind::DstNat {
        return None;
    }
    // A twin only with MAP_BOTH_PROTOCOLS; else its rules are orphans for the reconciler.
    if comment.twin && !core.config.map_both_protocols {
        return None;
    }
    Some((comment, id))
}

/// Adopts the router's rules of ours as leases (see the module docs).
pub(crate) async fn adopt<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
) -> Result<AdoptReport, MappingError> {
    // Each listed rule is looked at as it arrives; only the candidates are kept.
    let mut candidates: Vec<(RuleComment, RuleId)> = Vec::new();
    core.layers
        .router_call(
            "list the dst-nat rules",
            core.layers.router.scan_dstnat(|rule| {
                if let Some(candidate) = candidate(core, &rule) {
                    candidates.push(candidate);
                }
            }),
        )
        .await?;
    // The src-nat rules of ours by identity (key, router port), the first of each; listed
    // only when a lease can own one.
    let mut src_ids: HashMap<(MappingKey, u16), RuleId> = HashMap::new();
    if core.config.udp_srcnat {
        let src_rules = core
            .layers
            .router_call("list the src-nat rules", core.layers.router.list_srcnat())
            .await?;
        for r in src_rules {
            let Some(c) = r.comment.as_deref().and_then(RuleComment::parse) else {
                continue;
            };
            if let (RuleKind::SrcNat, false, Some(id)) = (c.kind, r.dynamic, r.id) {
                src_ids.entry((c.key, c.router_port)).or_insert(id);
            }
        }
    }
    let now = Instant::now();
    let max = core.config.max_lifetime;
    // TCP mappings first, so a twin is adopted only when its TCP mapping was.
    candidates.sort_by_key(|(c, _)| c.twin);
    let mut adopted: Vec<(MappingKey, Option<u16>)> = Vec::new();
    for (comment, id) in candidates {
        let key = comment.key;
        let origin = if comment.twin {
            let parent = MappingKey {
                protocol: Protocol::Tcp,
                ..key
            };
            // The table held nothing before adoption, so it holds just the adopted leases.
            if key.protocol != Protocol::Udp || !core.table.contains(&parent) {
                continue;
            }
            Origin::Twin(parent)
        } else {
            Origin::NatPmp
        };
        let mut owned = vec![OwnedRule {
            kind: RuleKind::DstNat,
            id,
        }];
        if wanted_rules(&core.config, &key).contains(&RuleKind::SrcNat) {
            // Its src-nat rule, when the router still has it; a missing one is restored by
            // the reconcile pass that follows.
            if let Some(id) = src_ids.remove(&(key, comment.router_port)) {
                owned.push(OwnedRule {
                    kind: RuleKind::SrcNat,
                    id,
                });
            }
        }
        let lifetime = comment.lifetime.unwrap_or(max).clamp(1, max);
        let lease = Lease {
            router_port: comment.router_port,
            rules: owned.into_iter().collect(),
            comment,
            external_port: comment.external_port.unwrap_or(0),
            lifetime,
            deadline: core.config.client_deadline(now, lifetime),
            upstream_deadline: now,
            upstream_lifetime: 0,
            renew_at: now + RETRY,
            keep_failures: 0,
            origin,
            serial: 0,
        };
        if core.table.adopt(key, lease).is_ok() {
            adopted.push((key, comment.external_port));
        }
    }
    let mut report = AdoptReport {
        adopted: adopted.len(),
        ..AdoptReport::default()
    };
    if adopted.is_empty() {
        return Ok(report);
    }
    let mut set = JoinSet::new();
    for (key, last) in adopted {
        while set.len() >= PARALLEL {
            if let Some(Ok(outcome)) = set.join_next().await {
                tally(outcome, &mut report);
            }
        }
        let core = Arc::clone(core);
        set.spawn(async move { remap(&core, key, last).await });
    }
    while let Some(r) = set.join_next().await {
        if let Ok(outcome) = r {
            tally(outcome, &mut report);
        }
    }
    core.expiry_wake.notify_one();
    core.keeper_wake.notify_one();
    info!(
        adopted = report.adopted,
        upstream_ok = report.upstream_ok,
        same_external_port = report.same_external_port,
        "adopted the mappings the router's rules describe"
    );
    Ok(report)
}

/// (upstream made, same external port as before)
fn tally(outcome: (bool, bool), report: &mut AdoptReport) {
    report.upstream_ok += usize::from(outcome.0);
    report.same_external_port += usize::from(outcome.1);
}

/// Makes an adopted lease's upstream mapping again.
async fn remap<R: Router, U: Upstream>(
    core: &Core<R, U>,
    key: MappingKey,
    last: Option<u16>,
) -> (bool, bool) {
    let _lock = core.locks.lock(key).await;
    let Some(lease) = core.table.get(&key) else {
        return (false, false);
    };
    match core
        .layers
        .upstream_map(
            "make the mapping again after a restart",
            UpstreamMap {
                protocol: key.protocol,
                internal_port: lease.router_port,
                suggested_external_port: last.unwrap_or(0),
                lifetime: lease.lifetime,
            },
        )
        .await
    {
        Ok(grant) => {
            let now = Instant::now();
            let lifetime = reply_lifetime(lease.lifetime, grant.lifetime, core.config.max_lifetime);
            core.table.update(&key, |l| {
                l.lifetime = lifetime;
                l.take_grant(grant.external_port, grant.lifetime, now);
            });
            if last.is_some_and(|e| e != grant.external_port) {
                info!(mapping = %key, old_external_port = ?last, external_port = grant.external_port, "after the restart the VPN gateway gave another external port");
            }
            (true, last == Some(grant.external_port))
        }
        Err(e) => {
            warn!(mapping = %key, router_port = lease.router_port, "could not make the adopted mapping again at the VPN gateway; the keeper retries: {e}");
            (false, false)
        }
    }
}
