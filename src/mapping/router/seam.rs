//! The router seam: what the mapping core needs of a router, in the core's terms. The core
//! adds and removes NAT rules it knows by their comment ([`DstNatRule`], [`SrcNatRule`], read
//! back as [`NatRule`], each known to the router by an opaque [`RuleId`]), reads the router's
//! port view (its NAT rules, the ports its own services listen on, its interface lists), and
//! asks for the interface facts that prove the VPN in-interface (the interface, the route to
//! the gateway, the addresses). It never builds a router command.
//!
//! The RouterOS implementation (`crate::mapping::router::seam::RouterApi`: the `/ip/firewall/nat`
//! commands, `/ip/service`, `/ip/route/check`, `place-before`) lives behind it, and so does
//! the one type the seam passes through from there: [`RouterError`], the failure a router
//! owner reads. This file is the only one of the mapping core that imports `crate::routeros`
//! (`tests/repo/layout.rs` fails otherwise). What a second router kind would add and touch is
//! in docs/architecture.md §8.

use std::future::Future;
use std::net::Ipv4Addr;

pub use crate::mapping::router::facts::{InterfaceInfo, ListMember, RouterAddress, ServiceInfo};
pub use crate::mapping::router::nat::{DstNatRule, NatRule, SrcNatRule};
pub use crate::mapping::router::rule_id::RuleId;
pub use crate::routeros::error::RouterError;

/// What the mapping core needs of a router. `RouterApi` implements it over the RouterOS API;
/// tests swap in a fake.
pub trait Router: Send + Sync + 'static {
    /// `/ip/firewall/nat/add chain=dstnat action=dst-nat …` in one command; returns the new id
    /// from `!done =ret=`.
    fn add_dstnat(
        &self,
        rule: &DstNatRule,
    ) -> impl Future<Output = Result<RuleId, RouterError>> + Send;
    /// `/ip/firewall/nat/remove =.id=…`; `NotFound` when it was already gone.
    fn remove_rule(&self, id: &RuleId) -> impl Future<Output = Result<(), RouterError>> + Send;
    /// `/ip/firewall/nat/set =.id=… =comment=…`; `NotFound` when it is gone.
    fn set_comment(
        &self,
        id: &RuleId,
        comment: &str,
    ) -> impl Future<Output = Result<(), RouterError>> + Send;
    /// Every rule of the `dstnat` chain, whatever its in-interface (with `.proplist`).
    fn list_dstnat(&self) -> impl Future<Output = Result<Vec<NatRule>, RouterError>> + Send;
    /// The same listing, each rule handed to `each` as it arrives, so thousands of rules are
    /// never held at once; how many there were. By default, from [`Router::list_dstnat`].
    fn scan_dstnat<F: FnMut(NatRule) + Send>(
        &self,
        mut each: F,
    ) -> impl Future<Output = Result<usize, RouterError>> + Send {
        async move {
            let rules = self.list_dstnat().await?;
            let count = rules.len();
            rules.into_iter().for_each(&mut each);
            Ok(count)
        }
    }
    /// The dst-nat rules whose `dst-port` is exactly `dst_port` (`?chain=dstnat ?dst-port=…`):
    /// the candidates among which a rule of ours is found by its comment, whatever its `.id`
    /// is now.
    fn find_dstnat(
        &self,
        dst_port: u16,
    ) -> impl Future<Output = Result<Vec<NatRule>, RouterError>> + Send;
    /// `/ip/firewall/nat/add chain=srcnat action=masquerade …` (placed before
    /// `rule.place_before` when set) in one command; returns the new id from `!done =ret=`.
    fn add_srcnat(
        &self,
        rule: &SrcNatRule,
    ) -> impl Future<Output = Result<RuleId, RouterError>> + Send;
    /// Every rule of the `srcnat` chain, in rule order (with `.proplist`).
    fn list_srcnat(&self) -> impl Future<Output = Result<Vec<NatRule>, RouterError>> + Send;
    /// The src-nat rules whose `to-ports` is exactly `to_port` (`?chain=srcnat ?to-ports=…`):
    /// the candidates among which a src-nat rule of ours is found by its comment.
    fn find_srcnat(
        &self,
        to_port: u16,
    ) -> impl Future<Output = Result<Vec<NatRule>, RouterError>> + Send;
    /// Every `/interface/list/member` row.
    fn list_members(&self) -> impl Future<Output = Result<Vec<ListMember>, RouterError>> + Send;
    /// Every `/ip/service` row.
    fn services(&self) -> impl Future<Output = Result<Vec<ServiceInfo>, RouterError>> + Send;
    /// The interface called `name`, or `None` when the router has none.
    fn interface(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<InterfaceInfo>, RouterError>> + Send;
    /// The interface the router would send traffic for `dst` out of
    /// (`/ip/route/check =dst-ip=<dst> =once=`; needs the `test` policy).
    fn route_interface(
        &self,
        dst: Ipv4Addr,
    ) -> impl Future<Output = Result<String, RouterError>> + Send;
    /// The IPv4 addresses configured on `interface` (`/ip/address/print ?interface=…`).
    fn interface_addresses(
        &self,
        interface: &str,
    ) -> impl Future<Output = Result<Vec<Ipv4Addr>, RouterError>> + Send;
    /// Every `/ip/address` row: the router's own addresses on every interface, with their
    /// subnets (the reconcile refuses them as clients, see [`crate::refused`]).
    fn addresses(&self) -> impl Future<Output = Result<Vec<RouterAddress>, RouterError>> + Send;
}
