//! What to do about a failure, in a router owner's words: the "Fix:" of each failed step of
//! `double-natpmp check`.

use crate::natpmp::upstream::UpstreamError;
use crate::routeros::api::RouterError;
use crate::routeros::error::TlsProblem;
use double_natpmp_codec::natpmp::wire::ResultCode;

/// The fix for the group's policies, as a RouterOS command.
pub(crate) const POLICY_COMMAND: &str =
    "/user group set <group of MIKROTIK_API_USER> policy=read,write,api,test";

/// What to do about a router error.
pub(crate) fn router_fix(e: &RouterError) -> String {
    match e {
        RouterError::LoginRefused { .. } => format!(
            "check MIKROTIK_API_USER and MIKROTIK_API_PASSWORD against the router's /user list; the user's group also needs the 'api' policy ({POLICY_COMMAND})"
        ),
        RouterError::PermissionDenied {
            policy: Some(policy),
            ..
        } => format!("give the API user's group the '{policy}' policy ({POLICY_COMMAND})"),
        RouterError::PermissionDenied { policy: None, .. } => {
            format!("give the API user's group the read, write, api and test policies ({POLICY_COMMAND})")
        }
        RouterError::Tls { kind, .. } => tls_fix(*kind).to_owned(),
        RouterError::Fatal { .. } => {
            "see the router's log (/log print): it ends sessions when it reboots, when the API user is removed or changed, or when the user's group loses the 'api' policy".to_owned()
        }
        RouterError::Connection { .. } | RouterError::Timeout { .. } => {
            "check MIKROTIK_API_ADDRESS; enable the API on the router (/ip service set api disabled=no, or api-ssl with MIKROTIK_API_TLS=true) with an address= list that includes this host, and let the input firewall accept it (routeros/03-firewall.rsc)".to_owned()
        }
        RouterError::InvalidValue { .. } => {
            "check MIKROTIK_IN_INTERFACE: it must name the router's VPN interface exactly (/interface print)".to_owned()
        }
        RouterError::NotFound { .. }
        | RouterError::Trap { .. }
        | RouterError::IncompleteReply { .. } => {
            "see the router's log (/log print) for details".to_owned()
        }
    }
}

/// What to do about an api-ssl problem.
fn tls_fix(kind: TlsProblem) -> &'static str {
    match kind {
        TlsProblem::UnknownIssuer | TlsProblem::BadCaFile => "set MIKROTIK_API_TLS_CA_FILE to the PEM file of the CA that signed the router's api-ssl certificate (/certificate print; /ip service print where name=api-ssl), or pin the certificate with MIKROTIK_API_TLS_FINGERPRINT",
        TlsProblem::NameMismatch => "set MIKROTIK_API_TLS_SERVER_NAME to a name the router's certificate carries (its common name or a subject alternative name: /certificate print detail), or pin the certificate with MIKROTIK_API_TLS_FINGERPRINT",
        TlsProblem::Expired => "renew the router's api-ssl certificate (/certificate) and check the clocks of the router and of this host",
        TlsProblem::FingerprintMismatch => "set MIKROTIK_API_TLS_FINGERPRINT to the SHA-256 fingerprint of the router's current api-ssl certificate (/certificate print detail)",
        TlsProblem::BadCertificate | TlsProblem::Handshake => "give the router's api-ssl service a valid certificate (/ip service set api-ssl certificate=...), and check the MIKROTIK_API_TLS_* settings",
        TlsProblem::Settings => "correct the MIKROTIK_API_TLS_* setting named above (double-natpmp --help lists them)",
    }
}

/// What to do when the upstream gateway does not answer as it should.
pub(crate) fn upstream_fix(e: &UpstreamError) -> String {
    match e {
        UpstreamError::Refused { .. } => "the gateway refuses NAT-PMP: enable port forwarding (NAT-PMP) for this VPN connection at the provider (ProtonVPN: a WireGuard config with NAT-PMP on, or the +pmp OpenVPN user name); also check VPN_GATEWAY".to_owned(),
        UpstreamError::Timeout { gateway, .. } => format!("no answer: check the route to the gateway through the VPN interface (/ip route check dst-ip={} once) and the srcnat masquerade of the container's traffic out the VPN interface (routeros/03-firewall.rsc); also check that port forwarding is enabled at the VPN provider", gateway.ip()),
        UpstreamError::Rejected { result: ResultCode::NotAuthorized, .. } => "the gateway does not allow mappings: enable port forwarding for this VPN connection at the provider".to_owned(),
        UpstreamError::Rejected { result: ResultCode::OutOfResources, .. } => "the gateway's port quota is used up: delete unused mappings (restarting the daemon removes its own) and try again".to_owned(),
        UpstreamError::Rejected { .. } | UpstreamError::UnknownResult { .. } => "check that VPN_GATEWAY is the provider's NAT-PMP gateway (ProtonVPN: 10.2.0.1)".to_owned(),
        UpstreamError::Io { .. } => "check that this host has a route to VPN_GATEWAY".to_owned(),
    }
}
