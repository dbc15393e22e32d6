//! The emulated gateway's mapping table and its rules (the module docs of `emulators::gateway` list
//! them): pure state, no socket; the caller passes the time.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::config::GatewayConfig;
use double_natpmp_codec::natpmp::wire::{MapRequest, MapResponse, Protocol, ResultCode};

/// One mapping in the gateway's table, as
/// [`Gateway::mappings`](crate::gateway::Gateway::mappings) shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayMapping {
    /// The peer's IP address.
    pub peer: IpAddr,
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The port on the peer the mapping forwards to (P itself for a symmetric default port).
    pub internal_port: u16,
    /// The external port.
    pub external_port: u16,
    /// Time left before it expires (never zero: expired mappings are not shown).
    pub expires_in: Duration,
    /// Made with internal port 0 (Proton's symmetric default port, C-37).
    pub symmetric: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    peer: IpAddr,
    protocol: Protocol,
    internal_port: u16,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    external_port: u16,
    expires_at: Instant,
    symmetric: bool,
}

/// The gateway's mappings, by peer, protocol and internal port.
#[derive(Debug, Default)]
pub(super) struct MappingTable {
    entries: HashMap<Key, Entry>,
}

impl MappingTable {
    /// Drops the mappings whose lifetime ended by `now`; returns how many.
    pub(super) fn purge_expired(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.expires_at > now);
        before - self.entries.len()
    }

    /// When the next mapping expires.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.expires_at).min()
    }

    /// Forgets every mapping.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }

    /// The mappings alive at `now`, sorted.
    pub(super) fn snapshot(&self, now: Instant) -> Vec<GatewayMapping> {
        let mut v: Vec<GatewayMapping> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires_at > now)
            .map(|(k, e)| GatewayMapping {
                peer: k.peer,
                protocol: k.protocol,
                internal_port: k.internal_port,
                external_port: e.external_port,
                expires_in: e.expires_at - now,
                symmetric: e.symmetric,
            })
            .collect();
        v.sort();
        v
    }

    /// Applies a mapping request from `peer` and builds the reply; the flag says whether the
    /// table changed (a refusal changes nothing).
    pub(super) fn serve_map(
        &mut self,
        config: &GatewayConfig,
        peer: IpAddr,
        m: MapRequest,
        epoch: u32,
        now: Instant,
    ) -> (MapResponse, bool) {
        let mut reply = MapResponse {
            protocol: m.protocol,
            result: ResultCode::Success,
            epoch,
            internal_port: m.internal_port,
            external_port: 0,
            lifetime: 0,
        };
        let key = Key {
            peer,
            protocol: m.protocol,
            internal_port: m.internal_port,
        };

        if m.is_delete_all() {
            // C-36: this peer's mappings of this protocol only.
            self.entries
                .retain(|k, _| !(k.peer == peer && k.protocol == m.protocol));
            return (reply, true);
        }
        if m.is_delete() {
            // C-33, C-34: the suggested port is ignored; deleting nothing is a success too.
            self.entries.remove(&key);
            return (reply, true);
        }

        let lifetime = m.lifetime.min(config.max_lifetime);
        let expires_at = now + Duration::from_secs(u64::from(lifetime));
        let symmetric = m.internal_port == 0;

        // Renewal: same peer, protocol and internal port (for symmetric: the peer's symmetric
        // mapping of this protocol) keeps its external port.
        let existing = if symmetric {
            self.entries
                .iter()
                .find(|(k, e)| k.peer == peer && k.protocol == m.protocol && e.symmetric)
                .map(|(k, _)| *k)
        } else {
            self.entries.contains_key(&key).then_some(key)
        };
        if let Some(k) = existing {
            if let Some(e) = self.entries.get_mut(&k) {
                e.expires_at = expires_at;
                reply.external_port = e.external_port;
                reply.lifetime = lifetime;
            }
            return (reply, true);
        }

        // The companion protocol of a port this peer already maps: same external port, no quota.
        let other = match m.protocol {
            Protocol::Udp => Protocol::Tcp,
            Protocol::Tcp => Protocol::Udp,
        };
        let companion = self
            .entries
            .iter()
            .find(|(k, e)| {
                k.peer == peer
                    && k.protocol == other
                    && if symmetric {
                        e.symmetric
                    } else {
                        k.internal_port == m.internal_port && !e.symmetric
                    }
            })
            .map(|(k, e)| (k.internal_port, e.external_port));

        let (internal_port, external_port) = match companion {
            Some(found) => found,
            None => {
                let slots: HashSet<u16> = self
                    .entries
                    .keys()
                    .filter(|k| k.peer == peer)
                    .map(|k| k.internal_port)
                    .collect();
                if slots.len() >= config.quota_per_peer {
                    reply.result = ResultCode::OutOfResources;
                    return (reply, false);
                }
                let Some(port) = self.pick_port(config, peer, m) else {
                    reply.result = ResultCode::OutOfResources;
                    return (reply, false);
                };
                if symmetric {
                    (port, port)
                } else {
                    (m.internal_port, port)
                }
            }
        };
        self.entries.insert(
            Key {
                peer,
                protocol: m.protocol,
                internal_port,
            },
            Entry {
                external_port,
                expires_at,
                symmetric,
            },
        );
        tracing::debug!(%peer, protocol = %m.protocol, internal_port, external_port, lifetime,
            "gateway emulator: new mapping");
        reply.external_port = external_port;
        reply.lifetime = lifetime;
        (reply, true)
    }

    /// A free external port: the suggestion if honoured and free, else random in the range.
    fn pick_port(&self, config: &GatewayConfig, peer: IpAddr, m: MapRequest) -> Option<u16> {
        let used: HashSet<u16> = self.entries.values().map(|e| e.external_port).collect();
        let free = |p: u16| {
            !used.contains(&p)
                // A symmetric port P forwards to P: that key must be free too.
                && (m.internal_port != 0
                    || !self.entries.contains_key(&Key {
                        peer,
                        protocol: m.protocol,
                        internal_port: p,
                    }))
        };
        let range = &config.port_range;
        if config.honour_suggested
            && m.suggested_external_port != 0
            && range.contains(&m.suggested_external_port)
            && free(m.suggested_external_port)
        {
            return Some(m.suggested_external_port);
        }
        // Random start, then the first free port cyclically: random while the range is sparse,
        // and it still finds the last free port of a nearly full range.
        let (lo, hi) = (*range.start(), *range.end());
        let size = u32::from(hi - lo) + 1;
        let start = fastrand::u32(0..size);
        (0..size)
            .map(|i| {
                // Fits: the offset is below `size`, so lo + offset <= hi.
                lo + ((start + i) % size) as u16
            })
            .find(|&p| free(p))
    }
}
