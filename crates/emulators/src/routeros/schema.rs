//! RouterOS's own command trees: which arguments each command takes, per RouterOS version.
//!
//! The emulator answers an argument that is not in the tree of the version it emulates
//! ([`super::RouterSimConfig::command_tree`]) with `!trap =message=unknown parameter <name>`
//! then `!done`, as RouterOS does (docs/routeros-api.md §2.1, terraform-routeros#856 on
//! 7.20.1); `tests/component/routeros_commands.rs` checks the RouterOS scripts and the daemon's own
//! commands against the same data.
//!
//! The data is `command_tree.txt`, RouterOS's `/console/inspect` output for 7.19.6 to 7.24
//! reduced to command paths and argument names (its header names the source and commit;
//! `scripts/routeros-command-tree.py` rebuilds it). One line per command and run of versions
//! with the same arguments: `<version or FIRST..LAST> <path> <argument>...`; the path `/` lists
//! the root scripting commands (`local`, `if`, `parse`, ...). Only the menus this project uses
//! are in it: a command outside them is not checked.
//!
//! What is not an argument: API attributes starting with `.` (`.id`, `.proplist`, `.tag`) and
//! query words (`?...`, kept apart in [`Command::queries`]). Read-only properties (a
//! container's `running`) are not in a command tree either.

use std::collections::HashMap;
use std::sync::OnceLock;

use thiserror::Error;

use super::trap::SimTrap;
use double_natpmp_codec::routeros::wire::Command;

/// The command trees, as made by `scripts/routeros-command-tree.py` (feature `command-trees`;
/// without it there are none, and the emulator checks no argument names).
#[cfg(feature = "command-trees")]
const DATA: &str = include_str!("command_tree.txt");
#[cfg(not(feature = "command-trees"))]
const DATA: &str = "";

/// A command tree file that cannot be read, or a version it does not have.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SchemaError {
    /// A line that is not `<versions> <path> <argument>...`.
    #[error("command tree line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A command line before the `versions` line, or no `versions` line at all.
    #[error("command tree: no `versions` line before the first command")]
    NoVersions,
    /// A version the data has no tree for.
    #[error("no RouterOS command tree for version {version} (the data has {known})")]
    UnknownVersion {
        /// The version asked for.
        version: String,
        /// The versions the data has, space-separated.
        known: String,
    },
}

/// The arguments of one command over a run of versions (indexes into the versions line).
#[derive(Clone, Debug)]
struct Span {
    first: usize,
    last: usize,
    /// Sorted argument names.
    args: Vec<String>,
}

/// The command trees of every version in the data.
#[derive(Clone, Debug)]
pub struct CommandTree {
    source: String,
    versions: Vec<String>,
    commands: HashMap<String, Vec<Span>>,
    /// Every proper prefix of a command path (`/ip`, `/ip/firewall`, ...) with a bit per
    /// version in which some command lies below it.
    menus: HashMap<String, u64>,
}

/// The tree of one version.
#[derive(Clone, Copy, Debug)]
pub struct TreeVersion<'a> {
    tree: &'a CommandTree,
    index: usize,
}

/// The embedded command trees, read once.
pub fn command_tree() -> Result<&'static CommandTree, SchemaError> {
    static TREE: OnceLock<Result<CommandTree, SchemaError>> = OnceLock::new();
    TREE.get_or_init(|| CommandTree::parse(DATA))
        .as_ref()
        .map_err(Clone::clone)
}

/// The newest version in the embedded data (the emulator's default tree), if it reads.
pub fn newest_version() -> Option<String> {
    command_tree().ok().map(|t| t.newest().to_owned())
}

impl CommandTree {
    /// Reads a command tree file (the format in the module documentation).
    pub fn parse(text: &str) -> Result<CommandTree, SchemaError> {
        let mut tree = CommandTree {
            source: String::new(),
            versions: Vec::new(),
            commands: HashMap::new(),
            menus: HashMap::new(),
        };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |reason: &str| SchemaError::BadLine {
                line,
                reason: reason.to_owned(),
            };
            let l = raw.trim();
            if l.is_empty() {
                continue;
            }
            if let Some(comment) = l.strip_prefix('#') {
                if let Some(source) = comment.trim().strip_prefix("source:") {
                    tree.source = source.trim().to_owned();
                }
                continue;
            }
            let mut fields = l.split_whitespace();
            let first = fields.next().unwrap_or_default();
            if first == "versions" {
                tree.versions = fields.map(str::to_owned).collect();
                if tree.versions.is_empty() || tree.versions.len() > 64 {
                    return Err(bad("the versions line needs 1 to 64 versions"));
                }
                continue;
            }
            if tree.versions.is_empty() {
                return Err(SchemaError::NoVersions);
            }
            let (from, to) = first.split_once("..").unwrap_or((first, first));
            let index = |v: &str| tree.versions.iter().position(|k| k == v);
            let (Some(from), Some(to)) = (index(from), index(to)) else {
                return Err(bad(&format!(
                    "{first} is not a version of the versions line"
                )));
            };
            if from > to {
                return Err(bad(&format!("{first}: the range runs backwards")));
            }
            let Some(path) = fields.next().filter(|p| p.starts_with('/')) else {
                return Err(bad("no command path after the versions"));
            };
            let mut args: Vec<String> = fields.map(str::to_owned).collect();
            args.sort();
            args.dedup();
            let spans = tree.commands.entry(path.to_owned()).or_default();
            if spans.iter().any(|s| s.first <= to && from <= s.last) {
                return Err(bad(&format!("{path} is listed twice for one version")));
            }
            spans.push(Span {
                first: from,
                last: to,
                args,
            });
            let bits = (from..=to).fold(0u64, |b, v| b | (1 << v));
            let mut menu = path;
            while let Some((parent, _)) = menu.rsplit_once('/') {
                let parent = if parent.is_empty() { "/" } else { parent };
                *tree.menus.entry(parent.to_owned()).or_default() |= bits;
                if parent == "/" {
                    break;
                }
                menu = parent;
            }
        }
        if tree.versions.is_empty() {
            return Err(SchemaError::NoVersions);
        }
        Ok(tree)
    }

    /// The data's source line (repository, file and commit).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The versions, oldest first.
    pub fn versions(&self) -> &[String] {
        &self.versions
    }

    /// The newest version.
    pub fn newest(&self) -> &str {
        self.versions.last().map(String::as_str).unwrap_or_default()
    }

    /// The tree of `version` (as written in the data, e.g. `7.22.3`).
    pub fn at(&self, version: &str) -> Result<TreeVersion<'_>, SchemaError> {
        match self.versions.iter().position(|v| v == version) {
            Some(index) => Ok(TreeVersion { tree: self, index }),
            None => Err(SchemaError::UnknownVersion {
                version: version.to_owned(),
                known: self.versions.join(" "),
            }),
        }
    }
}

impl<'a> TreeVersion<'a> {
    /// The version, e.g. `7.22.3`.
    pub fn version(&self) -> &'a str {
        &self.tree.versions[self.index]
    }

    /// The sorted argument names of command `path` (`/container/add`), or `None` when this
    /// version has no such command in the data. For `/`: the root scripting commands.
    pub fn arguments(&self, path: &str) -> Option<&'a [String]> {
        self.tree
            .commands
            .get(path)?
            .iter()
            .find(|s| s.first <= self.index && self.index <= s.last)
            .map(|s| s.args.as_slice())
    }

    /// Whether `path` (`/ip/firewall`) is a menu with commands below it in this version.
    pub fn is_menu(&self, path: &str) -> bool {
        self.tree
            .menus
            .get(path)
            .is_some_and(|bits| bits & (1 << self.index) != 0)
    }

    /// Every command path of this version, in no particular order.
    pub fn commands(&self) -> impl Iterator<Item = &'a str> + 'a {
        let index = self.index;
        self.tree
            .commands
            .iter()
            .filter(move |(_, spans)| spans.iter().any(|s| s.first <= index && index <= s.last))
            .map(|(p, _)| p.as_str())
    }
}

/// Checks a command's argument names against `tree`, as RouterOS does before it runs a
/// command: the first name that is not an argument is `unknown parameter <name>`. API
/// attributes (`.id`, `.proplist`, `.tag`) are not arguments; a command the data does not
/// have is not checked (the emulator's own answer stands).
pub(crate) fn check(tree: TreeVersion<'_>, cmd: &Command) -> Result<(), SimTrap> {
    if cmd.path == "/" {
        return Ok(());
    }
    let Some(args) = tree.arguments(&cmd.path) else {
        return Ok(());
    };
    match cmd
        .attributes
        .iter()
        .map(|(name, _)| name)
        .find(|name| !name.starts_with('.') && args.binary_search(name).is_err())
    {
        Some(name) => Err(SimTrap::UnknownParameter(name.clone())),
        None => Ok(()),
    }
}

/// [`check`] against the tree of `version` (the emulator's configured tree); `None`, or a
/// version the data lacks (refused earlier, at [`super::RouterSim::start`]), checks nothing.
pub(crate) fn check_for(version: Option<&str>, cmd: &Command) -> Result<(), SimTrap> {
    match version.and_then(|v| command_tree().ok()?.at(v).ok()) {
        Some(tree) => check(tree, cmd),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "\
# source: test data
versions 7.19.6 7.20.8 7.24
7.19.6 /container/envs/add key name value
7.20.8..7.24 /container/envs/add key list value
7.19.6..7.24 /ip/route/check dst-ip once
7.19.6..7.24 / if local parse
";

    #[test]
    fn ranges_give_each_version_its_own_arguments() {
        let t = CommandTree::parse(SMALL).unwrap();
        assert_eq!(t.source(), "test data");
        assert_eq!(t.newest(), "7.24");
        let old = t.at("7.19.6").unwrap();
        let new = t.at("7.24").unwrap();
        assert_eq!(
            old.arguments("/container/envs/add").unwrap(),
            ["key", "name", "value"]
        );
        assert_eq!(
            new.arguments("/container/envs/add").unwrap(),
            ["key", "list", "value"]
        );
        assert!(new.is_menu("/container") && new.is_menu("/container/envs") && new.is_menu("/"));
        assert!(!new.is_menu("/container/envs/add") && !new.is_menu("/interface"));
        assert_eq!(
            new.arguments("/"),
            Some(&["if".to_owned(), "local".into(), "parse".into()][..])
        );
        assert!(new.arguments("/container/add").is_none());
        assert!(matches!(
            t.at("7.18.2"),
            Err(SchemaError::UnknownVersion { .. })
        ));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, line) in [
            ("versions 7.24\n7.25 /a/b x\n", 2),
            ("versions 7.20 7.24\n7.24..7.20 /a/b x\n", 2),
            ("versions 7.24\n7.24 a/b x\n", 2),
            ("versions 7.24\n7.24 /a/b x\n7.24 /a/b y\n", 3),
        ] {
            match CommandTree::parse(text) {
                Err(SchemaError::BadLine { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(
            CommandTree::parse("7.24 /a/b x\n").unwrap_err(),
            SchemaError::NoVersions
        );
    }

    #[test]
    fn unknown_arguments_are_routeros_unknown_parameter_and_api_words_are_not_arguments() {
        let t = CommandTree::parse(SMALL).unwrap();
        let new = t.at("7.24").unwrap();
        let old = t.at("7.19.6").unwrap();
        let env = Command::new("/container/envs/add")
            .attr("list", "natpmp")
            .attr("key", "K")
            .attr(".tag", "x");
        assert_eq!(check(new, &env), Ok(()));
        assert_eq!(
            check(old, &env),
            Err(SimTrap::UnknownParameter("list".into()))
        );
        let route = Command::new("/ip/route/check")
            .attr("dst-ip", "10.2.0.1")
            .attr("once", "")
            .attr(".proplist", "interface")
            .query("status=ok");
        assert_eq!(check(new, &route), Ok(()));
        let bogus = route.clone().attr("colour", "red");
        assert_eq!(
            check(new, &bogus),
            Err(SimTrap::UnknownParameter("colour".into()))
        );
        // Not in the data: not checked.
        assert_eq!(
            check(new, &Command::new("/login").attr("name", "x")),
            Ok(())
        );
    }

    #[test]
    fn the_embedded_data_reads_and_has_the_commands_the_daemon_sends() {
        let t = command_tree().unwrap();
        assert!(t.source().contains("restraml"), "{}", t.source());
        assert_eq!(t.versions().first().map(String::as_str), Some("7.19.6"));
        assert_eq!(newest_version().as_deref(), Some(t.newest()));
        for v in t.versions() {
            let tree = t.at(v).unwrap();
            for (path, arg) in [
                ("/ip/firewall/nat/add", "to-addresses"),
                ("/ip/firewall/nat/print", "proplist"),
                ("/ip/firewall/nat/remove", "numbers"),
                ("/ip/route/check", "once"),
                ("/", "parse"),
            ] {
                let args = tree.arguments(path).unwrap_or_default();
                assert!(args.iter().any(|a| a == arg), "{v} {path} lacks {arg}");
            }
        }
        // 7.20 renamed the container's envlist to envlists.
        let add = |v: &str| {
            t.at(v)
                .unwrap()
                .arguments("/container/add")
                .unwrap()
                .to_vec()
        };
        assert!(add("7.19.6").contains(&"envlist".to_owned()));
        assert!(add("7.24").contains(&"envlists".to_owned()));
        assert!(!add("7.24").contains(&"envlist".to_owned()));
    }
}
