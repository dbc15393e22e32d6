//! Ending a lease: delete, delete-all, expiry and shutdown, each a teardown of both layers.
//!
//! | request | router | upstream | reply |
//! |---|---|---|---|
//! | delete | look the rule up with the upstream delete; remove it after that | delete (proto, R, 0, 0), first | I, 0, 0 (C-33); unknown → success (C-34); an administrator's → 2 |
//! | delete all (I = 0) | remove each of the client's rules of the protocol | delete each | 0, 0, 0 (C-36); 2 when an administrator's stays |
//! | expiry | remove the rule, after the upstream delete | delete, first | — |
//!
//! **Teardown** (delete, expiry, shutdown) runs upstream first, then the rules. When the
//! upstream delete fails, the gateway may still forward R: the lease ends, but R stays held
//! ([`Hold::Draining`](crate::mapping::store::table::Hold::Draining)) and its rule in place while a
//! background task retries the delete until it succeeds or the upstream mapping has lapsed;
//! then the rule goes and R is free. A client's delete is answered success in that case (its
//! mapping ends within the upstream lifetime, which the daemon sees to). At shutdown the rule
//! is left for the next start.
//!
//! **Twins** (MAP_BOTH_PROTOCOLS, see `twin.rs`) end with their TCP mapping: its delete and its
//! expiry tear the twin down right after it, with the same reason. A client's delete or
//! delete-all of UDP leaves a twin alone (it answers as for a mapping the client does not hold).
//!
//! **Delete of a mapping we do not hold** answers success (C-34), unless a dst-nat rule we did
//! not make forwards that protocol and port to the client: then 2 (C-35). Delete-all answers 2
//! when such rules exist for the client, after deleting everything of ours (C-36).
//!
//! **What an administrator made** (a forward of the API, origin `api`; a static mapping, origin
//! `static`) a NAT-PMP request cannot undo: its delete is answered 2 and the lease stays, as for
//! a hand-made rule (C-35); a delete-all skips it, deletes the client's others and answers 2
//! (C-36). The forwards API's own delete removes it. (A renewal never shortens it either: see
//! `transaction.rs`.)
//!
//! **The round trips of a teardown**: the upstream delete, and at once with it the lookup of
//! the rules by their comment (a read, which changes nothing); once the gateway's mapping is
//! gone, each rule is removed by the id that lookup found. A delete therefore costs
//! max(router RTT, upstream RTT) + one router RTT, and the layers still go upstream first,
//! then the router (`Layers::remove_found`). Ids change only when the router reboots, which
//! takes far longer than [`LOOKUP_FRESH`]: a lookup older than that (a slow gateway) is made
//! again before anything is removed, and a row that is gone when removed is looked up again.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::mapping::core::Core;
use crate::mapping::error::MappingError;
use crate::mapping::events::{MappingEvent, Origin, RemovalReason};
use crate::mapping::router::seam::{NatRule, Router};
use crate::mapping::store::key::MappingKey;
use crate::mapping::store::lease::{Lease, RuleKind};
use crate::mapping::txn::twin::twin_key;
use crate::natpmp::handler::MapReply;
use crate::natpmp::upstream::{Upstream, UpstreamMap};
use double_natpmp_codec::natpmp::result::ResultCode;
use double_natpmp_codec::protocol::Protocol;

/// The longest pause between two retries of a draining port's upstream delete.
const DRAIN_MAX_PAUSE: Duration = Duration::from_secs(30);
/// How old a teardown's early lookup of its rules may be when they are removed by the ids it
/// found (far less than a router's reboot, the only thing that renumbers rules).
pub(crate) const LOOKUP_FRESH: Duration = Duration::from_secs(1);

/// Why a teardown runs: what a failure on the way may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Teardown {
    /// The client asked: a router failure is its answer (3).
    Delete,
    /// Not renewed in time.
    Expire,
    /// The daemon stops: nothing may run after it, so nothing drains.
    Shutdown,
}

impl Teardown {
    fn reason(self) -> RemovalReason {
        match self {
            Teardown::Delete => RemovalReason::Deleted,
            Teardown::Expire => RemovalReason::Expired,
            Teardown::Shutdown => RemovalReason::Shutdown,
        }
    }
}

/// How a teardown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Both layers are gone; R is free.
    Removed,
    /// The upstream delete failed: R drains in the background (or, at shutdown, the rule is
    /// left for the next start).
    UpstreamLeft,
    /// The rule could not be removed: R is a suspect until the reconciler removes it.
    RuleLeft,
}

fn deleted(result: ResultCode) -> MapReply {
    MapReply {
        result,
        external_port: 0,
        lifetime: 0,
    }
}

/// A delete of one mapping from `by` (C-33, C-34, C-35): a NAT-PMP request cannot delete what
/// an administrator made.
pub(crate) async fn delete<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
    by: Origin,
) -> Result<MapReply, MappingError> {
    let _lock = core.locks.lock(key).await;
    let Some(lease) = core
        .table
        .get(&key)
        .filter(|l| l.origin.twin_of().is_none())
    else {
        if core
            .table
            .foreign_target(key.protocol, key.client, Some(key.internal_port))
        {
            return Err(MappingError::ForeignRule {
                client: key.client,
                protocol: key.protocol,
                port: Some(key.internal_port),
            });
        }
        return Ok(deleted(ResultCode::Success));
    };
    if !by.may_undo(lease.origin) {
        return Err(MappingError::ByAdministrator {
            client: key.client,
            protocol: key.protocol,
            port: Some(key.internal_port),
        });
    }
    let ended = Box::pin(teardown(core, key, &lease, Teardown::Delete)).await;
    Box::pin(end_twin(core, key, Teardown::Delete)).await;
    ended?;
    info!(
        mapping = %key,
        router_port = lease.router_port,
        external_port = lease.external_port,
        "deleted"
    );
    Ok(deleted(ResultCode::Success))
}

/// A delete of all of `client`'s mappings of one protocol from `by` (C-36): what `by` may not
/// undo stays, and the answer is then 2.
pub(crate) async fn delete_all<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    client: Ipv4Addr,
    protocol: Protocol,
    by: Origin,
) -> Result<MapReply, MappingError> {
    let mut failure = None;
    for key in core.table.keys_of(client, protocol) {
        let Some(made) = core.table.get(&key).map(|l| l.origin) else {
            continue;
        };
        if made.twin_of().is_some() {
            continue; // a twin ends with its TCP mapping, not by a UDP delete-all
        }
        if !by.may_undo(made) {
            failure.get_or_insert(MappingError::ByAdministrator {
                client,
                protocol,
                port: None,
            });
            continue;
        }
        if let Err(e) = delete(core, key, by).await {
            failure.get_or_insert(e);
        }
    }
    if core.table.foreign_target(protocol, client, None) {
        failure.get_or_insert(MappingError::ForeignRule {
            client,
            protocol,
            port: None,
        });
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(deleted(ResultCode::Success)),
    }
}

/// Ends the UDP twin of the TCP mapping `parent` (just torn down), if it has one that is
/// still a twin (the caller holds `parent`'s lock; the twin's is taken here).
async fn end_twin<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    parent: MappingKey,
    mode: Teardown,
) {
    if parent.protocol != Protocol::Tcp {
        return;
    }
    let key = twin_key(parent);
    let _lock = core.locks.lock(key).await;
    let Some(lease) = core
        .table
        .get(&key)
        .filter(|l| l.origin == Origin::Twin(parent))
    else {
        return;
    };
    match teardown(core, key, &lease, mode).await {
        Ok(_) => {
            info!(client = %key.client, internal_port = key.internal_port, router_port = lease.router_port, external_port = lease.external_port, reason = mode.reason().as_str(), "removed the UDP twin with its TCP mapping")
        }
        Err(e) => {
            warn!(client = %key.client, internal_port = key.internal_port, router_port = lease.router_port, "could not remove the UDP twin's rule with its TCP mapping; the reconciler will: {e}")
        }
    }
}

/// What a lookup of a rule by its comment found (see [`look_up_rules`]).
type Found = Result<Vec<NatRule>, MappingError>;

/// What the early lookup found of each of a lease's rules.
#[derive(Default)]
struct LookedUp {
    dst: Option<Found>,
    src: Option<Found>,
}

impl LookedUp {
    fn take(&mut self, kind: RuleKind) -> Option<Found> {
        match kind {
            RuleKind::DstNat => self.dst.take(),
            RuleKind::SrcNat => self.src.take(),
        }
    }
}

/// Looks every rule of `lease` up by its comment, both kinds at once. A read: it runs while the
/// gateway's delete is under way, and nothing is removed before that delete succeeded.
async fn look_up_rules<R: Router, U: Upstream>(core: &Core<R, U>, lease: &Lease) -> LookedUp {
    let look = |kind: RuleKind| async move {
        match lease.rule_id(kind) {
            Some(_) => Some(core.layers.look_up(&lease.comment.for_kind(kind)).await),
            None => None,
        }
    };
    let (dst, src) = tokio::join!(look(RuleKind::DstNat), look(RuleKind::SrcNat));
    LookedUp { dst, src }
}

/// Removes every router rule of `lease` (the src-nat rule first), by comment, starting from
/// what an early lookup found of them (each rule not in `found` is looked up now).
async fn remove_rules<R: Router, U: Upstream>(
    core: &Core<R, U>,
    key: MappingKey,
    lease: &Lease,
    mut found: LookedUp,
) -> Result<(), MappingError> {
    debug_assert_eq!(lease.comment.key, key);
    for rule in lease.rules.iter().rev() {
        core.layers
            .remove_found(
                &lease.comment.for_kind(rule.kind),
                Some(&rule.id),
                found.take(rule.kind),
            )
            .await?;
    }
    Ok(())
}

/// Removes both layers of `key`'s lease, upstream first (the caller holds the key lock). Only a
/// [`Teardown::Delete`] returns an error: the rule could not be removed.
pub(crate) async fn teardown<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
    lease: &Lease,
    mode: Teardown,
) -> Result<Ended, MappingError> {
    let result = teardown_layers(core, key, lease, mode).await;
    // The lease has left the table in every outcome (a failure leaves a draining or suspect
    // port, never a lease).
    core.events.emit(MappingEvent::Removed {
        key,
        router_port: lease.router_port,
        external_port: lease.external_port,
        reason: mode.reason(),
    });
    result
}

async fn teardown_layers<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
    lease: &Lease,
    mode: Teardown,
) -> Result<Ended, MappingError> {
    let port = lease.router_port;
    // Upstream first, then the router: only the rules' lookup, a read, runs with the upstream
    // delete.
    let started = Instant::now();
    let (upstream, mut found) = tokio::join!(
        core.layers.upstream_map(
            "delete the mapping",
            UpstreamMap::delete(key.protocol, port)
        ),
        look_up_rules(core, lease),
    );
    if started.elapsed() > LOOKUP_FRESH {
        found = LookedUp::default(); // too old to remove by: looked up again
    }
    if let Err(e) = upstream {
        if mode == Teardown::Shutdown {
            warn!(client = %key.client, proto = %key.protocol, router_port = port, "could not delete the mapping at the VPN gateway; its rule stays until the next start: {e}");
            core.table.remove_rule_left(&key);
            return Ok(Ended::UpstreamLeft);
        }
        warn!(mapping = %key, router_port = port, external_port = lease.external_port, "could not delete the mapping at the VPN gateway; router port {port} stays reserved, and its rule in place, until the gateway's mapping is deleted or has lapsed: {e}");
        core.table.remove_draining(&key);
        let core2 = Arc::clone(core);
        let lease = lease.clone();
        core.background
            .spawn(async move { drain(&core2, key, lease).await });
        return Ok(Ended::UpstreamLeft);
    }
    core.quota.room();
    match remove_rules(core, key, lease, found).await {
        Ok(()) => {
            core.table.remove(&key);
            Ok(Ended::Removed)
        }
        Err(e) => {
            core.table.remove_rule_left(&key);
            if mode == Teardown::Delete {
                return Err(e);
            }
            warn!(mapping = %key, router_port = port, "could not remove the rule, the reconciler will: {e}");
            Ok(Ended::RuleLeft)
        }
    }
}

/// Retries the upstream delete of a draining port until it succeeds or the upstream mapping
/// has lapsed, then removes the rule and frees the port. Gives up at shutdown (the next start
/// finds the rule).
async fn drain<R: Router, U: Upstream>(core: &Core<R, U>, key: MappingKey, lease: Lease) {
    let port = lease.router_port;
    let mut stop = core.stop.subscribe();
    let mut pause = Duration::from_secs(1);
    loop {
        let now = Instant::now();
        if now >= lease.upstream_deadline {
            debug!(proto = %key.protocol, router_port = port, "the gateway's mapping has lapsed");
            break;
        }
        let wake = (now + pause).min(lease.upstream_deadline);
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        if Instant::now() >= lease.upstream_deadline {
            break;
        }
        match core
            .layers
            .upstream_map(
                "delete the mapping (retry)",
                UpstreamMap::delete(key.protocol, port),
            )
            .await
        {
            Ok(_) => break,
            Err(e) => {
                debug!(proto = %key.protocol, router_port = port, "upstream delete still failing: {e}");
                pause = (pause * 2).min(DRAIN_MAX_PAUSE);
            }
        }
    }
    let left = remove_rules(core, key, &lease, LookedUp::default())
        .await
        .is_err();
    core.table.drained(key.protocol, port, left);
    info!(mapping = %key, router_port = port, rule_left = left, "router port free again: the gateway no longer forwards it");
}

/// Ends the lease of `key` if its deadline has passed (the expiry task calls this).
pub(crate) async fn expire<R: Router, U: Upstream>(core: &Arc<Core<R, U>>, key: MappingKey) {
    let Some(_gate) = core.enter().await else {
        return;
    };
    let _lock = core.locks.lock(key).await;
    let Some(lease) = core
        .table
        .get(&key)
        .filter(|l| l.origin.twin_of().is_none())
    else {
        return;
    };
    if lease.deadline > Instant::now() {
        return; // renewed meanwhile
    }
    // Expire never returns an error.
    let _ = teardown(core, key, &lease, Teardown::Expire).await;
    Box::pin(end_twin(core, key, Teardown::Expire)).await;
    info!(
        mapping = %key,
        router_port = lease.router_port,
        external_port = lease.external_port,
        "expired: not renewed in time"
    );
}

/// Ends `key`'s lease at shutdown: `None` when it was already gone, else whether both layers
/// went.
pub(crate) async fn remove_for_shutdown<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
) -> Option<bool> {
    let _lock = core.locks.lock(key).await;
    let lease = core.table.get(&key)?;
    match teardown(core, key, &lease, Teardown::Shutdown).await {
        Ok(Ended::Removed) => Some(true),
        _ => Some(false),
    }
}
