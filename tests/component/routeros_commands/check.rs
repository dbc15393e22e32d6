//! Checks RouterOS script commands and API commands against RouterOS's command trees.
//!
//! Scripts: every command, also inside `{ }` blocks, `[ ]` sub-commands, `( )` expressions,
//! `do=`/`else=`/`on-error=` bodies, functions and `:parse "…"` strings, is resolved to a
//! command path (absolute, `/ip firewall nat add`, or relative to the menu of the enclosing
//! command or of a menu line such as `/ip firewall nat` before `add …`) and its arguments are
//! checked:
//! * `name=value` and bare flags (`once`, `fib`, `as-value`) must be arguments of the command;
//! * bare values fill the command's unnamed arguments (`numbers`/`number`, then `value-name`:
//!   `/ip service set api …`, `/container get $id running`); the property named by `get` is not
//!   checked (read-only properties such as `running` are not in a command tree);
//! * `find name=x` / `find comment~"re"` filters must be properties the menu's `add` or `set`
//!   takes (the tree lists only `where` for `find`), or read-only ones listed in `READ_ONLY`
//!   (such as `/ip service find name=api dynamic=no`); a `where` expression is not checked;
//! * root scripting commands (`:local`, `:if`, `:parse`, …) must exist; their own arguments
//!   (`do=`, `else=`, …) are not in the tree and are not checked.
//!
//! Versions: RouterOS compiles a whole script before it runs any of it, so a command is
//! checked against every supported version, even inside an `:if` that only some versions
//! enter, except inside a `:parse "…"` string, which is compiled only when it runs: there the
//! versions are those the enclosing version tests let through. A version test is an `:if`
//! whose condition compares `$rosVersion` (major × 100 + minor, e.g. 722 for 7.22.3) with a
//! number, such as `($rosVersion >= 720)` or `(($rosVersion >= 720) && ($rosVersion < 723))`;
//! `do=` runs on the versions it selects, `else=` on the others. A condition that mentions
//! `$rosVersion` in any other way is a finding.

use double_natpmp_emulators::routeros::schema::{CommandTree, TreeVersion};

use super::rsc::{self, Cmd, Part, Word};
use super::rust_source::ApiCommand;

/// The variable version tests compare.
pub const VERSION_VAR: &str = "rosVersion";

/// A set of versions: bit i is the i-th supported version.
type Set = u64;

/// Something RouterOS would refuse, or that the checker cannot read.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// 1-based line.
    pub line: usize,
    /// What is wrong, with the versions concerned.
    pub message: String,
}

/// What was checked in one script or source file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Menu commands (`/ip firewall nat add`, `[find …]`, API commands).
    pub commands: usize,
    /// Root scripting commands (`:local`, `:if`, …).
    pub scripting: usize,
    /// Argument names checked (`name=`, flags, `find` filters).
    pub arguments: usize,
    /// Commands checked against only some of the versions (in `:parse` under a version
    /// test): line, path and versions.
    pub limited: Vec<(usize, String, String)>,
}

/// The command trees of the supported versions.
pub struct Checker<'a> {
    trees: Vec<TreeVersion<'a>>,
    codes: Vec<u32>,
}

#[derive(Clone)]
struct Ctx {
    menu: String,
    /// Versions on which this code is compiled (checked).
    compiled: Set,
    /// Versions on which it runs (what a `:parse` inside compiles for).
    runs: Set,
}

/// A resolved command: its path, and where its arguments start.
#[derive(Clone, Debug, PartialEq)]
enum Resolved {
    Command(String, usize),
    Menu(String),
}

/// `7.22.3` → 722.
pub fn version_code(v: &str) -> Option<u32> {
    let mut it = v.split('.');
    let major: u32 = it.next()?.parse().ok()?;
    let minor: u32 = it
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some(major * 100 + minor)
}

impl<'a> Checker<'a> {
    /// A checker for `versions` (each must be in `tree`).
    pub fn new(tree: &'a CommandTree, versions: &[&str]) -> Result<Checker<'a>, String> {
        if versions.is_empty() || versions.len() > 64 {
            return Err("give 1 to 64 versions".into());
        }
        let mut trees = Vec::new();
        let mut codes = Vec::new();
        for v in versions {
            trees.push(tree.at(v).map_err(|e| e.to_string())?);
            codes.push(version_code(v).ok_or_else(|| format!("{v}: not a RouterOS version"))?);
        }
        Ok(Checker { trees, codes })
    }

    fn all(&self) -> Set {
        if self.trees.len() == 64 {
            u64::MAX
        } else {
            (1u64 << self.trees.len()) - 1
        }
    }

    fn each(&self, set: Set) -> impl Iterator<Item = (usize, TreeVersion<'a>)> + '_ {
        self.trees
            .iter()
            .copied()
            .enumerate()
            .filter(move |(i, _)| set & (1 << i) != 0)
    }

    /// `7.19.6, 7.20.8` or `7.20.8..7.24` (a run of consecutive versions).
    pub fn names(&self, set: Set) -> String {
        let idx: Vec<usize> = (0..self.trees.len())
            .filter(|i| set & (1 << i) != 0)
            .collect();
        if idx.len() > 2 && idx.windows(2).all(|w| w[1] == w[0] + 1) {
            return format!(
                "{}..{}",
                self.trees[idx[0]].version(),
                self.trees[idx[idx.len() - 1]].version()
            );
        }
        idx.iter()
            .map(|&i| self.trees[i].version())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks a whole script.
    pub fn script(&self, src: &str) -> (Vec<Finding>, Stats) {
        let mut run = Run {
            c: self,
            findings: Vec::new(),
            stats: Stats::default(),
        };
        match rsc::parse(src) {
            Ok(cmds) => {
                let ctx = Ctx {
                    menu: "/".into(),
                    compiled: self.all(),
                    runs: self.all(),
                };
                run.block(&cmds, &ctx);
            }
            Err(e) => run.finding(e.line, format!("cannot read the script: {}", e.message)),
        }
        (run.findings, run.stats)
    }

    /// Checks API commands (path and attribute names) on every version. `.proplist` is the
    /// `proplist` argument and `.id` the `numbers`/`number` one; `.tag` and queries are not
    /// arguments. `/login`, `/cancel` and `/quit` exist only in the API, not in a tree.
    pub fn api(&self, cmds: &[ApiCommand]) -> (Vec<Finding>, Stats) {
        let mut findings = Vec::new();
        let mut stats = Stats::default();
        for cmd in cmds {
            if matches!(cmd.path.as_str(), "/login" | "/cancel" | "/quit") {
                continue;
            }
            stats.commands += 1;
            let mut missing = 0;
            let mut unknown: Vec<(String, Set)> = Vec::new();
            for (i, tree) in self.each(self.all()) {
                let Some(args) = tree.arguments(&cmd.path) else {
                    missing |= 1 << i;
                    continue;
                };
                for attr in &cmd.attrs {
                    let ok = match attr.as_str() {
                        ".proplist" => has(args, "proplist"),
                        ".id" => has(args, "numbers") || has(args, "number"),
                        a if a.starts_with('.') => true,
                        a => has(args, a),
                    };
                    if !ok {
                        match unknown.iter_mut().find(|(a, _)| a == attr) {
                            Some((_, set)) => *set |= 1 << i,
                            None => unknown.push((attr.clone(), 1 << i)),
                        }
                    }
                }
            }
            stats.arguments += cmd.attrs.len();
            if missing != 0 {
                findings.push(Finding {
                    line: cmd.line,
                    message: format!(
                        "{}: no such command on {} (or its menu is not in the data: add it to scripts/routeros-command-tree.py)",
                        cmd.path,
                        self.names(missing)
                    ),
                });
            }
            for (attr, set) in unknown {
                findings.push(Finding {
                    line: cmd.line,
                    message: format!(
                        "{}: unknown parameter {attr} on {}",
                        cmd.path,
                        self.names(set)
                    ),
                });
            }
        }
        (findings, stats)
    }
}

fn has(args: &[String], name: &str) -> bool {
    args.binary_search_by(|a| a.as_str().cmp(name)).is_ok()
}

struct Run<'c, 'a> {
    c: &'c Checker<'a>,
    findings: Vec<Finding>,
    stats: Stats,
}

impl Run<'_, '_> {
    fn finding(&mut self, line: usize, message: String) {
        self.findings.push(Finding { line, message });
    }

    fn block(&mut self, cmds: &[Cmd], ctx: &Ctx) {
        let mut ctx = ctx.clone();
        for cmd in cmds {
            if let Some(menu) = self.command(cmd, &ctx) {
                ctx.menu = menu;
            }
        }
    }

    /// Checks one command; returns the new current menu when the command is a menu line.
    fn command(&mut self, cmd: &Cmd, ctx: &Ctx) -> Option<String> {
        let first = cmd.words.first()?;
        match first.parts.as_slice() {
            [Part::Brace(body)] => {
                self.block(body, ctx);
                for w in &cmd.words[1..] {
                    self.value(w, cmd.line, ctx);
                }
                None
            }
            [Part::Var(_), ..] => {
                // A call of a function held in a variable: only its arguments are checked.
                for w in &cmd.words[1..] {
                    self.value(w, cmd.line, ctx);
                }
                None
            }
            [Part::Text(t)] if t.starts_with(':') => {
                self.scripting(&t[1..], cmd, ctx);
                None
            }
            [Part::Text(t)] if t.starts_with('/') => self.menu_command("/", cmd, ctx),
            [Part::Text(t)] => {
                let root = ctx.menu == "/"
                    && self
                        .c
                        .each(ctx.compiled)
                        .all(|(_, tree)| tree.arguments("/").is_some_and(|r| has(r, t)));
                if root {
                    self.scripting(t, cmd, ctx);
                    None
                } else {
                    self.menu_command(&ctx.menu.clone(), cmd, ctx)
                }
            }
            _ => {
                for w in &cmd.words {
                    self.value(w, cmd.line, ctx);
                }
                None
            }
        }
    }

    /// Walks a value for the commands inside it (`[…]`, `(…)`).
    fn value(&mut self, w: &Word, line: usize, ctx: &Ctx) {
        self.parts(&w.parts, line, ctx);
    }

    fn parts(&mut self, parts: &[Part], line: usize, ctx: &Ctx) {
        for p in parts {
            match p {
                Part::Sub(cmds) => self.block(cmds, ctx),
                Part::Paren(words) => {
                    for w in words {
                        self.value(w, line, ctx);
                    }
                }
                Part::Text(_) | Part::Str(_) | Part::Var(_) | Part::Brace(_) => {}
            }
        }
    }

    /// `:name …`: the name must be a root command; bodies and `:parse` strings are walked.
    fn scripting(&mut self, name: &str, cmd: &Cmd, ctx: &Ctx) {
        self.stats.scripting += 1;
        let missing = self
            .c
            .each(ctx.compiled)
            .filter(|(_, t)| !t.arguments("/").is_some_and(|r| has(r, name)))
            .fold(0, |s, (i, _)| s | (1 << i));
        if missing != 0 {
            let names = self.c.names(missing);
            self.finding(cmd.line, format!(":{name}: no such command on {names}"));
        }
        let rest = &cmd.words[1..];
        let (mut do_ctx, mut else_ctx) = (ctx.clone(), ctx.clone());
        if name == "if" {
            if let Some(cond) = rest.first() {
                match self.condition(cond) {
                    Ok(Some(set)) => {
                        do_ctx.runs &= set;
                        else_ctx.runs &= !set;
                    }
                    Ok(None) => {}
                    Err(e) => self.finding(cmd.line, e),
                }
            }
        }
        if name == "parse" {
            match rest.first().map(|w| w.parts.as_slice()) {
                Some([Part::Str(raw)]) => {
                    let inner = Ctx {
                        menu: "/".into(),
                        compiled: ctx.runs,
                        runs: ctx.runs,
                    };
                    match rsc::parse(&rsc::unescape(raw)) {
                        Ok(cmds) => {
                            let mut sub = Run {
                                c: self.c,
                                findings: Vec::new(),
                                stats: Stats::default(),
                            };
                            sub.block(&cmds, &inner);
                            // Lines inside the string count from the :parse line.
                            for f in sub.findings {
                                self.finding(cmd.line + f.line - 1, f.message);
                            }
                            self.stats.commands += sub.stats.commands;
                            self.stats.scripting += sub.stats.scripting;
                            self.stats.arguments += sub.stats.arguments;
                            for (l, p, v) in sub.stats.limited {
                                self.stats.limited.push((cmd.line + l - 1, p, v));
                            }
                        }
                        Err(e) => self.finding(
                            cmd.line,
                            format!("cannot read the :parse string: {}", e.message),
                        ),
                    }
                }
                _ => self.finding(
                    cmd.line,
                    ":parse of something other than a string literal cannot be checked".into(),
                ),
            }
            return;
        }
        for w in rest {
            match (w.assignment(), w.parts.as_slice()) {
                (Some((key, '=', [Part::Brace(body)])), _) => {
                    let c = if name == "if" && key == "else" {
                        &else_ctx
                    } else if name == "if" && key == "do" {
                        &do_ctx
                    } else {
                        ctx
                    };
                    if matches!(key, "do" | "else" | "on-error" | "in") {
                        self.block(body, c);
                    }
                }
                (_, [Part::Brace(body)]) => self.block(body, ctx),
                _ => self.value(w, cmd.line, ctx),
            }
        }
    }

    /// The versions an `:if` condition selects, `None` when it is no version test.
    fn condition(&self, cond: &Word) -> Result<Option<Set>, String> {
        if !mentions_version(&cond.parts) {
            return Ok(None);
        }
        let [Part::Paren(words)] = cond.parts.as_slice() else {
            return Err(format!("version test not in parentheses: {cond:?}"));
        };
        self.conjunction(words).map(Some)
    }

    fn conjunction(&self, words: &[Word]) -> Result<Set, String> {
        let mut set = self.c.all();
        for term in words.split(|w| matches!(w.text(), Some("&&" | "and"))) {
            set &= match term {
                [w] if matches!(w.parts.as_slice(), [Part::Paren(_)]) => {
                    let [Part::Paren(inner)] = w.parts.as_slice() else {
                        unreachable!()
                    };
                    self.conjunction(inner)?
                }
                [v, op, n] if v.parts == [Part::Var(VERSION_VAR.into())] => {
                    let n: u32 = n
                        .text()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| format!("${VERSION_VAR} compared with {n:?}, not a number"))?;
                    let test: fn(u32, u32) -> bool = match op.text() {
                        Some("<") => |a, b| a < b,
                        Some("<=") => |a, b| a <= b,
                        Some(">") => |a, b| a > b,
                        Some(">=") => |a, b| a >= b,
                        Some("=") => |a, b| a == b,
                        Some("!=") => |a, b| a != b,
                        _ => return Err(format!("version test with operator {op:?}")),
                    };
                    self.c
                        .codes
                        .iter()
                        .enumerate()
                        .filter(|(_, &c)| test(c, n))
                        .fold(0, |s, (i, _)| s | (1 << i))
                }
                _ => {
                    return Err(format!(
                        "a version test must be ${VERSION_VAR} <op> <number> terms joined by &&, not {term:?}"
                    ))
                }
            };
        }
        Ok(set)
    }

    /// A menu command (`/ip firewall nat add …`, `find …`, `/ip firewall nat`).
    fn menu_command(&mut self, start: &str, cmd: &Cmd, ctx: &Ctx) -> Option<String> {
        let mut resolved: Vec<(usize, Result<Resolved, String>)> = Vec::new();
        for (i, tree) in self.c.each(ctx.compiled) {
            resolved.push((i, resolve(tree, start, &cmd.words)));
        }
        let Some((_, first)) = resolved.first().cloned() else {
            return None; // compiled on no supported version
        };
        let bad: Set = resolved
            .iter()
            .filter(|(_, r)| r.is_err())
            .fold(0, |s, (i, _)| s | (1 << i));
        if bad != 0 {
            let msg = resolved
                .iter()
                .find_map(|(_, r)| r.as_ref().err().cloned())
                .unwrap_or_default();
            let names = self.c.names(bad);
            self.finding(cmd.line, format!("{msg} on {names}"));
            return None;
        }
        if resolved.iter().any(|(_, r)| *r != first) {
            self.finding(
                cmd.line,
                "the command resolves differently across versions".into(),
            );
            return None;
        }
        let (path, from) = match first {
            // Every word named a menu: a menu line, the current menu for what follows.
            Ok(Resolved::Menu(m)) => return Some(m),
            Ok(Resolved::Command(p, from)) => (p, from),
            Err(_) => return None,
        };
        self.stats.commands += 1;
        if ctx.compiled != self.c.all() {
            let names = self.c.names(ctx.compiled);
            self.stats.limited.push((cmd.line, path.clone(), names));
        }
        let menu = path.rsplit_once('/').map(|(m, _)| m).unwrap_or("/");
        let menu = if menu.is_empty() { "/" } else { menu };
        let inner = Ctx {
            menu: menu.to_owned(),
            ..ctx.clone()
        };
        let verb = path.rsplit('/').next().unwrap_or_default();
        let args = &cmd.words[from..];
        // Per argument, the versions that refuse it.
        let mut refused: Vec<(String, Set)> = Vec::new();
        let mut counted = false;
        for (i, tree) in self.c.each(ctx.compiled) {
            let accepted = tree.arguments(&path).unwrap_or_default();
            let properties = properties(tree, menu);
            let mut slots: Vec<&str> = ["numbers", "number", "value-name"]
                .into_iter()
                .filter(|s| has(accepted, s))
                .collect();
            if slots.contains(&"numbers") {
                slots.retain(|s| *s != "number");
            }
            let mut slots = slots.into_iter();
            let mut n = 0;
            for w in args {
                let problem = match w.assignment() {
                    Some(("where", '=', _)) if verb == "find" || verb == "print" => break,
                    Some((name, op, _)) => {
                        n += 1;
                        if verb == "find" {
                            match &properties {
                                Some(props) if !props.iter().any(|p| p == name) => Some(format!(
                                    "unknown property {name} in find (not an argument of {menu}/add or /set)"
                                )),
                                _ => None,
                            }
                        } else if op == '~' {
                            Some(format!("{name}~ is only a filter (find, print where)"))
                        } else if !has(accepted, name) {
                            Some(format!("unknown parameter {name}"))
                        } else {
                            None
                        }
                    }
                    None => match w.text() {
                        Some("where") if verb == "find" || verb == "print" => break,
                        Some(t)
                            if has(accepted, t)
                                && !matches!(t, "numbers" | "number" | "value-name") =>
                        {
                            n += 1;
                            None
                        }
                        other => match slots.next() {
                            Some(_) => None,
                            None => Some(match other {
                                Some(t) => format!("unknown parameter {t}"),
                                None => "a value where the command takes no more unnamed arguments"
                                    .into(),
                            }),
                        },
                    },
                };
                if let Some(p) = problem {
                    match refused.iter_mut().find(|(m, _)| *m == p) {
                        Some((_, set)) => *set |= 1 << i,
                        None => refused.push((p, 1 << i)),
                    }
                }
            }
            if !counted {
                self.stats.arguments += n;
                counted = true;
            }
        }
        for (problem, set) in refused {
            let names = self.c.names(set);
            let ok = ctx.compiled & !set;
            let also = if ok != 0 {
                format!(" (it is valid on {})", self.c.names(ok))
            } else {
                String::new()
            };
            self.finding(cmd.line, format!("{path}: {problem} on {names}{also}"));
        }
        for w in args {
            self.value(w, cmd.line, &inner);
        }
        None
    }
}

fn mentions_version(parts: &[Part]) -> bool {
    parts.iter().any(|p| match p {
        Part::Var(v) => v == VERSION_VAR,
        Part::Paren(words) => words.iter().any(|w| mentions_version(&w.parts)),
        _ => false,
    })
}

/// Read-only properties a `find` may filter on, which no command tree lists (they are not
/// arguments of `add` or `set`): per menu, from docs/routeros-api.md §2.9 for `/ip/service`
/// (`name` cannot be changed, `dynamic` marks the session rows 7.19 added).
const READ_ONLY: &[(&str, &[&str])] = &[("/ip/service", &["dynamic", "invalid", "name", "proto"])];

/// What `find name=…` may filter on: the arguments of the menu's `add` and `set`, and the
/// menu's [`READ_ONLY`] properties.
fn properties(tree: TreeVersion<'_>, menu: &str) -> Option<Vec<String>> {
    let add = tree.arguments(&format!("{menu}/add"));
    let set = tree.arguments(&format!("{menu}/set"));
    if add.is_none() && set.is_none() {
        return None;
    }
    let read_only = READ_ONLY
        .iter()
        .filter(|(m, _)| *m == menu)
        .flat_map(|(_, props)| props.iter().map(|p| (*p).to_owned()));
    let mut props: Vec<String> = add
        .into_iter()
        .chain(set)
        .flatten()
        .filter(|a| !matches!(a.as_str(), "copy-from" | "numbers" | "place-before"))
        .cloned()
        .chain(read_only)
        .collect();
    props.sort();
    props.dedup();
    Some(props)
}

/// Resolves the leading words of a command to a command path, from menu `start`.
fn resolve(tree: TreeVersion<'_>, start: &str, words: &[Word]) -> Result<Resolved, String> {
    let mut cur = if words
        .first()
        .and_then(Word::text)
        .is_some_and(|t| t.starts_with('/'))
    {
        "/".to_owned()
    } else {
        start.to_owned()
    };
    let join = |a: &str, b: &str| {
        if a == "/" {
            format!("/{b}")
        } else {
            format!("{a}/{b}")
        }
    };
    for (i, w) in words.iter().enumerate() {
        let Some(t) = w.text().filter(|t| !t.contains(['=', '~'])) else {
            return Err(format!("{cur}: a menu, not a command (at word {})", i + 1));
        };
        let segs: Vec<&str> = t.split('/').filter(|s| !s.is_empty()).collect();
        for (k, seg) in segs.iter().enumerate() {
            if *seg == ".." {
                cur = match cur.rsplit_once('/') {
                    Some(("", _)) | None => "/".to_owned(),
                    Some((parent, _)) => parent.to_owned(),
                };
                continue;
            }
            let next = join(&cur, seg);
            if tree.arguments(&next).is_some() {
                if k + 1 == segs.len() {
                    return Ok(Resolved::Command(next, i + 1));
                }
                return Err(format!("{next} is a command, not a menu"));
            } else if tree.is_menu(&next) {
                cur = next;
            } else {
                return Err(format!("no such command or menu {next}"));
            }
        }
    }
    Ok(Resolved::Menu(cur))
}
