//! One `/ip/address/print` row read into the seam's [`RouterAddress`] (docs/routeros-api.md
//! §2.5): the router's own addresses and their subnets, which are refused as clients
//! (`crate::refused`).

use super::nat::flag;
use crate::mapping::router::seam::RouterAddress;
use double_natpmp_codec::routeros::wire::Reply;

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use double_natpmp_codec::routeros::wire::ReplyKind;
    use std::net::Ipv4Addr;

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
