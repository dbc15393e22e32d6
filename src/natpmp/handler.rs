//! What the NAT-PMP front end asks of the mapping core: the [`MapHandler`] trait and its
//! [`MapReply`]. Defined here, apart from the UDP server, so the mapping core implements it
//! without importing the server, and the server calls it without knowing who serves it.

use std::future::Future;
use std::net::Ipv4Addr;

use double_natpmp_codec::natpmp::wire::{MapRequest, ResultCode};

/// The outcome of a mapping request, without the fields the server fills in itself (protocol,
/// internal port and epoch are echoed/added by the server, C-18, C-24, C-44).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapReply {
    /// Result code.
    pub result: ResultCode,
    /// Mapped external port; 0 on failure or deletion (C-18, C-33).
    pub external_port: u16,
    /// Granted lifetime; 0 on failure or deletion.
    pub lifetime: u32,
}

impl MapReply {
    /// A failure reply: external port and lifetime 0 (C-18).
    pub fn failure(result: ResultCode) -> MapReply {
        MapReply {
            result,
            external_port: 0,
            lifetime: 0,
        }
    }
}

/// Serves mapping requests (opcodes 1 and 2). Implemented by the mapping orchestrator.
pub trait MapHandler: Send + Sync + 'static {
    /// Create, renew or delete a mapping for `client` (the datagram's source address, C-25).
    /// Must always produce a reply: silence is never an answer (C-17).
    fn handle_map(
        &self,
        client: Ipv4Addr,
        request: MapRequest,
    ) -> impl Future<Output = MapReply> + Send;

    /// The reply to `request`, when it can be given at once without waiting for anything (a
    /// renewal answered from its live lease). The server asks this first, before the request
    /// takes a slot, so a renewal is answered also while every slot is taken; `None` (the
    /// default): the request is served by [`MapHandler::handle_map`]. An implementation must
    /// not block, and must answer exactly as `handle_map` would.
    fn answer_now(&self, _client: Ipv4Addr, _request: MapRequest) -> Option<MapReply> {
        None
    }
}

/// A [`MapHandler`] for when no mapping backend is configured: every request gets result 3
/// (network failure), never silence (C-17).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMappings;

impl MapHandler for NoMappings {
    async fn handle_map(&self, _client: Ipv4Addr, _request: MapRequest) -> MapReply {
        MapReply::failure(ResultCode::NetworkFailure)
    }
}
