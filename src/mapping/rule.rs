//! The comment on our dst-nat rules: the ownership marker, and what a restart needs.
//!
//! Format (ASCII, one line, version 1):
//!
//! ```text
//! double-natpmp:v1 <protocol> <client>:<internal port> r=<router port>
//! double-natpmp:v1 tcp 192.168.88.10:6881 r=40001
//! ```
//!
//! * `double-natpmp:` is the ownership marker. A rule whose comment starts with it is ours, even
//!   when the rest does not parse (a newer version wrote it): the reconciler may remove it when
//!   no live lease owns it.
//! * Rules left by the original Go tool carry comments starting with `double-natpmp-`; we do not
//!   know the rest of their format, so they are recognised as ours but carry no data.
//! * Dynamic rules (made by a router service) and rules without the marker are never ours and are
//!   never touched.
//!
//! The router port repeats the rule's `dst-port` so a comment alone identifies the mapping.

use std::net::Ipv4Addr;

use crate::mapping::config::MappingConfig;
use crate::mapping::lease::{MappingKey, RuleKind};
use crate::natpmp::wire::Protocol;
use crate::routeros::api::DstNatRule;

/// The marker every comment of ours starts with.
pub const MARKER: &str = "double-natpmp:";
/// The prefix of version-1 comments.
pub const V1_PREFIX: &str = "double-natpmp:v1 ";
/// The comment prefix of rules made by the original tool (recognised as ours).
pub const ORIGINAL_TOOL_PREFIX: &str = "double-natpmp-";

/// The data a version-1 comment carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleComment {
    /// The mapping the rule belongs to.
    pub key: MappingKey,
    /// The router port R (the rule's dst-port).
    pub router_port: u16,
}

impl RuleComment {
    /// The comment of the rule of `kind` that the lease of `key` at `router_port` owns.
    pub fn for_rule(key: MappingKey, router_port: u16, kind: RuleKind) -> String {
        match kind {
            RuleKind::DstNat => RuleComment { key, router_port }.encode(),
        }
    }

    /// The comment text to put on the rule.
    pub fn encode(&self) -> String {
        format!(
            "{V1_PREFIX}{} {}:{} r={}",
            self.key.protocol, self.key.client, self.key.internal_port, self.router_port
        )
    }

    /// Reads a version-1 comment; `None` for anything else.
    pub fn parse(comment: &str) -> Option<RuleComment> {
        let rest = comment.strip_prefix(V1_PREFIX)?;
        let mut parts = rest.split(' ');
        let protocol = Protocol::parse(parts.next()?)?;
        let (client, port) = parts.next()?.split_once(':')?;
        let client: Ipv4Addr = client.parse().ok()?;
        let internal_port: u16 = port.parse().ok()?;
        let router_port: u16 = parts.next()?.strip_prefix("r=")?.parse().ok()?;
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
        })
    }
}

/// The dst-nat rule of `key` at router port R.
pub fn dst_nat_rule(config: &MappingConfig, key: MappingKey, router_port: u16) -> DstNatRule {
    DstNatRule {
        protocol: key.protocol,
        in_interface: config.in_interface.clone(),
        dst_port: router_port,
        to_address: key.client,
        to_port: key.internal_port,
        comment: RuleComment::for_rule(key, router_port, RuleKind::DstNat),
    }
}

/// Who owns a dst-nat rule, judged from its comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleOwner {
    /// Ours; the data if the comment is version 1.
    Ours(Option<RuleComment>),
    /// Left by the original tool (`double-natpmp-…`): ours, without data.
    OriginalTool,
    /// Somebody else's (no marker, or a dynamic rule): never touched.
    Foreign,
}

impl RuleOwner {
    /// Classifies a rule by its comment and `dynamic` flag.
    pub fn of(comment: Option<&str>, dynamic: bool) -> RuleOwner {
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
    pub fn is_ours(&self) -> bool {
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
}
