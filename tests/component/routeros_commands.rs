//! Every RouterOS command the project sends, checked against RouterOS's own command trees
//! (`crates/emulators/src/routeros/command_tree.txt`: `/console/inspect` of 7.19.6 to 7.24) for each
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

use double_natpmp_emulators::routeros::schema::{command_tree, CommandTree};

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
    ("crates/codec/src/routeros/wire.rs", "path"),
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
        if name.starts_with("crates/emulators/src/")
            || path.file_name().is_some_and(|f| f == "tests.rs")
        {
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

// ---------------------------------------------------------------------------------------------
// What the scripts must do on current RouterOS (7.19 to 7.24), beyond valid commands. No
// RouterOS runs here, so these read the scripts: their order, their version tests (changed on
// purpose, to show the command-tree check then fails) and the commands they record or print.

fn script(name: &str) -> String {
    read(&repo().join("routeros").join(name))
}

/// The script's lines that are not comments, with their 1-based numbers.
fn code_lines(src: &str) -> Vec<(usize, &str)> {
    src.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with('#'))
        .collect()
}

/// The first code line containing `needle`.
fn first_line(src: &str, needle: &str) -> usize {
    code_lines(src)
        .into_iter()
        .find(|(_, l)| l.contains(needle))
        .map(|(n, _)| n)
        .unwrap_or_else(|| panic!("no code line contains {needle:?}"))
}

/// The first code line that changes the router: an add, set, remove or start of a menu, or a
/// call that records or changes something (the undo recorder's body counts too, although it
/// runs only when called).
fn first_change(src: &str) -> usize {
    code_lines(src)
        .into_iter()
        .find(|(_, l)| {
            let t = l.trim_start();
            (t.starts_with('/')
                && [" add ", " set ", " remove ", " start "]
                    .iter()
                    .any(|v| t.contains(v)))
                || t.starts_with("$undoRecord")
                || t.starts_with("$envRemove")
                || t.starts_with("$envAdd")
        })
        .map(|(n, _)| n)
        .expect("the script changes something")
}

/// Every `$undoRecord … line=…` call, also inside blocks: (line, the recorded command), the
/// value's variables replaced by `vars` (others by `X`), its strings unescaped.
fn undo_records(src: &str, vars: &[(&str, &str)]) -> Vec<(usize, String)> {
    fn value(parts: &[rsc::Part], vars: &[(&str, &str)], out: &mut String) {
        for p in parts {
            match p {
                rsc::Part::Str(raw) => out.push_str(&rsc::unescape(raw)),
                rsc::Part::Var(v) => out.push_str(
                    vars.iter()
                        .find(|(n, _)| n == v)
                        .map_or("X", |(_, val)| val),
                ),
                rsc::Part::Paren(words) => {
                    for w in words {
                        value(&w.parts, vars, out);
                    }
                }
                rsc::Part::Sub(_) => out.push('X'),
                rsc::Part::Text(t) if t == "." => {}
                rsc::Part::Text(t) => out.push_str(t),
                rsc::Part::Brace(_) => {}
            }
        }
    }
    fn walk(cmds: &[rsc::Cmd], vars: &[(&str, &str)], out: &mut Vec<(usize, String)>) {
        for c in cmds {
            if c.words.first().map(|w| w.parts.as_slice())
                == Some(&[rsc::Part::Var("undoRecord".into())][..])
            {
                for w in &c.words[1..] {
                    if let Some(("line", '=', parts)) = w.assignment() {
                        let mut s = String::new();
                        value(parts, vars, &mut s);
                        out.push((c.line, s));
                    }
                }
            }
            for w in &c.words {
                for p in &w.parts {
                    if let rsc::Part::Brace(body) = p {
                        walk(body, vars, out);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&rsc::parse(src).expect("the script reads"), vars, &mut out);
    out
}

#[test]
fn the_api_service_is_always_the_configured_row_never_a_sessions_dynamic_row() {
    // Since 7.19 /ip service also lists a dynamic row named api per open API session, so
    // `set api` fails ("configured elsewhere") while one is open. Every lookup names the
    // configured row: a find with dynamic=no, or $svc, which such a find set.
    let mut lookups = 0;
    for name in [
        "01-api-user.rsc",
        "02-container.rsc",
        "03-firewall.rsc",
        "99-uninstall.rsc",
    ] {
        let src = script(name);
        for (n, line) in code_lines(&src) {
            let line = line.replace("\\$", "$");
            for (at, _) in line.match_indices("/ip service ") {
                let rest = &line[at + "/ip service ".len()..];
                let mut words = rest.split_whitespace();
                let verb = words.next().unwrap_or_default();
                let target = words.next().unwrap_or_default();
                // `key="/ip service set "` names a recorded line, it runs nothing.
                if !matches!(verb, "get" | "set" | "find" | "print") || target.starts_with('"') {
                    continue;
                }
                lookups += 1;
                let ok = match verb {
                    "find" | "print" => rest.contains("dynamic=no"),
                    _ => {
                        target == "$svc"
                            || (target.starts_with("[find") && rest.contains("dynamic=no"))
                    }
                };
                assert!(
                    ok,
                    "{name}:{n}: /ip service {verb} without dynamic=no: {line}"
                );
            }
        }
        if name == "01-api-user.rsc" {
            assert!(
                src.contains(":local svc [/ip service find name=\"api\" dynamic=no]"),
                "$svc is the configured api row"
            );
        }
    }
    assert!(lookups >= 7, "only {lookups} /ip service lookups found");
}

#[test]
fn recorded_undo_lines_are_valid_commands_that_catch_their_own_errors() {
    let c = checker(&supported_versions());
    let mut records = Vec::new();
    for (name, vars) in [
        ("01-api-user.rsc", &[("fromName", "address")][..]),
        ("01-api-user.rsc", &[("fromName", "available-from")][..]),
        ("02-container.rsc", &[][..]),
        ("03-firewall.rsc", &[][..]),
    ] {
        for (line, record) in undo_records(&script(name), vars) {
            records.push(format!("{name}:{line}: {record}"));
            assert!(
                record.starts_with(":do { ") && record.contains(" } on-error={ :put "),
                "{name}:{line}: the recorded command must catch its own error: {record}"
            );
            let (findings, stats) = c.script(&format!("{record}\n"));
            // available-from exists from 7.24 only; on older versions the undo records address.
            let findings: Vec<_> = findings
                .into_iter()
                .filter(|f| {
                    !(vars == [("fromName", "available-from")]
                        && f.message.contains("available-from on 7.19.6..7.23.3"))
                })
                .collect();
            assert!(findings.is_empty(), "{name}:{line}: {record}: {findings:?}");
            assert_eq!(
                stats.commands,
                if record.contains("[find") { 2 } else { 1 },
                "{record}"
            );
        }
    }
    assert_eq!(records.len(), 4, "{records:#?}");
}

#[test]
fn the_uninstall_runs_the_recorded_undo_inside_an_error_handler() {
    let cmds = rsc::parse(&script("99-uninstall.rsc")).expect("99-uninstall.rsc reads");
    // The `:do { … /system script run $undo … } on-error={ … }` somewhere in the script.
    fn runs_undo(c: &rsc::Cmd) -> bool {
        let words: Vec<&str> = c.words.iter().filter_map(rsc::Word::text).collect();
        words.starts_with(&["/system", "script", "run"])
    }
    fn find(cmds: &[rsc::Cmd]) -> Option<bool> {
        for c in cmds {
            if c.words.first().and_then(rsc::Word::text) == Some(":do") {
                if let Some([rsc::Part::Brace(body)]) = c.words.get(1).map(|w| w.parts.as_slice()) {
                    if body.iter().any(runs_undo) {
                        return Some(
                            c.words
                                .iter()
                                .any(|w| matches!(w.assignment(), Some(("on-error", '=', _)))),
                        );
                    }
                }
            }
            for w in &c.words {
                for p in &w.parts {
                    if let rsc::Part::Brace(body) = p {
                        if let Some(found) = find(body) {
                            return Some(found);
                        }
                    }
                }
            }
        }
        None
    }
    assert_eq!(
        find(&cmds),
        Some(true),
        "no `:do {{ /system script run $undo }} on-error={{ … }}`"
    );
    // Nothing else runs the undo unguarded.
    let src = script("99-uninstall.rsc");
    for (n, line) in code_lines(&src) {
        if line.contains("/system script run") {
            assert!(
                line.trim_start().starts_with(":do {"),
                "99-uninstall.rsc:{n}: {line}"
            );
        }
    }
}

/// The script's findings after replacing `from` by `to` (which must occur).
fn findings_after(name: &str, from: &str, to: &str) -> Vec<String> {
    let src = script(name);
    assert!(src.contains(from), "{name} no longer contains {from:?}");
    let (f, _) = checker(&supported_versions()).script(&src.replace(from, to));
    f.into_iter().map(|f| f.message).collect()
}

#[test]
fn version_dependent_arguments_are_chosen_by_version_and_the_check_would_catch_a_wrong_choice() {
    // The scripts as they are: no finding (every_routeros_script_command_is_valid_… too).
    for name in ["01-api-user.rsc", "02-container.rsc"] {
        assert_eq!(
            findings_after(name, "{", "{"),
            Vec::<String>::new(),
            "{name}"
        );
    }
    // available-from is 7.24's: choosing it from 7.23 on is refused on 7.23.3.
    let f = findings_after(
        "01-api-user.rsc",
        "($rosVersion >= 724)",
        "($rosVersion >= 723)",
    );
    assert!(
        f.iter()
            .any(|m| m.contains("unknown parameter available-from on 7.23.3")),
        "{f:?}"
    );
    // builtin-trust-store is 7.21's, builtin-trust-anchors 7.19's and 7.20's. The script reads
    // them with get, whose value names no tree lists, so here the order shows the split: the
    // store under `>= 721`, the anchors in its else.
    let src = script("02-container.rsc");
    let store = first_line(&src, "get builtin-trust-store");
    let anchors = first_line(&src, "get builtin-trust-anchors");
    let split = first_line(&src, ":if ($rosVersion >= 721) do={");
    assert!(
        split < store && store < anchors,
        "{split} {store} {anchors}"
    );
    assert!(
        src.contains(":set trustCmd \"/certificate settings set builtin-trust-anchors=trusted\"")
    );
    // The commands the script tells the user to run are valid where it says them.
    for (cmd, versions) in [
        (
            "/certificate settings set builtin-trust-anchors=trusted\n",
            &["7.19.6", "7.20.8"][..],
        ),
        (
            "/certificate settings set builtin-trust-store=all\n",
            &["7.21.5", "7.22.3", "7.23.3", "7.24"][..],
        ),
        (
            "/system/device-mode/update container=yes\n",
            &["7.19.6", "7.20.8", "7.21.5", "7.22.3", "7.23.3", "7.24"][..],
        ),
    ] {
        let v: Vec<String> = versions.iter().map(|s| (*s).to_owned()).collect();
        let (f, _) = checker(&v).script(cmd);
        assert!(f.is_empty(), "{cmd}: {f:?}");
    }
}

#[test]
fn the_container_script_checks_device_mode_the_image_and_an_old_setup_before_creating_anything() {
    let src = script("02-container.rsc");
    let creating = first_change(&src);
    let checks = [
        (
            "device-mode",
            first_line(&src, "[/system device-mode get container]"),
        ),
        (
            "device-mode message with the command to run",
            first_line(&src, "/system/device-mode/update container=yes"),
        ),
        ("OWNER image", first_line(&src, "[:find $image \"OWNER\"]")),
        (
            "image file present",
            first_line(&src, "[/file find name=$imageFile]"),
        ),
        ("DNS server", first_line(&src, "[/ip dns get servers]")),
        (
            "old veth",
            first_line(&src, "[/interface bridge port find interface=$vethName]"),
        ),
        (
            "old address",
            first_line(&src, ":foreach a in=[/ip address find]"),
        ),
        (
            "old setup message",
            first_line(&src, "/interface veth remove [find name="),
        ),
    ];
    for (what, line) in checks {
        assert!(
            line < creating,
            "02-container.rsc: the {what} check (line {line}) comes after line {creating}, which changes the router"
        );
    }
    // Unedited, the script stops at the image: it names OWNER and no file is set.
    assert!(src.contains(":local image \"ghcr.io/OWNER/double-natpmp:latest\""));
    assert!(src.contains(":local imageFile \"\""));
    // The device-mode check comes first of all the checks that read the router's setup.
    assert!(checks[0].1 < checks[2].1 && checks[0].1 < checks[5].1);
}

#[test]
fn a_failed_pull_or_extract_is_reported_as_such_with_the_command_that_shows_why() {
    let src = script("02-container.rsc");
    // The wait watches the container log (since the add) and 7.19's status error, and stops.
    let before = first_line(
        &src,
        ":local logBefore [/log find where topics~\"container\"]",
    );
    let add = first_line(&src, "/container add name=$containerName");
    let watch = first_line(&src, "[/log find where topics~\"container\" and message~");
    let report = first_line(&src, "pulling or extracting the image failed");
    assert!(
        before < add && add < watch && watch < report,
        "{before} {add} {watch} {report}"
    );
    assert!(src.contains("($state != \"error\") && ([:len $failed] = 0)"));
    let message = code_lines(&src)
        .into_iter()
        .find(|(n, _)| *n == report)
        .map(|(_, l)| l)
        .unwrap_or_default();
    assert!(
        message.contains(":error"),
        "a failure ends the script: {message}"
    );
    assert!(
        message.contains("/log print where topics~\\\"container\\\""),
        "{message}"
    );
    assert!(
        message.contains("/container remove [find name="),
        "{message}"
    );
    // The state of a container still working no longer reads "busy".
    assert!(!src.contains("busy"));
}

#[test]
fn every_routeros_block_of_the_readme_and_docs_is_valid_on_every_supported_version() {
    // The commands a router owner copies from the documentation (```routeros blocks).
    let c = checker(&supported_versions());
    let mut pages = vec![repo().join("README.md")];
    files(&repo().join("docs"), "md", &mut pages);
    let mut blocks = 0;
    for page in &pages {
        let text = read(page);
        let name = page
            .strip_prefix(repo())
            .unwrap_or(page)
            .display()
            .to_string();
        for block in text.split("```routeros\n").skip(1) {
            let code = block.split("```").next().unwrap_or_default();
            blocks += 1;
            let (f, stats) = c.script(code);
            assert!(stats.commands > 0, "{name}: an empty routeros block");
            assert!(
                f.is_empty(),
                "{name}: RouterOS would refuse:\n{code}\n{f:?}"
            );
        }
    }
    assert!(blocks >= 3, "only {blocks} routeros blocks found");
}

#[test]
fn the_firewall_script_stops_at_another_nat_pmp_redirect_before_changing_anything() {
    // The original tool's redirect (no natpmp: comment) would catch the clients' requests
    // before ours; 03 stops, naming the command that removes it, before its first change.
    let src = script("03-firewall.rsc");
    let look = first_line(
        &src,
        "[/ip firewall nat find chain=dstnat protocol=udp dst-port=5351]",
    );
    let stop = first_line(&src, "another dst-nat rule already redirects NAT-PMP");
    let first_change = first_change(&src);
    assert!(
        look < stop && stop < first_change,
        "{look} {stop} {first_change}"
    );
    assert!(src.contains("/ip firewall nat remove [find chain=dstnat comment="));
    // Ours are told apart by their comment.
    assert!(src.contains(":if (!($c ~ \"^natpmp: \")) do={"));
}
