//! The comment on our rules: the ownership marker, and what a restart needs.
//!
//! Format (ASCII, one line). Version 2, written now:
//!
//! ```text
//! double-natpmp:v2 <protocol> <client>:<internal port> r=<router port> l=<lifetime>[ e=<external port>][ k=snat][ o=twin]
//! double-natpmp:v2 tcp 192.168.88.10:6881 r=40001 l=3600
//! double-natpmp:v2 tcp 192.168.88.10:6881 r=40001 l=3600 e=51234
//! double-natpmp:v2 udp 192.168.88.10:6881 r=40001 l=3600 k=snat
//! double-natpmp:v2 udp 192.168.88.10:51413 r=51413 l=60 o=twin
//! ```
//!
//! * `l=` is the lifetime the client asked for (capped at MAX_LIFETIME): a restart gives an
//!   adopted lease that long for its client to come back. `e=` is the external port the
//!   gateway last gave, written when the gateway moved the mapping (the add cannot carry it:
//!   the rule is made before, or while, the gateway answers); a restart suggests it.
//! * `k=` is the kind of rule: absent on the dst-nat rule (so every comment written before
//!   src-nat rules existed still reads the same), `k=snat` on the src-nat rule of UDP_SRCNAT.
//! * `o=twin` marks the rules of a UDP twin that MAP_BOTH_PROTOCOLS made for the TCP mapping
//!   of the same client and internal port; a restart adopts it as that mapping's twin.
//! * Version 1 (`double-natpmp:v1 … r=<router port>`, no restart data) is still read.
//! * `double-natpmp:` is the ownership marker. A rule whose comment starts with it is ours, even
//!   when the rest does not parse (a newer version wrote it): the reconciler may remove it when
//!   no live lease owns it.
//! * Rules left by the original Go tool carry comments starting with `double-natpmp-`; we do not
//!   know the rest of their format, so they are recognised as ours but carry no data.
//! * Dynamic rules (made by a router service) and rules without the marker are never ours and are
//!   never touched.
//!
//! A rule's identity is its key, router port and kind ([`RuleComment::same_rule`]); the
//! restart data (and the twin mark, when the client takes its twin over) may change over the
//! rule's life, so lookups match on identity, never on the whole text.

use std::net::Ipv4Addr;

use crate::mapping::config::MappingConfig;
use crate::mapping::router::seam::{DstNatRule, RuleId, SrcNatRule};
use crate::mapping::store::key::MappingKey;
use double_natpmp_codec::protocol::Protocol;

/// Which kind of router rule a lease owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleKind {
    /// The dst-nat rule: tunnel traffic to router port R goes to the client's internal port.
    DstNat,
    /// The src-nat rule (UDP_SRCNAT): UDP the client sends from its internal port out of the
    /// tunnel leaves from router port R (RFC 6886 §3.9, C-42).
    SrcNat,
}

impl RuleKind {
    /// `dst-nat` or `src-nat`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::DstNat => "dst-nat",
            RuleKind::SrcNat => "src-nat",
        }
    }
}

/// The rules a live mapping of `key` owns on the router under `config`: its dst-nat rule, and
/// for UDP with UDP_SRCNAT its src-nat rule.
pub(crate) fn wanted_rules(config: &MappingConfig, key: &MappingKey) -> &'static [RuleKind] {
    if config.udp_srcnat && key.protocol == Protocol::Udp {
        &[RuleKind::DstNat, RuleKind::SrcNat]
    } else {
        &[RuleKind::DstNat]
    }
}

/// The marker every comment of ours starts with.
pub(crate) const MARKER: &str = "double-natpmp:";
/// The prefix of version-1 comments.
pub(crate) const V1_PREFIX: &str = "double-natpmp:v1 ";
/// The prefix of version-2 comments.
pub(crate) const V2_PREFIX: &str = "double-natpmp:v2 ";
/// The comment prefix of rules made by the original tool (recognised as ours).
pub(crate) const ORIGINAL_TOOL_PREFIX: &str = "double-natpmp-";

/// The data a comment of ours carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleComment {
    /// The mapping the rule belongs to.
    pub key: MappingKey,
    /// The router port R (the rule's dst-port).
    pub router_port: u16,
    /// The lifetime the client asked for, capped (version 2).
    pub lifetime: Option<u32>,
    /// The external port the gateway last gave (version 2, once known).
    pub external_port: Option<u16>,
    /// Which of the mapping's rules this is (`k=`).
    pub kind: RuleKind,
    /// The rule belongs to a UDP twin of a TCP mapping (`o=twin`).
    pub twin: bool,
}

impl RuleComment {
    /// A version-2 comment without an external port.
    pub fn new(key: MappingKey, router_port: u16, lifetime: u32) -> RuleComment {
        RuleComment {
            key,
            router_port,
            lifetime: Some(lifetime),
            external_port: None,
            kind: RuleKind::DstNat,
            twin: false,
        }
    }

    /// The comment of this mapping's rule of `kind` (a src-nat rule carries no `e=`).
    pub fn for_kind(&self, kind: RuleKind) -> RuleComment {
        RuleComment {
            kind,
            external_port: self.external_port.filter(|_| kind == RuleKind::DstNat),
            ..*self
        }
    }

    /// Whether both name the same rule (key, router port and kind), whatever the restart data.
    pub fn same_rule(&self, other: &RuleComment) -> bool {
        self.key == other.key && self.router_port == other.router_port && self.kind == other.kind
    }

    /// The comment text to put on the rule: version 2 when it carries a lifetime.
    pub fn encode(&self) -> String {
        let head = format!(
            "{} {}:{} r={}",
            self.key.protocol, self.key.client, self.key.internal_port, self.router_port
        );
        let Some(l) = self.lifetime else {
            return format!("{V1_PREFIX}{head}");
        };
        let mut text = format!("{V2_PREFIX}{head} l={l}");
        if let Some(e) = self.external_port {
            text.push_str(&format!(" e={e}"));
        }
        if self.kind == RuleKind::SrcNat {
            text.push_str(" k=snat");
        }
        if self.twin {
            text.push_str(" o=twin");
        }
        text
    }

    /// Reads a version-1 or version-2 comment; `None` for anything else.
    pub fn parse(comment: &str) -> Option<RuleComment> {
        let (rest, v2) = match comment.strip_prefix(V2_PREFIX) {
            Some(rest) => (rest, true),
            None => (comment.strip_prefix(V1_PREFIX)?, false),
        };
        let mut parts = rest.split(' ').peekable();
        let protocol = Protocol::parse(parts.next()?)?;
        let (client, port) = parts.next()?.split_once(':')?;
        let client: Ipv4Addr = client.parse().ok()?;
        let internal_port: u16 = port.parse().ok()?;
        let router_port: u16 = parts.next()?.strip_prefix("r=")?.parse().ok()?;
        let (mut lifetime, mut external_port) = (None, None);
        let (mut kind, mut twin) = (RuleKind::DstNat, false);
        if v2 {
            lifetime = Some(parts.next()?.strip_prefix("l=")?.parse().ok()?);
            // The optional words, each at most once and in this order.
            if let Some(e) = parts.next_if(|p| p.starts_with("e=")) {
                external_port = Some(e.strip_prefix("e=")?.parse().ok()?);
            }
            if parts.next_if(|p| *p == "k=snat").is_some() {
                kind = RuleKind::SrcNat;
            }
            if parts.next_if(|p| *p == "o=twin").is_some() {
                twin = true;
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(RuleComment {
            key: MappingKey {
                client,
                protocol,
                internal_port,
            },
            router_port,
            lifetime,
            external_port,
            kind,
            twin,
        })
    }
}

/// The dst-nat rule of `key` at router port R, its comment carrying `comment`'s data.
pub(crate) fn dst_nat_rule(config: &MappingConfig, comment: &RuleComment) -> DstNatRule {
    let key = comment.key;
    DstNatRule {
        protocol: key.protocol,
        in_interface: config.in_interface.clone(),
        dst_port: comment.router_port,
        to_address: key.client,
        to_port: key.internal_port,
        comment: comment.encode(),
    }
}

/// The src-nat rule of a UDP mapping (`comment` is its `k=snat` comment), placed before
/// `place_before` (see `srcnat.rs` for how that rule is chosen).
pub(crate) fn src_nat_rule(
    config: &MappingConfig,
    comment: &RuleComment,
    place_before: Option<RuleId>,
) -> SrcNatRule {
    let key = comment.key;
    SrcNatRule {
        protocol: key.protocol,
        out_interface: config.in_interface.clone(),
        src_address: key.client,
        src_port: key.internal_port,
        to_port: comment.router_port,
        place_before,
        comment: comment.encode(),
    }
}

/// Who owns a NAT rule, judged from its comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RuleOwner {
    /// Ours; the data if the comment is one we can read.
    Ours(Option<RuleComment>),
    /// Left by the original tool (`double-natpmp-…`): ours, without data.
    OriginalTool,
    /// Somebody else's (no marker, or a dynamic rule): never touched.
    Foreign,
}

impl RuleOwner {
    /// Classifies a rule by its comment and `dynamic` flag.
    pub(crate) fn of(comment: Option<&str>, dynamic: bool) -> RuleOwner {
        let Some(comment) = comment else {
            return RuleOwner::Foreign;
        };
        if dynamic {
            RuleOwner::Foreign
        } else if comment.starts_with(MARKER) {
            RuleOwner::Ours(RuleComment::parse(comment))
        } else if comment.starts_with(ORIGINAL_TOOL_PREFIX) {
            RuleOwner::OriginalTool
        } else {
            RuleOwner::Foreign
        }
    }

    /// Ours or the original tool's.
    pub(crate) fn is_ours(&self) -> bool {
        !matches!(self, RuleOwner::Foreign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RuleComment {
        RuleComment {
            key: MappingKey {
                client: Ipv4Addr::new(192, 168, 88, 10),
                protocol: Protocol::Tcp,
                internal_port: 6881,
            },
            router_port: 40001,
            lifetime: None,
            external_port: None,
            kind: RuleKind::DstNat,
            twin: false,
        }
    }

    #[test]
    fn comment_round_trips_and_is_ascii() {
        let text = sample().encode();
        assert_eq!(text, "double-natpmp:v1 tcp 192.168.88.10:6881 r=40001");
        assert!(text.is_ascii());
        assert_eq!(RuleComment::parse(&text), Some(sample()));
    }

    #[test]
    fn ownership_is_judged_by_marker_and_dynamic_flag() {
        let ours = sample().encode();
        assert_eq!(
            RuleOwner::of(Some(&ours), false),
            RuleOwner::Ours(Some(sample()))
        );
        assert_eq!(
            RuleOwner::of(Some("double-natpmp:v9 something new"), false),
            RuleOwner::Ours(None)
        );
        assert_eq!(
            RuleOwner::of(Some("double-natpmp-udp-192.168.88.2-6881"), false),
            RuleOwner::OriginalTool
        );
        assert_eq!(
            RuleOwner::of(Some("my game server"), false),
            RuleOwner::Foreign
        );
        assert_eq!(RuleOwner::of(None, false), RuleOwner::Foreign);
        assert_eq!(RuleOwner::of(Some(&ours), true), RuleOwner::Foreign);
    }

    #[test]
    fn malformed_v1_comments_do_not_parse() {
        for bad in [
            "double-natpmp:v1 sctp 192.168.88.10:6881 r=40001",
            "double-natpmp:v1 tcp 192.168.88.10 r=40001",
            "double-natpmp:v1 tcp 192.168.88.10:6881 r=70000",
            "double-natpmp:v1 tcp 192.168.88.10:6881 r=1 extra",
            "double-natpmp:v1 tcp 192.168.88.10:6881",
        ] {
            assert_eq!(RuleComment::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn version_2_carries_the_restart_data_and_identity_ignores_it() {
        let v2 = RuleComment::new(sample().key, 40001, 3600);
        assert_eq!(
            v2.encode(),
            "double-natpmp:v2 tcp 192.168.88.10:6881 r=40001 l=3600"
        );
        let moved = RuleComment {
            external_port: Some(51234),
            ..v2
        };
        let text = moved.encode();
        assert_eq!(
            text,
            "double-natpmp:v2 tcp 192.168.88.10:6881 r=40001 l=3600 e=51234"
        );
        assert_eq!(RuleComment::parse(&text), Some(moved));
        assert!(moved.same_rule(&v2) && moved.same_rule(&sample()));
        assert!(!moved.same_rule(&RuleComment::new(sample().key, 40002, 3600)));
        for bad in [
            "double-natpmp:v2 tcp 192.168.88.10:6881 r=40001",
            "double-natpmp:v2 tcp 192.168.88.10:6881 r=40001 l=x",
            "double-natpmp:v2 tcp 192.168.88.10:6881 r=40001 l=60 x=1",
            "double-natpmp:v2 tcp 192.168.88.10:6881 r=40001 l=60 e=1 more",
        ] {
            assert_eq!(RuleComment::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_kind_and_the_twin_mark_are_written_and_read_and_old_comments_read_as_before() {
        let dst = RuleComment::new(
            MappingKey {
                protocol: Protocol::Udp,
                ..sample().key
            },
            40001,
            3600,
        );
        let snat = RuleComment {
            external_port: Some(51234),
            ..dst
        }
        .for_kind(RuleKind::SrcNat);
        assert_eq!(
            snat.encode(),
            "double-natpmp:v2 udp 192.168.88.10:6881 r=40001 l=3600 k=snat"
        );
        assert_eq!(RuleComment::parse(&snat.encode()), Some(snat));
        assert!(!snat.same_rule(&dst), "the kind is part of the identity");
        let twin = RuleComment { twin: true, ..dst };
        let text = RuleComment {
            external_port: Some(7),
            ..twin
        }
        .encode();
        assert_eq!(
            text,
            "double-natpmp:v2 udp 192.168.88.10:6881 r=40001 l=3600 e=7 o=twin"
        );
        let read = RuleComment::parse(&text).unwrap();
        assert!(read.twin && read.kind == RuleKind::DstNat && read.same_rule(&dst));
        // A comment written before kinds existed is a dst-nat rule, not a twin.
        let old =
            RuleComment::parse("double-natpmp:v2 tcp 192.168.88.10:6881 r=40001 l=60 e=9").unwrap();
        assert_eq!((old.kind, old.twin), (RuleKind::DstNat, false));
        for bad in [
            "double-natpmp:v2 udp 192.168.88.10:6881 r=40001 l=60 k=dnat",
            "double-natpmp:v2 udp 192.168.88.10:6881 r=40001 l=60 o=twin k=snat",
            "double-natpmp:v2 udp 192.168.88.10:6881 r=40001 l=60 k=snat e=1",
            "double-natpmp:v2 udp 192.168.88.10:6881 r=40001 l=60 k=snat k=snat",
        ] {
            assert_eq!(RuleComment::parse(bad), None, "{bad}");
        }
    }
}
