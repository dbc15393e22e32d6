//! UDP twins (MAP_BOTH_PROTOCOLS): a TCP mapping also gets the UDP mapping of the same client
//! and internal port, for clients that map only TCP but use UDP on the same port (Transmission
//! and its uTP, or a game that asks for one protocol).
//!
//! * **Made** right after the TCP mapping went live, in the background: the client's reply
//!   does not wait for it (the twin needs the TCP mapping's external port to suggest it, so
//!   it cannot be asked at once with it). It is an ordinary create (`create.rs`: rules and
//!   upstream at once, each with its undo) of the key (client, udp, I), preferring the TCP
//!   mapping's router port and suggesting its external port to the gateway; its lease's
//!   origin is [`Origin::Twin`] naming the TCP mapping, its rules' comments carry `o=twin`.
//! * **When it cannot be made** (no free port, the gateway's quota, a router or gateway
//!   failure) the TCP mapping is kept without it, and a warning says why: the client asked
//!   for TCP and has it. The twin's create undoes whatever of the twin it made, so nothing is
//!   left half made. The client's next renewal of the TCP mapping tries again, in the
//!   background ([`ensure`]; after a quota refusal that costs one gateway exchange and no
//!   router command, see `quota.rs`). So does a renewal after the client deleted a UDP
//!   mapping it had taken over: with the setting on, every TCP mapping has its twin.
//! * **Another external port.** When the gateway gives the twin another external port than
//!   the TCP mapping's, that is logged; the client's reply carried the TCP one.
//! * **Kept** by the keeper like every lease (its upstream mapping renewed before it lapses),
//!   and its lifetime follows the TCP mapping's renewals. It never expires by itself and never
//!   counts against the client's own mappings (MAX_MAPPINGS_PER_CLIENT; it does count toward
//!   MAX_MAPPINGS, and is not made when that is reached).
//! * **Ended** with the TCP mapping: its delete, its expiry (`teardown.rs`), and the stop. A
//!   client's delete (or delete-all) of UDP does not touch a twin: the client never asked for
//!   it.
//! * **Taken over** ([`take_over`]): when the client itself asks for the UDP mapping of that
//!   key, the twin becomes the client's own mapping at once (answered from it, with the
//!   external port it has), lives by the client's renewals from then on, and no longer ends
//!   with the TCP mapping.
//! * A UDP mapping the client already has is never replaced by a twin.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::mapping::core::Core;
use crate::mapping::error::MappingError;
use crate::mapping::events::Origin;
use crate::mapping::request::MappingRequest;
use crate::mapping::router::seam::Router;
use crate::mapping::store::caps::Caps;
use crate::mapping::store::key::MappingKey;
use crate::mapping::store::lease::Lease;
use crate::mapping::txn::create::{create, Plan};
use crate::natpmp::upstream::Upstream;
use double_natpmp_codec::protocol::Protocol;

/// The key of the UDP twin of the TCP mapping `parent`.
pub(crate) fn twin_key(parent: MappingKey) -> MappingKey {
    MappingKey {
        protocol: Protocol::Udp,
        ..parent
    }
}

/// A renewal of the TCP mapping `parent` (live with `serial`): when MAP_BOTH_PROTOCOLS is on
/// and its twin is missing (it could not be made, or a UDP mapping the client took over was
/// deleted since), the twin is made again in the background.
pub(crate) fn ensure<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    parent: MappingKey,
    serial: u64,
) {
    if core.config.map_both_protocols
        && parent.protocol == Protocol::Tcp
        && !core.table.contains(&twin_key(parent))
    {
        spawn(core, parent, serial);
    }
}

/// Makes the twin of the TCP mapping `parent` (live with `serial`) in the background.
pub(crate) fn spawn<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    parent: MappingKey,
    serial: u64,
) {
    let core2 = Arc::clone(core);
    core.background
        .spawn(async move { Box::pin(make(&core2, parent, serial)).await });
}

async fn make<R: Router, U: Upstream>(core: &Arc<Core<R, U>>, parent: MappingKey, serial: u64) {
    let Some(_gate) = core.enter().await else {
        return;
    };
    let key = twin_key(parent);
    let _lock = core.locks.lock(key).await;
    let Some(tcp) = core.table.get(&parent).filter(|l| l.serial == serial) else {
        return; // deleted meanwhile: no twin
    };
    if core.table.contains(&key) {
        debug!(client = %key.client, internal_port = key.internal_port, "the client has its own UDP mapping of this port: no twin");
        return;
    }
    let request = MappingRequest {
        client: key.client,
        protocol: key.protocol,
        internal_port: key.internal_port,
        suggested_external_port: tcp.external_port,
        lifetime: tcp.comment.lifetime.unwrap_or(tcp.lifetime),
        origin: Origin::Twin(parent),
    };
    let plan = Plan::preferring(request, tcp.router_port);
    match create(core, plan).await {
        Ok((reply, _)) if reply.external_port != tcp.external_port => info!(
            client = %key.client,
            internal_port = key.internal_port,
            tcp_external_port = tcp.external_port,
            external_port = reply.external_port,
            "the VPN gateway gave the UDP twin another external port than its TCP mapping; the client's reply carried the TCP one"
        ),
        Ok(_) => {}
        // Tried again at every renewal: said once a minute per client, the rest at debug.
        Err(e) if core.limits.should_log(key.client, Instant::now()) => warn!(
            client = %key.client,
            internal_port = key.internal_port,
            "the TCP mapping goes on without its UDP twin (MAP_BOTH_PROTOCOLS); its next renewal tries again: {e}"
        ),
        Err(e) => {
            debug!(client = %key.client, internal_port = key.internal_port, "still no UDP twin: {e}")
        }
    }
}

/// The client asks for the UDP mapping `twin` is the twin of: it becomes the client's own
/// (the caller holds the key's lock). Refused, the twin left as it is, when the client has as
/// many mappings as it may.
pub(crate) fn take_over<R: Router, U: Upstream>(
    core: &Arc<Core<R, U>>,
    key: MappingKey,
    twin: &Lease,
    origin: Origin,
) -> Result<Lease, MappingError> {
    if let Some(limit) = Caps::of(core.limits.config(), origin).per_client {
        if core.table.count_of(key.client) >= limit {
            return Err(MappingError::TooManyForClient {
                client: key.client,
                limit,
            });
        }
    }
    let mut own = twin.clone();
    own.origin = origin;
    own.comment.twin = false;
    core.table.update(&key, |l| {
        l.origin = origin;
        l.comment.twin = false;
    });
    info!(client = %key.client, internal_port = key.internal_port, router_port = own.router_port, external_port = own.external_port, "the client asked for the UDP twin of its TCP mapping itself: it is the client's own mapping now");
    let core2 = Arc::clone(core);
    let serial = own.serial;
    core.background
        .spawn(async move { unmark(&core2, key, serial).await });
    Ok(own)
}

/// Rewrites a taken-over twin's comments without `o=twin`, so a restart adopts it as the
/// client's own mapping.
async fn unmark<R: Router, U: Upstream>(core: &Core<R, U>, key: MappingKey, serial: u64) {
    let _lock = core.locks.lock(key).await;
    let Some(lease) = core.table.get(&key).filter(|l| l.serial == serial) else {
        return;
    };
    for rule in lease.rules.iter() {
        let text = lease.comment.for_kind(rule.kind).encode();
        if let Err(e) = core
            .layers
            .router_call(
                "rewrite the comment of a taken-over twin",
                core.layers.router.set_comment(&rule.id, &text),
            )
            .await
        {
            debug!(rule = %rule.id, "could not rewrite the comment (a restart adopts it as a twin again): {e}");
        }
    }
}

/// The TCP mapping `parent` was renewed for `lifetime`: its twin's lifetime follows.
pub(crate) fn follow<R, U>(core: &Core<R, U>, parent: MappingKey, lifetime: u32) {
    if parent.protocol != Protocol::Tcp {
        return;
    }
    let deadline = core.config.client_deadline(Instant::now(), lifetime);
    core.table.update(&twin_key(parent), |l| {
        if l.origin == Origin::Twin(parent) {
            l.lifetime = lifetime;
            l.deadline = deadline;
        }
    });
}
