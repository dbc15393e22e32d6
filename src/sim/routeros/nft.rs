//! Optional mirror of the emulated dst-nat rules into a real nftables chain inside a network
//! namespace, so end-to-end tests can push packets through the rules the daemon added.
//!
//! Changes go, in order, to one worker thread that runs
//! `ip netns exec <ns> nft add rule ip <table> <chain> iifname <if> <proto> dport <R>
//! dnat to <addr>:<port> comment "<id>"` and deletes by handle (found with `nft -a list chain`).
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
    /// The chain in that table, e.g. `dstnat`.
    pub chain: String,
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
        RuleChange::Added(rule) => add(m, lists, rule),
        RuleChange::Removed(rule) => delete(m, &rule.id),
        RuleChange::Updated(before, after) => {
            if mirrored(m, lists, before).is_some() {
                delete(m, &before.id);
            }
            add(m, lists, after);
        }
    }
}

fn linux_name<'a>(m: &'a NftMirror, ros: &'a str) -> &'a str {
    m.interface_map
        .iter()
        .find(|(r, _)| r == ros)
        .map_or(ros, |(_, l)| l.as_str())
}

/// The nft words after `add rule ip <table> <chain>` for an enabled
/// `chain=dstnat action=dst-nat` tcp/udp rule; None for rules the mirror ignores.
fn mirrored(m: &NftMirror, lists: &[(String, String)], rule: &SimNatRule) -> Option<Vec<String>> {
    let f = &rule.fields;
    let is = |k: &str, v: &str| f.get(k).is_some_and(|x| x == v);
    if !is("chain", "dstnat") || !is("action", "dst-nat") || is("disabled", "true") {
        return None;
    }
    let proto = f.get("protocol").filter(|p| *p == "tcp" || *p == "udp")?;
    let dport = f.get("dst-port")?;
    let addr = f.get("to-addresses")?;
    let to_port = f.get("to-ports").unwrap_or(dport);
    let mut words = Vec::new();
    if let Some(ifname) = f.get("in-interface") {
        words.extend(["iifname".to_owned(), linux_name(m, ifname).to_owned()]);
    }
    if let Some(list) = f.get("in-interface-list") {
        // A negated list is not mirrored; an empty list matches nothing.
        let members: Vec<String> = lists
            .iter()
            .filter(|(l, _)| l == list)
            .map(|(_, i)| format!("\"{}\"", linux_name(m, i)))
            .collect();
        if list.starts_with('!') || members.is_empty() {
            return None;
        }
        words.extend([
            "iifname".to_owned(),
            format!("{{ {} }}", members.join(", ")),
        ]);
    }
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

fn add(m: &NftMirror, lists: &[(String, String)], rule: &SimNatRule) {
    if let Some(words) = mirrored(m, lists, rule) {
        let mut args: Vec<String> = ["add", "rule", "ip", &m.table, &m.chain]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.extend(words);
        nft(m, &args);
    }
}

fn delete(m: &NftMirror, id: &str) {
    let list: Vec<String> = ["-a", "list", "chain", "ip", &m.table, &m.chain]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let Some(listing) = nft(m, &list) else { return };
    let needle = format!("comment \"{id}\"");
    for line in listing.lines().filter(|l| l.contains(&needle)) {
        if let Some(handle) = line.rsplit("# handle ").next().map(str::trim) {
            let args: Vec<String> = ["delete", "rule", "ip", &m.table, &m.chain, "handle", handle]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            nft(m, &args);
        }
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
}
