//! The transactions, as steps with their undo.
//!
//! | request | router | upstream | reply |
//! |---|---|---|---|
//! | new mapping | add the dst-nat rule (1 command) | map (proto, R, client's suggestion, min(asked, cap)) | I, E, min(asked, granted, cap) |
//! | renewal / retransmit | none | map (proto, R, current E, min(asked, cap)) | I, E (new E if the gateway moved it) |
//! | delete | remove the rule, after the upstream delete | delete (proto, R, 0, 0), first | I, 0, 0 (C-33); unknown → success (C-34) |
//! | delete all (I = 0) | remove each of the client's rules of the protocol | delete each | 0, 0, 0 (C-36) |
//! | expiry | remove the rule, after the upstream delete | delete, first | — |
//!
//! **Create** is a list of steps, each pushing its undo on an [`UndoLog`] once done: reserve R
//! (undo: free it), add the router rules (undo: remove them, by comment), map upstream (undo:
//! delete it). When a step fails, the log runs backwards, so the upstream mapping always goes
//! before the rule and the gateway never forwards a port to the router itself. A failure
//! whose outcome is certain is undone before the reply; when the gateway may have made the
//! mapping although it did not answer (a timeout), the undo runs in the background (it has
//! to ask the silent gateway first) and R stays reserved until it has finished.
//!
//! **Teardown** (delete, expiry, shutdown) runs upstream first, then the rules. When the
//! upstream delete fails, the gateway may still forward R: the lease ends, but R stays held
//! ([`Hold::Draining`](crate::mapping::table::Hold::Draining)) and its rule in place while a
//! background task retries the delete until it succeeds or the upstream mapping has lapsed;
//! then the rule goes and R is free. A client's delete is answered success in that case (its
//! mapping ends within the upstream lifetime, which the daemon sees to). At shutdown the rule
//! is left for the next start.
//!
//! **Failures are answered** (C-17): the router add fails definitely (trap, refused) → the port
//! is freed and the reply is 2 (policy) or 3, the upstream is never asked; its outcome cannot be
//! settled → R stays a suspect until the reconciler looked, reply 3.
//!
//! **Lifetimes** (C-30): the gateway is asked for min(asked, cap); the client gets min(asked,
//! granted, cap). The lease expires at grant time + lifetime + `expiry_grace` (C-32).
//!
//! **Internal port 0 with a lifetime** (C-37) is answered 2 (RFC-safe, as miniupnpd does).
//! **Delete of a mapping we do not hold** answers success (C-34), unless a dst-nat rule we did
//! not make forwards that protocol and port to the client: then 2 (C-35). Delete-all answers 2
//! when such rules exist for the client, after deleting everything of ours (C-36).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::mapping::config::MappingConfig;
use crate::mapping::core::Core;
use crate::mapping::error::MappingError;
use crate::mapping::layers::Added;
use crate::mapping::lease::{
    reply_lifetime, upstream_lifetime, Lease, MappingKey, OwnedRule, RuleKind,
};
use crate::mapping::rule::RuleComment;
use crate::mapping::table::Reservation;
use crate::natpmp::server::MapReply;
use crate::natpmp::upstream::Upstream;
use crate::natpmp::wire::{MapRequest, Protocol, ResultCode};
use crate::routeros::api::{DstNatRule, Router, RuleId};

/// The longest pause between two retries of a draining port's upstream delete.
const DRAIN_MAX_PAUSE: Duration = Duration::from_secs(30);

/// Why a teardown runs: what a failure on the way may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Teardown {
    /// The client asked: a router failure is its answer (3).
    Delete,
    /// Not renewed in time.
    Expire,
    /// The daemon stops: nothing may run after it, so nothing drains.
    Shutdown,
}

/// How a teardown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Both layers are gone; R is free.
    Removed,
    /// The upstream delete failed: R drains in the background (or, at shutdown, the rule is
    /// left for the next start).
    UpstreamLeft,
    /// The rule could not be removed: R is a suspect until the reconciler removes it.
    RuleLeft,
}

/// One undo step of a create.
#[derive(Clone, Debug)]
enum Undo {
    /// Remove the rule with this comment (last seen under `id`).
    RemoveRule { comment: String, id: RuleId },
    /// Delete the upstream mapping of R.
    DeleteUpstream { protocol: Protocol, port: u16 },
}

/// The undo steps of a create so far; run backwards.
#[derive(Debug, Default)]
struct UndoLog(Vec<Undo>);

impl UndoLog {
    fn push(&mut self, step: Undo) {
        self.0.push(step);
    }

    /// Runs every step, last first; `true` when all succeeded.
    async fn run<R: Router, U: Upstream>(self, core: &Core<R, U>, key: MappingKey) -> bool {
        let mut all = true;
        for step in self.0.into_iter().rev() {
            let result = match &step {
                Undo::RemoveRule { comment, id } => {
                    core.layers.remove_rule(comment, Some(id)).await.map(|_| ())
                }
                Undo::DeleteUpstream { protocol, port } => core
                    .layers
                    .upstream_map("delete the mapping (rollback)", *protocol, *port, 0, 0)
                    .await
                    .map(|_| ()),
            };
            if let Err(e) = result {
                all = false;
                warn!(client = %key.client, proto = %key.protocol, internal_port = key.internal_port, ?step, "rollback step failed; the reconciler or the gateway's own expiry finishes it: {e}");
            }
        }
        all
    }
}

fn deleted(result: ResultCode) -> MapReply {
    MapReply {
        result,
        external_port: 0,
        lifetime: 0,
    }
}

/// The dst-nat rule of `key` at router port R.
pub fn dst_nat_rule(config: &MappingConfig, key: MappingKey, router_port: u16) -> DstNatRule {
    DstNatRule {
        protocol: key.protocol,
        in_interface: config.in_interface.clone(),
        dst_port: router_port,
        to_address: key.client,
        to_port: key.internal_port,
        comment: RuleComment::for_rule(key, router_port, RuleKind::DstNat),
    }
}

/// Answers one mapping request (never fails: a failure is a result code, C-17).
pub async fn handle<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    client: Ipv4Addr,
    request: MapRequest,
) -> MapReply {
    let key = MappingKey {
        client,
        protocol: request.protocol,
        internal_port: request.internal_port,
    };
    let outcome = match core.enter().await {
        None => Err(MappingError::ShuttingDown),
        Some(_gate) => {
            if request.is_delete_all() {
                delete_all(core, client, request.protocol).await
            } else if request.is_delete() {
                delete(core, key).await
            } else if request.internal_port == 0 {
                Err(MappingError::InternalPortZero)
            } else {
                map(core, key, request).await
            }
        }
    };
    match outcome {
        Ok(reply) => reply,
        Err(e) => {
            let result = e.result_code();
            if result == ResultCode::NetworkFailure {
                warn!(%client, proto = %key.protocol, internal_port = key.internal_port, %result, "request failed: {e}");
            } else {
                info!(%client, proto = %key.protocol, internal_port = key.internal_port, %result, "request refused: {e}");
            }
            MapReply::failure(result)
        }
    }
}

async fn map<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
    request: MapRequest,
) -> Result<MapReply, MappingError> {
    let arrived = Instant::now();
    let mut lock = core.locks.lock(key).await;
    if let Some(reply) = lock.answered_while_waiting(arrived, &request) {
        if reply.result != ResultCode::Success {
            return Err(MappingError::FailedJustNow {
                result: reply.result,
            });
        }
        debug!(client = %key.client, proto = %key.protocol, internal_port = key.internal_port, "retransmission answered with the reply it waited for");
        return Ok(reply);
    }
    let outcome = match core.table.get(&key) {
        Some(lease) => renew(core, key, lease, request).await,
        // Boxed: a create is a deep future (settling lookups, undo); kept off the stack.
        None => Box::pin(create(core, key, request)).await,
    };
    lock.record(request, &outcome);
    outcome
}

async fn create<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
    request: MapRequest,
) -> Result<MapReply, MappingError> {
    let preferred = [request.suggested_external_port, key.internal_port];
    let Some(reservation) = core.table.reserve(key, &preferred) else {
        return Err(MappingError::PortsExhausted {
            protocol: key.protocol,
            start: *core.config.router_ports.start(),
            end: *core.config.router_ports.end(),
        });
    };
    if let Some(problem) = core.interface_problem() {
        reservation.release();
        return Err(MappingError::InterfaceUnusable { problem });
    }
    let router_port = reservation.port();
    let mut undo = UndoLog::default();

    let rule = dst_nat_rule(&core.config, key, router_port);
    let id = match core.layers.add_rule(&rule).await {
        Added::Yes(id) => id,
        Added::No(e) => {
            reservation.release();
            return Err(e);
        }
        Added::Unknown(e) if e.is_timeout() => {
            // The router did not answer in time but may still carry the add out. The client
            // gets its answer now; in the background the rule is looked up by its comment and
            // removed. R is freed only when the rule was found and removed: a lookup that finds
            // nothing right after a timeout proves nothing, so R then stays a suspect until the
            // reconciler has looked.
            let core2 = Arc::clone(core);
            let comment = rule.comment.clone();
            core.background.spawn(async move {
                match core2.layers.remove_rule(&comment, None).await {
                    Ok(n) if n > 0 => reservation.release(),
                    _ => drop(reservation),
                }
            });
            return Err(e);
        }
        Added::Unknown(e) => {
            // The rule may exist: R stays a suspect until the reconciler has looked.
            drop(reservation);
            return Err(e);
        }
    };
    undo.push(Undo::RemoveRule {
        comment: rule.comment.clone(),
        id: id.clone(),
    });

    let asked = upstream_lifetime(request.lifetime, core.config.max_lifetime);
    let grant = match core
        .layers
        .upstream_map(
            "map the port",
            key.protocol,
            router_port,
            request.suggested_external_port,
            asked,
        )
        .await
    {
        Ok(g) => g,
        Err(e) => {
            if e.is_uncertain() {
                undo.push(Undo::DeleteUpstream {
                    protocol: key.protocol,
                    port: router_port,
                });
                let core2 = Arc::clone(core);
                core.background.spawn(async move {
                    roll_back(&core2, key, undo, reservation).await;
                });
            } else {
                roll_back(core, key, undo, reservation).await;
            }
            return Err(e);
        }
    };

    let now = Instant::now();
    let lifetime = reply_lifetime(request.lifetime, grant.lifetime, core.config.max_lifetime);
    reservation.commit(Lease {
        router_port,
        rules: vec![OwnedRule {
            kind: RuleKind::DstNat,
            id: id.clone(),
        }],
        external_port: grant.external_port,
        lifetime,
        deadline: now + Duration::from_secs(u64::from(lifetime)) + core.config.expiry_grace,
        upstream_deadline: now + Duration::from_secs(u64::from(grant.lifetime)),
        serial: 0,
    });
    core.expiry_wake.notify_one();
    info!(
        client = %key.client,
        proto = %key.protocol,
        internal_port = key.internal_port,
        router_port,
        external_port = grant.external_port,
        lifetime,
        rule = %id,
        "mapped"
    );
    Ok(MapReply {
        result: ResultCode::Success,
        external_port: grant.external_port,
        lifetime,
    })
}

/// Undoes a failed create; R is freed when every step succeeded, else left a suspect.
async fn roll_back<R: Router, U: Upstream>(
    core: &Core<R, U>,
    key: MappingKey,
    undo: UndoLog,
    reservation: Reservation,
) {
    if undo.run(core, key).await {
        reservation.release();
    } else {
        drop(reservation);
    }
}

async fn renew<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
    lease: Lease,
    request: MapRequest,
) -> Result<MapReply, MappingError> {
    let asked = upstream_lifetime(request.lifetime, core.config.max_lifetime);
    let grant = core
        .layers
        .upstream_map(
            "renew the mapping",
            key.protocol,
            lease.router_port,
            lease.external_port,
            asked,
        )
        .await?;
    let now = Instant::now();
    let lifetime = reply_lifetime(request.lifetime, grant.lifetime, core.config.max_lifetime);
    core.table.update(&key, |l| {
        l.external_port = grant.external_port;
        l.lifetime = lifetime;
        l.deadline = now + Duration::from_secs(u64::from(lifetime)) + core.config.expiry_grace;
        l.upstream_deadline = now + Duration::from_secs(u64::from(grant.lifetime));
    });
    if grant.external_port != lease.external_port {
        info!(
            client = %key.client,
            proto = %key.protocol,
            internal_port = key.internal_port,
            router_port = lease.router_port,
            old_external_port = lease.external_port,
            external_port = grant.external_port,
            "the VPN gateway moved the mapping to a new external port"
        );
    }
    info!(
        client = %key.client,
        proto = %key.protocol,
        internal_port = key.internal_port,
        router_port = lease.router_port,
        external_port = grant.external_port,
        lifetime,
        "renewed"
    );
    Ok(MapReply {
        result: ResultCode::Success,
        external_port: grant.external_port,
        lifetime,
    })
}

async fn delete<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
) -> Result<MapReply, MappingError> {
    let _lock = core.locks.lock(key).await;
    let Some(lease) = core.table.get(&key) else {
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
    Box::pin(teardown(core, key, &lease, Teardown::Delete)).await?;
    info!(
        client = %key.client,
        proto = %key.protocol,
        internal_port = key.internal_port,
        router_port = lease.router_port,
        external_port = lease.external_port,
        "deleted"
    );
    Ok(deleted(ResultCode::Success))
}

async fn delete_all<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    client: Ipv4Addr,
    protocol: Protocol,
) -> Result<MapReply, MappingError> {
    let mut failure = None;
    for key in core.table.keys_of(client, protocol) {
        if let Err(e) = delete(core, key).await {
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

/// Removes every router rule of `lease`, by comment.
async fn remove_rules<R: Router, U: Upstream>(
    core: &Core<R, U>,
    key: MappingKey,
    lease: &Lease,
) -> Result<(), MappingError> {
    for rule in &lease.rules {
        let comment = RuleComment::for_rule(key, lease.router_port, rule.kind);
        core.layers.remove_rule(&comment, Some(&rule.id)).await?;
    }
    Ok(())
}

/// Removes both layers of `key`'s lease, upstream first (the caller holds the key lock). Only a
/// [`Teardown::Delete`] returns an error: the rule could not be removed.
pub async fn teardown<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
    lease: &Lease,
    mode: Teardown,
) -> Result<Ended, MappingError> {
    let port = lease.router_port;
    if let Err(e) = core
        .layers
        .upstream_map("delete the mapping", key.protocol, port, 0, 0)
        .await
    {
        if mode == Teardown::Shutdown {
            warn!(client = %key.client, proto = %key.protocol, router_port = port, "could not delete the mapping at the VPN gateway; its rule stays until the next start: {e}");
            core.table.remove_rule_left(&key);
            return Ok(Ended::UpstreamLeft);
        }
        warn!(client = %key.client, proto = %key.protocol, internal_port = key.internal_port, router_port = port, external_port = lease.external_port, "could not delete the mapping at the VPN gateway; router port {port} stays reserved, and its rule in place, until the gateway's mapping is deleted or has lapsed: {e}");
        core.table.remove_draining(&key);
        let core2 = Arc::clone(core);
        let lease = lease.clone();
        core.background
            .spawn(async move { drain(&core2, key, lease).await });
        return Ok(Ended::UpstreamLeft);
    }
    match remove_rules(core, key, lease).await {
        Ok(()) => {
            core.table.remove(&key);
            Ok(Ended::Removed)
        }
        Err(e) => {
            core.table.remove_rule_left(&key);
            if mode == Teardown::Delete {
                return Err(e);
            }
            warn!(client = %key.client, proto = %key.protocol, internal_port = key.internal_port, router_port = port, "could not remove the rule, the reconciler will: {e}");
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
            .upstream_map("delete the mapping (retry)", key.protocol, port, 0, 0)
            .await
        {
            Ok(_) => break,
            Err(e) => {
                debug!(proto = %key.protocol, router_port = port, "upstream delete still failing: {e}");
                pause = (pause * 2).min(DRAIN_MAX_PAUSE);
            }
        }
    }
    let left = remove_rules(core, key, &lease).await.is_err();
    core.table.drained(key.protocol, port, left);
    info!(client = %key.client, proto = %key.protocol, internal_port = key.internal_port, router_port = port, rule_left = left, "router port free again: the gateway no longer forwards it");
}

/// Ends the lease of `key` if its deadline has passed (the expiry task calls this).
pub async fn expire<R: Router, U: Upstream>(core: &Arc<Core<R, U>>, key: MappingKey) {
    let Some(_gate) = core.enter().await else {
        return;
    };
    let _lock = core.locks.lock(key).await;
    let Some(lease) = core.table.get(&key) else {
        return;
    };
    if lease.deadline > Instant::now() {
        return; // renewed meanwhile
    }
    // Expire never returns an error.
    let _ = teardown(core, key, &lease, Teardown::Expire).await;
    info!(
        client = %key.client,
        proto = %key.protocol,
        internal_port = key.internal_port,
        router_port = lease.router_port,
        external_port = lease.external_port,
        "expired: not renewed in time"
    );
}

/// Ends `key`'s lease at shutdown: `None` when it was already gone, else whether both layers
/// went.
pub async fn remove_for_shutdown<R: Router, U: Upstream>(
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
