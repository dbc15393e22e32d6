//! Answering a mapping request: the create transaction, as steps with their undo, and renewals.
//!
//! | request | router | upstream | reply |
//! |---|---|---|---|
//! | new mapping | add the dst-nat rule (1 command) | map (proto, R, client's suggestion, min(asked, cap)) | I, E, min(asked, granted, cap) |
//! | renewal / retransmit | none | none while the upstream mapping is valid (the keeper renews it); else map (proto, R, current E, min(asked, cap)) | I, the lease's E, min(asked, upstream grant, cap) |
//!
//! **Create** is a list of steps, each pushing its undo on an [`UndoLog`] once done: reserve R
//! (undo: free it), add the router rules (undo: remove them, by comment), map upstream (undo:
//! delete it). When a step fails, the log runs backwards, so the upstream mapping always goes
//! before the rule and the gateway never forwards a port to the router itself. A failure
//! whose outcome is certain is undone before the reply; when the gateway may have made the
//! mapping although it did not answer (a timeout), the undo runs in the background (it has
//! to ask the silent gateway first) and R stays reserved until it has finished.
//!
//! **Failures are answered** (C-17): the router add fails definitely (trap, refused) → the port
//! is freed and the reply is 2 (policy) or 3, the upstream is never asked. Its reply is lost →
//! the rule is looked up by comment at once (see `layers.rs`) and the mapping goes on with it;
//! a timeout → reply 3 at once, and the rule is looked up and removed in the background, R
//! reserved until then (or, when nothing is found, until the reconciler looked).
//!
//! **Lifetimes** (C-30): the gateway is asked for min(asked, cap); the client gets min(asked,
//! granted, cap). The lease expires at grant time + lifetime + `expiry_grace` (C-32).
//!
//! **Internal port 0 with a lifetime** (C-37) is answered 2 (RFC-safe, as miniupnpd does).
//!
//! Deletes, expiry and shutdown are in `teardown.rs`.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::mapping::core::Core;
use crate::mapping::error::MappingError;
use crate::mapping::events::{MappingEvent, Origin};
use crate::mapping::keeper::next_renewal;
use crate::mapping::key::MappingKey;
use crate::mapping::layers::Added;
use crate::mapping::lease::{reply_lifetime, upstream_lifetime, Lease, OwnedRule, RuleKind};
use crate::mapping::rule::{dst_nat_rule, RuleComment};
use crate::mapping::table::Reservation;
use crate::mapping::teardown::{delete, delete_all};
use crate::natpmp::handler::MapReply;
use crate::natpmp::upstream::Upstream;
use crate::natpmp::wire::{MapRequest, Protocol, ResultCode};
use crate::routeros::api::{Router, RuleId};

/// One undo step of a create.
#[derive(Clone, Debug)]
enum Undo {
    /// Remove the rule that is `rule` (last seen under `id`).
    RemoveRule { rule: RuleComment, id: RuleId },
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
                Undo::RemoveRule { rule, id } => {
                    core.layers.remove_rule(rule, Some(id)).await.map(|_| ())
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

/// Answers one mapping request from `origin` (never fails: a failure is a result code, C-17).
pub async fn handle<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    client: Ipv4Addr,
    request: MapRequest,
    origin: Origin,
) -> MapReply {
    let key = MappingKey {
        client,
        protocol: request.protocol,
        internal_port: request.internal_port,
    };
    let outcome = match core.enter().await {
        None => Err(MappingError::ShuttingDown),
        Some(_gate) if origin == Origin::NatPmp && !core.limits.allow(client, Instant::now()) => {
            Err(MappingError::RateLimited {
                client,
                per_second: core.limits.config().requests_per_second,
            })
        }
        Some(_gate) => {
            if request.is_delete_all() {
                delete_all(core, client, request.protocol).await
            } else if request.is_delete() {
                delete(core, key).await
            } else if request.internal_port == 0 {
                Err(MappingError::InternalPortZero)
            } else {
                map(core, key, request, origin).await
            }
        }
    };
    match outcome {
        Ok(reply) => reply,
        Err(e) => {
            let result = e.result_code();
            if e.is_limit() {
                if core.limits.should_log(client, Instant::now()) {
                    warn!(%client, proto = %key.protocol, internal_port = key.internal_port, %result, "request refused (logged once a minute per client): {e}");
                }
            } else if result == ResultCode::NetworkFailure {
                warn!(%client, proto = %key.protocol, internal_port = key.internal_port, %result, "request failed: {e}");
            } else {
                info!(%client, proto = %key.protocol, internal_port = key.internal_port, %result, "request refused: {e}");
            }
            core.layers.events.emit(MappingEvent::Failed {
                client,
                result: result as u16,
                message: e.to_string(),
            });
            MapReply::failure(result)
        }
    }
}

async fn map<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
    request: MapRequest,
    origin: Origin,
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
        None => Box::pin(create(core, key, request, origin)).await,
    };
    lock.record(request, &outcome);
    outcome
}

async fn create<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
    request: MapRequest,
    origin: Origin,
) -> Result<MapReply, MappingError> {
    let limits = core.limits.config();
    if core.table.len() >= limits.max_mappings {
        return Err(MappingError::TooManyMappings {
            limit: limits.max_mappings,
        });
    }
    if origin == Origin::NatPmp && core.table.count_of(key.client) >= limits.max_per_client {
        return Err(MappingError::TooManyForClient {
            client: key.client,
            limit: limits.max_per_client,
        });
    }
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

    let asked = upstream_lifetime(request.lifetime, core.config.max_lifetime);
    let comment = RuleComment::new(key, router_port, asked);
    let rule = dst_nat_rule(&core.config, &comment);
    let id = match core.layers.add_rule(&rule, &comment).await {
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
        rule: comment,
        id: id.clone(),
    });

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
        comment,
        external_port: grant.external_port,
        lifetime,
        deadline: now + Duration::from_secs(u64::from(lifetime)) + core.config.expiry_grace,
        upstream_deadline: now + Duration::from_secs(u64::from(grant.lifetime)),
        upstream_lifetime: grant.lifetime,
        renew_at: next_renewal(now, grant.lifetime),
        keep_failures: 0,
        origin,
        serial: 0,
    });
    core.expiry_wake.notify_one();
    core.layers.events.emit(MappingEvent::Created {
        key,
        router_port,
        external_port: grant.external_port,
        lifetime,
        origin,
    });
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
    let now = Instant::now();
    if now < lease.upstream_deadline {
        // The keeper keeps the upstream mapping alive: answer from the lease, with no
        // exchange, so a gateway hiccup now never reaches the client.
        let lifetime = reply_lifetime(
            request.lifetime,
            lease.upstream_lifetime,
            core.config.max_lifetime,
        );
        core.table.update(&key, |l| {
            l.lifetime = lifetime;
            l.deadline = now + Duration::from_secs(u64::from(lifetime)) + core.config.expiry_grace;
        });
        core.layers
            .events
            .emit(MappingEvent::Renewed { key, lifetime });
        debug!(
            client = %key.client,
            proto = %key.protocol,
            internal_port = key.internal_port,
            router_port = lease.router_port,
            external_port = lease.external_port,
            lifetime,
            "renewed from the lease"
        );
        return Ok(MapReply {
            result: ResultCode::Success,
            external_port: lease.external_port,
            lifetime,
        });
    }
    // The upstream mapping is not known to be valid (it lapsed while the gateway was away, or
    // the gateway lost it): ask the gateway on the client's path.
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
        l.upstream_lifetime = grant.lifetime;
        l.renew_at = next_renewal(now, grant.lifetime);
        l.keep_failures = 0;
    });
    core.keeper_wake.notify_one();
    core.layers
        .events
        .emit(MappingEvent::Renewed { key, lifetime });
    if grant.external_port != lease.external_port {
        core.layers.events.emit(MappingEvent::ExternalPortChanged {
            key,
            old: lease.external_port,
            new: grant.external_port,
        });
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
        "renewed at the VPN gateway"
    );
    Ok(MapReply {
        result: ResultCode::Success,
        external_port: grant.external_port,
        lifetime,
    })
}
