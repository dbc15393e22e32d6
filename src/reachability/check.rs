//! One reachability check through both NAT layers (docs/reachability.md):
//!
//! 1. Not while the gateway's port quota is full: the check would take a port a client may
//!    need; it says so and waits for the next run.
//! 2. A short-lived UDP mapping for the daemon's own address (the one it reaches the router
//!    from), through the same transaction as any client's, with origin `selftest`: a dst-nat
//!    rule on the router and a mapping at the gateway. With UDP_SRCNAT the router's src-nat
//!    rule makes the socket's outbound UDP leave from the router port too.
//! 3. A Binding Request from that socket to a STUN server: XOR-MAPPED-ADDRESS says where the
//!    internet sees the packet come from: the gateway's external address, one of the router's
//!    own addresses (outside the tunnel), or another (the exit differs from what NAT-PMP
//!    reports); and whether its port is the external port (the exit pairs outbound UDP).
//! 4. When the server does RFC 5780 (OTHER-ADDRESS), a Binding Request with CHANGE-REQUEST
//!    (other IP and port) and RESPONSE-PORT = the external port: an answer that arrives came
//!    from a third address through the gateway's forward and the router's rule. A server
//!    without RFC 5780 gives "not tested", never "closed".
//! 5. The heal: when that answer does not arrive while the router and the gateway answer, a
//!    reconcile pass makes missing rules of live mappings again (the test mapping's too), and
//!    the proof runs once more, asking for the answer from the other IP at the same port
//!    (CHANGE-REQUEST "change IP" only). Its result stands. The retry needs another source:
//!    the first try's answers, which found no rule, left a connection-tracking entry without
//!    NAT on the router (and on a gateway whose forward was missing) for the tuple
//!    other-IP:other-port → external port; an answer on the same tuple matches that entry
//!    until it times out (30 s for unreplied UDP on Linux, RouterOS included), so the rule
//!    made again never sees it. Another IP than the one the socket sent to still proves a
//!    third party reaches the port.
//! 6. The test mapping is deleted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use double_natpmp_codec::protocol::Protocol;
use double_natpmp_codec::stun::{ChangeRequest, Message, Retransmission, DEFAULT_PORT};
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use crate::mapping::events::Origin;
use crate::mapping::request::{Command, MappingRequest};
use crate::mapping::store::key::MappingKey;
use crate::mapping::MappingHandle;
use crate::reachability::outcome::{classify_exit, Blocked, Inbound, Outcome};
use crate::reachability::probe::{binding, Ask, ProbeError};
use crate::refused::Refusal;
use double_natpmp_codec::natpmp::result::ResultCode;

/// The test mapping's lifetime: longer than a check takes, short enough that a mapping left by
/// a crash lapses by itself soon.
pub(crate) const TEST_LIFETIME: u32 = 120;

/// RFC 8489 §6.2.1's schedule with fewer requests (the RFC allows it; the check is a
/// background task that runs again): sends at 0, 0.5, 1.5 and 3.5 s, failure at 5.5 s.
pub(crate) const SCHEDULE: Retransmission = Retransmission {
    rto: Duration::from_millis(500),
    requests: 4,
    last_wait_factor: 4,
};

/// What a check needs besides the mapping core.
#[derive(Clone)]
pub(crate) struct Context {
    /// The mapping core.
    pub(crate) mapping: MappingHandle,
    /// The daemon's own address toward the router (the test mapping's client).
    pub(crate) own_address: Option<Ipv4Addr>,
    /// The gateway's external address, as the address requests last learned it.
    pub(crate) external: Arc<dyn Fn() -> Option<Ipv4Addr> + Send + Sync>,
    /// STUN servers, `host[:port]`, tried in order until one answers.
    pub(crate) servers: Vec<String>,
    /// A pause between making the mapping and the first probe.
    pub(crate) settle: Duration,
}

/// Runs one check; see the module docs.
pub(crate) async fn run(ctx: &Context) -> Outcome {
    if ctx.mapping.quota_full() {
        return Outcome::blocked(SystemTime::now(), Blocked::QuotaFull);
    }
    let Some(own) = ctx.own_address else {
        return Outcome::blocked(SystemTime::now(), Blocked::NoOwnAddress);
    };
    let socket = match UdpSocket::bind((own, 0)).await {
        Ok(s) => s,
        Err(e) => {
            warn!(address = %own, "the reachability check cannot bind a UDP socket: {e}");
            return Outcome::blocked(SystemTime::now(), Blocked::NoOwnAddress);
        }
    };
    let port = match socket.local_addr() {
        Ok(a) => a.port(),
        Err(_) => return Outcome::blocked(SystemTime::now(), Blocked::NoOwnAddress),
    };
    let key = MappingKey {
        client: own,
        protocol: Protocol::Udp,
        internal_port: port,
    };
    let outcome = match make(ctx, key).await {
        Ok(external_port) => {
            if !ctx.settle.is_zero() {
                tokio::time::sleep(ctx.settle).await;
            }
            prove(ctx, &socket, key, external_port).await
        }
        Err(blocked) => Outcome::blocked(SystemTime::now(), blocked),
    };
    let deleted = ctx
        .mapping
        .request(Command::Delete {
            key,
            origin: Origin::SelfTest,
        })
        .await;
    if deleted.result != ResultCode::Success {
        debug!(mapping = %key, result = ?deleted.result, "the test mapping's delete failed; it lapses by itself");
    }
    outcome
}

/// Makes the test mapping; its external port.
async fn make(ctx: &Context, key: MappingKey) -> Result<u16, Blocked> {
    let reply = ctx
        .mapping
        .request(Command::Map(MappingRequest {
            client: key.client,
            protocol: key.protocol,
            internal_port: key.internal_port,
            suggested_external_port: 0,
            lifetime: TEST_LIFETIME,
            origin: Origin::SelfTest,
        }))
        .await;
    match reply.result {
        ResultCode::Success => Ok(reply.external_port),
        // A 4 is the gateway's quota when the core just saw it refuse (else MAX_MAPPINGS or
        // the per-client rate, which are the daemon's own limits).
        ResultCode::OutOfResources if ctx.mapping.quota_full() => Err(Blocked::QuotaFull),
        other => Err(Blocked::MappingFailed {
            result: other as u16,
        }),
    }
}

/// Steps 3 to 5 of the module docs, with the mapping in place.
async fn prove(ctx: &Context, socket: &UdpSocket, key: MappingKey, external_port: u16) -> Outcome {
    let external_address = (ctx.external)();
    let router_port = ctx.mapping.lease(&key).map(|l| l.router_port);
    let Some((name, server, answer)) = first_answer(ctx, socket).await else {
        return Outcome::blocked(SystemTime::now(), Blocked::NoServer);
    };
    let seen = match answer.reflexive_address() {
        Some(SocketAddr::V4(v4)) => Some(v4),
        _ => None,
    };
    let is_router_address = |ip| {
        matches!(
            ctx.mapping.refused().why(ip),
            Some(Refusal::RouterAddress { .. })
        )
    };
    let exit_address = match (seen, external_address) {
        (Some(seen), Some(ext)) => Some(classify_exit(*seen.ip(), ext, is_router_address)),
        _ => None,
    };
    let mut inbound_result = match answer.other_address() {
        None => Inbound::NotTested {
            why: "the STUN server does not do RFC 5780".into(),
        },
        Some(_) => inbound(socket, server, external_port, ChangeRequest::IP_AND_PORT).await,
    };
    let mut healed = false;
    if inbound_result == Inbound::NotReached {
        info!(mapping = %key, "the test mapping was not reached from the internet: a reconcile pass, then one more try");
        match ctx.mapping.reconcile().await {
            Ok(()) => {
                healed = true;
                // A new tuple (see the module docs, step 5): other IP, same port.
                let other_ip = ChangeRequest {
                    ip: true,
                    port: false,
                };
                inbound_result = inbound(socket, server, external_port, other_ip).await;
            }
            Err(e) => debug!("the heal's reconcile pass failed: {e}"),
        }
    }
    Outcome {
        checked_at: crate::status::history::unix_seconds(SystemTime::now()),
        server: Some(name),
        blocked: None,
        external: external_address.map(|a| SocketAddrV4::new(a, external_port)),
        router_port,
        seen_from: seen,
        exit_address,
        outbound_paired: seen.map(|s| s.port() == external_port),
        inbound: inbound_result,
        healed,
    }
}

/// The first server that answers a plain Binding Request: its name, address and answer.
async fn first_answer(ctx: &Context, socket: &UdpSocket) -> Option<(String, SocketAddr, Message)> {
    for name in &ctx.servers {
        let Some(server) = resolve(name).await else {
            warn!(server = %name, "STUN server: no IPv4 address for this name");
            continue;
        };
        match binding(socket, server, Ask::default(), SCHEDULE).await {
            Ok((answer, _)) => return Some((name.clone(), server, answer)),
            Err(e) => warn!(server = %name, "STUN server did not answer: {e}"),
        }
    }
    None
}

/// Step 4: the answer from the server's other address (`change`) to the external port.
async fn inbound(
    socket: &UdpSocket,
    server: SocketAddr,
    external_port: u16,
    change: ChangeRequest,
) -> Inbound {
    let ask = Ask {
        change,
        response_port: Some(external_port),
    };
    match binding(socket, server, ask, SCHEDULE).await {
        Ok(_) => Inbound::Reached,
        Err(ProbeError::NoAnswer { .. }) => Inbound::NotReached,
        Err(e @ ProbeError::ErrorResponse { .. }) => Inbound::NotTested {
            why: format!("the STUN server refused the test from its other address ({e})"),
        },
        Err(e @ ProbeError::Io(_)) => Inbound::NotTested { why: e.to_string() },
    }
}

/// `host[:port]` to its first IPv4 address (port 3478 when none is given).
async fn resolve(name: &str) -> Option<SocketAddr> {
    let with_port = if name
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        name.to_owned()
    } else {
        format!("{name}:{DEFAULT_PORT}")
    };
    tokio::net::lookup_host(with_port)
        .await
        .ok()?
        .find(|a| matches!(a.ip(), IpAddr::V4(_)))
}
