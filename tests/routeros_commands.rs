//! Every RouterOS command the project sends, checked against RouterOS's own command trees
//! (`src/sim/routeros/command_tree.txt`: `/console/inspect` of 7.19.6 to 7.24) for each
//! version the README supports (its `<!-- routeros-versions: … -->` line):
//! * each command of `routeros/*.rsc`: menu path, verb and argument names (`check.rs` says how
//!   blocks, sub-commands, `:parse` strings and version tests are read);
//! * each API command of the daemon (`Command::new(…).attr(…)` in `src/`, outside the
//!   emulator and tests; `rust_source.rs` says how they are read).
//!
//! The checker's own tests, at the end, show it failing on a wrong argument, on an argument of
//! another version, and on the other mistakes it is there to catch.

#[path = "routeros_commands/check.rs"]
mod check;
#[path = "routeros_commands/rsc.rs"]
mod rsc;
#[path = "routeros_commands/rust_source.rs"]
mod rust_source;

use std::io::Write;
use std::path::{Path, PathBuf};

use double_natpmp::sim::routeros::schema::{command_tree, CommandTree};

use check::{Checker, Finding, Stats};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn tree() -> &'static CommandTree {
    command_tree().expect("the embedded command tree reads")
}

/// The versions the README supports: `<!-- routeros-versions: 7.19.6 … -->`.
fn supported_versions() -> Vec<String> {
    let readme = read(&repo().join("README.md"));
    let line = readme
        .lines()
        .find_map(|l| l.trim().strip_prefix("<!-- routeros-versions:"))
        .expect("README.md has a <!-- routeros-versions: … --> line");
    line.trim_end_matches("-->")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn checker(versions: &[String]) -> Checker<'static> {
    let v: Vec<&str> = versions.iter().map(String::as_str).collect();
    Checker::new(tree(), &v).expect("every supported version has a command tree")
}

/// Straight to stderr, past the test harness's output capture (shown with --nocapture too).
fn note(s: &str) {
    let _ = writeln!(std::io::stderr(), "{s}");
}

fn report(name: &str, findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("{name}:{}: {}", f.line, f.message))
        .collect::<Vec<_>>()
        .join("\n")
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The project's commands

#[test]
fn readme_supported_versions_all_have_a_command_tree() {
    let versions = supported_versions();
    assert!(!versions.is_empty());
    for v in &versions {
        assert!(
            tree().at(v).is_ok(),
            "README supports {v}: no command tree for it"
        );
    }
    let readme = read(&repo().join("README.md"));
    let prose = readme.replace(
        readme
            .lines()
            .find(|l| l.contains("<!-- routeros-versions:"))
            .unwrap_or_default(),
        "",
    );
    for v in &versions {
        assert!(prose.contains(v.as_str()), "the README text names {v}");
    }
}

#[test]
fn every_routeros_script_command_is_valid_on_every_supported_version() {
    let versions = supported_versions();
    let c = checker(&versions);
    let mut scripts = Vec::new();
    files(&repo().join("routeros"), "rsc", &mut scripts);
    assert!(scripts.len() >= 4, "{scripts:?}");
    let mut all = Vec::new();
    note(&format!(
        "RouterOS versions checked: {}",
        versions.join(" ")
    ));
    for path in &scripts {
        let name = path
            .strip_prefix(repo())
            .unwrap_or(path)
            .display()
            .to_string();
        let (findings, stats) = c.script(&read(path));
        note(&summary(&name, &stats));
        let mut limited = stats.limited.clone();
        limited.dedup();
        for (line, cmd, v) in &limited {
            note(&format!("    {name}:{line}: {cmd} checked on {v} only"));
        }
        assert!(stats.commands > 0, "{name}: no command found");
        all.push(report(&name, &findings));
    }
    let all: Vec<String> = all.into_iter().filter(|r| !r.is_empty()).collect();
    assert!(all.is_empty(), "RouterOS would refuse:\n{}", all.join("\n"));
}

fn summary(name: &str, s: &Stats) -> String {
    format!(
        "  {name}: {} commands with {} arguments, {} scripting commands",
        s.commands, s.arguments, s.scripting
    )
}

/// `Command::new` calls whose path is not a literal or const, on purpose.
const UNREADABLE_ON_PURPOSE: &[(&str, &str)] = &[
    // The emulator's side: rebuilds a command it received.
    ("src/routeros/wire.rs", "path"),
];

#[test]
fn every_daemon_api_command_is_valid_on_every_supported_version() {
    let versions = supported_versions();
    let c = checker(&versions);
    let mut sources = Vec::new();
    files(&repo().join("src"), "rs", &mut sources);
    let mut problems = Vec::new();
    let mut total = Stats::default();
    let mut found = Vec::new();
    for path in &sources {
        let name = path
            .strip_prefix(repo())
            .unwrap_or(path)
            .display()
            .to_string();
        // The emulator answers commands (it does not send them); test modules talk to it.
        if name.starts_with("src/sim/") || path.file_name().is_some_and(|f| f == "tests.rs") {
            continue;
        }
        let (cmds, unreadable) = rust_source::extract(&read(path));
        for u in unreadable {
            if !UNREADABLE_ON_PURPOSE.contains(&(name.as_str(), u.expr.as_str())) {
                problems.push(format!(
                    "{name}:{}: cannot read the command `{}`: write its path and attribute names as literals or consts",
                    u.line, u.expr
                ));
            }
        }
        let (findings, stats) = c.api(&cmds);
        if stats.commands == 0 {
            continue;
        }
        note(&format!(
            "  {name}: {} API commands with {} attributes",
            stats.commands, stats.arguments
        ));
        total.commands += stats.commands;
        total.arguments += stats.arguments;
        let r = report(&name, &findings);
        if !r.is_empty() {
            problems.push(r);
        }
        found.extend(cmds.into_iter().map(|c| (c.path, c.attrs)));
    }
    note(&format!(
        "  daemon: {} API commands with {} attributes, on {}",
        total.commands,
        total.arguments,
        versions.join(" ")
    ));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The reader must keep finding what the daemon is known to send.
    let add = found
        .iter()
        .find(|(p, _)| p == "/ip/firewall/nat/add")
        .expect("the dst-nat add");
    assert!(add.1.len() >= 8, "{add:?}");
    for path in [
        "/ip/firewall/nat/print",
        "/ip/firewall/nat/remove",
        "/ip/route/check",
        "/system/resource/print",
    ] {
        assert!(found.iter().any(|(p, _)| p == path), "{path} not found");
    }
}

// ---------------------------------------------------------------------------------------------
// The checker itself: it must be able to fail.

fn all_versions() -> Vec<String> {
    tree().versions().to_vec()
}

fn findings(script: &str) -> Vec<String> {
    let (f, _) = checker(&all_versions()).script(script);
    f.into_iter()
        .map(|f| format!("{}: {}", f.line, f.message))
        .collect()
}

#[test]
fn a_wrong_argument_is_refused_on_every_version() {
    let f = findings("{\n/ip firewall nat add chain=dstnat to-adresses=1.2.3.4\n}\n");
    assert_eq!(
        f,
        ["2: /ip/firewall/nat/add: unknown parameter to-adresses on 7.19.6..7.24"]
    );
}

#[test]
fn an_argument_of_another_version_is_refused_on_the_versions_without_it() {
    let f = findings("/container add remote-image=x interface=veth1 envlist=natpmp\n");
    assert_eq!(
        f,
        ["1: /container/add: unknown parameter envlist on 7.20.8..7.24 (it is valid on 7.19.6)"]
    );
    let f = findings("/container envs add list=natpmp key=K value=V\n");
    assert_eq!(
        f,
        ["1: /container/envs/add: unknown parameter list on 7.19.6 (it is valid on 7.20.8..7.24)"]
    );
}

#[test]
fn a_version_test_needs_parse_since_routeros_compiles_the_whole_script() {
    // The :if alone does not help: 7.19 compiles the line too and refuses it.
    let f = findings(":if ($rosVersion >= 723) do={ /container set 0 restart-policy=always }\n");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].contains("restart-policy on 7.19.6..7.22.3"), "{f:?}");
    // Inside :parse the line is compiled only where it runs.
    let ok = ":if ($rosVersion >= 723) do={ [[:parse \"/container set \\$id restart-policy=always\"] id=0] }\n";
    assert_eq!(findings(ok), Vec::<String>::new());
    let (_, stats) = checker(&all_versions()).script(ok);
    assert_eq!(
        stats.limited,
        [(1, "/container/set".to_owned(), "7.23.3, 7.24".to_owned())]
    );
    // else= gets the other versions, && narrows, and a wrong branch is still caught.
    let branches = "\
:if (($rosVersion >= 720) && ($rosVersion < 723)) do={
    :local a [:parse \"/container set 0 auto-restart-interval=30s\"]
} else={
    :local b [:parse \"/container set 0 auto-restart-interval=30s\"]
}
";
    let f = findings(branches);
    assert_eq!(
        f,
        ["4: /container/set: unknown parameter auto-restart-interval on 7.19.6, 7.23.3, 7.24"]
    );
}

#[test]
fn version_tests_the_checker_cannot_read_are_findings() {
    for cond in [
        "($rosVersion >= \"7.20\")",
        "($rosVersion >= 720 || $x)",
        "($rosVersion ~ 720)",
    ] {
        let f = findings(&format!(":if {cond} do={{ :put 1 }}\n"));
        assert_eq!(f.len(), 1, "{cond}: {f:?}");
    }
    assert_eq!(
        findings(":local s \"/ip route add x=1\"\n:local f [:parse $s]\n"),
        ["2: :parse of something other than a string literal cannot be checked"]
    );
}

#[test]
fn menu_lines_relative_commands_and_find_resolve_to_the_enclosing_menu() {
    let ok = "\
/ip firewall nat
add chain=srcnat action=masquerade
remove [find comment~\"^natpmp: \"]
/ip firewall filter set [find comment=\"defconf: fasttrack\"] connection-mark=no-mark
/ip service set api address=10.0.0.1/32 disabled=no
:local id [/container find name=x]
:put [/container get $id running]
/routing table add name=t fib
/ip/route/check dst-ip=10.2.0.1 once as-value
";
    assert_eq!(findings(ok), Vec::<String>::new());
    let (_, stats) = checker(&all_versions()).script(ok);
    assert_eq!(stats.commands, 10, "{stats:?}");
    // `add` after the menu line is a nat add: `reject-with` is a filter argument, not a nat one.
    let f = findings("/ip firewall nat\nadd chain=srcnat jump-target=x reject-with=tcp-reset\n");
    assert_eq!(
        f,
        ["2: /ip/firewall/nat/add: unknown parameter reject-with on 7.19.6..7.24"]
    );
    // A find filter must be a property of that menu.
    let f = findings("/ip firewall nat remove [find colour=red]\n");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].contains("unknown property colour in find"), "{f:?}");
}

#[test]
fn unknown_commands_menus_and_flags_are_findings() {
    assert_eq!(
        findings("/ip firewall nat ad chain=x\n"),
        ["1: no such command or menu /ip/firewall/nat/ad on 7.19.6..7.24"]
    );
    assert_eq!(
        findings("/ip firewal nat add chain=x\n"),
        ["1: no such command or menu /ip/firewal on 7.19.6..7.24"]
    );
    assert_eq!(
        findings("/routing table add name=t fibb\n"),
        ["1: /routing/table/add: unknown parameter fibb on 7.19.6..7.24"]
    );
    // 7.22 added :break, so 7.19 to 7.21 refuse it.
    assert_eq!(
        findings(":while (true) do={ :break }\n"),
        ["1: :break: no such command on 7.19.6..7.21.5"]
    );
}

#[test]
fn api_commands_are_checked_with_dot_proplist_as_the_proplist_argument() {
    let src = r#"
fn f() {
    Command::new("/ip/firewall/nat/add").attr("chain", "dstnat").attr("to-adresses", "x");
    Command::new("/ip/firewall/nat/remove").attr(".id", "*1");
    Command::new("/ip/firewall/nat/add").attr(".proplist", "x");
    Command::new("/interface/print").attr(".proplist", "name").query("name=x");
    Command::new("/ip/no-such/print");
    Command::new("/login").attr("name", "x");
}
"#;
    let (cmds, bad) = rust_source::extract(src);
    assert!(bad.is_empty());
    let c = checker(&all_versions());
    let (f, stats) = c.api(&cmds);
    let f: Vec<String> = f
        .into_iter()
        .map(|f| format!("{}: {}", f.line, f.message))
        .collect();
    assert_eq!(
        f,
        [
            "3: /ip/firewall/nat/add: unknown parameter to-adresses on 7.19.6..7.24",
            "5: /ip/firewall/nat/add: unknown parameter .proplist on 7.19.6..7.24",
            "7: /ip/no-such/print: no such command on 7.19.6..7.24 (or its menu is not in the data: add it to scripts/routeros-command-tree.py)",
        ]
    );
    assert_eq!(stats.commands, 5);
}

#[test]
fn a_find_may_filter_on_the_read_only_properties_listed_for_its_menu() {
    // /ip service has no add, and set does not take name or dynamic: both are read-only.
    assert_eq!(
        findings("/ip service set [find name=\"api\" dynamic=no] disabled=no\n"),
        Vec::<String>::new()
    );
    let f = findings("/ip service set [find name=\"api\" dynamc=no] disabled=no\n");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].contains("unknown property dynamc in find"), "{f:?}");
}
