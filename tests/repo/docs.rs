//! The repository explains itself: every citation in the code resolves inside `docs/`.
//!
//! * every rule number the code cites (`C-17`, `C-46a`, `P-02`, `Q-05`, `U-05`, also the ends and
//!   the inside of a range such as `C-11..C-14`) has a row in `docs/conformance.md`;
//! * every test a docs page names as `path.rs::function` is a `fn function` in that file;
//! * no file cites a design note that lives outside the repository;
//! * every `docs/<page>.md §N` (and `docs/lab.md pitfall N`) in the code, and every `<page>.md §N`
//!   between docs pages, names a heading that exists;
//! * `docs/README.md` lists every page;
//! * every relative markdown link of README.md and docs/ leads to a file, and its `#anchor` to
//!   a heading of that file.
//!
//! Only `std`: the files are read from the source tree, no regex crate.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Folders whose files are "the code" for citations (relative to the crate root).
const CODE_DIRS: &[&str] = &[
    "src", "crates", "tests", "benches", "fuzz", "scripts", "routeros",
];
/// Top-level files that cite things too.
const TOP_FILES: &[&str] = &["README.md", "BENCHMARKS.md", "Containerfile", "Cargo.toml"];
/// Folders never scanned (build output, fuzzing data).
const SKIP_DIRS: &[&str] = &[
    "target",
    "corpus",
    "artifacts",
    "logs",
    "coverage",
    "node_modules",
];
/// This file names the forbidden citations itself.
const SELF: &str = "tests/repo/docs.rs";
/// Prefixes of rule numbers defined in docs/conformance.md.
const RULE_PREFIXES: &[char] = &['C', 'P', 'Q', 'U'];
/// Texts that point outside the repository (the design notes the docs replaced). Written in
/// pieces, so that a plain search of the tree for them finds only real citations.
const OUTSIDE: &[&str] = &[
    concat!("NATPMP_", "CONFORMANCE"),
    concat!("ROUTEROS_", "API.md"),
    concat!("ROUTEROS_", "API_SPEC"),
    concat!("LAB", ".md"),
    concat!("ARCHITECTURE", ".md"),
    concat!("STYLE", ".md"),
    concat!("..", "/shared"),
    concat!("shared", "/design"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A text file of the tree: its path relative to the root (with `/`) and its text.
struct File {
    rel: String,
    text: String,
}

fn read_text(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    if bytes.len() > 4_000_000 || bytes.contains(&0) {
        return None;
    }
    String::from_utf8(bytes).ok()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !name.starts_with('.') && !SKIP_DIRS.contains(&name) {
                walk(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The code: every text file under [`CODE_DIRS`] and the [`TOP_FILES`], this file excepted.
fn code_files() -> Vec<File> {
    let mut paths = Vec::new();
    for dir in CODE_DIRS {
        walk(&root().join(dir), &mut paths);
    }
    for f in TOP_FILES {
        paths.push(root().join(f));
    }
    paths
        .iter()
        .filter_map(|p| {
            let rel = rel(p);
            if rel == SELF {
                return None;
            }
            Some(File {
                text: read_text(p)?,
                rel,
            })
        })
        .collect()
}

/// The pages of docs/ (`*.md`).
fn docs_files() -> Vec<File> {
    let mut paths = Vec::new();
    walk(&root().join("docs"), &mut paths);
    paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .filter_map(|p| {
            Some(File {
                text: read_text(p)?,
                rel: rel(p),
            })
        })
        .collect()
}

fn docs_page(name: &str) -> String {
    let path = root().join("docs").join(name);
    read_text(&path).unwrap_or_else(|| panic!("docs/{name} is missing or not UTF-8 text"))
}

/// 1-based line number of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].bytes().filter(|&b| b == b'\n').count() + 1
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A rule number starting at byte `i` of `text`: `X-NN` or `X-NNa`, X one of [`RULE_PREFIXES`],
/// exactly two digits, not part of a longer word. Returns (prefix, number, suffix, end).
fn rule_at(text: &str, i: usize) -> Option<(char, u32, Option<char>, usize)> {
    let b = text.as_bytes();
    let prefix = *b.get(i)? as char;
    if !RULE_PREFIXES.contains(&prefix) {
        return None;
    }
    if i > 0 {
        let before = b[i - 1] as char;
        if is_word(before) || before == '-' {
            return None;
        }
    }
    if b.get(i + 1) != Some(&b'-') {
        return None;
    }
    let (d1, d2) = (*b.get(i + 2)?, *b.get(i + 3)?);
    if !d1.is_ascii_digit() || !d2.is_ascii_digit() {
        return None;
    }
    let number = u32::from(d1 - b'0') * 10 + u32::from(d2 - b'0');
    let mut end = i + 4;
    let mut suffix = None;
    if let Some(&c) = b.get(end) {
        if c.is_ascii_lowercase() {
            suffix = Some(c as char);
            end += 1;
        }
    }
    if let Some(&c) = b.get(end) {
        if is_word(c as char) {
            return None;
        }
    }
    Some((prefix, number, suffix, end))
}

fn rule_name(prefix: char, number: u32, suffix: Option<char>) -> String {
    match suffix {
        Some(s) => format!("{prefix}-{number:02}{s}"),
        None => format!("{prefix}-{number:02}"),
    }
}

/// Every rule number cited in `text`, with its line; a range `C-11..C-14` yields C-11 to C-14.
fn cited_rules(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (i, _) in text.char_indices() {
        let Some((prefix, number, suffix, end)) = rule_at(text, i) else {
            continue;
        };
        let line = line_of(text, i);
        out.push((rule_name(prefix, number, suffix), line));
        if suffix.is_none() && text[end..].starts_with("..") {
            if let Some((p2, n2, None, _)) = rule_at(text, end + 2) {
                if p2 == prefix && n2 > number {
                    for n in number + 1..n2 {
                        out.push((rule_name(prefix, n, None), line));
                    }
                }
            }
        }
    }
    out
}

/// The rule numbers docs/conformance.md defines: the first cell of a table row.
fn defined_rules(conformance: &str) -> BTreeSet<String> {
    conformance
        .lines()
        .filter_map(|l| {
            let cell = l.strip_prefix('|')?.split('|').next()?.trim();
            let (p, n, s, end) = rule_at(cell, 0)?;
            (end == cell.len()).then(|| rule_name(p, n, s))
        })
        .collect()
}

#[test]
fn every_cited_rule_number_has_a_row_in_conformance() {
    let defined = defined_rules(&docs_page("conformance.md"));
    assert!(
        defined.len() > 50,
        "docs/conformance.md defines only {} rule rows; the table format is `| C-01 | … |`",
        defined.len()
    );
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in code_files() {
        for (rule, line) in cited_rules(&file.text) {
            if !defined.contains(&rule) {
                missing
                    .entry(rule)
                    .or_default()
                    .push(format!("{}:{line}", file.rel));
            }
        }
    }
    let report: Vec<String> = missing
        .iter()
        .map(|(rule, at)| format!("  {rule}, cited at {}", at.join(", ")))
        .collect();
    assert!(
        report.is_empty(),
        "rule numbers cited in the code without a row in docs/conformance.md (add the row, or fix \
         the citation):\n{}",
        report.join("\n")
    );
}

/// Every `` `path.rs::function` `` in `text`, with its line.
fn named_tests(text: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(open) = rest.find('`') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('`') else { break };
        let token = &after[..close];
        if let Some((path, name)) = token.split_once("::") {
            let path_ok = path.ends_with(".rs")
                && path
                    .chars()
                    .all(|c| is_word(c) || matches!(c, '/' | '.' | '-'));
            let name_ok = !name.is_empty() && name.chars().all(is_word);
            if path_ok && name_ok {
                out.push((
                    path.to_owned(),
                    name.to_owned(),
                    line_of(text, offset + open),
                ));
            }
        }
        let consumed = open + 1 + close + 1;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out
}

/// Whether `text` defines `fn name` (any visibility, sync or async).
fn defines_fn(text: &str, name: &str) -> bool {
    let needle = format!("fn {name}");
    text.match_indices(&needle).any(|(i, _)| {
        let next = text[i + needle.len()..].chars().next();
        matches!(next, Some('(' | '<' | ' '))
            && (i == 0 || !is_word(text[..i].chars().next_back().unwrap_or(' ')))
    })
}

#[test]
fn every_test_named_in_docs_exists_where_it_says() {
    let rust: Vec<File> = code_files()
        .into_iter()
        .filter(|f| {
            f.rel.ends_with(".rs")
                && (f.rel.starts_with("src/")
                    || f.rel.starts_with("crates/")
                    || f.rel.starts_with("tests/"))
        })
        .collect();
    let mut problems = Vec::new();
    let mut seen = 0;
    for page in docs_files() {
        for (path, name, line) in named_tests(&page.text) {
            seen += 1;
            let at = format!("{}:{line}", page.rel);
            let here = rust.iter().find(|f| f.rel == path);
            if here.is_some_and(|f| defines_fn(&f.text, &name)) {
                continue;
            }
            let elsewhere: Vec<&str> = rust
                .iter()
                .filter(|f| defines_fn(&f.text, &name))
                .map(|f| f.rel.as_str())
                .collect();
            problems.push(match (here.is_some(), elsewhere.as_slice()) {
                (_, [one]) => format!(
                    "  {at}: `{path}::{name}`: the function is in {one}; write `{one}::{name}`"
                ),
                (_, [_, _, ..]) => format!(
                    "  {at}: `{path}::{name}`: not in {path}, but in several files ({}); name the one meant",
                    elsewhere.join(", ")
                ),
                (true, []) => format!(
                    "  {at}: `{path}::{name}`: no `fn {name}` in {path} or anywhere in src/ or tests/ \
                     (renamed or removed? update the test column)"
                ),
                (false, []) => format!(
                    "  {at}: `{path}::{name}`: there is no file {path}, and no `fn {name}` in src/ or tests/"
                ),
            });
        }
    }
    assert!(
        seen > 100,
        "only {seen} tests are named in docs/; they are written `path.rs::function` in backticks"
    );
    assert!(
        problems.is_empty(),
        "tests named in docs/ that do not exist where the docs say:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_file_cites_a_design_note_outside_the_repository() {
    let mut found = Vec::new();
    for file in code_files().into_iter().chain(docs_files()) {
        for needle in OUTSIDE {
            for (i, _) in file.text.match_indices(needle) {
                let before = file.text[..i].chars().next_back();
                if needle.chars().next().is_some_and(char::is_alphanumeric)
                    && before.is_some_and(|c| is_word(c) || c == '-')
                {
                    continue;
                }
                let line_no = line_of(&file.text, i);
                let line = file.text.lines().nth(line_no - 1).unwrap_or("").trim();
                found.push(format!("  {}:{line_no}: `{needle}` in: {line}", file.rel));
            }
        }
    }
    assert!(
        found.is_empty(),
        "citations of design notes outside the repository; cite docs/ instead (docs/conformance.md \
         for C-xx, docs/routeros-api.md §N.N, docs/lab.md, docs/architecture.md):\n{}",
        found.join("\n")
    );
}

/// The section numbers of a page's headings: `## 2.6 Permissions` gives `2.6`, `### 1A. Transport`
/// gives `1A`; pitfalls are headings `### Pitfall 7: …`.
fn heading_numbers(page: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut sections = BTreeSet::new();
    let mut pitfalls = BTreeSet::new();
    for line in page.lines() {
        let Some(text) = line.strip_prefix('#') else {
            continue;
        };
        let text = text.trim_start_matches('#').trim();
        if text.starts_with(|c: char| c.is_ascii_digit()) {
            let number: String = text
                .chars()
                .take_while(|c| c.is_ascii_digit() || c.is_ascii_uppercase() || *c == '.')
                .collect();
            sections.insert(number.trim_end_matches('.').to_owned());
        }
        if let Some(rest) = text.strip_prefix("Pitfall ") {
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            pitfalls.insert(n);
        }
    }
    (sections, pitfalls)
}

/// A section token after `§`: digits, capitals and dots, without a trailing dot.
fn section_token(s: &str) -> (&str, usize) {
    let len = s
        .char_indices()
        .take_while(|(_, c)| c.is_ascii_digit() || c.is_ascii_uppercase() || *c == '.')
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0);
    let token = s[..len].trim_end_matches('.');
    (token, len)
}

/// What a citation of a page asks for.
enum Wanted {
    Page,
    Section(String),
    Pitfall(String),
}

/// Citations `<prefix><page>.md` in `text`, then optional ` §N` (or ` section N`), `, §M`,
/// ` and §K`, `§1A-1D`, or ` pitfall N`. Returns (page, wanted, line).
fn page_citations(text: &str, prefix: &str) -> Vec<(String, Wanted, usize)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices(prefix) {
        // `…/docs/x.md` inside a URL or a longer path is not one of our pages.
        let before = text[..i].chars().next_back();
        if prefix == "docs/" && before.is_some_and(|c| is_word(c) || c == '/' || c == '.') {
            continue;
        }
        let after = &text[i + prefix.len()..];
        let name_len = after
            .char_indices()
            .take_while(|(_, c)| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'
            })
            .count();
        if name_len == 0 || !after[name_len..].starts_with(".md") {
            continue;
        }
        let page = format!("{}.md", &after[..name_len]);
        let line = line_of(text, i);
        out.push((page.clone(), Wanted::Page, line));
        let mut rest = &after[name_len + 3..];
        rest = rest.strip_prefix(')').unwrap_or(rest);
        rest = rest.strip_prefix('`').unwrap_or(rest);
        if let Some(p) = rest
            .strip_prefix(" pitfall ")
            .or_else(|| rest.strip_prefix(" Pitfall "))
        {
            let n: String = p.chars().take_while(char::is_ascii_digit).collect();
            if !n.is_empty() {
                out.push((page.clone(), Wanted::Pitfall(n), line));
            }
            continue;
        }
        loop {
            let trimmed = rest.trim_start_matches(' ');
            // `section N` is the ASCII spelling, for files that must stay ASCII (RouterOS scripts).
            let Some(s) = trimmed
                .strip_prefix('§')
                .or_else(|| trimmed.strip_prefix("section "))
            else {
                break;
            };
            let (token, len) = section_token(s);
            if token.is_empty() {
                break;
            }
            out.push((page.clone(), Wanted::Section(token.to_owned()), line));
            let mut tail = &s[len..];
            // A range `§1A-1D`: both ends must exist.
            if let Some(r) = tail.strip_prefix('-') {
                let (end, len2) = section_token(r);
                if !end.is_empty() {
                    out.push((page.clone(), Wanted::Section(end.to_owned()), line));
                    tail = &r[len2..];
                }
            }
            rest = tail
                .strip_prefix(", ")
                .or_else(|| tail.strip_prefix(" and "))
                .or_else(|| tail.strip_prefix(" or "))
                .or_else(|| tail.strip_prefix(" to "))
                .unwrap_or("");
            rest = rest.strip_prefix("docs/").unwrap_or(rest);
        }
    }
    out
}

#[test]
fn every_docs_section_cited_resolves_to_a_heading() {
    let mut pages: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for page in docs_files() {
        let name = page.rel.trim_start_matches("docs/").to_owned();
        pages.insert(name, heading_numbers(&page.text));
    }
    let mut problems = Vec::new();
    let mut check = |at: String, page: String, wanted: Wanted| {
        let Some((sections, pitfalls)) = pages.get(&page) else {
            problems.push(format!("  {at}: docs/{page} does not exist"));
            return;
        };
        match wanted {
            Wanted::Page => {}
            Wanted::Section(s) if !sections.contains(&s) => problems.push(format!(
                "  {at}: docs/{page} §{s}: no heading numbered {s} (it has {})",
                sections.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            Wanted::Pitfall(n) if !pitfalls.contains(&n) => problems.push(format!(
                "  {at}: docs/{page} pitfall {n}: no heading `Pitfall {n}: …`"
            )),
            _ => {}
        }
    };
    for file in code_files() {
        for (page, wanted, line) in page_citations(&file.text, "docs/") {
            check(format!("{}:{line}", file.rel), page, wanted);
        }
    }
    // Between docs pages: `[lab.md](lab.md) §4`, `routeros-api.md §2.8`.
    for file in docs_files() {
        for (page, wanted, line) in page_citations(&file.text, "(") {
            if matches!(wanted, Wanted::Page) {
                continue;
            }
            check(format!("{}:{line}", file.rel), page, wanted);
        }
    }
    assert!(
        problems.is_empty(),
        "citations of docs/ pages that do not resolve (fix the citation or the heading):\n{}",
        problems.join("\n")
    );
}

#[test]
fn docs_index_lists_every_page() {
    let index = docs_page("README.md");
    let missing: Vec<String> = docs_files()
        .iter()
        .map(|f| f.rel.trim_start_matches("docs/").to_owned())
        .filter(|name| name != "README.md" && !index.contains(&format!("({name})")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/README.md does not list {}: add one line per page, `- [page.md](page.md): what it holds`",
        missing.join(", ")
    );
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, only letters, digits, `-` and `_`.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown text's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(anchor_of(line.trim_start_matches('#')));
        }
    }
    out
}

/// The targets of the markdown links `[…](target)` and images `![…](target)` of a text (outside
/// code blocks), with their lines.
fn link_targets(text: &str) -> Vec<(String, usize)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (i, _) in line.match_indices("](") {
            let rest = &line[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push((rest[..end].to_owned(), n + 1));
            }
        }
    }
    out
}

#[test]
fn every_markdown_link_in_readme_and_docs_reaches_its_file_and_heading() {
    let mut pages: Vec<PathBuf> = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut pages);
    pages.retain(|p| p.extension().is_some_and(|e| e == "md"));
    let mut problems = Vec::new();
    let mut seen = 0;
    for page in &pages {
        let Some(text) = read_text(page) else {
            continue;
        };
        let dir = page.parent().unwrap_or(&root()).to_path_buf();
        for (target, line) in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            seen += 1;
            let at = format!("{}:{line}", rel(page));
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            if !path.exists() {
                problems.push(format!("  {at}: {target}: no file {}", rel(&path)));
                continue;
            }
            if let Some(anchor) = anchor {
                let headings = read_text(&path).map(|t| anchors(&t)).unwrap_or_default();
                if !headings.contains(anchor) {
                    problems.push(format!(
                        "  {at}: {target}: no heading with the anchor #{anchor}"
                    ));
                }
            }
        }
    }
    assert!(seen > 20, "only {seen} relative links found");
    assert!(
        problems.is_empty(),
        "links in README.md and docs/ that lead nowhere:\n{}",
        problems.join("\n")
    );
}

// The scanners themselves, on known text, so a broken scanner cannot make the checks above pass.

#[test]
fn scanners_find_what_they_should() {
    let rules: Vec<String> = cited_rules("x C-11..C-14, (C-46a) SHA-256 TEST-NET-2 UTF-8 P-02.")
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(rules, ["C-11", "C-12", "C-13", "C-14", "C-46a", "P-02"]);
    assert!(defined_rules("| C-46a | §3.6 | x |\n| # | y |\n|C-01|").contains("C-46a"));
    assert!(defined_rules("| C-01 | x |").contains("C-01"));

    let tests = named_tests("a `src/x.rs::c01_thing` b `not::a_test` `tests/y.rs::z`");
    assert_eq!(tests.len(), 2);
    assert!(defines_fn("async fn c01_thing() {}", "c01_thing"));
    assert!(!defines_fn("fn c01_thing_more() {}", "c01_thing"));

    let cites = page_citations(
        "(docs/routeros-api.md §1.1, §1.2) docs/conformance.md §1A-1D and §1F; docs/lab.md pitfall 7 \
         https://x.org/docs/no.md docs/architecture.md section 3:",
        "docs/",
    );
    let wanted: Vec<String> = cites
        .iter()
        .map(|(p, w, _)| match w {
            Wanted::Page => p.clone(),
            Wanted::Section(s) => format!("{p} §{s}"),
            Wanted::Pitfall(n) => format!("{p} pitfall {n}"),
        })
        .collect();
    assert_eq!(
        wanted,
        [
            "routeros-api.md",
            "routeros-api.md §1.1",
            "routeros-api.md §1.2",
            "conformance.md",
            "conformance.md §1A",
            "conformance.md §1D",
            "conformance.md §1F",
            "lab.md",
            "lab.md pitfall 7",
            "architecture.md",
            "architecture.md §3",
        ]
    );
    assert_eq!(
        anchor_of(" Both directions: UDP_SRCNAT and MAP_BOTH_PROTOCOLS"),
        "both-directions-udp_srcnat-and-map_both_protocols"
    );
    assert_eq!(
        anchor_of(" Running `check` on the router"),
        "running-check-on-the-router"
    );
    assert_eq!(
        link_targets("a [x](docs/a.md#b) ![y](d.svg)\n```\n[z](no.md)\n```\n"),
        [("docs/a.md#b".to_owned(), 1), ("d.svg".to_owned(), 1)]
    );
    let (sections, pitfalls) =
        heading_numbers("# T\n## 1. A\n### 1.1 B\n### 1A. C\n## Appendix\n### Pitfall 7: x\n");
    assert_eq!(sections.into_iter().collect::<Vec<_>>(), ["1", "1.1", "1A"]);
    assert!(pitfalls.contains("7"));
}

/// docs/architecture.md §7 names every source file of `src/` (relative to `src/`) and of the
/// workspace's other crates (`crates/<name>/src/…`, whole), and names no file that is gone: the
/// map a reader opens first must be the tree as it is.
#[test]
fn architecture_lists_every_source_file_and_no_missing_one() {
    let page = docs_page("architecture.md");
    let start = page
        .find("## 7. Components")
        .expect("docs/architecture.md has a section 7. Components");
    let section = &page[start..];
    let mut paths = Vec::new();
    walk(&root().join("src"), &mut paths);
    walk(&root().join("crates"), &mut paths);
    let sources: Vec<String> = paths
        .iter()
        .map(|p| rel(p))
        .filter(|r| r.ends_with(".rs"))
        .map(|r| r.trim_start_matches("src/").to_string())
        .filter(|r| !r.ends_with("tests.rs") && !r.contains("/tests/"))
        .filter(|r| !r.starts_with("crates/") || r.contains("/src/"))
        .collect();
    assert!(
        sources.len() > 50,
        "found only {} source files",
        sources.len()
    );
    let missing: Vec<&String> = sources
        .iter()
        .filter(|r| {
            !section
                .lines()
                .any(|l| l.split_whitespace().next() == Some(r.as_str()))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md §7 does not list {missing:?}: add a line `path  what it is`"
    );
    let listed: Vec<&str> = section
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.ends_with(".rs"))
        .collect();
    let gone: Vec<&&str> = listed
        .iter()
        .filter(|w| !sources.iter().any(|s| s == **w))
        .collect();
    assert!(
        gone.is_empty(),
        "docs/architecture.md §7 lists files that do not exist: {gone:?}"
    );
}
