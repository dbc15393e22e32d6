//! The reachability self-test (REACHABILITY_CHECK; docs/reachability.md): proves from a third
//! party on the internet that a forwarded port is reached through both NAT layers, with STUN
//! (RFC 8489) and its NAT behaviour discovery (RFC 5780).
//!
//! * [`check`]: one check: a test mapping of the daemon's own, the STUN probes, the heal,
//!   the delete.
//! * [`probe`]: one STUN Binding transaction with RFC 8489's retransmissions.
//! * [`outcome`]: what a check found, its cause and fix, the page's line.
//! * [`service`]: when checks run, and the handle the status server holds.

pub(crate) mod check;
pub(crate) mod outcome;
pub(crate) mod probe;
pub(crate) mod service;

use std::net::Ipv4Addr;
use std::sync::Arc;

use tracing::info;

use crate::config::DaemonArgs;
use crate::mapping::MappingHandle;
use crate::reachability::service::ReachabilityHandle;
use crate::refused::address_for_router;
use crate::shutdown::Shutdown;

/// Starts the check's task: it runs on its own when REACHABILITY_CHECK is on, and on request
/// (the status API) either way. `toward_router` is the daemon's address toward the router
/// (the test mapping's client, see [`address_for_router`]); `external` reads the gateway's
/// external address.
pub(crate) fn start(
    args: &DaemonArgs,
    toward_router: Option<Ipv4Addr>,
    mapping: MappingHandle,
    external: Arc<dyn Fn() -> Option<Ipv4Addr> + Send + Sync>,
    shutdown: Shutdown,
) -> ReachabilityHandle {
    let settings = &args.reachability;
    let own_address = address_for_router(args.listen_addr, toward_router);
    if settings.reachability_check {
        info!(
            servers = %settings.stun_servers.0.join(","),
            interval = ?settings.reachability_interval,
            own_address = ?own_address,
            "reachability check on: a test mapping is probed from the internet by STUN"
        );
    }
    let events = mapping.subscribe();
    service::spawn(
        check::Context {
            mapping,
            own_address,
            external,
            servers: settings.stun_servers.0.clone(),
            settle: settings.reachability_settle,
        },
        service::Schedule {
            periodic: settings.reachability_check,
            interval: settings.reachability_interval,
        },
        events,
        shutdown,
    )
}
