//! A mapping's identity ([`MappingKey`]) and what it owns on both layers ([`Lease`]), with the
//! lifetime arithmetic of C-30.

use std::time::Duration;

use tokio::time::Instant;

use crate::mapping::router::rule::RuleComment;
pub(crate) use crate::mapping::router::rule::RuleKind;
use crate::mapping::router::seam::RuleId;
pub use crate::mapping::store::key::MappingKey;

/// Where a mapping came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A NAT-PMP request from a LAN client.
    #[default]
    NatPmp,
    /// The HTTP API (a forward for a program that cannot speak NAT-PMP).
    Api,
    /// A static reservation from the configuration: kept alive by the daemon, never expires.
    Static,
    /// The UDP twin of this TCP mapping (MAP_BOTH_PROTOCOLS): made, kept, deleted and ended
    /// with it; never expires by itself.
    Twin(MappingKey),
    /// The reachability self-test's own short-lived mapping, for the daemon's own address
    /// (REACHABILITY_CHECK): made, probed and deleted by one check.
    SelfTest,
}

impl Origin {
    /// `natpmp`, `api`, `static`, `twin` or `selftest`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::NatPmp => "natpmp",
            Origin::Api => "api",
            Origin::Static => "static",
            Origin::Twin(_) => "twin",
            Origin::SelfTest => "selftest",
        }
    }

    /// The TCP mapping this is the twin of, if it is one.
    pub fn twin_of(self) -> Option<MappingKey> {
        match self {
            Origin::Twin(parent) => Some(parent),
            _ => None,
        }
    }

    /// Whether a lease of this origin ends when its client stops renewing it (a static one
    /// never does; a twin ends with its TCP mapping).
    pub fn expires(self) -> bool {
        matches!(self, Origin::NatPmp | Origin::Api | Origin::SelfTest)
    }

    /// Whether an administrator made it: a forward of the API (`API_TOKEN`) or a static
    /// mapping (STATIC_MAPPINGS).
    pub fn by_administrator(self) -> bool {
        matches!(self, Origin::Api | Origin::Static)
    }

    /// Whether a request from this origin may delete, or shorten, a lease of origin `made`:
    /// always, except that a NAT-PMP request never undoes what an administrator made (a
    /// forged or careless delete from the LAN must not end an administrator's forward).
    pub fn may_undo(self, made: Origin) -> bool {
        !(self == Origin::NatPmp && made.by_administrator())
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One router rule a lease owns. The comment (from the lease's key, router port and the kind)
/// is what makes the rule ours; the id is only a handle, re-bound by comment whenever the
/// router shows another one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRule {
    /// What the rule does.
    pub kind: RuleKind,
    /// Its RouterOS `.id` as last seen.
    pub id: RuleId,
}

/// The router rules a lease owns, one of each kind: the dst-nat rule, and the src-nat rule of
/// a UDP mapping under UDP_SRCNAT. The usual single rule's id is kept inline and the rare
/// second one boxed, so a lease makes no heap allocation of its own (10,000 leases would
/// otherwise scatter 10,000 small allocations between those of passing requests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    dst: Option<RuleId>,
    src: Option<Box<RuleId>>,
}

impl Rules {
    /// No rules yet.
    pub fn new() -> Rules {
        Rules::default()
    }

    /// Sets the id of the rule of `kind` (a lease has one of each kind at most).
    pub fn set(&mut self, kind: RuleKind, id: RuleId) {
        match kind {
            RuleKind::DstNat => self.dst = Some(id),
            RuleKind::SrcNat => self.src = Some(Box::new(id)),
        }
    }

    /// The id of the rule of `kind`, as last seen.
    pub fn get(&self, kind: RuleKind) -> Option<&RuleId> {
        match kind {
            RuleKind::DstNat => self.dst.as_ref(),
            RuleKind::SrcNat => self.src.as_deref(),
        }
    }

    /// The rules, dst-nat first (the order they are made in; teardown goes backwards).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = OwnedRule> + '_ {
        [RuleKind::DstNat, RuleKind::SrcNat]
            .into_iter()
            .filter_map(|kind| {
                self.get(kind).map(|id| OwnedRule {
                    kind,
                    id: id.clone(),
                })
            })
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        usize::from(self.dst.is_some()) + usize::from(self.src.is_some())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FromIterator<OwnedRule> for Rules {
    fn from_iter<I: IntoIterator<Item = OwnedRule>>(rules: I) -> Rules {
        let mut out = Rules::new();
        for rule in rules {
            out.set(rule.kind, rule.id);
        }
        out
    }
}

/// What a live mapping owns: the router port R and its router rules, the upstream external
/// port E, and the lifetimes on both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Router port R: dst-port of our rule on the VPN interface, and the internal port we map
    /// upstream.
    pub router_port: u16,
    /// The router side: the dst-nat rule, and the src-nat rule of a UDP mapping under
    /// UDP_SRCNAT.
    pub rules: Rules,
    /// What the rules' comment says: identity (key, R) and the restart data on the router.
    pub comment: RuleComment,
    /// The external port E the VPN gateway mapped.
    pub external_port: u16,
    /// The lifetime last granted to the client (seconds).
    pub lifetime: u32,
    /// When both layers are removed unless the client renews: grant time + lifetime + grace.
    pub deadline: Instant,
    /// When the gateway's mapping lapses unless renewed: its grant time + its lifetime. Before
    /// it, a client's renewal is answered from the lease.
    pub upstream_deadline: Instant,
    /// The lifetime the gateway last granted (seconds).
    pub upstream_lifetime: u32,
    /// When the keeper renews the upstream mapping next (about half its lifetime after the
    /// grant, sooner after a failure).
    pub renew_at: Instant,
    /// Upstream renewals that failed in a row.
    pub keep_failures: u32,
    /// Where the mapping came from (a static one never expires; a twin names its TCP mapping).
    pub origin: Origin,
    /// Set by the lease table when the lease goes live; a lease made again for the same key
    /// gets another, so a task that looked at the old one can tell.
    pub serial: u64,
}

impl Lease {
    /// Takes a grant of the gateway made at `now`: the external port, the upstream lifetime and
    /// deadline, when to renew it, and no failed renewal since. (The client's side, its
    /// lifetime and deadline, is the caller's: a client's renewal, the keeper and a start's
    /// adoption each set it their way.)
    pub fn take_grant(&mut self, external_port: u16, upstream_lifetime: u32, now: Instant) {
        self.external_port = external_port;
        self.upstream_lifetime = upstream_lifetime;
        self.upstream_deadline = now + Duration::from_secs(u64::from(upstream_lifetime));
        self.renew_at = next_renewal(now, upstream_lifetime);
        self.keep_failures = 0;
    }

    /// The id of the lease's rule of `kind`, as last seen.
    pub fn rule_id(&self, kind: RuleKind) -> Option<&RuleId> {
        self.rules.get(kind)
    }

    /// The lifetime to ask for when a request from `by` asking `asked` seconds renews this
    /// lease: `asked`, or the lease's own lifetime when that is longer and `by` may not
    /// shorten the lease ([`Origin::may_undo`]).
    pub fn renewal_ask(&self, by: Origin, asked: u32) -> u32 {
        if by.may_undo(self.origin) {
            asked
        } else {
            asked.max(self.lifetime)
        }
    }

    /// The lifetime and deadline this lease holds after a request from `by` renewed it for
    /// `lifetime` seconds, until `deadline`: those, except that a lease `by` may not shorten
    /// ([`Origin::may_undo`]) keeps its own where they are longer.
    pub fn renewed(&self, by: Origin, lifetime: u32, deadline: Instant) -> (u32, Instant) {
        if by.may_undo(self.origin) {
            (lifetime, deadline)
        } else {
            (self.lifetime.max(lifetime), self.deadline.max(deadline))
        }
    }
}

/// A snapshot of one live mapping, for metrics, logs and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The mapping's identity.
    pub key: MappingKey,
    /// What it owns.
    pub lease: Lease,
}

/// The lifetime we ask the VPN gateway for: what the client asked, capped at `max_lifetime`
/// (never more than asked, C-30).
pub(crate) fn upstream_lifetime(asked: u32, max_lifetime: u32) -> u32 {
    asked.min(max_lifetime)
}

/// The lifetime we grant the client: min(asked, upstream grant, local cap) (C-30).
pub(crate) fn reply_lifetime(asked: u32, granted: u32, max_lifetime: u32) -> u32 {
    asked.min(granted).min(max_lifetime)
}

/// When to renew a mapping granted for `lifetime` seconds at `now`: at about half of it, with
/// ±10 % jitter; never sooner than 1 s.
pub(crate) fn next_renewal(now: Instant, lifetime: u32) -> Instant {
    let half_ms = u64::from(lifetime) * 500;
    let jitter = half_ms / 10;
    let ms = if jitter == 0 {
        half_ms
    } else {
        half_ms - jitter + fastrand::u64(0..=2 * jitter)
    };
    now + Duration::from_millis(ms.max(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c30_reply_lifetime_never_exceeds_what_was_asked() {
        assert_eq!(reply_lifetime(3600, 60, 3600), 60);
        assert_eq!(reply_lifetime(30, 60, 3600), 30);
        assert_eq!(reply_lifetime(7200, 7200, 3600), 3600);
        assert_eq!(upstream_lifetime(7200, 3600), 3600);
        assert_eq!(upstream_lifetime(30, 3600), 30);
    }

    #[test]
    fn c35_only_natpmp_is_kept_from_undoing_what_an_administrator_made() {
        use Origin::*;
        let parent = MappingKey {
            client: std::net::Ipv4Addr::new(192, 168, 88, 20),
            protocol: double_natpmp_codec::protocol::Protocol::Tcp,
            internal_port: 32400,
        };
        for made in [Api, Static] {
            assert!(!NatPmp.may_undo(made), "{made}");
            assert!(Api.may_undo(made), "the forwards API removes {made}");
        }
        for made in [NatPmp, Twin(parent)] {
            assert!(NatPmp.may_undo(made), "{made}");
        }
    }

    #[test]
    fn a_natpmp_renewal_keeps_an_administrators_longer_lifetime_and_deadline() {
        let now = Instant::now();
        let lease = |origin| Lease {
            router_port: 40000,
            rules: Rules::new(),
            comment: RuleComment::parse("double-natpmp:v1 tcp 192.168.88.20:32400 r=40000")
                .expect("comment"),
            external_port: 50000,
            lifetime: 3600,
            deadline: now + std::time::Duration::from_secs(3000),
            upstream_deadline: now,
            upstream_lifetime: 60,
            renew_at: now,
            keep_failures: 0,
            origin,
            serial: 1,
        };
        let short = now + std::time::Duration::from_secs(15);
        let forward = lease(Origin::Api);
        assert_eq!(
            forward.renewed(Origin::NatPmp, 10, short),
            (3600, forward.deadline)
        );
        assert_eq!(forward.renewal_ask(Origin::NatPmp, 10), 3600);
        assert_eq!(forward.renewed(Origin::Api, 10, short), (10, short));
        assert_eq!(forward.renewal_ask(Origin::Api, 10), 10);
        let own = lease(Origin::NatPmp);
        assert_eq!(own.renewed(Origin::NatPmp, 10, short), (10, short));
        assert_eq!(own.renewal_ask(Origin::NatPmp, 10), 10);
    }
}
