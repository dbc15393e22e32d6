//! Answering a request: the entry point, renewals, and the hand-over to the create
//! transaction (`create.rs`), the teardowns (`teardown.rs`) and the twins (`twin.rs`).
//!
//! | request | router | upstream | reply |
//! |---|---|---|---|
//! | new mapping | add the dst-nat rule (1 command), at once with the upstream map (see `create.rs`) | map (proto, R, client's suggestion, min(asked, cap)) | I, E, min(asked, granted, cap) |
//! | renewal / retransmit | none | none while the upstream mapping is valid (the keeper renews it); else map (proto, R, current E, min(asked, cap)), tried again through transient failures within CREATE_PATIENCE | I, the lease's E, min(asked, upstream grant, cap) |
//!
//! **Lifetimes** (C-30): the gateway is asked for min(asked, cap); the client gets min(asked,
//! granted, cap). The lease expires at grant time + lifetime + `expiry_grace` (C-32). A NAT-PMP
//! renewal of what an administrator made (origin `api` or `static`) never shortens it: the
//! client is answered as usual, but the lease keeps its own lifetime and deadline where they
//! are longer, and the gateway is asked for at least the lease's lifetime.
//!
//! **Renewals answered at once** ([`answer_now`]): a renewal that the lease answers (no
//! transaction on its key, the upstream mapping valid) is answered before the request takes one
//! of the server's slots, so a client keeps its mapping also while slow creates or a flood hold
//! every slot.
//!
//! **Internal port 0 with a lifetime** (C-37) is answered 2 (RFC-safe, as miniupnpd does).
//!
//! **Twins** (MAP_BOTH_PROTOCOLS): a new TCP mapping gets its UDP twin made right after it, in
//! the background (the client's reply does not wait for it); renewing the TCP mapping renews
//! the twin's lifetime; a client's own request for the twin's key takes the twin over.
//!
//! Deletes, expiry and shutdown are in `teardown.rs`.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::mapping::core::Core;
use crate::mapping::error::MappingError;
use crate::mapping::events::{MappingEvent, Origin};
use crate::mapping::request::{Command, MappingRequest};
use crate::mapping::router::seam::Router;
use crate::mapping::store::key::MappingKey;
use crate::mapping::store::lease::{reply_lifetime, upstream_lifetime, Lease};
use crate::mapping::txn::create::{create, Plan};
use crate::mapping::txn::patience::{map_upstream, Patience};
use crate::mapping::txn::teardown::{delete, delete_all};
use crate::mapping::txn::twin;
use crate::natpmp::handler::MapReply;
use crate::natpmp::upstream::{Upstream, UpstreamMap};
use double_natpmp_codec::natpmp::result::ResultCode;
use double_natpmp_codec::protocol::Protocol;

/// Answers one command (never fails: a failure is a result code, C-17).
pub(crate) async fn handle<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    command: Command,
) -> MapReply {
    let client = command.client();
    let key = command.key();
    let outcome = match core.enter().await {
        None => Err(MappingError::ShuttingDown),
        Some(_gate)
            if command.origin() == Origin::NatPmp && !core.limits.allow(client, Instant::now()) =>
        {
            Err(MappingError::RateLimited {
                client,
                per_second: core.limits.config().requests_per_second,
            })
        }
        Some(_gate) => match command {
            // The deletes are boxed: their teardowns are deep futures, and inline every
            // request's task (a renewal too) would carry their room.
            Command::DeleteAll {
                client,
                protocol,
                origin,
            } => Box::pin(delete_all(core, client, protocol, origin)).await,
            Command::Delete { key, origin } => Box::pin(delete(core, key, origin)).await,
            Command::Map(request) if request.internal_port == 0 => {
                Err(MappingError::InternalPortZero)
            }
            Command::Map(request) => map(core, request).await,
        },
    };
    match outcome {
        Ok(reply) => reply,
        Err(e) => {
            let result = e.result_code();
            if e.is_limit() {
                if core.limits.should_log(client, Instant::now()) {
                    warn!(mapping = %key, %result, "request refused (logged once a minute per client): {e}");
                }
            } else if result == ResultCode::NetworkFailure {
                warn!(mapping = %key, %result, "request failed: {e}");
            } else {
                info!(mapping = %key, %result, "request refused: {e}");
            }
            core.events.emit(MappingEvent::Failed {
                client,
                result: result as u16,
                message: e.to_string(),
            });
            MapReply::failure(result)
        }
    }
}

/// Answers a renewal from its lease at once, without waiting for anything, before the request
/// takes one of the server's slots (`MapHandler::answer_now`): only when no transaction holds
/// or waits for the key, the lease is the client's own (not a twin it would take over), its
/// upstream mapping is valid, and the client's rate allows the request. The reply is the one
/// [`handle`] would give. `None`: the request goes the whole way through [`handle`].
pub(crate) fn answer_now<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    request: MappingRequest,
) -> Option<MapReply> {
    if request.internal_port == 0 {
        return None;
    }
    let _gate = core.try_enter()?;
    let key = request.key();
    // A new mapping goes the whole way: found out before a lock entry is made for it.
    if !core.table.contains(&key) {
        return None;
    }
    let mut lock = core.locks.try_lock(key)?;
    let now = Instant::now();
    let lease = core
        .table
        .get(&key)
        .filter(|l| l.origin.twin_of().is_none() && now < l.upstream_deadline)?;
    if !core.limits.allow(request.client, now) {
        return None;
    }
    twin::ensure(core, key, lease.serial);
    let reply = from_lease(core, key, &lease, request, now)?;
    lock.record(request, &Ok(reply));
    Some(reply)
}

async fn map<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    request: MappingRequest,
) -> Result<MapReply, MappingError> {
    let key = request.key();
    let origin = request.origin;
    let arrived = Instant::now();
    let mut lock = core.locks.lock(key).await;
    if let Some(reply) = lock.answered_while_waiting(arrived, &request) {
        if reply.result != ResultCode::Success {
            return Err(MappingError::FailedJustNow {
                result: reply.result,
            });
        }
        debug!(mapping = %key, "retransmission answered with the reply it waited for");
        return Ok(reply);
    }
    let outcome = match core.table.get(&key) {
        Some(lease) if lease.origin.twin_of().is_some() && origin.twin_of().is_none() => {
            match twin::take_over(core, key, &lease, origin) {
                Ok(lease) => renew(core, key, lease, request).await,
                Err(e) => Err(e),
            }
        }
        Some(lease) => renew(core, key, lease, request).await,
        None => {
            // Boxed: a create is a deep future (settling lookups, undo); kept off the stack.
            match Box::pin(create(core, Plan::new(request))).await {
                Ok((reply, serial)) => {
                    if core.config.map_both_protocols && key.protocol == Protocol::Tcp {
                        twin::spawn(core, key, serial);
                    }
                    Ok(reply)
                }
                Err(e) => Err(e),
            }
        }
    };
    lock.record(request, &outcome);
    outcome
}

/// A renewal answered from the lease at `now`, with no exchange, while its
/// upstream mapping is valid (the keeper keeps it alive), so a gateway hiccup now never
/// reaches the client. `None` when the upstream mapping is not known to be valid.
fn from_lease<R, U>(
    core: &Core<R, U>,
    key: MappingKey,
    lease: &Lease,
    request: MappingRequest,
    now: Instant,
) -> Option<MapReply> {
    if now >= lease.upstream_deadline {
        return None;
    }
    let lifetime = reply_lifetime(
        request.lifetime,
        lease.upstream_lifetime,
        core.config.max_lifetime,
    );
    let (held, deadline) = lease.renewed(
        request.origin,
        lifetime,
        core.config.client_deadline(now, lifetime),
    );
    core.table.update(&key, |l| {
        l.lifetime = held;
        l.deadline = deadline;
    });
    core.events.emit(MappingEvent::Renewed {
        key,
        lifetime: held,
    });
    twin::follow(core, key, held);
    debug!(
        mapping = %key,
        router_port = lease.router_port,
        external_port = lease.external_port,
        lifetime,
        "renewed from the lease"
    );
    Some(MapReply {
        result: ResultCode::Success,
        external_port: lease.external_port,
        lifetime,
    })
}

async fn renew<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
    lease: Lease,
    request: MappingRequest,
) -> Result<MapReply, MappingError> {
    let origin = request.origin;
    twin::ensure(core, key, lease.serial);
    if let Some(reply) = from_lease(core, key, &lease, request, Instant::now()) {
        return Ok(reply);
    }
    // The upstream mapping is not known to be valid (it lapsed while the gateway was away, or
    // the gateway lost it): ask the gateway on the client's path; through a transient failure
    // again within CREATE_PATIENCE, as for a new mapping (`patience.rs`), the lease staying as
    // it is meanwhile.
    let asked = upstream_lifetime(
        lease.renewal_ask(origin, request.lifetime),
        core.config.max_lifetime,
    );
    let mut patience = Patience::new(Instant::now(), core.config.create_patience);
    let grant = loop {
        let result = map_upstream(
            core,
            "renew the mapping",
            UpstreamMap {
                protocol: key.protocol,
                internal_port: lease.router_port,
                suggested_external_port: lease.external_port,
                lifetime: asked,
            },
            patience.cut(),
        )
        .await;
        match result {
            Err(e) if e.is_transient() && patience.again(core).await => {
                debug!(mapping = %key, "transient failure; asking the gateway again within CREATE_PATIENCE: {e}");
            }
            result => break result?,
        }
    };
    let now = Instant::now();
    let lifetime = reply_lifetime(request.lifetime, grant.lifetime, core.config.max_lifetime);
    let (held, deadline) =
        lease.renewed(origin, lifetime, core.config.client_deadline(now, lifetime));
    core.table.update(&key, |l| {
        l.take_grant(grant.external_port, grant.lifetime, now);
        l.lifetime = held;
        l.deadline = deadline;
    });
    core.keeper_wake.notify_one();
    core.events.emit(MappingEvent::Renewed {
        key,
        lifetime: held,
    });
    twin::follow(core, key, held);
    if grant.external_port != lease.external_port {
        core.events.emit(MappingEvent::ExternalPortChanged {
            key,
            old: lease.external_port,
            new: grant.external_port,
        });
        info!(
            mapping = %key,
            router_port = lease.router_port,
            old_external_port = lease.external_port,
            external_port = grant.external_port,
            "the VPN gateway moved the mapping to a new external port"
        );
    }
    info!(
        mapping = %key,
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
