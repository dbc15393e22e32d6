//! What the emulated router does with one command once the session has read it: policy checks,
//! the NAT table, route check, identity and resource. Produces reply sentences; no I/O.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::config::SimUser;
use super::query;
use super::schema;
use super::state::{lock, Shared};
use super::table::RuleChange;
pub(crate) use super::trap::done;
use super::trap::SimTrap;
use double_natpmp_codec::routeros::wire::{Command, Reply, ReplyKind};

/// What the session must do after a command.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send these sentences.
    Replies(Vec<Reply>),
    /// `/ip/route/check` without `once`: stream a row per second until `/cancel`.
    StreamRouteCheck(Ipv4Addr),
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
    "/interface/list/member",
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
            let (rule, following) = {
                let mut table = lock(&shared.table);
                let rule = table.add(&cmd.attributes, &shared.config.interfaces)?;
                // Only the nftables mirror needs the rule's place.
                let following = match shared.nft {
                    Some(_) => table.following(&rule.id),
                    None => Vec::new(),
                };
                (rule, following)
            };
            let reply = done(tag).attr("ret", rule.id.clone());
            changes.push(RuleChange::Added { rule, following });
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
            let (before, after, following) = {
                let mut table = lock(&shared.table);
                let (before, after) = table.set(&id, &fields, &shared.config.interfaces)?;
                let following = match shared.nft {
                    Some(_) => table.following(&id),
                    None => Vec::new(),
                };
                (before, after, following)
            };
            changes.push(RuleChange::Updated {
                before,
                after,
                following,
            });
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
            let down = lock(&shared.down).clone();
            let rows = shared
                .config
                .interfaces
                .iter()
                .enumerate()
                .map(|(i, name)| interface_row(shared, i, name, !down.contains(name)))
                .collect();
            print(shared, cmd, rows)
        }
        ("/interface/list/member", "print" | "getall") => {
            require(user, "read")?;
            let rows = shared
                .config
                .interface_lists
                .iter()
                .enumerate()
                .map(|(i, (list, interface))| {
                    fields(&[
                        (".id", format!("*{:X}", i + 1)),
                        ("list", list.clone()),
                        ("interface", interface.clone()),
                        ("disabled", "false".into()),
                        ("dynamic", "false".into()),
                    ])
                })
                .collect();
            print(shared, cmd, rows)
        }
        ("/ip/service", "print" | "getall") => {
            require(user, "read")?;
            let rows = shared
                .config
                .services
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    fields(&[
                        (".id", format!("*{:X}", i + 1)),
                        ("name", s.name.clone()),
                        ("port", s.port.to_string()),
                        ("disabled", s.disabled.to_string()),
                        ("invalid", "false".into()),
                    ])
                })
                .collect();
            print(shared, cmd, rows)
        }
        ("/ip/address", "print" | "getall") => {
            require(user, "read")?;
            // An address on an interface the router does not have is `invalid`.
            let exists = |interface: &str| shared.config.interfaces.iter().any(|i| i == interface);
            let rows = lock(&shared.addresses)
                .iter()
                .enumerate()
                .map(|(i, (address, interface))| {
                    fields(&[
                        (".id", format!("*{:X}", i + 1)),
                        ("address", address.clone()),
                        ("network", network_of(address)),
                        ("interface", interface.clone()),
                        ("actual-interface", interface.clone()),
                        ("invalid", (!exists(interface)).to_string()),
                        ("dynamic", "false".into()),
                        ("disabled", "false".into()),
                    ])
                })
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

/// `!empty` exists from RouterOS 7.18 (docs/routeros-api.md §1.3).
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
    let routes = lock(&shared.routes);
    let best = routes
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
        // The real reply without a route is unknown (docs/routeros-api.md §2.4); we say
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

/// `network` of an `/ip/address` row: the address with its host bits cleared (a /32's is the
/// address itself, as in the captured `address=1.1.1.1/32 network=1.1.1.1`).
fn network_of(address: &str) -> String {
    let parsed = address.split_once('/').and_then(|(ip, len)| {
        let ip: Ipv4Addr = ip.parse().ok()?;
        let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        Some(Ipv4Addr::from(u32::from(ip) & mask))
    });
    match parsed {
        Some(network) => network.to_string(),
        None => address.split('/').next().unwrap_or(address).to_owned(),
    }
}

fn fields(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn interface_row(shared: &Shared, i: usize, name: &str, running: bool) -> BTreeMap<String, String> {
    let guessed = if name.starts_with("bridge") {
        "bridge"
    } else if name.starts_with("wg") {
        "wg"
    } else {
        "ether"
    };
    let kind = shared
        .config
        .interface_types
        .iter()
        .find(|(n, _)| n == name)
        .map_or(guessed, |(_, t)| t.as_str());
    fields(&[
        (".id", format!("*{:X}", i + 1)),
        ("name", name.to_owned()),
        ("type", kind.to_owned()),
        ("mtu", "1500".into()),
        ("running", running.to_string()),
        ("disabled", "false".into()),
    ])
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
