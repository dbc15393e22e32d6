//! What the API answers, as serde types: a lease as JSON ([`MappingView`]), the readiness checks
//! ([`Readiness`]) and the page's summary ([`StatusView`]). Built from the lease table's
//! snapshot, the [`History`] and what the daemon knows of the gateway; no I/O.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::mapping::core::InterfaceState;
use crate::mapping::events::Origin;
use crate::mapping::store::lease::LeaseInfo;
use crate::reachability::outcome::Outcome;
use crate::status::history::{ago, Contact, EventRecord, History};

/// One live mapping (`/api/v1/mappings`, STATUS_FILE, the forwards API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct MappingView {
    /// The LAN client.
    pub client: Ipv4Addr,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// The client's own port I.
    pub internal_port: u16,
    /// The router port R (dst-port of the dst-nat rule on the VPN interface).
    pub router_port: u16,
    /// The VPN's external address, when known.
    pub external_address: Option<Ipv4Addr>,
    /// The external port E at the VPN gateway.
    pub external_port: u16,
    /// The lifetime last granted, seconds.
    pub lifetime: u32,
    /// Seconds until the lifetime ends unless renewed; `null` for a static mapping (it never
    /// expires).
    pub lifetime_left: Option<u64>,
    /// When it was created, seconds since 1970 (`null` if not seen).
    pub created: Option<u64>,
    /// When it was last renewed, seconds since 1970 (`null` if not seen).
    pub last_renewed: Option<u64>,
    /// `natpmp`, `api` or `static`.
    pub origin: &'static str,
}

impl MappingView {
    /// The view of one lease; `grace` is EXPIRY_GRACE (the deadline includes it).
    pub(crate) fn new(
        info: &LeaseInfo,
        history: &History,
        external_address: Option<Ipv4Addr>,
        grace: Duration,
        now: Instant,
    ) -> MappingView {
        let lease = &info.lease;
        let times = history.times(&info.key);
        let lifetime_left = (lease.origin != Origin::Static).then(|| {
            lease
                .deadline
                .saturating_duration_since(now)
                .saturating_sub(grace)
                .as_secs()
        });
        MappingView {
            client: info.key.client,
            protocol: info.key.protocol.as_str(),
            internal_port: info.key.internal_port,
            router_port: lease.router_port,
            external_address,
            external_port: lease.external_port,
            lifetime: lease.lifetime,
            lifetime_left,
            created: times.map(|t| t.created),
            last_renewed: times.map(|t| t.renewed),
            origin: lease.origin.as_str(),
        }
    }
}

/// One readiness check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    /// `router`, `gateway` or `interface`.
    pub name: &'static str,
    /// Whether it passes.
    pub ok: bool,
    /// What was seen, in words.
    pub detail: String,
}

/// `/readyz`: every check, and whether all pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Readiness {
    /// All checks pass.
    pub ready: bool,
    /// Each check.
    pub checks: Vec<Check>,
}

fn contact_check(name: &'static str, who: &str, c: &Contact, now: SystemTime) -> Check {
    match (&c.failing, c.last_ok) {
        (Some((at, kind)), last) => Check {
            name,
            ok: false,
            detail: format!(
                "{who} failed {} ({kind}); last answer {}",
                ago(*at, now),
                last.map_or_else(|| "never".to_owned(), |t| ago(t, now))
            ),
        },
        (None, Some(t)) => Check {
            name,
            ok: true,
            detail: format!("{who} answered {}", ago(t, now)),
        },
        (None, None) => Check {
            name,
            ok: true,
            detail: format!("{who}: no exchange yet"),
        },
    }
}

impl Readiness {
    /// The checks as of now: the router answered its last command, the gateway answered its
    /// last exchange and the external address is known (asked every ADDRESS_REFRESH), the VPN
    /// interface is proven.
    pub(crate) fn new(
        history: &History,
        interface: &InterfaceState,
        external_address: Option<Ipv4Addr>,
        now: SystemTime,
    ) -> Readiness {
        let (router, gateway) = history.contacts();
        let router = contact_check("router", "the RouterOS API", &router, now);
        let mut gateway = contact_check("gateway", "the VPN gateway", &gateway, now);
        match external_address {
            Some(a) => gateway.detail = format!("external address {a}; {}", gateway.detail),
            None => {
                gateway.ok = false;
                gateway.detail = format!(
                    "the VPN gateway did not answer the last external-address request; {}",
                    gateway.detail
                );
            }
        }
        let interface = match interface {
            InterfaceState::Proven(_) => Check {
                name: "interface",
                ok: true,
                detail: "the VPN interface is proven".into(),
            },
            InterfaceState::Unusable(problem) => Check {
                name: "interface",
                ok: false,
                detail: problem.to_string(),
            },
            InterfaceState::Unknown => Check {
                name: "interface",
                ok: false,
                detail: "the VPN interface is not proven yet".into(),
            },
        };
        let checks = vec![router, gateway, interface];
        Readiness {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

/// `/api/v1/status`: what the page shows besides the mappings.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct StatusView {
    /// The daemon's version.
    pub version: &'static str,
    /// The VPN's external address, when known.
    pub external_address: Option<Ipv4Addr>,
    /// The router's VPN interface.
    pub in_interface: String,
    /// The number of live mappings.
    pub mappings: usize,
    /// The readiness checks.
    pub health: Readiness,
    /// The last events, newest first.
    pub events: Vec<EventRecord>,
    /// The reachability check's line and last result (absent when the daemon runs none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachability: Option<ReachabilityView>,
    /// Now, seconds since 1970 (the page shows times relative to it).
    pub now: u64,
}

/// What the page and the API show of the last check.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ReachabilityView {
    /// Whether checks run on their own (REACHABILITY_CHECK).
    pub periodic: bool,
    /// The page's line, e.g. "reachable from the internet: yes, UDP, checked 4m ago via …".
    pub line: String,
    /// The fix for a failure, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<&'static str>,
    /// The last check, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Outcome>,
}

impl ReachabilityView {
    /// The view of `last` (none yet when `None`).
    pub(crate) fn new(periodic: bool, last: Option<Arc<Outcome>>, now: SystemTime) -> Self {
        let line = match &last {
            Some(o) => o.line(now),
            None if periodic => "reachable from the internet: not checked yet".to_owned(),
            None => {
                "reachable from the internet: not checked (REACHABILITY_CHECK is off)".to_owned()
            }
        };
        ReachabilityView {
            periodic,
            fix: last.as_ref().and_then(|o| o.problem()).map(|(_, fix)| fix),
            line,
            last: last.map(|o| Outcome::clone(&o)),
        }
    }
}
