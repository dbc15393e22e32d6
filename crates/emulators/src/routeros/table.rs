//! The emulated `/ip/firewall/nat` table: ordered rows, ids, field validation. No I/O.

use std::collections::BTreeMap;

use super::query::boolean;
use super::trap::SimTrap;

/// One row of the emulated `/ip/firewall/nat` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimNatRule {
    /// The `.id`, e.g. `*1F`.
    pub id: String,
    /// Every property as print shows it (defaults included), without `.id`.
    pub fields: BTreeMap<String, String>,
}

/// Properties `add`/`set` accept on a NAT rule (ANS `_api_data.py`, TF provider).
const SETTABLE: &[&str] = &[
    "action",
    "address-list",
    "address-list-timeout",
    "chain",
    "comment",
    "connection-mark",
    "connection-state",
    "connection-type",
    "disabled",
    "dst-address",
    "dst-address-list",
    "dst-address-type",
    "dst-limit",
    "dst-port",
    "in-interface",
    "in-interface-list",
    "jump-target",
    "limit",
    "log",
    "log-prefix",
    "nth",
    "out-interface",
    "out-interface-list",
    "packet-mark",
    "port",
    "protocol",
    "routing-mark",
    "src-address",
    "src-address-list",
    "src-address-type",
    "src-port",
    "to-addresses",
    "to-ports",
    "ttl",
];

const BOOLEANS: &[&str] = &["disabled", "log"];
const PORTS: &[&str] = &["dst-port", "src-port", "port", "to-ports"];
const INTERFACES: &[&str] = &["in-interface", "out-interface"];

/// Fields every NAT row carries (docs/routeros-api.md §5.5); `action` defaults to accept.
fn defaults() -> BTreeMap<String, String> {
    [
        ("action", "accept"),
        ("bytes", "0"),
        ("packets", "0"),
        ("invalid", "false"),
        ("dynamic", "false"),
        ("disabled", "false"),
        ("log", "false"),
        ("log-prefix", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A change to the NAT table, for the nftables mirror.
#[derive(Clone, Debug)]
pub(crate) enum RuleChange {
    /// A rule was added; `following` are the ids of the rows after it, in table order.
    Added {
        rule: SimNatRule,
        following: Vec<String>,
    },
    /// A rule was removed.
    Removed(SimNatRule),
    /// A rule changed; `following` as for `Added`.
    Updated {
        before: SimNatRule,
        after: SimNatRule,
        following: Vec<String>,
    },
}

/// The ordered NAT table. Ids are `*` + uppercase hex, monotonic, never reused.
#[derive(Debug)]
pub(crate) struct NatTable {
    rows: Vec<SimNatRule>,
    next_id: u64,
}

impl NatTable {
    /// An empty table; the first id is `*1`.
    pub(crate) fn new() -> NatTable {
        NatTable {
            rows: Vec::new(),
            next_id: 1,
        }
    }

    fn alloc_id(&mut self) -> String {
        let id = format!("*{:X}", self.next_id);
        self.next_id += 1;
        id
    }

    /// Gives every row a new id, `*1`, `*2`, … in rule order, as a reboot may: an id held
    /// from before can name another rule afterwards. Returns (old, new) rows.
    pub(crate) fn renumber(&mut self) -> Vec<(SimNatRule, SimNatRule)> {
        let mut out = Vec::with_capacity(self.rows.len());
        for (i, row) in self.rows.iter_mut().enumerate() {
            let old = row.clone();
            row.id = format!("*{:X}", i + 1);
            out.push((old, row.clone()));
        }
        self.next_id = self.rows.len() as u64 + 1;
        out
    }

    /// The rows in rule order.
    pub(crate) fn rows(&self) -> &[SimNatRule] {
        &self.rows
    }

    /// `add`: validates every attribute, appends (or inserts at `place-before`), returns the row.
    pub(crate) fn add(
        &mut self,
        attrs: &[(String, String)],
        interfaces: &[String],
    ) -> Result<SimNatRule, SimTrap> {
        let mut fields = defaults();
        let mut position = self.rows.len();
        for (name, value) in attrs {
            if name == "place-before" {
                position = self.position(value).ok_or(SimTrap::NoSuchItem)?;
                continue;
            }
            let value = validate(name, value, interfaces)?;
            fields.insert(name.clone(), value);
        }
        let rule = SimNatRule {
            id: self.alloc_id(),
            fields,
        };
        self.rows.insert(position, rule.clone());
        Ok(rule)
    }

    /// Appends a row without validation (a rule typed by the admin, or a dynamic one).
    pub(crate) fn insert_raw(&mut self, attrs: &[(&str, &str)]) -> String {
        let mut fields = defaults();
        for (k, v) in attrs {
            fields.insert((*k).to_owned(), (*v).to_owned());
        }
        let id = self.alloc_id();
        self.rows.push(SimNatRule {
            id: id.clone(),
            fields,
        });
        id
    }

    /// The ids of the rows after the row `id`, in table order (empty when it is the last).
    pub(crate) fn following(&self, id: &str) -> Vec<String> {
        match self.position(id) {
            Some(i) => self.rows[i + 1..].iter().map(|r| r.id.clone()).collect(),
            None => Vec::new(),
        }
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.rows.iter().position(|r| r.id == id)
    }

    /// `remove =.id=*1,*2`: all or nothing; an unknown id removes nothing.
    pub(crate) fn remove(&mut self, ids: &str) -> Result<Vec<SimNatRule>, SimTrap> {
        let ids: Vec<&str> = ids.split(',').map(str::trim).collect();
        if ids.iter().any(|id| self.position(id).is_none()) {
            return Err(SimTrap::NoSuchItem);
        }
        let mut removed = Vec::new();
        for id in ids {
            if let Some(i) = self.position(id) {
                removed.push(self.rows.remove(i));
            }
        }
        Ok(removed)
    }

    /// Removes one row by id without checks (the admin deleted it).
    pub(crate) fn remove_raw(&mut self, id: &str) -> Option<SimNatRule> {
        let i = self.position(id)?;
        Some(self.rows.remove(i))
    }

    /// `set =.id=*X` plus fields. Returns (before, after). An empty value clears an
    /// optional field.
    pub(crate) fn set(
        &mut self,
        id: &str,
        attrs: &[(String, String)],
        interfaces: &[String],
    ) -> Result<(SimNatRule, SimNatRule), SimTrap> {
        let i = self.position(id).ok_or(SimTrap::NoSuchItem)?;
        let mut changes = Vec::new();
        for (name, value) in attrs {
            if value.is_empty() && !defaults().contains_key(name) && SETTABLE.contains(&&**name) {
                changes.push((name.clone(), None));
            } else {
                changes.push((name.clone(), Some(validate(name, value, interfaces)?)));
            }
        }
        let before = self.rows[i].clone();
        let row = &mut self.rows[i];
        for (name, value) in changes {
            match value {
                Some(v) => row.fields.insert(name, v),
                None => row.fields.remove(&name),
            };
        }
        Ok((before, row.clone()))
    }
}

/// Checks one `name=value` of add/set and returns the value as print will show it.
fn validate(name: &str, value: &str, interfaces: &[String]) -> Result<String, SimTrap> {
    if !SETTABLE.contains(&name) {
        return Err(SimTrap::UnknownParameter(name.to_owned()));
    }
    if BOOLEANS.contains(&name) {
        return match boolean(value) {
            Some(b) => Ok(b.to_string()),
            None => Err(SimTrap::InvalidValue(name.to_owned())),
        };
    }
    if INTERFACES.contains(&name) {
        let bare = value.strip_prefix('!').unwrap_or(value);
        if !interfaces.iter().any(|i| i == bare) {
            return Err(SimTrap::NoMatchingValue(name.to_owned()));
        }
    }
    if PORTS.contains(&name) {
        check_ports(name, value)?;
    }
    Ok(value.to_owned())
}

/// Ports: `80`, `1000-2000`, `80,443` (a leading `!` negates). Each number 0..=65535.
fn check_ports(name: &str, value: &str) -> Result<(), SimTrap> {
    let bare = value.strip_prefix('!').unwrap_or(value);
    for part in bare.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let mut nums = [0u64; 2];
        for (slot, text) in nums.iter_mut().zip([lo, hi]) {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SimTrap::InvalidValue(name.to_owned()));
            }
            *slot = text
                .parse()
                .map_err(|_| SimTrap::PortOutOfRange(name.to_owned()))?;
            if *slot > 65535 {
                return Err(SimTrap::PortOutOfRange(name.to_owned()));
            }
        }
        if nums[0] > nums[1] {
            return Err(SimTrap::InvalidValue(name.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ifaces() -> Vec<String> {
        vec!["ether1".into(), "wg-proton".into()]
    }

    #[test]
    fn ids_are_uppercase_hex_monotonic_and_never_reused() {
        let mut t = NatTable::new();
        let mut ids = Vec::new();
        for _ in 0..11 {
            ids.push(t.add(&attrs(&[("chain", "dstnat")]), &ifaces()).unwrap().id);
        }
        assert_eq!(ids[0], "*1");
        assert_eq!(ids[9], "*A");
        t.remove("*B").unwrap();
        let next = t.add(&attrs(&[("chain", "dstnat")]), &ifaces()).unwrap().id;
        assert_eq!(next, "*C");
    }

    #[test]
    fn booleans_are_stored_as_true_false_and_defaults_present() {
        let mut t = NatTable::new();
        let r = t
            .add(&attrs(&[("disabled", "yes"), ("log", "no")]), &ifaces())
            .unwrap();
        assert_eq!(r.fields["disabled"], "true");
        assert_eq!(r.fields["log"], "false");
        assert_eq!(r.fields["bytes"], "0");
        assert_eq!(r.fields["log-prefix"], "");
        assert!(!r.fields.contains_key("comment"));
    }

    #[test]
    fn validation_errors() {
        let mut t = NatTable::new();
        assert_eq!(
            t.add(&attrs(&[("in-interface", "wg0")]), &ifaces()),
            Err(SimTrap::NoMatchingValue("in-interface".into()))
        );
        assert_eq!(
            t.add(&attrs(&[("colour", "red")]), &ifaces()),
            Err(SimTrap::UnknownParameter("colour".into()))
        );
        assert_eq!(
            t.add(&attrs(&[("dst-port", "70000")]), &ifaces()),
            Err(SimTrap::PortOutOfRange("dst-port".into()))
        );
        assert_eq!(
            t.add(&attrs(&[("to-ports", "http")]), &ifaces()),
            Err(SimTrap::InvalidValue("to-ports".into()))
        );
        assert!(t.rows().is_empty());
        assert!(t
            .add(&attrs(&[("dst-port", "80,1000-2000")]), &ifaces())
            .is_ok());
    }

    #[test]
    fn remove_list_is_all_or_nothing() {
        let mut t = NatTable::new();
        let a = t.insert_raw(&[("chain", "dstnat")]);
        let b = t.insert_raw(&[("chain", "dstnat")]);
        assert_eq!(t.remove(&format!("{a},*99")), Err(SimTrap::NoSuchItem));
        assert_eq!(t.rows().len(), 2);
        assert_eq!(t.remove(&format!("{a},{b}")).unwrap().len(), 2);
        assert!(t.rows().is_empty());
    }

    #[test]
    fn place_before_inserts_in_order_and_set_changes_fields() {
        let mut t = NatTable::new();
        let a = t.insert_raw(&[("comment", "a")]);
        let b = t
            .add(&attrs(&[("comment", "b"), ("place-before", &a)]), &ifaces())
            .unwrap();
        assert_eq!(t.rows()[0].id, b.id);
        let (_, after) = t
            .set(
                &a,
                &attrs(&[("comment", ""), ("disabled", "yes")]),
                &ifaces(),
            )
            .unwrap();
        assert!(!after.fields.contains_key("comment"));
        assert_eq!(after.fields["disabled"], "true");
        assert_eq!(
            t.set("*77", &attrs(&[("comment", "x")]), &ifaces()),
            Err(SimTrap::NoSuchItem)
        );
    }
}
