//! What the router says about its ports ([`RouterView`]), and the choice of a router port R
//! from it ([`choose_port`]); pure, no I/O. The [lease table](crate::mapping::store::table) holds the
//! view next to our own holds and reserves ports through it.
//!
//! Upstream, every LAN client has the same identity (the router's tunnel address), so R is
//! unique per protocol across all clients, and it must not collide with any dst-nat rule that
//! can catch traffic arriving from the tunnel, ours or foreign:
//!
//! * `in-interface` = the VPN interface (or `!X` for another X);
//! * `in-interface-list` = a list that contains it (`/interface/list/member`, plus the built-in
//!   `all` and `static` lists), or `!L` for a list that does not;
//! * neither matcher set: the rule catches every interface.
//!
//! `dst-port` lists and ranges like `1000-2000,3000` are parsed. Disabled rules count too (they
//! can be enabled at any time). The ports of enabled `/ip/service` entries (api, api-ssl, ssh,
//! www, winbox, …) are used as well, for both protocols: a dst-nat rule on such a port would take
//! the service away from the tunnel side, or hand it to a LAN client.
//!
//! Preference order: the client's suggested external port, then its internal port, then the
//! next free port of the configured range (next-fit, so a just-freed port is not reused at once).
//! Preferred ports below 1024 are skipped: a dst-nat rule on a well-known port of the tunnel
//! address only confuses whoever reads the router's rules.
//!
//! A foreign rule without `dst-port` matches every port; it is not counted as using any port
//! (counting it would make allocation impossible, and our rule after it would be shadowed anyway).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use crate::mapping::router::seam::{ListMember, NatRule, ServiceInfo};
use double_natpmp_codec::protocol::Protocol;

/// Preferred ports (suggested or internal) below this are not used as router ports.
pub(crate) const MIN_PREFERRED_PORT: u16 = 1024;

/// Parses a RouterOS port list such as `1000-2000,3000`; `None` if any part is malformed.
pub(crate) fn parse_port_list(text: &str) -> Option<Vec<RangeInclusive<u16>>> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let range = match part.split_once('-') {
            Some((a, b)) => {
                let a: u16 = a.trim().parse().ok()?;
                let b: u16 = b.trim().parse().ok()?;
                a.min(b)..=a.max(b)
            }
            None => {
                let p: u16 = part.parse().ok()?;
                p..=p
            }
        };
        out.push(range);
    }
    Some(out)
}

/// The index of a protocol in per-protocol arrays.
pub(crate) fn slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Udp => 0,
        Protocol::Tcp => 1,
    }
}

/// Which protocols a rule's `protocol` field covers: absent means both.
fn protocols_of(field: Option<&str>) -> [bool; 2] {
    match field.map(Protocol::parse) {
        None => [true, true],
        Some(Some(p)) => {
            let mut out = [false, false];
            out[slot(p)] = true;
            out
        }
        Some(None) => [false, false],
    }
}

/// A set of ports, one bit each.
#[derive(Clone, Debug)]
struct PortSet {
    words: Vec<u64>,
}

impl Default for PortSet {
    fn default() -> Self {
        PortSet {
            words: vec![0; 65536 / 64],
        }
    }
}

impl PortSet {
    fn insert(&mut self, port: u16) {
        let p = usize::from(port);
        if let Some(w) = self.words.get_mut(p / 64) {
            *w |= 1 << (p % 64);
        }
    }

    fn insert_range(&mut self, range: &RangeInclusive<u16>) {
        for p in range.clone() {
            self.insert(p);
        }
    }

    fn contains(&self, port: u16) -> bool {
        let p = usize::from(port);
        self.words
            .get(p / 64)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    }
}

/// A foreign rule's target, for C-35 (a delete aimed at a mapping someone else made answers 2).
#[derive(Clone, Debug)]
struct ForeignTarget {
    protocols: [bool; 2],
    address: Ipv4Addr,
    ports: Vec<RangeInclusive<u16>>,
}

/// What one router listing says about used ports and foreign targets; built by the reconciler
/// and handed to [`PortIndex::apply_refresh`].
#[derive(Clone, Debug, Default)]
pub struct RouterView {
    used: [PortSet; 2],
    targets: Vec<ForeignTarget>,
}

impl RouterView {
    /// An empty view.
    pub fn new() -> RouterView {
        RouterView::default()
    }

    /// Counts a foreign rule: its dst-ports become used, its target is remembered.
    pub fn add_foreign_rule(&mut self, rule: &NatRule) {
        let protocols = protocols_of(rule.protocol.as_deref());
        let dst = rule.dst_port.as_deref().and_then(parse_port_list);
        if let Some(ranges) = &dst {
            for (i, on) in protocols.iter().enumerate() {
                if *on {
                    for r in ranges {
                        self.used[i].insert_range(r);
                    }
                }
            }
        }
        let address = rule
            .to_addresses
            .as_deref()
            .and_then(|a| a.trim().parse::<Ipv4Addr>().ok());
        // dst-nat without to-ports keeps the destination port.
        let ports = match rule.to_ports.as_deref() {
            Some(p) => parse_port_list(p),
            None => dst,
        };
        if let (Some(address), Some(ports)) = (address, ports) {
            self.targets.push(ForeignTarget {
                protocols,
                address,
                ports,
            });
        }
    }

    /// Marks one port used (an own rule the reconciler could not remove).
    pub fn add_used(&mut self, protocol: Protocol, port: u16) {
        self.used[slot(protocol)].insert(port);
    }

    /// Marks the ports of enabled router services used, for both protocols.
    pub fn add_services(&mut self, services: &[ServiceInfo]) {
        for s in services.iter().filter(|s| !s.disabled) {
            for p in Protocol::ALL {
                self.add_used(p, s.port);
            }
        }
    }

    /// Whether `port` is used for `protocol` in this view.
    pub fn is_used(&self, protocol: Protocol, port: u16) -> bool {
        self.used[slot(protocol)].contains(port)
    }

    /// Whether a foreign rule forwards `protocol` traffic to `client` (on `port`, or on any port
    /// when `port` is `None`): C-35, C-36.
    pub fn foreign_target(&self, protocol: Protocol, client: Ipv4Addr, port: Option<u16>) -> bool {
        self.targets.iter().any(|t| {
            t.protocols[slot(protocol)]
                && t.address == client
                && port.is_none_or(|p| t.ports.iter().any(|r| r.contains(&p)))
        })
    }
}

/// Which dst-nat rules can catch traffic that arrives through the VPN interface.
#[derive(Clone, Debug)]
pub(crate) struct TunnelScope {
    interface: String,
    lists: HashSet<String>,
}

/// Built-in interface lists every interface of ours belongs to (a tunnel interface made by
/// hand is static).
const BUILT_IN_LISTS: &[&str] = &["all", "static"];

impl TunnelScope {
    /// The scope of `interface`, given every `/interface/list/member` row.
    pub(crate) fn new(interface: &str, members: &[ListMember]) -> TunnelScope {
        let mut lists: HashSet<String> = BUILT_IN_LISTS.iter().map(|l| (*l).to_owned()).collect();
        lists.extend(
            members
                .iter()
                .filter(|m| m.interface == interface)
                .map(|m| m.list.clone()),
        );
        TunnelScope {
            interface: interface.to_owned(),
            lists,
        }
    }

    /// Whether `rule`'s interface matchers let tunnel traffic through (both must, when set).
    pub(crate) fn catches(&self, rule: &NatRule) -> bool {
        self.matches(
            rule.in_interface.as_deref(),
            rule.in_interface_list.as_deref(),
        )
    }

    /// Whether an interface matcher and an interface-list matcher (either may be unset) let
    /// the tunnel's traffic through.
    pub(crate) fn matches(&self, interface: Option<&str>, list: Option<&str>) -> bool {
        let interface_ok = match interface.map(str::trim) {
            None | Some("") => true,
            Some(v) => match v.strip_prefix('!') {
                Some(other) => other != self.interface,
                None => v == self.interface,
            },
        };
        let list_ok = match list.map(str::trim) {
            None | Some("") => true,
            Some(v) => match v.strip_prefix('!') {
                Some(other) => !self.lists.contains(other),
                None => self.lists.contains(v),
            },
        };
        interface_ok && list_ok
    }
}

/// Chooses a router port for `protocol`: the first of `preferred` (0 and ports below 1024
/// skipped) that `is_used` says is free, else the next free port of `range` from `cursor`
/// (next-fit; `cursor` moves past the port taken). `None` when every port of the range is used.
pub(crate) fn choose_port(
    protocol: Protocol,
    preferred: &[u16],
    range: &RangeInclusive<u16>,
    cursor: &mut u32,
    is_used: impl Fn(Protocol, u16) -> bool,
) -> Option<u16> {
    if let Some(p) = preferred
        .iter()
        .copied()
        .find(|&p| p >= MIN_PREFERRED_PORT && !is_used(protocol, p))
    {
        return Some(p);
    }
    let lo = u32::from(*range.start());
    let hi = u32::from(*range.end());
    if lo > hi {
        return None;
    }
    let len = hi - lo + 1;
    let start = (*cursor).clamp(lo, hi);
    for i in 0..len {
        let candidate = lo + (start - lo + i) % len;
        // candidate <= hi <= u16::MAX, so the conversion cannot fail.
        let Ok(port) = u16::try_from(candidate) else {
            continue;
        };
        if !is_used(protocol, port) {
            *cursor = if candidate == hi { lo } else { candidate + 1 };
            return Some(port);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(interface: Option<&str>, list: Option<&str>, dst: &str) -> NatRule {
        NatRule {
            protocol: Some("tcp".into()),
            in_interface: interface.map(str::to_owned),
            in_interface_list: list.map(str::to_owned),
            dst_port: Some(dst.to_owned()),
            to_addresses: Some("192.168.88.5".into()),
            ..NatRule::default()
        }
    }

    fn member(list: &str, interface: &str) -> ListMember {
        ListMember {
            list: list.into(),
            interface: interface.into(),
        }
    }

    #[test]
    fn port_lists_and_ranges_parse() {
        assert_eq!(
            parse_port_list("1000-2000,3000"),
            Some(vec![1000..=2000, 3000..=3000])
        );
        assert_eq!(parse_port_list("80"), Some(vec![80..=80]));
        assert_eq!(parse_port_list("x"), None);
        assert_eq!(parse_port_list("1-70000"), None);
    }

    #[test]
    fn the_tunnel_scope_sees_every_rule_that_can_catch_tunnel_traffic() {
        let scope = TunnelScope::new(
            "wg-proton",
            &[member("WAN", "wg-proton"), member("LAN", "bridge")],
        );
        for (interface, list, catches) in [
            (Some("wg-proton"), None, true),
            (Some("ether1"), None, false),
            (Some("!ether1"), None, true),
            (Some("!wg-proton"), None, false),
            (None, Some("WAN"), true),
            (None, Some("LAN"), false),
            (None, Some("!LAN"), true),
            (None, Some("!WAN"), false),
            (None, Some("all"), true),
            (None, None, true),
            (Some("wg-proton"), Some("LAN"), false),
        ] {
            assert_eq!(
                scope.catches(&rule(interface, list, "1")),
                catches,
                "in-interface={interface:?} in-interface-list={list:?}"
            );
        }
    }

    #[test]
    fn services_and_foreign_ports_are_used_for_the_right_protocols() {
        let mut view = RouterView::new();
        view.add_foreign_rule(&rule(None, None, "40000-40002,40004"));
        view.add_services(&[
            ServiceInfo {
                name: "winbox".into(),
                port: 8291,
                disabled: false,
            },
            ServiceInfo {
                name: "www-ssl".into(),
                port: 443,
                disabled: true,
            },
        ]);
        assert!(view.is_used(Protocol::Tcp, 40001));
        assert!(!view.is_used(Protocol::Udp, 40001), "the rule is tcp only");
        assert!(!view.is_used(Protocol::Tcp, 40003));
        assert!(view.is_used(Protocol::Tcp, 8291) && view.is_used(Protocol::Udp, 8291));
        assert!(!view.is_used(Protocol::Tcp, 443), "disabled service");
    }

    #[test]
    fn foreign_targets_answer_c35() {
        let mut view = RouterView::new();
        view.add_foreign_rule(&NatRule {
            protocol: Some("tcp".into()),
            dst_port: Some("2222".into()),
            to_addresses: Some("192.168.88.10".into()),
            to_ports: Some("22".into()),
            ..NatRule::default()
        });
        let c = Ipv4Addr::new(192, 168, 88, 10);
        assert!(view.foreign_target(Protocol::Tcp, c, Some(22)));
        assert!(view.foreign_target(Protocol::Tcp, c, None));
        assert!(!view.foreign_target(Protocol::Udp, c, Some(22)));
        assert!(!view.foreign_target(Protocol::Tcp, c, Some(2222)));
        assert!(view.is_used(Protocol::Tcp, 2222));
    }

    #[test]
    fn choice_prefers_suggested_then_internal_then_next_fit_in_the_range() {
        let range = 40000..=40003;
        let mut cursor = 40000;
        let none = |_: Protocol, _: u16| false;
        let p = |pref: &[u16], cursor: &mut u32, used: &dyn Fn(Protocol, u16) -> bool| {
            choose_port(Protocol::Udp, pref, &range, cursor, used)
        };
        assert_eq!(p(&[5000, 6881], &mut cursor, &none), Some(5000));
        assert_eq!(
            p(&[5000, 6881], &mut cursor, &|_, port| port == 5000),
            Some(6881)
        );
        assert_eq!(
            p(&[80, 443], &mut cursor, &none),
            Some(40000),
            "below 1024 skipped"
        );
        assert_eq!(p(&[], &mut cursor, &none), Some(40001), "next fit");
        assert_eq!(
            p(&[], &mut cursor, &|_, port| port != 40000),
            Some(40000),
            "wraps"
        );
        assert_eq!(p(&[], &mut cursor, &|_, _| true), None, "exhausted");
    }
}
