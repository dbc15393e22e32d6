//! A `/ip/firewall/nat/print` row read into the seam's [`NatRule`] (the rule types are the
//! mapping core's, `crate::mapping::router::nat`), and RouterOS's boolean properties.

use crate::mapping::router::seam::{NatRule, RuleId};
use double_natpmp_codec::routeros::wire::Reply;

/// The `.proplist` of our NAT rule listings.
pub(crate) const NAT_PROPLIST: &str = ".id,chain,action,protocol,in-interface,in-interface-list,out-interface,out-interface-list,src-address,src-port,dst-port,to-addresses,to-ports,comment,disabled,dynamic";

/// Whether a RouterOS boolean property's text says true (`true`/`yes`).
fn is_true(text: &str) -> bool {
    matches!(text, "true" | "yes")
}

/// A RouterOS boolean property (`true`/`yes`).
pub(crate) fn flag(row: &Reply, name: &str) -> bool {
    row.get(name).is_some_and(is_true)
}

impl NatRule {
    /// Reads a `/ip/firewall/nat/print` row, taking its words (no copies).
    pub fn from_row(row: Reply) -> NatRule {
        let mut rule = NatRule::default();
        let (mut id, mut disabled, mut dynamic) = (None, None, None);
        for (name, value) in row.attributes {
            let field = match name.as_str() {
                ".id" => &mut id,
                "disabled" => &mut disabled,
                "dynamic" => &mut dynamic,
                "chain" => &mut rule.chain,
                "action" => &mut rule.action,
                "protocol" => &mut rule.protocol,
                "in-interface" => &mut rule.in_interface,
                "in-interface-list" => &mut rule.in_interface_list,
                "out-interface" => &mut rule.out_interface,
                "out-interface-list" => &mut rule.out_interface_list,
                "src-address" => &mut rule.src_address,
                "src-port" => &mut rule.src_port,
                "dst-port" => &mut rule.dst_port,
                "to-addresses" => &mut rule.to_addresses,
                "to-ports" => &mut rule.to_ports,
                "comment" => &mut rule.comment,
                _ => continue,
            };
            // The first word of a name counts, as with [`Reply::get`].
            field.get_or_insert(value);
        }
        rule.id = id.map(RuleId::from);
        rule.disabled = disabled.as_deref().is_some_and(is_true);
        rule.dynamic = dynamic.as_deref().is_some_and(is_true);
        rule
    }
}
