//! What the emulated router does with one command once the session has read it: policy checks,
//! the NAT table, route check, identity and resource. Produces reply sentences; no I/O.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use thiserror::Error;

use super::query;
use super::schema;
use super::table::SimNatRule;
use super::{lock, Shared, SimUser};
use crate::routeros::wire::{Command, Reply, ReplyKind};

/// An error the emulated router reports as `!trap =message=<text>` (then `!done`).
/// The texts are the real ones where known (ROUTEROS_API.md §2.1 table).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SimTrap {
    /// Login with a wrong name or password, a user without the `api` policy, or refused logins.
    #[error("invalid user name or password (6)")]
    BadLogin,
    /// remove/set/place-before with an id that is not in the table.
    #[error("no such item (4)")]
    NoSuchItem,
    /// The user's group lacks the policy the command needs.
    #[error("not enough permissions (9)")]
    NotEnoughPermissions,
    /// An attribute the command does not take.
    #[error("unknown parameter {0}")]
    UnknownParameter(String),
    /// An interface name that does not exist (category 1).
    #[error("input does not match any value of {0}")]
    NoMatchingValue(String),
    /// A value that cannot be parsed for that argument (category 1).
    #[error("invalid value for argument {0}")]
    InvalidValue(String),
    /// A port number above 65535 (category 1).
    #[error("value of {0} out of range (0..65535)")]
    PortOutOfRange(String),
    /// A required argument is missing (category 1).
    #[error("missing value(s) of argument(s) {0}")]
    MissingArgument(String),
    /// An unknown menu.
    #[error("no such command prefix")]
    NoSuchCommandPrefix,
    /// A known menu without that command.
    #[error("no such command")]
    NoSuchCommand,
    /// A streaming command stopped by `/cancel` (category 2).
    #[error("interrupted")]
    Interrupted,
    /// A message set by a fault hook ([`super::RouterSim::set_trap_on_add`]).
    #[error("{0}")]
    Injected(String),
}

impl SimTrap {
    /// The `=category=` RouterOS attaches, where the spec gives one.
    pub fn category(&self) -> Option<u8> {
        match self {
            SimTrap::NoMatchingValue(_)
            | SimTrap::InvalidValue(_)
            | SimTrap::PortOutOfRange(_)
            | SimTrap::MissingArgument(_) => Some(1),
            SimTrap::Interrupted => Some(2),
            _ => None,
        }
    }

    /// The `!trap` sentence for this error, tagged.
    pub(crate) fn trap(&self, tag: &Option<String>) -> Reply {
        let mut r = Reply::new(ReplyKind::Trap).tagged(tag.clone());
        if let Some(c) = self.category() {
            r = r.attr("category", c.to_string());
        }
        r.attr("message", self.to_string())
    }

    /// `!trap` then `!done`, both tagged.
    pub(crate) fn replies(&self, tag: &Option<String>) -> Vec<Reply> {
        vec![self.trap(tag), done(tag)]
    }
}

/// A change to the NAT table, for the nftables mirror.
#[derive(Clone, Debug)]
pub(crate) enum RuleChange {
    /// A rule was added.
    Added(SimNatRule),
    /// A rule was removed.
    Removed(SimNatRule),
    /// A rule changed from .0 to .1.
    Updated(SimNatRule, SimNatRule),
}

/// What the session must do after a command.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send these sentences.
    Replies(Vec<Reply>),
    /// `/ip/route/check` without `once`: stream a row per second until `/cancel`.
    StreamRouteCheck(Ipv4Addr),
}

pub(crate) fn done(tag: &Option<String>) -> Reply {
    Reply::new(ReplyKind::Done).tagged(tag.clone())
}

/// Menus the emulator knows: a command under one of them that we do not implement is
/// `no such command`; anything else is `no such command prefix`.
const MENUS: &[&str] = &[
    "/ip/firewall/nat",
    "/ip/firewall/filter",
    "/ip/firewall/mangle",
    "/ip/route",
    "/ip/address",
    "/ip/service",
    "/system/identity",
    "/system/resource",
    "/interface",
    "/user",
];

const PRINT_OPTIONS: &[&str] = &[
    ".proplist",
    "count-only",
    "detail",
    "without-paging",
    "stats",
    "terse",
];

fn require(user: &SimUser, policy: &str) -> Result<(), SimTrap> {
    if user.policies.iter().any(|p| p == policy) {
        Ok(())
    } else {
        Err(SimTrap::NotEnoughPermissions)
    }
}

/// Runs one command (not `/login`, `/quit` or `/cancel`, which the session handles).
pub(crate) fn execute(
    shared: &Shared,
    user: &SimUser,
    cmd: &Command,
    changes: &mut Vec<RuleChange>,
) -> Outcome {
    // Like RouterOS, an argument the command does not take is refused before anything runs.
    if let Err(t) = schema::check_for(shared.config.command_tree.as_deref(), cmd) {
        return Outcome::Replies(t.replies(&cmd.tag));
    }
    match run(shared, user, cmd, changes) {
        Ok(o) => o,
        Err(t) => Outcome::Replies(t.replies(&cmd.tag)),
    }
}

fn run(
    shared: &Shared,
    user: &SimUser,
    cmd: &Command,
    changes: &mut Vec<RuleChange>,
) -> Result<Outcome, SimTrap> {
    let tag = &cmd.tag;
    let path = cmd.path.as_str();
    let (menu, verb) = path.rsplit_once('/').unwrap_or(("", path));
    match (menu, verb) {
        ("/ip/firewall/nat", "add") => {
            require(user, "write")?;
            if let Some(m) = lock(&shared.faults).trap_on_add.clone() {
                return Err(SimTrap::Injected(m));
            }
            let rule = lock(&shared.table).add(&cmd.attributes, &shared.config.interfaces)?;
            let reply = done(tag).attr("ret", rule.id.clone());
            changes.push(RuleChange::Added(rule));
            Ok(Outcome::Replies(vec![reply]))
        }
        ("/ip/firewall/nat", "print" | "getall") => {
            require(user, "read")?;
            let rows = lock(&shared.table)
                .rows()
                .iter()
                .map(|r| {
                    let mut m = r.fields.clone();
                    m.insert(".id".into(), r.id.clone());
                    m
                })
                .collect();
            print(shared, cmd, rows)
        }
        ("/ip/firewall/nat", "remove") => {
            require(user, "write")?;
            let ids = id_argument(cmd, false)?;
            let removed = lock(&shared.table).remove(&ids)?;
            changes.extend(removed.into_iter().map(RuleChange::Removed));
            Ok(Outcome::Replies(vec![done(tag)]))
        }
        ("/ip/firewall/nat", "set") => {
            require(user, "write")?;
            let id = id_argument(cmd, true)?;
            let fields: Vec<(String, String)> = cmd
                .attributes
                .iter()
                .filter(|(k, _)| k != ".id" && k != "numbers")
                .cloned()
                .collect();
            let (before, after) =
                lock(&shared.table).set(&id, &fields, &shared.config.interfaces)?;
            changes.push(RuleChange::Updated(before, after));
            Ok(Outcome::Replies(vec![done(tag)]))
        }
        ("/ip/route", "check") => {
            require(user, "test")?;
            let mut dst = None;
            let mut once = false;
            for (k, v) in &cmd.attributes {
                match k.as_str() {
                    "dst-ip" => {
                        dst = Some(
                            v.parse::<Ipv4Addr>()
                                .map_err(|_| SimTrap::InvalidValue("dst-ip".into()))?,
                        )
                    }
                    "src-ip" => {}
                    // `=once=` (documented) and bare `=once` (ORIG) both arrive here.
                    "once" => once = true,
                    other => return Err(SimTrap::UnknownParameter(other.to_owned())),
                }
            }
            let dst = dst.ok_or_else(|| SimTrap::MissingArgument("dst-ip".into()))?;
            if once {
                Ok(Outcome::Replies(vec![
                    route_row(shared, dst, tag),
                    done(tag),
                ]))
            } else {
                Ok(Outcome::StreamRouteCheck(dst))
            }
        }
        ("/system/identity", "print" | "getall") => {
            require(user, "read")?;
            let row = BTreeMap::from([("name".to_owned(), shared.config.identity.clone())]);
            print(shared, cmd, vec![row])
        }
        ("/system/resource", "print" | "getall") => {
            require(user, "read")?;
            print(shared, cmd, vec![resource_row(shared)])
        }
        ("/interface", "print" | "getall") => {
            require(user, "read")?;
            let rows = shared
                .config
                .interfaces
                .iter()
                .enumerate()
                .map(|(i, name)| interface_row(i, name))
                .collect();
            print(shared, cmd, rows)
        }
        _ if MENUS.contains(&menu) => Err(SimTrap::NoSuchCommand),
        _ => Err(SimTrap::NoSuchCommandPrefix),
    }
}

/// `=.id=` (or the older `=numbers=`), the only other attributes allowed being the fields
/// of `set` (`allow_fields`).
fn id_argument(cmd: &Command, allow_fields: bool) -> Result<String, SimTrap> {
    if !allow_fields {
        if let Some((k, _)) = cmd
            .attributes
            .iter()
            .find(|(k, _)| k != ".id" && k != "numbers")
        {
            return Err(SimTrap::UnknownParameter(k.clone()));
        }
    }
    cmd.get(".id")
        .or_else(|| cmd.get("numbers"))
        .map(str::to_owned)
        .ok_or_else(|| SimTrap::MissingArgument("numbers".into()))
}

/// Shared print logic: query filter, `count-only`, `.proplist`, `!empty` on 7.18+.
fn print(
    shared: &Shared,
    cmd: &Command,
    rows: Vec<BTreeMap<String, String>>,
) -> Result<Outcome, SimTrap> {
    if let Some((k, _)) = cmd
        .attributes
        .iter()
        .find(|(k, _)| !PRINT_OPTIONS.contains(&k.as_str()))
    {
        return Err(SimTrap::UnknownParameter(k.clone()));
    }
    let tag = &cmd.tag;
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| query::matches(&cmd.queries, r))
        .collect();
    if cmd.get("count-only").is_some() {
        return Ok(Outcome::Replies(vec![
            done(tag).attr("ret", rows.len().to_string())
        ]));
    }
    let proplist: Option<Vec<&str>> = cmd.get(".proplist").map(|p| p.split(',').collect());
    let mut out = Vec::with_capacity(rows.len() + 1);
    for row in rows {
        let mut re = Reply::new(ReplyKind::Re).tagged(tag.clone());
        for (k, v) in row {
            if proplist.as_ref().is_none_or(|p| p.contains(&k.as_str())) {
                re = re.attr(k, v);
            }
        }
        out.push(re);
    }
    if out.is_empty() && empty_enabled(&lock(&shared.version)) {
        out.push(Reply::new(ReplyKind::Empty).tagged(tag.clone()));
    }
    out.push(done(tag));
    Ok(Outcome::Replies(out))
}

/// `!empty` exists from RouterOS 7.18 (ROUTEROS_API.md §1.3).
pub(crate) fn empty_enabled(version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (7, 18)
}

/// One `/ip/route/check` row: longest prefix over the configured routes.
pub(crate) fn route_row(shared: &Shared, dst: Ipv4Addr, tag: &Option<String>) -> Reply {
    let best = shared
        .config
        .routes
        .iter()
        .filter(|r| {
            let mask = match r.prefix_len.min(32) {
                0 => 0,
                n => u32::MAX << (32 - u32::from(n)),
            };
            u32::from(dst) & mask == u32::from(r.dst) & mask
        })
        .max_by_key(|r| r.prefix_len);
    let re = Reply::new(ReplyKind::Re).tagged(tag.clone());
    match best {
        Some(r) => re
            .attr("status", "ok")
            .attr("interface", r.interface.clone())
            .attr("nexthop", r.gateway.to_string()),
        // The real reply without a route is unknown (ROUTEROS_API.md §2.4); we say
        // `unreachable` with no interface or nexthop.
        None => re.attr("status", "unreachable"),
    }
}

fn resource_row(shared: &Shared) -> BTreeMap<String, String> {
    let secs = shared.started.elapsed().as_secs();
    let uptime = format!(
        "{}w{}d{}h{}m{}s",
        secs / 604_800,
        secs / 86_400 % 7,
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    );
    [
        ("version", lock(&shared.version).clone()),
        ("board-name", shared.config.board.clone()),
        ("uptime", uptime),
        ("architecture-name", "arm64".into()),
        ("cpu", "ARM64".into()),
        ("cpu-count", "4".into()),
        ("cpu-load", "1".into()),
        ("free-memory", "845152256".into()),
        ("total-memory", "1073741824".into()),
        ("platform", "MikroTik".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn interface_row(i: usize, name: &str) -> BTreeMap<String, String> {
    let kind = if name.starts_with("bridge") {
        "bridge"
    } else if name.starts_with("wg") {
        "wg"
    } else {
        "ether"
    };
    [
        (".id", format!("*{:X}", i + 1)),
        ("name", name.to_owned()),
        ("type", kind.to_owned()),
        ("mtu", "1500".into()),
        ("running", "true".into()),
        ("disabled", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_reply_starts_at_7_18() {
        assert!(empty_enabled("7.18.2 (stable)"));
        assert!(empty_enabled("7.20"));
        assert!(empty_enabled("8.0"));
        assert!(!empty_enabled("7.17.2 (stable)"));
        assert!(!empty_enabled("6.49.10"));
    }
}
