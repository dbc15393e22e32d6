//! Both NAT layers as the emulators hold them, for the STUN emulator ([`EmulatedPath`], a
//! [`NatPath`]): on loopback nothing translates packets, so the STUN server asks it what the
//! internet would see and where an answer would arrive, from the router emulator's NAT rules
//! and the gateway emulator's mappings, as a MikroTik and a ProtonVPN exit would treat them
//! (`double-natpmp demo` and the tests use it):
//!
//! * outbound, a packet from `ip:port` leaves the router from the port of a src-nat rule for
//!   it (UDP_SRCNAT), else from its own port; the gateway sends it from the external port of
//!   the mapping of that router port when there is one (it pairs), else from the same port;
//!   the internet sees the exit address. Each such packet opens a connection-tracking entry.
//! * inbound, a packet to the exit address passes when it answers an open entry (same remote
//!   address and port), or when the gateway has a mapping of its port and the router a dst-nat
//!   rule for that mapping's router port: then it arrives at the rule's `to-addresses:to-ports`.
//!   Anything else is dropped, as a real NAT drops it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use double_natpmp_codec::protocol::Protocol;

use crate::gateway::Gateway;
use crate::routeros::RouterSim;
use crate::stun::NatPath;

/// Both emulated NAT layers; see the module docs.
pub struct EmulatedPath {
    layers: OnceLock<(Arc<RouterSim>, Arc<Gateway>)>,
    exit: Ipv4Addr,
    /// (the exit's address and port, the remote) → the inside address.
    conntrack: Mutex<HashMap<(SocketAddr, SocketAddr), SocketAddr>>,
}

impl EmulatedPath {
    /// The layers of `router` and `gateway`, leaving the gateway from `exit` (the address the
    /// gateway reports, or another to emulate an exit that differs from it).
    pub fn new(router: Arc<RouterSim>, gateway: Arc<Gateway>, exit: Ipv4Addr) -> Self {
        let path = EmulatedPath::unattached(exit);
        path.attach(router, gateway);
        path
    }

    /// A path whose emulators start later ([`EmulatedPath::attach`]); until then it
    /// translates nothing (a test's STUN server must exist before the daemon that asks it).
    pub fn unattached(exit: Ipv4Addr) -> Self {
        EmulatedPath {
            layers: OnceLock::new(),
            exit,
            conntrack: Mutex::new(HashMap::new()),
        }
    }

    /// Gives the path its emulators; `false` when it had some already (they stay).
    pub fn attach(&self, router: Arc<RouterSim>, gateway: Arc<Gateway>) -> bool {
        self.layers.set((router, gateway)).is_ok()
    }

    /// The `to-addresses` and `to-ports` of the first enabled UDP rule of `chain` whose fields
    /// have the values of `matches`.
    fn rule(&self, chain: &str, matches: &[(&str, String)]) -> Option<(String, u16)> {
        let (router, _) = self.layers.get()?;
        router.nat_rules().into_iter().find_map(|r| {
            let field = |k: &str| r.fields.get(k).map(String::as_str);
            let wanted = field("chain") == Some(chain)
                && field("protocol") == Some("udp")
                && field("disabled") != Some("true")
                && matches.iter().all(|(k, v)| field(k) == Some(v.as_str()));
            if !wanted {
                return None;
            }
            let to_port = field("to-ports")?.parse().ok()?;
            Some((
                field("to-addresses").unwrap_or_default().to_owned(),
                to_port,
            ))
        })
    }

    /// The gateway's UDP mapping whose `pick` port is `port`: (internal, external).
    fn mapping(&self, pick: impl Fn(u16, u16) -> bool) -> Option<(u16, u16)> {
        let (_, gateway) = self.layers.get()?;
        gateway
            .mappings()
            .into_iter()
            .filter(|m| m.protocol == Protocol::Udp)
            .map(|m| (m.internal_port, m.external_port))
            .find(|(i, e)| pick(*i, *e))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<(SocketAddr, SocketAddr), SocketAddr>> {
        self.conntrack.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl NatPath for EmulatedPath {
    fn outbound(&self, source: SocketAddr, destination: SocketAddr) -> SocketAddr {
        if self.layers.get().is_none() {
            return source;
        }
        let router_port = self
            .rule(
                "srcnat",
                &[
                    ("src-address", source.ip().to_string()),
                    ("src-port", source.port().to_string()),
                ],
            )
            .map_or(source.port(), |(_, to_port)| to_port);
        let exit_port = self
            .mapping(|internal, _| internal == router_port)
            .map_or(router_port, |(_, external)| external);
        let outside = SocketAddr::from((self.exit, exit_port));
        self.table().insert((outside, destination), source);
        outside
    }

    fn inbound(&self, source: SocketAddr, destination: SocketAddr) -> Option<SocketAddr> {
        if self.layers.get().is_none() || destination.ip() != self.exit {
            return Some(destination);
        }
        if let Some(inside) = self.table().get(&(destination, source)) {
            return Some(*inside);
        }
        let (router_port, _) = self.mapping(|_, external| external == destination.port())?;
        let (to, to_port) = self.rule("dstnat", &[("dst-port", router_port.to_string())])?;
        let ip: Ipv4Addr = to.parse().ok()?;
        Some(SocketAddr::from((ip, to_port)))
    }
}
