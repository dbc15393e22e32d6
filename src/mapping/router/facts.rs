//! What the core reads about the router besides its NAT rules: its interfaces, its own
//! services' ports, its interface lists and its addresses. Plain data, filled in by the router
//! implementation behind the seam (`crate::routeros`).

use std::net::Ipv4Addr;

/// One `/interface/print` row, as far as the daemon needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// `name`.
    pub name: String,
    /// `type`, e.g. `wg`, `ovpn-out`, `ether` (docs/routeros-api.md, "Interface types").
    pub kind: String,
    /// `running=true`: the link is up.
    pub running: bool,
    /// `disabled=true`.
    pub disabled: bool,
}

/// One `/ip/service/print` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `name`, e.g. `api`, `winbox`.
    pub name: String,
    /// `port`.
    pub port: u16,
    /// `disabled=true`.
    pub disabled: bool,
}

/// One `/interface/list/member/print` row: `interface` is a member of `list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListMember {
    /// `list`.
    pub list: String,
    /// `interface`.
    pub interface: String,
}

/// One `/ip/address/print` row: an IPv4 address of the router and its subnet
/// (docs/routeros-api.md §2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterAddress {
    /// The address, from `address` (`a.b.c.d/nn`).
    pub address: Ipv4Addr,
    /// The prefix length, from `address`.
    pub prefix: u8,
    /// `interface`.
    pub interface: String,
    /// `disabled=true`: the router does not hold the address now.
    pub disabled: bool,
    /// `invalid=true`: configured, but not in use (shown for an address whose interface is
    /// missing). Still the router's address.
    pub invalid: bool,
    /// `dynamic=true`: made by the router itself (a DHCP client, a PPP or VPN link).
    pub dynamic: bool,
}

impl RouterAddress {
    /// The subnet's network and broadcast addresses, when the subnet has them (a prefix of 30
    /// or less: a /31 is a point-to-point pair, RFC 3021, and a /32 is the address alone).
    pub fn network_and_broadcast(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        if self.prefix > 30 {
            return None;
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        let network = u32::from(self.address) & mask;
        Some((Ipv4Addr::from(network), Ipv4Addr::from(network | !mask)))
    }
}
