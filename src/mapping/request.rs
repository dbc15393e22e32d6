//! The mapping core's own request: a [`Command`] (map, delete, delete-all) that every front end
//! speaks. The NAT-PMP front end translates its packets into it at the edge (the orchestrator's
//! `MapHandler` implementation: lifetime 0 is a delete, with internal port 0 a delete-all, C-33,
//! C-36); the forwards API, STATIC_MAPPINGS and the twins build it directly. A future PCP front
//! end would translate its MAP opcode the same way.

use std::net::Ipv4Addr;

use crate::mapping::events::Origin;
use crate::mapping::store::key::MappingKey;
use double_natpmp_codec::protocol::Protocol;

/// A request to make or renew one mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingRequest {
    /// The client the mapping forwards to (for NAT-PMP, the datagram's source, C-25).
    pub client: Ipv4Addr,
    /// The mapping's transport protocol.
    pub protocol: Protocol,
    /// The client's own port (0 is refused with 2, C-37).
    pub internal_port: u16,
    /// The external port the client would like; 0 means any (C-28).
    pub suggested_external_port: u16,
    /// The lifetime asked for, in seconds (at least 1).
    pub lifetime: u32,
    /// Who asks: the lease is marked with it.
    pub origin: Origin,
}

impl MappingRequest {
    /// The mapping's identity (C-29).
    pub fn key(&self) -> MappingKey {
        MappingKey {
            client: self.client,
            protocol: self.protocol,
            internal_port: self.internal_port,
        }
    }

    /// Whether `other` asks what this asks (the retransmission memo, `keylock.rs`): the same
    /// mapping, suggestion and lifetime, whoever asks.
    pub fn same_ask(&self, other: &MappingRequest) -> bool {
        self.key() == other.key()
            && self.suggested_external_port == other.suggested_external_port
            && self.lifetime == other.lifetime
    }
}

/// What a front end asks of the mapping core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Make or renew a mapping.
    Map(MappingRequest),
    /// Remove one mapping from both layers.
    Delete {
        /// The mapping.
        key: MappingKey,
        /// Who asks (a NAT-PMP client cannot remove what an administrator made).
        origin: Origin,
    },
    /// Remove every mapping of `client` for `protocol` (C-36).
    DeleteAll {
        /// The client.
        client: Ipv4Addr,
        /// The protocol.
        protocol: Protocol,
        /// Who asks.
        origin: Origin,
    },
}

impl Command {
    /// The client the command is for.
    pub fn client(&self) -> Ipv4Addr {
        match self {
            Command::Map(r) => r.client,
            Command::Delete { key, .. } => key.client,
            Command::DeleteAll { client, .. } => *client,
        }
    }

    /// Who asks.
    pub fn origin(&self) -> Origin {
        match self {
            Command::Map(r) => r.origin,
            Command::Delete { origin, .. } | Command::DeleteAll { origin, .. } => *origin,
        }
    }

    /// The mapping the command names, for logs; a delete-all names internal port 0.
    pub fn key(&self) -> MappingKey {
        match self {
            Command::Map(r) => r.key(),
            Command::Delete { key, .. } => *key,
            Command::DeleteAll {
                client, protocol, ..
            } => MappingKey {
                client: *client,
                protocol: *protocol,
                internal_port: 0,
            },
        }
    }
}
