//! Why a mapping transaction failed, and the one place where failures become NAT-PMP result
//! codes (RFC 6886 §3.5).

use std::net::Ipv4Addr;
use std::time::Duration;

use thiserror::Error;

use crate::mapping::router::seam::RouterError;
use crate::natpmp::upstream::UpstreamError;
use double_natpmp_codec::natpmp::result::ResultCode;
use double_natpmp_codec::protocol::Protocol;

/// A failed mapping transaction, in words a router owner understands.
#[derive(Debug, Error)]
pub enum MappingError {
    /// The router refused or failed a command.
    #[error("could not {what} on the router: {source}")]
    Router {
        /// What we tried.
        what: &'static str,
        /// The router's error.
        #[source]
        source: RouterError,
    },
    /// The router did not answer within our bound.
    #[error("the router did not answer '{what}' within {after:?}")]
    RouterTimeout {
        /// What we tried.
        what: &'static str,
        /// The bound.
        after: Duration,
    },
    /// The VPN gateway refused or failed an exchange.
    #[error("could not {what} at the VPN gateway: {source}")]
    Upstream {
        /// What we tried.
        what: &'static str,
        /// The upstream error.
        #[source]
        source: UpstreamError,
    },
    /// The VPN gateway did not answer within our bound.
    #[error("the VPN gateway did not answer '{what}' within {after:?}")]
    UpstreamTimeout {
        /// What we tried.
        what: &'static str,
        /// The bound.
        after: Duration,
    },
    /// The VPN gateway answered success with an unusable mapping.
    #[error("the VPN gateway granted an unusable mapping (external port {external_port}, lifetime {lifetime} s)")]
    UpstreamUnusable {
        /// The external port it gave.
        external_port: u16,
        /// The lifetime it gave.
        lifetime: u32,
    },
    /// Every router port of the range is used.
    #[error("no free router port for {protocol} in {start}-{end}: every port is used by a dst-nat rule on the VPN interface or by a mapping; widen the router port range")]
    PortsExhausted {
        /// The protocol.
        protocol: Protocol,
        /// Range start.
        start: u16,
        /// Range end.
        end: u16,
    },
    /// Internal port 0 with a lifetime (C-37): not defined by RFC 6886, refused.
    #[error("internal port 0 with a non-zero lifetime is not a valid NAT-PMP request (ProtonVPN's 'default port' form); ask for a real internal port")]
    InternalPortZero,
    /// The mapping is a dst-nat rule we did not create (C-35).
    #[error("{protocol} mappings of {client}{} are dst-nat rules double-natpmp did not create; change them on the router", port.map(|p| format!(" port {p}")).unwrap_or_default())]
    ForeignRule {
        /// The client.
        client: Ipv4Addr,
        /// The protocol.
        protocol: Protocol,
        /// The internal port, or `None` for a delete-all.
        port: Option<u16>,
    },
    /// A NAT-PMP delete of a mapping an administrator made (a forward of the API, a static
    /// mapping): it stays.
    #[error("{}", by_administrator(*client, *protocol, *port))]
    ByAdministrator {
        /// The client.
        client: Ipv4Addr,
        /// The protocol.
        protocol: Protocol,
        /// The internal port, or `None` for a delete-all.
        port: Option<u16>,
    },
    /// The client asked too often.
    #[error("{client} sent more than {per_second} mapping requests a second (CLIENT_RATE_LIMIT)")]
    RateLimited {
        /// The client.
        client: Ipv4Addr,
        /// The limit.
        per_second: u32,
    },
    /// The cap on live mappings is reached.
    #[error("{limit} mappings are live, the most MAX_MAPPINGS allows")]
    TooManyMappings {
        /// The cap.
        limit: usize,
    },
    /// The client has as many mappings as it may.
    #[error("{client} has {limit} mappings, the most MAX_MAPPINGS_PER_CLIENT allows")]
    TooManyForClient {
        /// The client.
        client: Ipv4Addr,
        /// The limit.
        limit: usize,
    },
    /// The daemon is stopping.
    #[error("double-natpmp is shutting down")]
    ShuttingDown,
    /// The VPN in-interface is not proven usable (missing, down, not a tunnel, or the route to
    /// the gateway goes elsewhere): no rule is added until it is.
    #[error("no mapping while the VPN interface is unusable: {problem}")]
    InterfaceUnusable {
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The mapping configuration is unusable.
    #[error("invalid mapping configuration: {0}")]
    InvalidConfig(String),
    /// An identical request failed while this one waited for it (a client's retransmission);
    /// answered with the same result instead of repeating the transaction.
    #[error("the same request failed a moment ago ({result}); answered again without retrying")]
    FailedJustNow {
        /// The result that request got.
        result: ResultCode,
    },
}

/// The words of [`MappingError::ByAdministrator`].
fn by_administrator(client: Ipv4Addr, protocol: Protocol, port: Option<u16>) -> String {
    const MADE: &str = "made by the administrator (the forwards API or STATIC_MAPPINGS), which a NAT-PMP request cannot delete";
    match port {
        Some(p) => format!("the {protocol} mapping of {client} port {p} was {MADE}"),
        None => format!(
            "some {protocol} mappings of {client} were {MADE}: they stay, its others were deleted"
        ),
    }
}

impl MappingError {
    /// The NAT-PMP result code the client gets for this failure (the only mapping of errors to
    /// codes): 2 for refusal by policy, 3 for network failure, 4 for no resources.
    pub fn result_code(&self) -> ResultCode {
        match self {
            MappingError::Router {
                source: RouterError::PermissionDenied { .. },
                ..
            } => ResultCode::NotAuthorized,
            MappingError::Router { .. } | MappingError::RouterTimeout { .. } => {
                ResultCode::NetworkFailure
            }
            MappingError::Upstream {
                source: UpstreamError::Rejected { result, .. },
                ..
            } => match result {
                ResultCode::OutOfResources => ResultCode::OutOfResources,
                ResultCode::NotAuthorized => ResultCode::NotAuthorized,
                _ => ResultCode::NetworkFailure,
            },
            MappingError::Upstream { .. }
            | MappingError::UpstreamTimeout { .. }
            | MappingError::UpstreamUnusable { .. } => ResultCode::NetworkFailure,
            MappingError::PortsExhausted { .. }
            | MappingError::RateLimited { .. }
            | MappingError::TooManyMappings { .. }
            | MappingError::TooManyForClient { .. } => ResultCode::OutOfResources,
            MappingError::InternalPortZero
            | MappingError::ForeignRule { .. }
            | MappingError::ByAdministrator { .. } => ResultCode::NotAuthorized,
            MappingError::ShuttingDown
            | MappingError::InvalidConfig(_)
            | MappingError::InterfaceUnusable { .. } => ResultCode::NetworkFailure,
            MappingError::FailedJustNow { result } => *result,
        }
    }

    /// The far side may have carried out the command although we got no answer (connection
    /// lost, timeout): a rule or upstream mapping may exist.
    pub fn is_uncertain(&self) -> bool {
        matches!(
            self,
            MappingError::Router {
                source: RouterError::Connection { .. }
                    | RouterError::Fatal { .. }
                    | RouterError::Timeout { .. }
                    | RouterError::IncompleteReply { .. },
                ..
            } | MappingError::RouterTimeout { .. }
                | MappingError::Upstream {
                    source: UpstreamError::Timeout { .. } | UpstreamError::Io { .. },
                    ..
                }
                | MappingError::UpstreamTimeout { .. }
                | MappingError::UpstreamUnusable { .. }
        )
    }

    /// A failure that may pass in a moment (no answer, ICMP port unreachable, a connection
    /// reset or refused while the API reconnects, a gateway answering 3): a create or a renewal
    /// that must ask the gateway tries again within CREATE_PATIENCE. A refusal (2, 4), a
    /// `!trap` or an unusable answer is final at once.
    pub fn is_transient(&self) -> bool {
        match self {
            MappingError::Router { source, .. } => matches!(
                source,
                RouterError::Connection { .. }
                    | RouterError::Fatal { .. }
                    | RouterError::Timeout { .. }
                    | RouterError::IncompleteReply { .. }
            ),
            MappingError::RouterTimeout { .. } | MappingError::UpstreamTimeout { .. } => true,
            MappingError::Upstream { source, .. } => matches!(
                source,
                UpstreamError::Timeout { .. }
                    | UpstreamError::Refused { .. }
                    | UpstreamError::Io { .. }
                    | UpstreamError::Rejected {
                        result: ResultCode::NetworkFailure,
                        ..
                    }
            ),
            _ => false,
        }
    }

    /// No answer in time from the router (it may still carry the command out).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            MappingError::RouterTimeout { .. }
                | MappingError::Router {
                    source: RouterError::Timeout { .. },
                    ..
                }
        )
    }

    /// A short name for the kind of failure, for metrics: `router_timeout`, `router_connection`,
    /// `upstream_refused`, `ports_exhausted`, …
    pub fn kind(&self) -> &'static str {
        match self {
            MappingError::Router { source, .. } => match source {
                RouterError::NotFound { .. } => "router_not_found",
                RouterError::PermissionDenied { .. } => "router_permission",
                RouterError::InvalidValue { .. } => "router_invalid_value",
                RouterError::Trap { .. } => "router_trap",
                RouterError::LoginRefused { .. } => "router_login",
                RouterError::Connection { .. } => "router_connection",
                RouterError::Fatal { .. } => "router_fatal",
                RouterError::Tls { .. } => "router_tls",
                RouterError::Timeout { .. } => "router_timeout",
                RouterError::IncompleteReply { .. } => "router_incomplete_reply",
            },
            MappingError::RouterTimeout { .. } => "router_timeout",
            MappingError::Upstream { source, .. } => match source {
                UpstreamError::Timeout { .. } => "upstream_timeout",
                UpstreamError::Refused { .. } => "upstream_refused",
                UpstreamError::Rejected { .. } => "upstream_rejected",
                UpstreamError::UnknownResult { .. } => "upstream_unknown_result",
                UpstreamError::Io { .. } => "upstream_io",
            },
            MappingError::UpstreamTimeout { .. } => "upstream_timeout",
            MappingError::UpstreamUnusable { .. } => "upstream_unusable",
            MappingError::PortsExhausted { .. } => "ports_exhausted",
            MappingError::RateLimited { .. } => "rate_limited",
            MappingError::TooManyMappings { .. } => "too_many_mappings",
            MappingError::TooManyForClient { .. } => "too_many_for_client",
            MappingError::InternalPortZero => "internal_port_zero",
            MappingError::ForeignRule { .. } => "foreign_rule",
            MappingError::ByAdministrator { .. } => "by_administrator",
            MappingError::ShuttingDown => "shutting_down",
            MappingError::InvalidConfig(_) => "invalid_config",
            MappingError::InterfaceUnusable { .. } => "interface_unusable",
            MappingError::FailedJustNow { .. } => "failed_just_now",
        }
    }

    /// A limit that protects the router and the gateway refused the request.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            MappingError::RateLimited { .. }
                | MappingError::TooManyMappings { .. }
                | MappingError::TooManyForClient { .. }
        )
    }

    /// The router said the item does not exist (a remove of something already gone).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            MappingError::Router {
                source: RouterError::NotFound { .. },
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;

    fn gw() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5351)
    }

    #[test]
    fn failures_map_to_the_result_codes_of_the_issue() {
        let cases: Vec<(MappingError, ResultCode)> = vec![
            (
                MappingError::Router {
                    what: "add",
                    source: RouterError::PermissionDenied {
                        command: "/ip/firewall/nat/add".into(),
                        message: "not enough permissions (9)".into(),
                        policy: Some("write"),
                    },
                },
                ResultCode::NotAuthorized,
            ),
            (
                MappingError::Router {
                    what: "add",
                    source: RouterError::Trap {
                        command: "/ip/firewall/nat/add".into(),
                        message: "failure".into(),
                        category: None,
                    },
                },
                ResultCode::NetworkFailure,
            ),
            (
                MappingError::Upstream {
                    what: "map",
                    source: UpstreamError::Rejected {
                        gateway: gw(),
                        result: ResultCode::OutOfResources,
                    },
                },
                ResultCode::OutOfResources,
            ),
            (
                MappingError::Upstream {
                    what: "map",
                    source: UpstreamError::Rejected {
                        gateway: gw(),
                        result: ResultCode::NotAuthorized,
                    },
                },
                ResultCode::NotAuthorized,
            ),
            (
                MappingError::Upstream {
                    what: "map",
                    source: UpstreamError::Timeout {
                        gateway: gw(),
                        after: Duration::from_secs(1),
                    },
                },
                ResultCode::NetworkFailure,
            ),
            (
                MappingError::UpstreamTimeout {
                    what: "map",
                    after: Duration::from_secs(1),
                },
                ResultCode::NetworkFailure,
            ),
            (
                MappingError::PortsExhausted {
                    protocol: Protocol::Tcp,
                    start: 1,
                    end: 2,
                },
                ResultCode::OutOfResources,
            ),
            (MappingError::InternalPortZero, ResultCode::NotAuthorized),
            (
                MappingError::ByAdministrator {
                    client: Ipv4Addr::new(192, 168, 88, 20),
                    protocol: Protocol::Tcp,
                    port: Some(32400),
                },
                ResultCode::NotAuthorized,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.result_code(), code, "{err}");
        }
    }

    /// C-17b: what may pass in a moment is tried again within CREATE_PATIENCE; a refusal, a
    /// `!trap` or an unusable grant is answered at once.
    #[test]
    fn c17b_transient_failures_are_tried_again_and_refusals_are_not() {
        let router = |source| MappingError::Router {
            what: "add",
            source,
        };
        let upstream = |source| MappingError::Upstream {
            what: "map",
            source,
        };
        let transient = [
            router(RouterError::Connection {
                address: "192.168.88.1:8728".into(),
                message: "connection refused".into(),
            }),
            router(RouterError::Timeout {
                address: "192.168.88.1:8728".into(),
                what: "command".into(),
                after: Duration::from_secs(5),
            }),
            MappingError::RouterTimeout {
                what: "add",
                after: Duration::from_secs(10),
            },
            upstream(UpstreamError::Timeout {
                gateway: gw(),
                after: Duration::from_secs(2),
            }),
            upstream(UpstreamError::Refused { gateway: gw() }),
            upstream(UpstreamError::Rejected {
                gateway: gw(),
                result: ResultCode::NetworkFailure,
            }),
        ];
        for e in &transient {
            assert!(e.is_transient(), "{e}");
        }
        let final_at_once = [
            router(RouterError::PermissionDenied {
                command: "/ip/firewall/nat/add".into(),
                message: "not enough permissions (9)".into(),
                policy: Some("write"),
            }),
            router(RouterError::Trap {
                command: "/ip/firewall/nat/add".into(),
                message: "failure".into(),
                category: None,
            }),
            upstream(UpstreamError::Rejected {
                gateway: gw(),
                result: ResultCode::OutOfResources,
            }),
            upstream(UpstreamError::Rejected {
                gateway: gw(),
                result: ResultCode::NotAuthorized,
            }),
            MappingError::UpstreamUnusable {
                external_port: 0,
                lifetime: 60,
            },
            MappingError::InternalPortZero,
        ];
        for e in &final_at_once {
            assert!(!e.is_transient(), "{e}");
        }
    }
}
