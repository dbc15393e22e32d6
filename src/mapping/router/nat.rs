//! The NAT rules the core writes ([`DstNatRule`], [`SrcNatRule`]) and reads back
//! ([`NatRule`]). Plain data; the router implementation behind the seam carries them
//! (`crate::routeros::api`) and reads its rows into them (`crate::routeros::nat`).

use std::net::Ipv4Addr;

use crate::mapping::router::rule_id::RuleId;
use double_natpmp_codec::protocol::Protocol;

/// A dst-nat rule to add: traffic arriving on `in_interface` for `protocol`/`dst_port` goes to
/// `to_address:to_port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DstNatRule {
    /// tcp or udp.
    pub protocol: Protocol,
    /// The VPN interface (e.g. `wg-proton`).
    pub in_interface: String,
    /// The router port R that the upstream forwards to.
    pub dst_port: u16,
    /// The LAN client.
    pub to_address: Ipv4Addr,
    /// The client's internal port.
    pub to_port: u16,
    /// Our ownership marker and restart data (ASCII; see `mapping::router::rule`).
    pub comment: String,
}

/// A src-nat rule to add (UDP_SRCNAT, RFC 6886 §3.9): what `src_address` sends from
/// `protocol`/`src_port` out of `out_interface` leaves from port `to_port` (R), with the
/// interface's own address: `chain=srcnat action=masquerade to-ports=R`.
///
/// `masquerade` rather than `src-nat`: a `src-nat` rule with `to-ports` alone keeps the LAN
/// source address (and, being the first match, keeps the masquerade from fixing it), and one
/// with `to-addresses` would have to follow a tunnel address that changes with every
/// reconnect of OpenVPN, L2TP or SSTP. Masquerade takes the interface's address when the
/// packet leaves, and RouterOS forgets its connections when the tunnel goes down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrcNatRule {
    /// udp (the protocol of the mapping).
    pub protocol: Protocol,
    /// The VPN interface.
    pub out_interface: String,
    /// The LAN client.
    pub src_address: Ipv4Addr,
    /// The client's internal port.
    pub src_port: u16,
    /// The router port R the traffic leaves from.
    pub to_port: u16,
    /// The rule to place it before (`place-before`): the first rule that would catch the
    /// traffic otherwise (the masquerade of the VPN interface). `None` appends it.
    pub place_before: Option<RuleId>,
    /// Our ownership marker, with the rule kind (`k=snat`; see `mapping::router::rule`).
    pub comment: String,
}

/// A NAT rule as `/ip/firewall/nat/print` returns it; unset fields are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatRule {
    /// `.id`.
    pub id: Option<RuleId>,
    /// `chain`.
    pub chain: Option<String>,
    /// `action`.
    pub action: Option<String>,
    /// `protocol`.
    pub protocol: Option<String>,
    /// `in-interface` (may start with `!`, "not this interface").
    pub in_interface: Option<String>,
    /// `in-interface-list` (may start with `!`).
    pub in_interface_list: Option<String>,
    /// `out-interface` (may start with `!`).
    pub out_interface: Option<String>,
    /// `out-interface-list` (may start with `!`).
    pub out_interface_list: Option<String>,
    /// `src-address` (an address, a network or a range; may start with `!`).
    pub src_address: Option<String>,
    /// `src-port` (may be a list or range).
    pub src_port: Option<String>,
    /// `dst-port` (may be a list or range on rules we did not make).
    pub dst_port: Option<String>,
    /// `to-addresses`.
    pub to_addresses: Option<String>,
    /// `to-ports`.
    pub to_ports: Option<String>,
    /// `comment`.
    pub comment: Option<String>,
    /// `disabled=true`.
    pub disabled: bool,
    /// `dynamic=true` (made by a router service; never ours).
    pub dynamic: bool,
}
