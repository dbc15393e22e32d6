//! Sources that are not real clients: the addresses no mapping is ever made for, whatever
//! ALLOWED_CLIENTS says (docs/conformance.md C-39a).
//!
//! * the VPN gateway (a mapping for it would forward a port back into the tunnel);
//! * the router's own addresses, on every interface (the tunnel address included): a dst-nat
//!   rule to the router forwards a port of the internet to the router's own services (API,
//!   WinBox, WebFig);
//! * the network and broadcast addresses of the router's subnets (prefix of 30 or less): no
//!   host has them, so a request "from" one is forged, and a rule to a broadcast address
//!   would spray the LAN with internet traffic;
//! * the daemon's own addresses (LISTEN_ADDR, and the host address it reaches the router
//!   from): a request from them is forged (the daemon never asks), and a rule to them would
//!   put the status page and the forwards API on the internet. The host's own address
//!   request (`double-natpmp health`) is still answered.
//!
//! The router's part is read from `/ip/address/print` at every reconcile pass (at start and
//! every RECONCILE_INTERVAL, `mapping/loops/reconcile.rs`), so an address added on the router is
//! refused after the next pass; the daemon's part is read at start. Checking a source costs a
//! read lock and a hash lookup, never a router command. A refused source is logged once (at
//! `warn`), not once per packet; it is logged again only after it left the list and came back.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use tracing::{info, warn};

use crate::mapping::router::seam::RouterAddress;

/// Why a source is not a real client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The VPN gateway (VPN_GATEWAY).
    VpnGateway,
    /// One of the daemon's own addresses.
    DaemonAddress,
    /// One of the router's own addresses.
    RouterAddress {
        /// The router interface that has it.
        interface: String,
    },
    /// The network address of one of the router's subnets.
    NetworkAddress {
        /// The subnet, `a.b.c.d/nn`.
        subnet: String,
        /// The router interface on it.
        interface: String,
    },
    /// The broadcast address of one of the router's subnets.
    BroadcastAddress {
        /// The subnet, `a.b.c.d/nn`.
        subnet: String,
        /// The router interface on it.
        interface: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::VpnGateway => f.write_str("it is the VPN gateway (VPN_GATEWAY)"),
            Refusal::DaemonAddress => f.write_str("it is the daemon's own address"),
            Refusal::RouterAddress { interface } => {
                write!(f, "it is the router's own address (on {interface})")
            }
            Refusal::NetworkAddress { subnet, interface } => write!(
                f,
                "it is the network address of the router's subnet {subnet} (on {interface})"
            ),
            Refusal::BroadcastAddress { subnet, interface } => write!(
                f,
                "it is the broadcast address of the router's subnet {subnet} (on {interface})"
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Lists {
    gateway: Option<Ipv4Addr>,
    daemon: Vec<Ipv4Addr>,
    router: HashMap<Ipv4Addr, Refusal>,
}

impl Lists {
    fn why(&self, ip: Ipv4Addr) -> Option<Refusal> {
        if self.gateway == Some(ip) {
            return Some(Refusal::VpnGateway);
        }
        if let Some(r) = self.router.get(&ip) {
            return Some(r.clone());
        }
        self.daemon.contains(&ip).then_some(Refusal::DaemonAddress)
    }
}

/// The sources no mapping is made for (see the module docs). Shared by the NAT-PMP server, the
/// mapping core, the forwards API and the static keeper.
#[derive(Debug, Default)]
pub struct RefusedSources {
    lists: RwLock<Lists>,
    /// Sources already logged as refused (only refused ones: bounded by the list).
    logged: Mutex<HashSet<Ipv4Addr>>,
}

impl RefusedSources {
    /// A list holding the VPN gateway, if given; the caller leaves out a gateway on loopback
    /// (an emulator on this host, whose clients share its address).
    pub fn new(gateway: Option<Ipv4Addr>) -> RefusedSources {
        RefusedSources {
            lists: RwLock::new(Lists {
                gateway,
                ..Lists::default()
            }),
            logged: Mutex::new(HashSet::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Lists> {
        self.lists.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Lists> {
        self.lists.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn logged(&self) -> MutexGuard<'_, HashSet<Ipv4Addr>> {
        self.logged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the daemon's own addresses (see [`daemon_addresses`]).
    pub fn set_daemon_addresses(&self, addresses: impl IntoIterator<Item = Ipv4Addr>) {
        let mut own: Vec<Ipv4Addr> = addresses.into_iter().collect();
        own.sort_unstable();
        own.dedup();
        if !own.is_empty() {
            info!(addresses = ?own, "the daemon's own addresses are not clients: no mapping for them");
        }
        self.write().daemon = own;
    }

    /// Replaces the router's part with what `/ip/address/print` listed: each enabled address,
    /// and the network and broadcast addresses of its subnet. Logs the list when it changed.
    pub fn set_router_addresses(&self, rows: &[RouterAddress]) {
        let mut router = HashMap::new();
        for row in rows.iter().filter(|r| !r.disabled) {
            router
                .entry(row.address)
                .or_insert_with(|| Refusal::RouterAddress {
                    interface: row.interface.clone(),
                });
        }
        for row in rows.iter().filter(|r| !r.disabled) {
            if let Some((network, broadcast)) = row.network_and_broadcast() {
                let subnet = format!("{network}/{}", row.prefix);
                router
                    .entry(network)
                    .or_insert_with(|| Refusal::NetworkAddress {
                        subnet: subnet.clone(),
                        interface: row.interface.clone(),
                    });
                router
                    .entry(broadcast)
                    .or_insert_with(|| Refusal::BroadcastAddress {
                        subnet,
                        interface: row.interface.clone(),
                    });
            }
        }
        let changed = {
            let mut lists = self.write();
            let changed = lists.router != router;
            lists.router = router;
            if changed {
                let mut shown: Vec<&Ipv4Addr> = lists.router.keys().collect();
                shown.sort_unstable();
                info!(refused = ?shown, "the router's addresses and its subnets' network and broadcast addresses are not clients: no mapping for them");
            }
            changed
        };
        if changed {
            // A source that left the list is logged again if it comes back.
            let lists = self.read();
            self.logged().retain(|ip| lists.why(*ip).is_some());
        }
    }

    /// Why `ip` is not a client, if it is not; no log.
    pub fn why(&self, ip: Ipv4Addr) -> Option<Refusal> {
        self.read().why(ip)
    }

    /// Why no mapping may be made for `ip`, if none may; the first refusal of each source is
    /// logged at `warn`.
    pub fn check(&self, ip: Ipv4Addr) -> Option<Refusal> {
        let why = self.why(ip)?;
        self.log_once(ip, &why);
        Some(why)
    }

    /// Logs the first refusal of `ip` at `warn`, and none after it.
    fn log_once(&self, ip: Ipv4Addr, why: &Refusal) {
        if self.logged().insert(ip) {
            warn!(source = %ip, "refused as a client: {why}; it gets no mapping (logged once per source)");
        }
    }

    /// Whether the NAT-PMP server drops a datagram from `ip`: every datagram of a refused
    /// source, except one that maps nothing (`maps_nothing`: an address request, or the
    /// health probe's undefined opcode) from the daemon's own address, the host's health check.
    pub fn drops_datagram(&self, ip: Ipv4Addr, maps_nothing: bool) -> bool {
        match self.why(ip) {
            None => false,
            Some(Refusal::DaemonAddress) if maps_nothing => false,
            Some(why) => {
                self.log_once(ip, &why);
                true
            }
        }
    }
}

/// The daemon's own IPv4 addresses: LISTEN_ADDR's, when it names one, and `toward`, the one
/// this host reaches the router from ([`address_toward`]). Loopback and unspecified addresses
/// are left out: clients on this host's loopback are the demo's and the tests'.
pub(crate) fn daemon_addresses(listen: SocketAddr, toward: Option<Ipv4Addr>) -> Vec<Ipv4Addr> {
    let mut own = Vec::new();
    if let SocketAddr::V4(v4) = listen {
        own.push(*v4.ip());
    }
    own.extend(toward);
    own.retain(|a| !a.is_loopback() && !a.is_unspecified());
    own
}

/// The address this host reaches `router` (MIKROTIK_API_ADDRESS, `host:port`) from, found by
/// connecting a UDP socket, which sends nothing; `None` when the router cannot be resolved or
/// reached.
pub(crate) async fn address_toward(router: &str) -> Option<Ipv4Addr> {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .ok()?;
    socket.connect(router).await.ok()?;
    match socket.local_addr().ok()? {
        SocketAddr::V4(local) => Some(*local.ip()),
        SocketAddr::V6(_) => None,
    }
}

/// The daemon's own address as the router sees it, for the reachability check's test
/// mapping: `toward`, the one it reaches the router from, unless that is loopback (the
/// router's API on this host, as in a lab), then LISTEN_ADDR's address when it names one;
/// loopback is kept when nothing else is known (the demo, where everything is on loopback).
pub(crate) fn address_for_router(listen: SocketAddr, toward: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    let listening = match listen {
        SocketAddr::V4(v4) if !v4.ip().is_unspecified() => Some(*v4.ip()),
        _ => None,
    };
    match toward {
        Some(ip) if !ip.is_loopback() => Some(ip),
        _ => listening.or(toward),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(address: &str, interface: &str, disabled: bool) -> RouterAddress {
        let (ip, prefix) = address.split_once('/').unwrap();
        RouterAddress {
            address: ip.parse().unwrap(),
            prefix: prefix.parse().unwrap(),
            interface: interface.into(),
            disabled,
            invalid: false,
            dynamic: false,
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_router_its_subnets_edges_the_gateway_and_the_daemon_are_refused_and_hosts_are_not() {
        let refused = RefusedSources::new(Some(ip("10.2.0.1")));
        refused.set_router_addresses(&[
            row("10.2.0.2/32", "wg-proton", false),
            row("192.168.88.1/24", "bridge", false),
            row("172.16.9.1/24", "vlan9", true),
        ]);
        refused.set_daemon_addresses([ip("192.168.88.2")]);
        assert_eq!(refused.why(ip("10.2.0.1")), Some(Refusal::VpnGateway));
        assert_eq!(
            refused.why(ip("10.2.0.2")),
            Some(Refusal::RouterAddress {
                interface: "wg-proton".into()
            })
        );
        assert!(matches!(
            refused.why(ip("192.168.88.0")),
            Some(Refusal::NetworkAddress { subnet, .. }) if subnet == "192.168.88.0/24"
        ));
        assert!(matches!(
            refused.why(ip("192.168.88.255")),
            Some(Refusal::BroadcastAddress { .. })
        ));
        assert_eq!(
            refused.why(ip("192.168.88.2")),
            Some(Refusal::DaemonAddress)
        );
        for host in [
            "192.168.88.10",
            "192.168.88.254",
            "127.0.0.1",
            "172.16.9.1",
            "172.16.9.255",
        ] {
            assert_eq!(refused.why(ip(host)), None, "{host} is a host");
        }
    }

    #[test]
    fn an_address_removed_from_the_router_is_a_client_again() {
        let refused = RefusedSources::new(None);
        refused.set_router_addresses(&[row("192.168.50.1/24", "vlan50", false)]);
        assert!(refused.check(ip("192.168.50.255")).is_some());
        refused.set_router_addresses(&[]);
        assert_eq!(refused.check(ip("192.168.50.255")), None);
        assert!(
            refused.logged().is_empty(),
            "the log-once memory forgets it"
        );
    }

    #[tokio::test]
    async fn the_daemons_own_addresses_are_listen_addrs_and_never_loopback() {
        let router = address_toward("127.0.0.1:8728").await;
        assert_eq!(
            daemon_addresses("192.168.88.2:5351".parse().unwrap(), router),
            vec![ip("192.168.88.2")]
        );
        // Unspecified, and the way to the router is loopback: nothing of the host's own.
        assert!(daemon_addresses("0.0.0.0:5351".parse().unwrap(), router).is_empty());
        assert!(daemon_addresses(
            "127.0.0.1:5351".parse().unwrap(),
            address_toward("no such host").await
        )
        .is_empty());
    }

    #[test]
    fn the_test_mappings_address_is_the_way_to_the_router_unless_that_is_loopback() {
        let listen = |s: &str| s.parse::<SocketAddr>().unwrap();
        let lan = Some(ip("172.30.254.2"));
        let lo = Some(Ipv4Addr::LOCALHOST);
        assert_eq!(address_for_router(listen("0.0.0.0:5351"), lan), lan);
        assert_eq!(
            address_for_router(listen("192.168.88.250:5351"), lo),
            Some(ip("192.168.88.250"))
        );
        assert_eq!(address_for_router(listen("0.0.0.0:5351"), lo), lo);
        assert_eq!(address_for_router(listen("0.0.0.0:5351"), None), None);
    }

    #[test]
    fn the_hosts_own_address_request_passes_but_its_mapping_requests_do_not() {
        let refused = RefusedSources::new(Some(ip("10.2.0.1")));
        refused.set_daemon_addresses([ip("192.168.88.2")]);
        assert!(!refused.drops_datagram(ip("192.168.88.2"), true));
        assert!(refused.drops_datagram(ip("192.168.88.2"), false));
        assert!(refused.drops_datagram(ip("10.2.0.1"), true));
        assert!(!refused.drops_datagram(ip("192.168.88.3"), false));
    }
}
