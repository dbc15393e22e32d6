//! Optional mirror of the emulated NAT rules into real nftables chains inside a network
//! namespace, so end-to-end tests can push packets through the rules the daemon added.
//!
//! Changes go, in order, to one worker thread. An enabled tcp/udp `chain=dstnat
//! action=dst-nat` rule becomes `iifname <if> <proto> dport <R> dnat to <addr>:<port> comment
//! "<id>"` in the dst-nat chain; an enabled `chain=srcnat` rule with `action=masquerade` or
//! `action=src-nat` becomes `[oifname <if>] [ip saddr <a>] [<proto> sport <p>] masquerade [to
//! :<R>]` (or `snat to [<addr>]:<R>`) in the src-nat chain, when one is configured. Each rule
//! goes where the emulated table has it: before the nft rule of the first mirrored rule that
//! follows it in table order (`nft insert rule … position <handle>`), else at the end, so a
//! rule added with `place-before` comes before the masquerade in nftables too. Rules are
//! deleted by handle (found with `nft -a list chain`, by the `.id` in their comment).
//! Failures are logged, never fatal: the emulated table stays the source of truth.

use std::process::Command;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::table::{RuleChange, SimNatRule};

/// Where the mirror writes: `ip netns exec <netns> nft ... ip <table> <chain>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftMirror {
    /// The network namespace the chain lives in (created by the test).
    pub netns: String,
    /// The nftables table (family `ip`), e.g. `mikrotik`.
    pub table: String,
    /// The chain in that table dst-nat rules go to, e.g. `dstnat`.
    pub chain: String,
    /// The chain src-nat and masquerade rules go to, e.g. `srcnat`; `None` mirrors none.
    pub srcnat_chain: Option<String>,
    /// RouterOS `in-interface` -> Linux `iifname`; unmapped names are used as they are.
    pub interface_map: Vec<(String, String)>,
}

enum Msg {
    Changes(Vec<RuleChange>),
    Sync(oneshot::Sender<()>),
}

/// The handle to the mirror's worker thread; the thread ends when this is dropped.
pub(crate) struct Mirror {
    tx: mpsc::Sender<Msg>,
}

impl Mirror {
    /// Starts the worker thread.
    /// `lists` are the router's interface-list members (list, interface), for rules that match
    /// `in-interface-list`.
    pub(crate) fn start(
        config: NftMirror,
        lists: Vec<(String, String)>,
    ) -> std::io::Result<Mirror> {
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("routeros-sim-nft".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Changes(changes) => {
                            changes.iter().for_each(|c| apply(&config, &lists, c))
                        }
                        Msg::Sync(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(Mirror { tx })
    }

    /// Queues table changes.
    pub(crate) fn send(&self, changes: Vec<RuleChange>) {
        let _ = self.tx.send(Msg::Changes(changes));
    }

    /// Resolves once every change queued before the call has been applied.
    pub(crate) async fn synced(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn apply(m: &NftMirror, lists: &[(String, String)], change: &RuleChange) {
    match change {
        RuleChange::Added { rule, following } => add(m, lists, rule, following),
        RuleChange::Removed(rule) => delete(m, rule),
        RuleChange::Updated {
            before,
            after,
            following,
        } => {
            if mirrored(m, lists, before).is_some() {
                delete(m, before);
            }
            add(m, lists, after, following);
        }
    }
}

fn linux_name<'a>(m: &'a NftMirror, ros: &'a str) -> &'a str {
    m.interface_map
        .iter()
        .find(|(r, _)| r == ros)
        .map_or(ros, |(_, l)| l.as_str())
}

/// The nft chain a rule of this RouterOS chain goes to, if it is mirrored.
fn chain_for<'a>(m: &'a NftMirror, rule: &SimNatRule) -> Option<&'a str> {
    match rule.fields.get("chain").map(String::as_str) {
        Some("dstnat") => Some(m.chain.as_str()),
        Some("srcnat") => m.srcnat_chain.as_deref(),
        _ => None,
    }
}

/// `<ifname> <name>` (or `<ifname> != <name>`, or `<ifname> { members }` for a list), the
/// matcher of an interface or interface-list field; `Err` when it can never match.
fn interface_words(
    m: &NftMirror,
    lists: &[(String, String)],
    ifname: &str,
    interface: Option<&String>,
    list: Option<&String>,
) -> Result<Vec<String>, ()> {
    let mut words = Vec::new();
    if let Some(name) = interface {
        match name.strip_prefix('!') {
            Some(other) => words.extend([
                ifname.to_owned(),
                "!=".to_owned(),
                linux_name(m, other).to_owned(),
            ]),
            None => words.extend([ifname.to_owned(), linux_name(m, name).to_owned()]),
        }
    }
    if let Some(list) = list {
        // A negated list is not mirrored; an empty list matches nothing.
        let members: Vec<String> = lists
            .iter()
            .filter(|(l, _)| l == list)
            .map(|(_, i)| format!("\"{}\"", linux_name(m, i)))
            .collect();
        if list.starts_with('!') || members.is_empty() {
            return Err(());
        }
        words.extend([ifname.to_owned(), format!("{{ {} }}", members.join(", "))]);
    }
    Ok(words)
}

/// The nft words after `add rule ip <table> <chain>` for a rule the mirror handles (see the
/// module docs); `None` for rules it ignores.
fn mirrored(m: &NftMirror, lists: &[(String, String)], rule: &SimNatRule) -> Option<Vec<String>> {
    let f = &rule.fields;
    if f.get("disabled").is_some_and(|d| d == "true") {
        return None;
    }
    match f.get("chain").map(String::as_str) {
        Some("dstnat") => dst_words(m, lists, rule),
        Some("srcnat") if m.srcnat_chain.is_some() => src_words(m, lists, rule),
        _ => None,
    }
}

fn dst_words(m: &NftMirror, lists: &[(String, String)], rule: &SimNatRule) -> Option<Vec<String>> {
    let f = &rule.fields;
    if f.get("action").is_none_or(|a| a != "dst-nat") {
        return None;
    }
    let proto = f.get("protocol").filter(|p| *p == "tcp" || *p == "udp")?;
    let dport = f.get("dst-port")?;
    let addr = f.get("to-addresses")?;
    let to_port = f.get("to-ports").unwrap_or(dport);
    let mut words = interface_words(
        m,
        lists,
        "iifname",
        f.get("in-interface"),
        f.get("in-interface-list"),
    )
    .ok()?;
    words.extend([
        proto.clone(),
        "dport".into(),
        dport.clone(),
        "dnat".into(),
        "to".into(),
        format!("{addr}:{to_port}"),
        "comment".into(),
        format!("\"{}\"", rule.id),
    ]);
    Some(words)
}

fn src_words(m: &NftMirror, lists: &[(String, String)], rule: &SimNatRule) -> Option<Vec<String>> {
    let f = &rule.fields;
    let mut words = interface_words(
        m,
        lists,
        "oifname",
        f.get("out-interface"),
        f.get("out-interface-list"),
    )
    .ok()?;
    if let Some(a) = f.get("src-address") {
        match a.strip_prefix('!') {
            Some(a) => words.extend(["ip".into(), "saddr".into(), "!=".into(), a.to_owned()]),
            None => words.extend(["ip".into(), "saddr".into(), a.clone()]),
        }
    }
    let proto = f.get("protocol");
    match (proto, f.get("src-port")) {
        (Some(p), Some(port)) if p == "tcp" || p == "udp" => {
            words.extend([p.clone(), "sport".into(), port.clone()])
        }
        // A port without a protocol: RouterOS refuses it; nothing to mirror.
        (_, Some(_)) => return None,
        (Some(p), None) => words.extend(["meta".into(), "l4proto".into(), p.clone()]),
        (None, None) => {}
    }
    let to_ports = f.get("to-ports");
    match f.get("action").map(String::as_str) {
        Some("masquerade") => {
            words.push("masquerade".into());
            if let Some(p) = to_ports {
                words.extend(["to".into(), format!(":{p}")]);
            }
        }
        Some("src-nat") => {
            let target = match (f.get("to-addresses"), to_ports) {
                (Some(a), Some(p)) => format!("{a}:{p}"),
                (Some(a), None) => a.clone(),
                // RouterOS semantics kept: only the port changes, the address stays.
                (None, Some(p)) => format!(":{p}"),
                (None, None) => return None,
            };
            words.extend(["snat".into(), "to".into(), target]);
        }
        _ => return None,
    }
    words.extend(["comment".into(), format!("\"{}\"", rule.id)]);
    Some(words)
}

fn nft(m: &NftMirror, args: &[String]) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &m.netns, "nft"])
        .args(args)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => {
            tracing::warn!(
                "nft mirror: `nft {}` in netns {} failed: {}",
                args.join(" "),
                m.netns,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                "nft mirror: cannot run `ip netns exec {} nft`: {e}",
                m.netns
            );
            None
        }
    }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| (*s).to_owned()).collect()
}

/// The handle of the mirrored rule with this `.id` in an `nft -a list chain` listing.
fn handle_of(listing: &str, id: &str) -> Option<String> {
    let needle = format!("comment \"{id}\"");
    listing
        .lines()
        .find(|l| l.contains(&needle))
        .and_then(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_owned())
}

fn add(m: &NftMirror, lists: &[(String, String)], rule: &SimNatRule, following: &[String]) {
    let (Some(words), Some(chain)) = (mirrored(m, lists, rule), chain_for(m, rule)) else {
        return;
    };
    // Before the first rule that follows it in the table and is mirrored, as RouterOS has it.
    let position = if following.is_empty() {
        None
    } else {
        nft(m, &strings(&["-a", "list", "chain", "ip", &m.table, chain]))
            .and_then(|listing| following.iter().find_map(|id| handle_of(&listing, id)))
    };
    let mut args = match &position {
        Some(handle) => strings(&["insert", "rule", "ip", &m.table, chain, "position", handle]),
        None => strings(&["add", "rule", "ip", &m.table, chain]),
    };
    args.extend(words);
    nft(m, &args);
}

fn delete(m: &NftMirror, rule: &SimNatRule) {
    let Some(chain) = chain_for(m, rule) else {
        return;
    };
    let Some(listing) = nft(m, &strings(&["-a", "list", "chain", "ip", &m.table, chain])) else {
        return;
    };
    if let Some(handle) = handle_of(&listing, &rule.id) {
        nft(
            m,
            &strings(&["delete", "rule", "ip", &m.table, chain, "handle", &handle]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn mirror() -> NftMirror {
        NftMirror {
            netns: "x".into(),
            table: "mikrotik".into(),
            chain: "dstnat".into(),
            srcnat_chain: Some("srcnat".into()),
            interface_map: vec![("wg-proton".into(), "veth-wg".into())],
        }
    }

    fn rule(pairs: &[(&str, &str)]) -> SimNatRule {
        SimNatRule {
            id: "*1F".into(),
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn dstnat_rule_becomes_nft_words_with_mapped_interface() {
        let r = rule(&[
            ("chain", "dstnat"),
            ("action", "dst-nat"),
            ("protocol", "udp"),
            ("in-interface", "wg-proton"),
            ("dst-port", "40001"),
            ("to-addresses", "192.168.88.23"),
            ("to-ports", "6881"),
            ("disabled", "false"),
        ]);
        assert_eq!(
            mirrored(&mirror(), &[], &r).unwrap().join(" "),
            "iifname veth-wg udp dport 40001 dnat to 192.168.88.23:6881 comment \"*1F\""
        );
    }

    #[test]
    fn disabled_or_non_dstnat_rules_are_not_mirrored() {
        let base = [
            ("chain", "dstnat"),
            ("action", "dst-nat"),
            ("protocol", "tcp"),
            ("dst-port", "1"),
            ("to-addresses", "10.0.0.1"),
        ];
        assert!(mirrored(&mirror(), &[], &rule(&base)).is_some());
        let mut disabled = base.to_vec();
        disabled.push(("disabled", "true"));
        assert!(mirrored(&mirror(), &[], &rule(&disabled)).is_none());
        let mut masq = base.to_vec();
        masq[1] = ("action", "masquerade");
        assert!(mirrored(&mirror(), &[], &rule(&masq)).is_none());
    }

    #[test]
    fn interface_list_rules_match_the_lists_members() {
        let r = rule(&[
            ("chain", "dstnat"),
            ("action", "dst-nat"),
            ("protocol", "tcp"),
            ("in-interface-list", "WAN"),
            ("dst-port", "6881"),
            ("to-addresses", "192.168.88.20"),
        ]);
        let lists = [
            ("WAN".to_owned(), "wg-proton".to_owned()),
            ("WAN".to_owned(), "ether1".to_owned()),
            ("LAN".to_owned(), "bridge".to_owned()),
        ];
        assert_eq!(
            mirrored(&mirror(), &lists, &r).unwrap().join(" "),
            "iifname { \"veth-wg\", \"ether1\" } tcp dport 6881 dnat to 192.168.88.20:6881 comment \"*1F\""
        );
        assert!(
            mirrored(&mirror(), &lists[2..], &r).is_none(),
            "no member: never matches"
        );
    }

    #[test]
    fn srcnat_rules_become_masquerade_or_snat_words() {
        let ours = rule(&[
            ("chain", "srcnat"),
            ("action", "masquerade"),
            ("protocol", "udp"),
            ("src-address", "192.168.88.10"),
            ("src-port", "6881"),
            ("out-interface", "wg-proton"),
            ("to-ports", "40001"),
        ]);
        assert_eq!(
            mirrored(&mirror(), &[], &ours).unwrap().join(" "),
            "oifname veth-wg ip saddr 192.168.88.10 udp sport 6881 masquerade to :40001 comment \"*1F\""
        );
        let masq = rule(&[
            ("chain", "srcnat"),
            ("action", "masquerade"),
            ("out-interface", "wg-proton"),
        ]);
        assert_eq!(
            mirrored(&mirror(), &[], &masq).unwrap().join(" "),
            "oifname veth-wg masquerade comment \"*1F\""
        );
        let port_only = rule(&[
            ("chain", "srcnat"),
            ("action", "src-nat"),
            ("protocol", "udp"),
            ("to-ports", "40001"),
        ]);
        assert_eq!(
            mirrored(&mirror(), &[], &port_only).unwrap().join(" "),
            "meta l4proto udp snat to :40001 comment \"*1F\""
        );
        let no_chain = NftMirror {
            srcnat_chain: None,
            ..mirror()
        };
        assert!(mirrored(&no_chain, &[], &masq).is_none());
        let wan = rule(&[
            ("chain", "srcnat"),
            ("action", "masquerade"),
            ("out-interface-list", "WAN"),
        ]);
        let lists = [("WAN".to_owned(), "ether1".to_owned())];
        assert_eq!(
            mirrored(&mirror(), &lists, &wan).unwrap().join(" "),
            "oifname { \"ether1\" } masquerade comment \"*1F\""
        );
    }

    #[test]
    fn a_rule_is_found_by_its_id_in_a_listing() {
        let listing = "table ip mikrotik {\n\tchain srcnat {\n\t\toifname \"rtr-v\" masquerade comment \"*1\" # handle 4\n\t\toifname \"x\" masquerade comment \"*10\" # handle 7\n";
        assert_eq!(handle_of(listing, "*1").as_deref(), Some("4"));
        assert_eq!(handle_of(listing, "*10").as_deref(), Some("7"));
        assert_eq!(handle_of(listing, "*2"), None);
    }
}
