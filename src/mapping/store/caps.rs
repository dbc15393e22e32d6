//! [`Caps`]: MAX_MAPPINGS and MAX_MAPPINGS_PER_CLIENT as a new mapping meets them.
//!
//! Both caps count the creates still in flight as well as the live leases, and
//! `LeaseTable::reserve_within` checks them in the same step as it reserves the router port: a
//! burst of concurrent creates (each may take seconds while the gateway is slow) cannot
//! overshoot a cap that each of them checked before any had finished.

use crate::mapping::store::lease::Origin;
use crate::mapping::store::limits::LimitsConfig;

/// What a new reservation may not push past (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Most live leases and creates in flight together (MAX_MAPPINGS).
    pub total: usize,
    /// Most of the client's own leases and creates in flight together (MAX_MAPPINGS_PER_CLIENT),
    /// when that cap applies to the new mapping.
    pub per_client: Option<usize>,
    /// Whether the new mapping is its client's own (a twin is not) and so counts toward the
    /// client's cap while it is made.
    pub own: bool,
}

impl Caps {
    /// The caps a new mapping from `origin` is made within: MAX_MAPPINGS always, and
    /// MAX_MAPPINGS_PER_CLIENT for a client's own NAT-PMP request (a forward made through the
    /// API or a static mapping counts toward its client but is not refused by that cap; a twin
    /// does neither).
    pub fn of(limits: &LimitsConfig, origin: Origin) -> Caps {
        Caps {
            total: limits.max_mappings,
            per_client: (origin == Origin::NatPmp).then_some(limits.max_per_client),
            own: origin.twin_of().is_none(),
        }
    }

    /// No cap at all; the mapping counts toward its client.
    pub const NONE: Caps = Caps {
        total: usize::MAX,
        per_client: None,
        own: true,
    };
}

/// Why `LeaseTable::reserve_within` reserved nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Live leases and creates in flight reach [`Caps::total`].
    Total,
    /// The client's own leases and creates in flight reach [`Caps::per_client`].
    Client,
    /// Every port of the range is used.
    Ports,
}
