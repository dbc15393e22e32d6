//! Proving the VPN in-interface before any rule is added, and again at every reconcile.
//!
//! The interface (configured with MIKROTIK_IN_INTERFACE, or found with `/ip/route/check` toward
//! VPN_GATEWAY) must exist, be enabled and running, and the route to the VPN gateway must go
//! through it. A found interface must also be a tunnel (`/interface/print` `type`, see
//! [`TUNNEL_TYPES`] and docs/routeros-api.md "Interface types"); a configured one of another
//! type is used, with a warning. While the proof fails, new mappings are answered 3 (network
//! failure) and no rule is added; the log says what is wrong and how to fix it.
//!
//! A user without the `test` policy cannot run `/ip/route/check`: with a configured interface
//! the route is then not checked (a warning says so); a found interface needs it anyway.

use std::net::Ipv4Addr;

use thiserror::Error;

use crate::mapping::config::MappingConfig;
use crate::mapping::error::MappingError;
use crate::mapping::router::layers::Layers;
use crate::mapping::router::seam::RouterError;
use crate::mapping::router::seam::{Router, RouterAddress};
use crate::natpmp::upstream::Upstream;

/// `/interface/print` types of the tunnels a VPN with NAT-PMP comes through: WireGuard and the
/// client ends of OpenVPN, L2TP, SSTP and PPTP.
pub(crate) const TUNNEL_TYPES: &[&str] = &["wg", "ovpn-out", "l2tp-out", "sstp-out", "pptp-out"];

/// Why the in-interface cannot carry our rules; each message says how to fix it.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum InterfaceProblem {
    /// No interface of that name.
    #[error("the router has no interface '{name}'; set MIKROTIK_IN_INTERFACE to the VPN interface (see /interface print)")]
    Missing {
        /// The name.
        name: String,
    },
    /// Disabled.
    #[error("the VPN interface '{name}' is disabled; enable it (/interface enable {name})")]
    Disabled {
        /// The name.
        name: String,
    },
    /// Not running (link down: the tunnel is not up).
    #[error("the VPN interface '{name}' is not running (the tunnel is down); bring the VPN up")]
    NotRunning {
        /// The name.
        name: String,
    },
    /// A found interface that is not a tunnel.
    #[error("the route to the VPN gateway {gateway} goes through '{name}' (type {kind}), which is not a VPN tunnel; add a route to {gateway}/32 through the VPN interface (/ip route add dst-address={gateway}/32 gateway=<VPN interface>), or set MIKROTIK_IN_INTERFACE")]
    NotATunnel {
        /// The interface.
        name: String,
        /// Its type.
        kind: String,
        /// The VPN gateway.
        gateway: Ipv4Addr,
    },
    /// The route to the gateway goes through another interface.
    #[error("the route to the VPN gateway {gateway} goes through '{via}', not through the VPN interface '{name}'; add a route to {gateway}/32 through '{name}' (/ip route add dst-address={gateway}/32 gateway={name})")]
    RouteElsewhere {
        /// The in-interface.
        name: String,
        /// Where the route goes.
        via: String,
        /// The VPN gateway.
        gateway: Ipv4Addr,
    },
    /// The router has no usable route to the gateway.
    #[error("the router has no usable route to the VPN gateway {gateway}: {message}")]
    NoRoute {
        /// The VPN gateway.
        gateway: Ipv4Addr,
        /// What the router said.
        message: String,
    },
}

/// What a successful proof found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proof {
    /// Things to warn about that do not stop us (a configured non-tunnel type, a route that
    /// could not be checked).
    pub warnings: Vec<String>,
    /// The interface's IPv4 addresses (the router's tunnel address).
    pub addresses: Vec<Ipv4Addr>,
}

/// Proves the in-interface of `config`; its addresses are taken from `addresses` (the pass's
/// `/ip/address/print`). `Err` only when the router could not be asked; a failed proof is
/// `Ok(Err(problem))`.
pub(crate) async fn prove<R: Router, U: Upstream>(
    layers: &Layers<R, U>,
    config: &MappingConfig,
    addresses: &[RouterAddress],
) -> Result<Result<Proof, InterfaceProblem>, MappingError> {
    let name = config.in_interface.as_str();
    let mut proof = Proof::default();
    let Some(info) = layers
        .router_call("look up the VPN interface", layers.router.interface(name))
        .await?
    else {
        return Ok(Err(InterfaceProblem::Missing {
            name: name.to_owned(),
        }));
    };
    if info.disabled {
        return Ok(Err(InterfaceProblem::Disabled {
            name: name.to_owned(),
        }));
    }
    if !info.running {
        return Ok(Err(InterfaceProblem::NotRunning {
            name: name.to_owned(),
        }));
    }
    let tunnel = TUNNEL_TYPES.contains(&info.kind.as_str());
    if let Some(gateway) = config.vpn_gateway {
        if !tunnel && config.in_interface_found {
            return Ok(Err(InterfaceProblem::NotATunnel {
                name: name.to_owned(),
                kind: info.kind,
                gateway,
            }));
        }
        match layers
            .router_call(
                "check the route to the VPN gateway",
                layers.router.route_interface(gateway),
            )
            .await
        {
            Ok(via) if via == name => {}
            Ok(via) => {
                return Ok(Err(InterfaceProblem::RouteElsewhere {
                    name: name.to_owned(),
                    via,
                    gateway,
                }))
            }
            Err(MappingError::Router {
                source: RouterError::PermissionDenied { .. },
                ..
            }) if !config.in_interface_found => proof.warnings.push(format!(
                "cannot check that the route to the VPN gateway {gateway} goes through '{name}': the API user's group lacks the 'test' policy"
            )),
            Err(MappingError::Router {
                source: RouterError::Trap { message, .. },
                ..
            }) => {
                return Ok(Err(InterfaceProblem::NoRoute { gateway, message }));
            }
            Err(e) => return Err(e),
        }
    }
    if !tunnel {
        proof.warnings.push(format!(
            "the VPN interface '{name}' has type '{}', which is not a VPN tunnel type ({}); using it as configured",
            info.kind,
            TUNNEL_TYPES.join(", ")
        ));
    }
    proof.addresses = addresses
        .iter()
        .filter(|a| a.interface == name && !a.disabled)
        .map(|a| a.address)
        .collect();
    Ok(Ok(proof))
}
