//! [`Outcome`]: what one reachability check found, and what it means for the user: a verdict
//! ([`Outcome::reachable`]), the cause of a failure with its fix ([`Outcome::problem`]), and the
//! line the status page shows ([`Outcome::line`]). Pure: the check (`check.rs`) fills it in.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::SystemTime;

use serde::Serialize;

use crate::status::history::{ago, unix_seconds};

/// Where the internet saw the test mapping's outbound packet come from, against what the
/// gateway's NAT-PMP reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ExitAddress {
    /// The address the gateway reports: traffic leaves where NAT-PMP says.
    Matches,
    /// Another address: the VPN's exit is not the address NAT-PMP reports (some ProtonVPN
    /// servers), so peers are told an address they cannot reach.
    Differs,
    /// One of the router's own addresses: this host's traffic leaves outside the tunnel.
    OutsideTunnel,
}

/// Whether a third party reached the external port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum Inbound {
    /// The server's answer from its other address and port arrived through both NAT layers.
    Reached,
    /// The server was asked to answer from its other address to the external port, and no
    /// answer arrived.
    NotReached,
    /// Not tested; never a "closed" verdict.
    NotTested {
        /// Why (the server does not do RFC 5780, the outbound test failed, …).
        why: String,
    },
}

/// What stopped a check before it could test the path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Blocked {
    /// The gateway's port quota is used up; the check waits rather than take a client's port.
    QuotaFull,
    /// The test mapping could not be made (the router or the gateway refused or failed).
    MappingFailed {
        /// The NAT-PMP result code the transaction gave.
        result: u16,
    },
    /// No STUN server answered a Binding Request (each one's error is logged as it happens).
    NoServer,
    /// The daemon does not know its own address toward the router.
    NoOwnAddress,
}

/// What one check found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Outcome {
    /// When the check ended, seconds since 1970.
    pub checked_at: u64,
    /// The STUN server that answered (`host:port` as configured), if any did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Why the path was not tested, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
    /// The gateway's external address and port for the test mapping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<SocketAddrV4>,
    /// The router port R of the test mapping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_port: Option<u16>,
    /// Where the internet saw the outbound packet come from (XOR-MAPPED-ADDRESS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_from: Option<SocketAddrV4>,
    /// The exit address against the external address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_address: Option<ExitAddress>,
    /// Whether outbound UDP left from the external port (the VPN exit pairs it with the
    /// mapping, and so does the router with UDP_SRCNAT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_paired: Option<bool>,
    /// Whether a third party reached the external port.
    pub inbound: Inbound,
    /// The test mapping was made again once after the first proof failed (the heal).
    pub healed: bool,
}

impl Outcome {
    /// A check that could not test the path.
    pub(crate) fn blocked(at: SystemTime, blocked: Blocked) -> Outcome {
        let why = match &blocked {
            Blocked::QuotaFull => "the gateway's port quota is full".to_owned(),
            Blocked::MappingFailed { result } => {
                format!("the test mapping could not be made (result {result})")
            }
            Blocked::NoServer => "no STUN server answered".to_owned(),
            Blocked::NoOwnAddress => "the daemon's address toward the router is unknown".into(),
        };
        Outcome {
            checked_at: unix_seconds(at),
            server: None,
            blocked: Some(blocked),
            external: None,
            router_port: None,
            seen_from: None,
            exit_address: None,
            outbound_paired: None,
            inbound: Inbound::NotTested { why },
            healed: false,
        }
    }

    /// Yes when a third party reached the port, no when it was tested and not reached, none
    /// when it was not tested.
    pub(crate) fn reachable(&self) -> Option<bool> {
        match self.inbound {
            Inbound::Reached => Some(true),
            Inbound::NotReached => Some(false),
            Inbound::NotTested { .. } => None,
        }
    }

    /// What went wrong and what to do, one line each, for the log and the page; `None` when
    /// nothing did.
    pub(crate) fn problem(&self) -> Option<(&'static str, &'static str)> {
        if let Some(blocked) = &self.blocked {
            return Some(match blocked {
                Blocked::QuotaFull => (
                    "the gateway's port quota is full, so the check waits instead of taking a port a client may need",
                    "nothing to do: the check runs when a port is free again",
                ),
                Blocked::MappingFailed { .. } => (
                    "the test mapping could not be made",
                    "see the daemon's log and `double-natpmp check` for the router or the gateway",
                ),
                Blocked::NoServer => (
                    "no STUN server answered",
                    "check STUN_SERVERS and that the daemon's host may send UDP to the internet",
                ),
                Blocked::NoOwnAddress => (
                    "the daemon does not know its own address toward the router",
                    "make MIKROTIK_API_ADDRESS an address this host routes to",
                ),
            });
        }
        match self.exit_address {
            Some(ExitAddress::Differs) => return Some((
                "exit mismatch: the VPN's exit address is not the address its NAT-PMP reports, so peers are told an address that does not lead here",
                "connect to another server of the VPN (the exit of this one differs from what it reports)",
            )),
            Some(ExitAddress::OutsideTunnel) => return Some((
                "outside the tunnel: this host's traffic leaves through the router's own internet address, not the VPN",
                "route the daemon's address through the VPN interface (for the router's container: containerViaVpn in 03-firewall.rsc, docs/reachability.md §5)",
            )),
            Some(ExitAddress::Matches) | None => {}
        }
        match self.inbound {
            Inbound::NotReached => Some((
                "the forward was not reached: a third party's packet to the external port did not arrive",
                "check the gateway's port forwarding and the router's dst-nat rule (`double-natpmp check`); a firewall filter rule may drop it",
            )),
            Inbound::Reached | Inbound::NotTested { .. } => None,
        }
    }

    /// The status page's line, e.g. "reachable from the internet: yes, UDP, checked 4m ago via
    /// stun.example.net:3478".
    pub(crate) fn line(&self, now: SystemTime) -> String {
        let when = ago(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.checked_at),
            now,
        );
        self.text(&format!(", checked {when}"))
    }

    /// The line without the check's age, for an event: "reachable from the internet: yes,
    /// UDP, via stun.example.net:3478".
    pub(crate) fn summary(&self) -> String {
        self.text(",")
    }

    fn text(&self, when: &str) -> String {
        let via = self
            .server
            .as_deref()
            .map(|s| format!(" via {s}"))
            .unwrap_or_default();
        let verdict = match (&self.inbound, self.reachable()) {
            (_, Some(true)) => "yes, UDP".to_owned(),
            (_, Some(false)) => "no".to_owned(),
            (Inbound::NotTested { why }, None) => format!("not tested ({why})"),
            (_, None) => "not tested".to_owned(),
        };
        let mut line = format!("reachable from the internet: {verdict}{when}{via}");
        if let Some((cause, _)) = self.problem() {
            line.push_str("; ");
            line.push_str(cause);
        }
        line
    }

    /// Whether `other` says something different to the user (a change fires an event).
    pub(crate) fn differs_from(&self, other: &Outcome) -> bool {
        self.reachable() != other.reachable()
            || self.exit_address != other.exit_address
            || self.outbound_paired != other.outbound_paired
            || self.blocked.is_some() != other.blocked.is_some()
    }
}

/// Sorts where the internet saw us from: the gateway's external address, one of the router's
/// own addresses (`is_router_address`), or another.
pub(crate) fn classify_exit(
    seen: Ipv4Addr,
    external: Ipv4Addr,
    is_router_address: impl Fn(Ipv4Addr) -> bool,
) -> ExitAddress {
    if seen == external {
        ExitAddress::Matches
    } else if is_router_address(seen) {
        ExitAddress::OutsideTunnel
    } else {
        ExitAddress::Differs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tested(inbound: Inbound, exit: ExitAddress) -> Outcome {
        Outcome {
            checked_at: 1_000,
            server: Some("stun.example:3478".into()),
            blocked: None,
            external: Some("198.51.101.7:40000".parse().unwrap()),
            router_port: Some(40000),
            seen_from: Some("198.51.101.7:40000".parse().unwrap()),
            exit_address: Some(exit),
            outbound_paired: Some(true),
            inbound,
            healed: false,
        }
    }

    fn at(secs: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_exit_is_the_external_address_a_router_address_or_another() {
        let ext: Ipv4Addr = "198.51.101.7".parse().unwrap();
        let wan: Ipv4Addr = "203.0.113.9".parse().unwrap();
        let router = |ip: Ipv4Addr| ip == wan;
        assert_eq!(classify_exit(ext, ext, router), ExitAddress::Matches);
        assert_eq!(classify_exit(wan, ext, router), ExitAddress::OutsideTunnel);
        assert_eq!(
            classify_exit("198.51.101.8".parse().unwrap(), ext, router),
            ExitAddress::Differs
        );
    }

    #[test]
    fn a_reached_port_reads_yes_with_the_server_and_the_age_and_no_problem() {
        let o = tested(Inbound::Reached, ExitAddress::Matches);
        assert_eq!(o.reachable(), Some(true));
        assert_eq!(o.problem(), None);
        assert_eq!(
            o.line(at(1_240)),
            "reachable from the internet: yes, UDP, checked 4m ago via stun.example:3478"
        );
        // An event keeps no age that would go stale.
        assert_eq!(
            o.summary(),
            "reachable from the internet: yes, UDP, via stun.example:3478"
        );
    }

    #[test]
    fn each_failure_names_its_cause_and_fix() {
        let mismatch = tested(Inbound::NotReached, ExitAddress::Differs);
        assert!(mismatch.problem().unwrap().0.starts_with("exit mismatch"));
        assert!(mismatch.problem().unwrap().1.contains("another server"));
        let outside = tested(Inbound::Reached, ExitAddress::OutsideTunnel);
        assert!(outside
            .problem()
            .unwrap()
            .0
            .starts_with("outside the tunnel"));
        assert!(outside
            .problem()
            .unwrap()
            .1
            .contains("route the daemon's address"));
        let unreached = tested(Inbound::NotReached, ExitAddress::Matches);
        assert!(unreached.problem().unwrap().0.contains("not reached"));
        assert_eq!(unreached.reachable(), Some(false));
        assert!(unreached.line(at(1_000)).contains(": no, checked 0s ago"));
    }

    #[test]
    fn a_server_without_rfc_5780_gives_not_tested_never_closed() {
        let o = tested(
            Inbound::NotTested {
                why: "the STUN server does not do RFC 5780".into(),
            },
            ExitAddress::Matches,
        );
        assert_eq!(o.reachable(), None);
        assert_eq!(o.problem(), None);
        let line = o.line(at(1_000));
        assert!(
            line.contains("not tested (the STUN server does not do RFC 5780)"),
            "{line}"
        );
        assert!(!line.contains(": no,"), "{line}");
    }

    #[test]
    fn a_full_quota_waits_and_says_so() {
        let o = Outcome::blocked(at(1_000), Blocked::QuotaFull);
        assert_eq!(o.reachable(), None);
        assert!(o.line(at(1_000)).contains("quota is full"));
        assert!(o.problem().unwrap().0.contains("waits"));
    }

    #[test]
    fn a_change_is_a_new_verdict_exit_or_pairing_not_a_new_time() {
        let a = tested(Inbound::Reached, ExitAddress::Matches);
        let mut later = a.clone();
        later.checked_at += 600;
        assert!(!a.differs_from(&later));
        let mut unpaired = a.clone();
        unpaired.outbound_paired = Some(false);
        assert!(a.differs_from(&unpaired));
        assert!(a.differs_from(&tested(Inbound::NotReached, ExitAddress::Matches)));
    }

    #[test]
    fn the_json_names_the_verdict_and_leaves_out_what_is_unknown() {
        let o = Outcome::blocked(at(5), Blocked::QuotaFull);
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["blocked"]["kind"], "quota_full");
        assert_eq!(json["inbound"]["result"], "not_tested");
        assert!(json.get("external").is_none());
        let ok = serde_json::to_value(tested(Inbound::Reached, ExitAddress::Matches)).unwrap();
        assert_eq!(ok["exit_address"], "matches");
        assert_eq!(ok["inbound"]["result"], "reached");
        assert_eq!(ok["external"], "198.51.101.7:40000");
    }
}
