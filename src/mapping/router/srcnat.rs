//! The order of the `srcnat` chain for UDP_SRCNAT (RFC 6886 §3.9, C-42); pure, no I/O.
//!
//! NAT rules are tried top to bottom and the first that matches a connection's first packet
//! decides. A mapped client's outbound UDP leaves from the router port only if our src-nat rule
//! comes before every rule that would catch that traffic otherwise: on a MikroTik that is the
//! masquerade of the WAN (`out-interface-list=WAN`) or of the VPN interface itself. So a new
//! src-nat rule is added with `place-before=<id>` of the first such rule ([`anchor`]), found
//! with one `print ?chain=srcnat` right before the add (ids are handles of the moment, so an
//! id is never kept). `check` and the reconciler use [`shadowed`] to tell when another rule
//! comes first anyway (an administrator moved rules, or added a masquerade on top).
//!
//! A rule *catches* tunnel-bound UDP of a LAN client when it is in the `srcnat` chain, not
//! disabled, for UDP or any protocol, its `out-interface`/`out-interface-list` let traffic out
//! of the VPN interface through (the same reading as the dst-nat side's in-interface, see
//! `ports.rs`), and its action ends the chain (anything but `passthrough` and `log`). Source
//! matchers are not read when choosing the anchor (placing ours too early is harmless, too
//! late is not); [`shadowed`] reads `src-address` and `src-port` for one client, so it only
//! names rules that really take that client's traffic. Dynamic rules are never anchors (they
//! cannot be placed around).

use std::net::Ipv4Addr;

use crate::cidr::Cidr;
use crate::mapping::router::rule::{RuleComment, RuleKind, RuleOwner};
use crate::mapping::router::seam::{ListMember, NatRule, RuleId};
use crate::mapping::store::ports::{parse_port_list, TunnelScope};

/// Actions that do not end the chain: a rule with one of them never takes a packet away.
const CONTINUING: &[&str] = &["passthrough", "log"];

/// Which src-nat rules can catch traffic that leaves through the VPN interface.
#[derive(Clone, Debug)]
pub(crate) struct OutScope {
    scope: TunnelScope,
}

impl OutScope {
    /// The scope of `interface`, given every `/interface/list/member` row.
    pub(crate) fn new(interface: &str, members: &[ListMember]) -> OutScope {
        OutScope {
            scope: TunnelScope::new(interface, members),
        }
    }

    /// Whether `rule` takes UDP leaving through the interface (any LAN source).
    pub(crate) fn catches(&self, rule: &NatRule) -> bool {
        if rule.chain.as_deref() != Some("srcnat") || rule.disabled {
            return false;
        }
        if rule
            .action
            .as_deref()
            .is_some_and(|a| CONTINUING.contains(&a))
        {
            return false;
        }
        let udp = match rule.protocol.as_deref().map(str::trim) {
            None | Some("") => true,
            Some(p) => match p.strip_prefix('!') {
                Some(other) => other != "udp",
                None => p == "udp",
            },
        };
        // The out-interface matchers, read as the dst-nat side reads its in-interface ones.
        udp && self.scope.matches(
            rule.out_interface.as_deref(),
            rule.out_interface_list.as_deref(),
        )
    }

    /// Whether `rule` takes UDP that `client` sends from `port` through the interface.
    pub(crate) fn catches_client(&self, rule: &NatRule, client: Ipv4Addr, port: u16) -> bool {
        self.catches(rule)
            && rule
                .src_address
                .as_deref()
                .is_none_or(|a| address_matches(a, client))
            && rule
                .src_port
                .as_deref()
                .is_none_or(|p| port_matches(p, port))
    }
}

/// Whether a RouterOS `src-address` (`a.b.c.d`, `a.b.c.d/n`, `a.b.c.d-e.f.g.h`, `!…`) matches
/// `ip`; an unreadable one is taken to match (it may).
fn address_matches(text: &str, ip: Ipv4Addr) -> bool {
    let (negated, body) = match text.trim().strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text.trim()),
    };
    let inside = if let Some((a, b)) = body.split_once('-') {
        match (a.trim().parse::<Ipv4Addr>(), b.trim().parse::<Ipv4Addr>()) {
            (Ok(a), Ok(b)) => (u32::from(a)..=u32::from(b)).contains(&u32::from(ip)),
            _ => return true,
        }
    } else {
        match body.parse::<Cidr>() {
            Ok(net) => net.contains(ip),
            Err(_) => return true,
        }
    };
    inside != negated
}

/// Whether a RouterOS port list (`80`, `1000-2000,3000`, `!…`) holds `port`; an unreadable one
/// is taken to match.
fn port_matches(text: &str, port: u16) -> bool {
    let (negated, body) = match text.trim().strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text.trim()),
    };
    match parse_port_list(body) {
        Some(ranges) => ranges.iter().any(|r| r.contains(&port)) != negated,
        None => true,
    }
}

/// The rule a new src-nat rule of ours goes before: the first rule of the `srcnat` listing
/// (in rule order) that is not ours, not dynamic, and catches tunnel-bound UDP. `None` when no
/// rule does (the new rule is appended).
pub(crate) fn anchor<'a>(rules: &'a [NatRule], scope: &OutScope) -> Option<&'a RuleId> {
    rules
        .iter()
        .filter(|r| !r.dynamic && !RuleOwner::of(r.comment.as_deref(), r.dynamic).is_ours())
        .find(|r| scope.catches(r))
        .and_then(|r| r.id.as_ref())
}

/// A src-nat rule of ours that comes too late.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shadowed {
    /// Our rule's comment.
    pub ours: RuleComment,
    /// Our rule's id.
    pub ours_id: Option<RuleId>,
    /// The rule above it that takes the client's traffic first.
    pub by: NatRule,
}

/// Every src-nat rule of ours in `rules` (the `srcnat` listing, in rule order) that a rule
/// above it takes the traffic away from: what leaves from the client's port is caught there,
/// not by ours.
pub(crate) fn shadowed(rules: &[NatRule], scope: &OutScope) -> Vec<Shadowed> {
    let mut out = Vec::new();
    // The rules seen so far that are not ours and take tunnel-bound UDP from someone: one
    // pass, each comment read once.
    let mut above: Vec<&NatRule> = Vec::new();
    for rule in rules {
        let RuleOwner::Ours(Some(ours)) = RuleOwner::of(rule.comment.as_deref(), rule.dynamic)
        else {
            if !RuleOwner::of(rule.comment.as_deref(), rule.dynamic).is_ours()
                && scope.catches(rule)
            {
                above.push(rule);
            }
            continue;
        };
        if ours.kind != RuleKind::SrcNat || rule.disabled {
            continue;
        }
        let client = ours.key.client;
        let port = ours.key.internal_port;
        let first = above.iter().find(|r| scope.catches_client(r, client, port));
        if let Some(by) = first {
            out.push(Shadowed {
                ours,
                ours_id: rule.id.clone(),
                by: (*by).clone(),
            });
        }
    }
    out
}

/// A rule in a few words, as a router owner knows it from `/ip firewall nat print`.
pub(crate) fn describe(rule: &NatRule) -> String {
    let mut words = vec![format!(
        "{} action={}",
        rule.id.as_ref().map_or("(no id)", |i| i.as_str()),
        rule.action.as_deref().unwrap_or("accept")
    )];
    for (name, value) in [
        ("out-interface", &rule.out_interface),
        ("out-interface-list", &rule.out_interface_list),
        ("src-address", &rule.src_address),
        ("protocol", &rule.protocol),
    ] {
        if let Some(v) = value {
            words.push(format!("{name}={v}"));
        }
    }
    if let Some(c) = &rule.comment {
        words.push(format!("comment=\"{c}\""));
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::store::key::MappingKey;
    use double_natpmp_codec::protocol::Protocol;

    fn srcnat(id: &str, pairs: &[(&str, &str)]) -> NatRule {
        let mut r = NatRule {
            id: Some(RuleId::new(id)),
            chain: Some("srcnat".into()),
            action: Some("masquerade".into()),
            ..NatRule::default()
        };
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "action" => r.action = v,
                "protocol" => r.protocol = v,
                "out-interface" => r.out_interface = v,
                "out-interface-list" => r.out_interface_list = v,
                "src-address" => r.src_address = v,
                "src-port" => r.src_port = v,
                "comment" => r.comment = v,
                "disabled" => r.disabled = true,
                "dynamic" => r.dynamic = true,
                other => panic!("{other}"),
            }
        }
        r
    }

    fn ours(id: &str, port: u16) -> NatRule {
        let c = RuleComment::new(
            MappingKey {
                client: Ipv4Addr::new(192, 168, 88, 10),
                protocol: Protocol::Udp,
                internal_port: port,
            },
            40001,
            60,
        )
        .for_kind(RuleKind::SrcNat);
        srcnat(
            id,
            &[
                ("out-interface", "wg-proton"),
                ("protocol", "udp"),
                ("src-address", "192.168.88.10"),
                ("comment", &c.encode()),
            ],
        )
    }

    fn scope() -> OutScope {
        OutScope::new(
            "wg-proton",
            &[ListMember {
                list: "WAN".into(),
                interface: "wg-proton".into(),
            }],
        )
    }

    #[test]
    fn the_anchor_is_the_first_foreign_rule_that_takes_tunnel_bound_udp() {
        let rules = vec![
            srcnat("*1", &[("dynamic", "")]),
            srcnat("*2", &[("out-interface", "ether1")]),
            srcnat("*3", &[("protocol", "tcp")]),
            srcnat("*4", &[("action", "passthrough")]),
            srcnat("*5", &[("disabled", "")]),
            ours("*6", 6881),
            srcnat("*7", &[("out-interface-list", "WAN")]),
            srcnat("*8", &[("out-interface", "wg-proton")]),
        ];
        assert_eq!(anchor(&rules, &scope()), Some(&RuleId::new("*7")));
        assert_eq!(anchor(&rules[..6], &scope()), None);
        // A masquerade of every interface, or of "not the WAN port", catches the tunnel too.
        let all = [srcnat("*9", &[])];
        assert_eq!(anchor(&all, &scope()), Some(&RuleId::new("*9")));
        let not_ether = [srcnat("*A", &[("out-interface", "!ether1")])];
        assert_eq!(anchor(&not_ether, &scope()), Some(&RuleId::new("*A")));
    }

    #[test]
    fn a_rule_above_ours_that_takes_the_clients_traffic_shadows_it() {
        let masq = srcnat("*1", &[("out-interface-list", "WAN")]);
        let rules = vec![masq.clone(), ours("*2", 6881)];
        let found = shadowed(&rules, &scope());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].by, masq);
        assert_eq!(found[0].ours_id, Some(RuleId::new("*2")));
        assert!(shadowed(&[ours("*2", 6881), masq.clone()], &scope()).is_empty());
        // Rules for other sources or ports do not take this client's traffic.
        let other_net = srcnat("*3", &[("src-address", "10.0.0.0/8")]);
        let other_port = srcnat("*4", &[("src-port", "1-1000")]);
        let not_client = srcnat("*5", &[("src-address", "!192.168.88.0/24")]);
        assert!(shadowed(
            &[other_net, other_port, not_client, ours("*2", 6881)],
            &scope()
        )
        .is_empty());
        let range = srcnat("*6", &[("src-address", "192.168.88.2-192.168.88.20")]);
        assert_eq!(shadowed(&[range, ours("*2", 6881)], &scope()).len(), 1);
    }

    #[test]
    fn describe_names_what_the_owner_sees() {
        let r = srcnat(
            "*1",
            &[
                ("out-interface-list", "WAN"),
                ("comment", "defconf: masquerade"),
            ],
        );
        assert_eq!(
            describe(&r),
            "*1 action=masquerade out-interface-list=WAN comment=\"defconf: masquerade\""
        );
    }
}
