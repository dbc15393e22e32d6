//! One `/ip/address/print` row, as the daemon reads it (docs/routeros-api.md §2.5): the router's
//! own addresses and their subnets, which are refused as clients (`crate::refused`).

use std::net::Ipv4Addr;

use super::nat::flag;
use double_natpmp_codec::routeros::wire::Reply;

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
    /// Reads a row; `None` when `address` is missing or is not `a.b.c.d/nn` with nn ≤ 32.
    pub fn from_row(row: &Reply) -> Option<RouterAddress> {
        let (ip, prefix) = row.get("address")?.split_once('/')?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(RouterAddress {
            address: ip.parse().ok()?,
            prefix,
            interface: row.get("interface").unwrap_or("").to_owned(),
            disabled: flag(row, "disabled"),
            invalid: flag(row, "invalid"),
            dynamic: flag(row, "dynamic"),
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use double_natpmp_codec::routeros::wire::ReplyKind;

    #[test]
    fn address_row_gives_the_address_its_subnet_and_flags() {
        let row = Reply::new(ReplyKind::Re)
            .attr(".id", "*2")
            .attr("address", "192.168.88.1/24")
            .attr("network", "192.168.88.0")
            .attr("interface", "bridge")
            .attr("invalid", "false")
            .attr("dynamic", "true")
            .attr("disabled", "false");
        let a = RouterAddress::from_row(&row).unwrap();
        assert_eq!(a.address, Ipv4Addr::new(192, 168, 88, 1));
        assert_eq!(a.prefix, 24);
        assert_eq!(a.interface, "bridge");
        assert!(a.dynamic && !a.invalid && !a.disabled);
        assert_eq!(
            a.network_and_broadcast(),
            Some((
                Ipv4Addr::new(192, 168, 88, 0),
                Ipv4Addr::new(192, 168, 88, 255)
            ))
        );
    }

    #[test]
    fn point_to_point_and_host_addresses_have_no_network_or_broadcast() {
        for (text, expected) in [
            ("10.2.0.2/32", None),
            ("10.2.0.2/31", None),
            (
                "10.2.0.5/30",
                Some((Ipv4Addr::new(10, 2, 0, 4), Ipv4Addr::new(10, 2, 0, 7))),
            ),
            (
                "10.9.8.7/0",
                Some((Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)),
            ),
        ] {
            let row = Reply::new(ReplyKind::Re).attr("address", text);
            let a = RouterAddress::from_row(&row).unwrap();
            assert_eq!(a.network_and_broadcast(), expected, "{text}");
        }
        for bad in ["10.2.0.2", "10.2.0.2/33", "x/24"] {
            let row = Reply::new(ReplyKind::Re).attr("address", bad);
            assert_eq!(RouterAddress::from_row(&row), None, "{bad}");
        }
    }
}
