//! The source layout, checked: no import cycle between files of `src/` and of the workspace
//! crates it builds from (`crates/codec`, `crates/emulators`), and no such file with more than
//! 500 lines of non-test code (issue 9: one concept per file).
//!
//! Std only, no compiler: every `.rs` file of those crates is read with its comments, strings and
//! test code (`#[cfg(test)]` items, and files declared by `#[cfg(test)] mod x;`) blanked out;
//! the module tree is rebuilt from `mod x;` and inline `mod x { … }` declarations, starting at
//! each crate's `lib.rs` (and `src/main.rs`, a crate of its own). A file imports another when it
//! names a path into it: a `use` tree starting with `crate`, `super`, `self`, a child module or
//! another crate's name, or an inline path like `crate::a::b::Name` in code. Each path resolves
//! to the deepest module that exists for its prefix, and that module's file:
//! `crate::mapping::MappingConfig` is `src/mapping/mod.rs`,
//! `double_natpmp_codec::natpmp::wire::Protocol` is `crates/codec/src/natpmp/wire.rs`. A `mod x;`
//! declaration is not an import; a `pub use` re-export is.
//!
//! Lines of non-test code are the lines before the `#[cfg(test)]` that opens the file's test
//! module (all of them when there is none; none in a test-only file).
//!
//! `LAYOUT_LISTING=1 cargo test --test repo layout -- --nocapture` (or `scripts/layout.sh`) prints
//! every file with its line counts and what it imports from which file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// Most lines of non-test code a file may have.
const MAX_LINES: usize = 500;

/// A source file: its text with comments, strings and test code blanked (same byte offsets).
struct SourceFile {
    /// Relative to the repository, e.g. `crates/codec/src/natpmp/wire.rs`.
    name: String,
    original: String,
    code: Vec<u8>,
    /// Declared by `#[cfg(test)] mod x;` (or inside such a module).
    test_only: bool,
    /// Lines before the test module (all lines when there is none).
    non_test_lines: usize,
    total_lines: usize,
}

/// A module: the file it lives in, its child modules, and for an inline `mod x { … }` where
/// its braces are.
struct Module {
    file: usize,
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    span: Option<(usize, usize)>,
}

/// A path that names another file, and where.
#[derive(Clone)]
struct Import {
    line: usize,
    path: String,
}

struct Layout {
    files: Vec<SourceFile>,
    modules: Vec<Module>,
    /// Edges between files, with every path that makes them.
    edges: BTreeMap<(usize, usize), Vec<Import>>,
    /// Files no `mod` declaration reaches.
    unattached: Vec<usize>,
    /// The root module of each library crate, by the name paths use.
    crate_roots: BTreeMap<String, usize>,
}

// ------------------------------------------------------------------ lexing

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The source with every comment, string, byte string, raw string and char literal replaced
/// by spaces (newlines kept), so offsets and line numbers stay those of the original.
fn blank_comments_and_strings(src: &str) -> Vec<u8> {
    let s = src.as_bytes();
    let mut out = s.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to.min(s.len())] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    let mut i = 0;
    while i < s.len() {
        let prev_ident = i > 0 && is_ident(s[i - 1]);
        match s[i] {
            b'/' if s.get(i + 1) == Some(&b'/') => {
                let end = s[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(s.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if s.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < s.len() && depth > 0 {
                    if s[j] == b'/' && s.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if s[j] == b'*' && s.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            // Raw strings: r"…", r#"…"#, br"…" (the `r` starts a token).
            b'r' if !prev_ident
                || (i > 0 && s[i - 1] == b'b' && (i < 2 || !is_ident(s[i - 2]))) =>
            {
                let hashes = s[i + 1..].iter().take_while(|&&b| b == b'#').count();
                if s.get(i + 1 + hashes) == Some(&b'"') {
                    let start = if i > 0 && s[i - 1] == b'b' { i - 1 } else { i };
                    let mut closing = vec![b'"'];
                    closing.extend(std::iter::repeat_n(b'#', hashes));
                    let body = i + 2 + hashes;
                    let end = s[body..]
                        .windows(closing.len())
                        .position(|w| w == closing.as_slice())
                        .map_or(s.len(), |p| body + p + closing.len());
                    blank(&mut out, start, end);
                    i = end;
                } else {
                    i += 1;
                }
            }
            b'"' => {
                let mut j = i + 1;
                while j < s.len() && s[j] != b'"' {
                    j += if s[j] == b'\\' { 2 } else { 1 };
                }
                let start = if i > 0 && s[i - 1] == b'b' && (i < 2 || !is_ident(s[i - 2])) {
                    i - 1
                } else {
                    i
                };
                blank(&mut out, start, j + 1);
                i = j + 1;
            }
            // A char literal ('x', '\n', '\u{1F}'), not a lifetime or label ('a, 'static).
            b'\'' => {
                let end = if s.get(i + 1) == Some(&b'\\') {
                    // The escaped character, then the closing quote ('\'', '\n', '\u{1F}').
                    s.get(i + 3..)
                        .and_then(|rest| rest.iter().position(|&b| b == b'\''))
                        .map(|p| i + 3 + p + 1)
                } else {
                    let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (s.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 2 + ch_len)
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn line_of(code: &[u8], at: usize) -> usize {
    code[..at].iter().filter(|&&b| b == b'\n').count() + 1
}

fn skip_ws(code: &[u8], mut i: usize) -> usize {
    while i < code.len() && code[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn ident_at(code: &[u8], i: usize) -> Option<(String, usize)> {
    let len = code[i..].iter().take_while(|&&b| is_ident(b)).count();
    if len == 0 || code[i].is_ascii_digit() {
        return None;
    }
    Some((
        String::from_utf8_lossy(&code[i..i + len]).into_owned(),
        i + len,
    ))
}

/// The end (exclusive) of the item starting at `i`: after its first `;` outside brackets, or
/// after the `}` that closes its first `{`.
fn item_end(code: &[u8], i: usize) -> usize {
    let mut depth = 0i32;
    let mut j = i;
    while j < code.len() {
        match code[j] {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b';' if depth == 0 => return j + 1,
            b'{' if depth == 0 => return matching_brace(code, j) + 1,
            _ => {}
        }
        j += 1;
    }
    code.len()
}

/// The index of the `}` that closes the `{` at `open`.
fn matching_brace(code: &[u8], open: usize) -> usize {
    let mut depth = 0;
    for (j, &b) in code.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    code.len().saturating_sub(1)
}

/// An outer attribute `#[…]` at `i`: its text and its end.
fn attribute_at(code: &[u8], i: usize) -> Option<(String, usize)> {
    if code.get(i) != Some(&b'#') || code.get(skip_ws(code, i + 1)) != Some(&b'[') {
        return None;
    }
    let open = skip_ws(code, i + 1);
    let mut depth = 0;
    for (j, &b) in code.iter().enumerate().skip(open) {
        match b {
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    let text: String = String::from_utf8_lossy(&code[open + 1..j])
                        .split_whitespace()
                        .collect();
                    return Some((text, j + 1));
                }
            }
            _ => {}
        }
    }
    None
}

fn is_test_cfg(attr: &str) -> bool {
    attr.starts_with("cfg(") && attr.contains("test") && !attr.contains("not(test")
}

// ------------------------------------------------------------------ modules

/// A `mod` declaration: its name, whether it has a body (inline) and where, whether it is test
/// code, and a `#[path]` if given.
struct ModDecl {
    name: String,
    at: usize,
    body: Option<(usize, usize)>,
    test: bool,
    path_attr: Option<String>,
}

impl ModDecl {
    /// Where scanning goes on after the declaration: inside an inline module's body (its own
    /// declarations nest), else after the `mod` keyword.
    fn resume(&self) -> usize {
        self.body.map_or(self.at + 3, |(open, _)| open + 1)
    }
}

/// Blanks every `#[cfg(test)]` item of `file` (recording the first test module's line) and
/// returns its `mod` declarations, outermost first, with inline bodies.
fn scan_items(file: &mut SourceFile) -> Vec<ModDecl> {
    let mut decls = Vec::new();
    let mut first_test_mod_line = None;
    let mut i = 0;
    while i < file.code.len() {
        if let Some(first) = attribute_at(&file.code, i) {
            // A run of attributes, then the item they belong to.
            let mut attrs = vec![first.clone()];
            let mut j = skip_ws(&file.code, first.1);
            while let Some(next) = attribute_at(&file.code, j) {
                j = skip_ws(&file.code, next.1);
                attrs.push(next);
            }
            let test = attrs.iter().any(|(a, _)| is_test_cfg(a));
            let path_attr = attrs
                .iter()
                .find(|(a, _)| a.starts_with("path="))
                .map(|(_, end)| {
                    // The string was blanked in `code`; read it from the original.
                    let text = &file.original[i..*end];
                    text.split('"').nth(1).unwrap_or_default().to_owned()
                });
            let decl = mod_decl_at(&file.code, j, test, path_attr);
            if test {
                if decl.is_some() && first_test_mod_line.is_none() {
                    first_test_mod_line = Some(line_of(&file.code, i));
                }
                let end = item_end(&file.code, j);
                for b in &mut file.code[i..end] {
                    if *b != b'\n' {
                        *b = b' ';
                    }
                }
                i = end;
            } else {
                i = decl.as_ref().map_or(j, ModDecl::resume);
            }
            decls.extend(decl);
            continue;
        }
        if let Some(decl) = mod_decl_at(&file.code, i, false, None) {
            i = decl.resume();
            decls.push(decl);
            continue;
        }
        i += 1;
    }
    file.non_test_lines = match first_test_mod_line {
        Some(line) => line - 1,
        None => file.total_lines,
    };
    decls
}

/// `[pub[(…)]] mod name;` or `… mod name { … }` starting at `i` (at a token start).
fn mod_decl_at(code: &[u8], i: usize, test: bool, path_attr: Option<String>) -> Option<ModDecl> {
    if i > 0 && is_ident(code[i - 1]) {
        return None;
    }
    let mut j = i;
    if code[j..].starts_with(b"pub") && !code.get(j + 3).is_some_and(|b| is_ident(*b)) {
        j = skip_ws(code, j + 3);
        if code.get(j) == Some(&b'(') {
            j = skip_ws(code, j + code[j..].iter().position(|&b| b == b')')? + 1);
        }
    }
    if !code[j..].starts_with(b"mod") || code.get(j + 3).is_some_and(|b| is_ident(*b)) {
        return None;
    }
    let (name, after) = ident_at(code, skip_ws(code, j + 3))?;
    let k = skip_ws(code, after);
    let body = match code.get(k) {
        Some(b';') => None,
        Some(b'{') => Some((k, matching_brace(code, k))),
        _ => return None,
    };
    Some(ModDecl {
        name,
        at: j,
        body,
        test,
        path_attr,
    })
}

/// The crates the layout covers: the daemon (`src/`) and the workspace crates it builds from
/// (the codec, the emulators). Each as its name in paths (`double_natpmp_codec::…`) and its
/// `src/` relative to the repository. The test-support crate is test code, like `tests/`.
const CRATES: &[(&str, &str)] = &[
    ("double_natpmp", "src"),
    ("double_natpmp_codec", "crates/codec/src"),
    ("double_natpmp_emulators", "crates/emulators/src"),
];

impl Layout {
    /// The layout of the crates `crates` (name, `src/` relative to `root`); file names are
    /// relative to `root`.
    fn read(root: &Path, crates: &[(&str, &str)]) -> Layout {
        let mut paths = Vec::new();
        // A crate without files is none (the checker's own tests give only some).
        let mut dirs: Vec<PathBuf> = crates
            .iter()
            .map(|(_, src)| root.join(src))
            .filter(|dir| dir.is_dir())
            .collect();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("read a src/") {
                let path = entry.expect("read a src/").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    paths.push(path);
                }
            }
        }
        paths.sort();
        let files = paths
            .iter()
            .map(|p| {
                let original = std::fs::read_to_string(p).expect("read a source file");
                SourceFile {
                    name: p.strip_prefix(root).unwrap_or(p).display().to_string(),
                    code: blank_comments_and_strings(&original),
                    total_lines: original.lines().count(),
                    non_test_lines: 0,
                    original,
                    test_only: false,
                }
            })
            .collect();
        let mut layout = Layout {
            files,
            modules: Vec::new(),
            edges: BTreeMap::new(),
            unattached: Vec::new(),
            crate_roots: BTreeMap::new(),
        };
        layout.build_modules(root, crates, &paths);
        layout.build_edges();
        layout
    }

    /// Rebuilds the module tree from the crate roots; marks test-only files.
    fn build_modules(&mut self, root: &Path, crates: &[(&str, &str)], paths: &[PathBuf]) {
        let index: BTreeMap<PathBuf, usize> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i))
            .collect();
        let mut seen = BTreeSet::new();
        // (file, module, test-only) to scan; the crate roots first.
        let mut queue: VecDeque<(usize, usize, bool)> = VecDeque::new();
        for (name, src) in crates {
            for crate_root in ["lib.rs", "main.rs"] {
                if let Some(&f) = index.get(&root.join(src).join(crate_root)) {
                    let m = self.new_module(f, None, None);
                    if crate_root == "lib.rs" {
                        self.crate_roots.insert((*name).to_owned(), m);
                    }
                    queue.push_back((f, m, false));
                }
            }
        }
        while let Some((f, module, test_only)) = queue.pop_front() {
            if !seen.insert(f) {
                continue;
            }
            self.files[f].test_only = test_only;
            let decls = scan_items(&mut self.files[f]);
            if test_only {
                self.files[f].non_test_lines = 0;
            }
            let path = &paths[f];
            let is_mod_rs = matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("lib.rs" | "main.rs" | "mod.rs")
            );
            let dir = if is_mod_rs {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                path.with_extension("")
            };
            for decl in &decls {
                // Inline modules nest: the innermost one around the declaration is its parent.
                let parent = self.module_at(f, decl.at).unwrap_or(module);
                match decl.body {
                    Some(span) => {
                        if decl.test {
                            continue;
                        }
                        let m = self.new_module(f, Some(parent), Some(span));
                        self.modules[parent].children.insert(decl.name.clone(), m);
                    }
                    None => {
                        let candidates = match &decl.path_attr {
                            Some(p) => vec![path.parent().unwrap_or(Path::new("")).join(p)],
                            None => vec![
                                dir.join(format!("{}.rs", decl.name)),
                                dir.join(&decl.name).join("mod.rs"),
                            ],
                        };
                        let Some(&child) = candidates.iter().find_map(|c| index.get(c)) else {
                            continue;
                        };
                        let m = self.new_module(child, Some(parent), None);
                        if !decl.test {
                            self.modules[parent].children.insert(decl.name.clone(), m);
                        }
                        queue.push_back((child, m, test_only || decl.test));
                    }
                }
            }
        }
        for f in 0..self.files.len() {
            if !seen.contains(&f) {
                scan_items(&mut self.files[f]);
                self.unattached.push(f);
            }
        }
    }

    fn new_module(
        &mut self,
        file: usize,
        parent: Option<usize>,
        span: Option<(usize, usize)>,
    ) -> usize {
        self.modules.push(Module {
            file,
            parent,
            children: BTreeMap::new(),
            span,
        });
        self.modules.len() - 1
    }

    /// The module a position of a file is in: the file's module, or the innermost inline
    /// module around the position.
    fn module_at(&self, file: usize, at: usize) -> Option<usize> {
        let mut current = self
            .modules
            .iter()
            .position(|m| m.file == file && m.span.is_none())?;
        loop {
            let inner = self.modules[current].children.values().find(|&&child| {
                let m = &self.modules[child];
                m.file == file && m.span.is_some_and(|(open, close)| open < at && at < close)
            });
            match inner {
                Some(&child) => current = child,
                None => return Some(current),
            }
        }
    }

    /// The file a path names from `module`, if it starts inside one of the crates read.
    fn resolve(&self, module: usize, segments: &[String]) -> Option<usize> {
        let mut current = match segments.first()?.as_str() {
            "crate" => self.root_of(module),
            "self" => module,
            "super" => self.modules[module].parent?,
            first => match self.modules[module].children.get(first) {
                Some(&child) => child,
                None => *self.crate_roots.get(first)?,
            },
        };
        for seg in &segments[1..] {
            if seg == "super" {
                current = self.modules[current].parent?;
                continue;
            }
            if seg == "self" {
                continue;
            }
            match self.modules[current].children.get(seg) {
                Some(&child) => current = child,
                None => break,
            }
        }
        Some(self.modules[current].file)
    }

    fn root_of(&self, mut module: usize) -> usize {
        while let Some(p) = self.modules[module].parent {
            module = p;
        }
        module
    }

    fn build_edges(&mut self) {
        let mut edges: BTreeMap<(usize, usize), Vec<Import>> = BTreeMap::new();
        for f in 0..self.files.len() {
            if self.files[f].test_only || self.unattached.contains(&f) {
                continue;
            }
            for (at, segments) in paths_in(&self.files[f].code) {
                let Some(module) = self.module_at(f, at) else {
                    continue;
                };
                let Some(target) = self.resolve(module, &segments) else {
                    continue;
                };
                if target != f {
                    edges.entry((f, target)).or_default().push(Import {
                        line: line_of(&self.files[f].code, at),
                        path: segments.join("::"),
                    });
                }
            }
        }
        self.edges = edges;
    }

    /// Every import cycle, one group of files at a time: the files that reach each other
    /// (Tarjan's strongly connected components), with a shortest cycle through the first.
    fn cycles(&self) -> Vec<(Vec<usize>, Vec<usize>)> {
        let n = self.files.len();
        let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &(a, b) in self.edges.keys() {
            next[a].push(b);
        }
        let groups = strongly_connected(&next);
        groups
            .into_iter()
            .filter(|g| g.len() > 1)
            .map(|mut group| {
                group.sort();
                let cycle = shortest_cycle(&next, &group);
                (group, cycle)
            })
            .collect()
    }
}

// ------------------------------------------------------------------ paths

/// Every path in code that may name a module of this crate, with its position: each path of
/// a `use` tree, and each inline `a::b::c` path (outside `use`). Which of them are in this
/// crate is left to [`Layout::resolve`].
fn paths_in(code: &[u8]) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut uses: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let boundary = i == 0 || !is_ident(code[i - 1]);
        if boundary
            && code[i..].starts_with(b"use")
            && code.get(i + 3).is_some_and(|b| b.is_ascii_whitespace())
        {
            let end = code[i..]
                .iter()
                .position(|&b| b == b';')
                .map_or(code.len(), |p| i + p);
            let tokens = tokenize(&code[i + 3..end]);
            let mut pos = 0;
            for path in use_tree(&tokens, &mut pos, &[]) {
                out.push((i, path));
            }
            uses.push((i, end));
            i = end;
            continue;
        }
        i += 1;
    }
    // Inline paths: IDENT (:: IDENT)+ outside the use declarations.
    let mut i = 0;
    while i < code.len() {
        if let Some(&(_, end)) = uses.iter().find(|(s, _)| *s == i) {
            i = end;
            continue;
        }
        let boundary =
            i == 0 || !(is_ident(code[i - 1]) || code[i - 1] == b':' || code[i - 1] == b'$');
        if boundary {
            if let Some((first, mut j)) = ident_at(code, i) {
                let mut segments = vec![first];
                loop {
                    let k = skip_ws(code, j);
                    if !code[k..].starts_with(b"::") {
                        break;
                    }
                    match ident_at(code, skip_ws(code, k + 2)) {
                        Some((seg, after)) => {
                            segments.push(seg);
                            j = after;
                        }
                        None => break,
                    }
                }
                if segments.len() > 1 {
                    out.push((i, segments));
                }
                i = j;
                continue;
            }
        }
        i += 1;
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Sep,
    Open,
    Close,
    Comma,
    Star,
}

fn tokenize(code: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        match code[i] {
            b':' if code.get(i + 1) == Some(&b':') => {
                out.push(Token::Sep);
                i += 2;
            }
            b'{' => {
                out.push(Token::Open);
                i += 1;
            }
            b'}' => {
                out.push(Token::Close);
                i += 1;
            }
            b',' => {
                out.push(Token::Comma);
                i += 1;
            }
            b'*' => {
                out.push(Token::Star);
                i += 1;
            }
            c if is_ident(c) => {
                let (word, end) = ident_at(code, i).unwrap_or_else(|| {
                    let len = code[i..].iter().take_while(|&&b| is_ident(b)).count();
                    (
                        String::from_utf8_lossy(&code[i..i + len]).into_owned(),
                        i + len,
                    )
                });
                out.push(Token::Ident(word));
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

/// The full paths of a use tree: `a::{b, c::{self, d}}` is `a::b`, `a::c`, `a::c::d`.
fn use_tree(tokens: &[Token], pos: &mut usize, prefix: &[String]) -> Vec<Vec<String>> {
    // `use ::std::…` names another crate.
    if prefix.is_empty() && *pos == 0 && tokens.first() == Some(&Token::Sep) {
        return Vec::new();
    }
    let mut path = prefix.to_vec();
    loop {
        match tokens.get(*pos) {
            // `x as y`: the rename changes nothing about what is imported.
            Some(Token::Ident(word)) if word == "as" => *pos += 2,
            Some(Token::Ident(word)) => {
                // `{self, …}` names the prefix itself.
                let names_prefix =
                    word == "self" && !prefix.is_empty() && path.len() == prefix.len();
                if !names_prefix {
                    path.push(word.clone());
                }
                *pos += 1;
            }
            Some(Token::Sep | Token::Star) => *pos += 1,
            Some(Token::Open) => {
                *pos += 1;
                let mut out = Vec::new();
                loop {
                    if tokens.get(*pos) == Some(&Token::Close) {
                        *pos += 1;
                        break;
                    }
                    out.extend(use_tree(tokens, pos, &path));
                    match tokens.get(*pos) {
                        Some(Token::Comma) => *pos += 1,
                        Some(Token::Close) => {
                            *pos += 1;
                            break;
                        }
                        _ => break,
                    }
                }
                return out;
            }
            Some(Token::Comma | Token::Close) | None => break,
        }
    }
    if path.is_empty() {
        Vec::new()
    } else {
        vec![path]
    }
}

// ------------------------------------------------------------------ graphs

fn strongly_connected(next: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct Tarjan<'a> {
        next: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        groups: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.counter);
            self.low[v] = self.counter;
            self.counter += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.next[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    group.push(w);
                    if w == v {
                        break;
                    }
                }
                self.groups.push(group);
            }
        }
    }
    let n = next.len();
    let mut t = Tarjan {
        next,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        counter: 0,
        groups: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.groups
}

/// A shortest cycle through `group[0]` inside `group`, as the files in order (first repeated
/// at the end).
fn shortest_cycle(next: &[Vec<usize>], group: &[usize]) -> Vec<usize> {
    let start = group[0];
    let mut came_from: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &next[v] {
            if !group.contains(&w) {
                continue;
            }
            if w == start {
                let mut cycle = vec![start];
                let mut at = v;
                while at != start {
                    cycle.push(at);
                    at = came_from[&at];
                }
                cycle.push(start);
                cycle.reverse();
                return cycle;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = came_from.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    vec![start]
}

// ------------------------------------------------------------------ the checks

fn layout() -> Layout {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, src) in CRATES {
        assert!(root.join(src).is_dir(), "crate {name}: no {src}");
    }
    Layout::read(root, CRATES)
}

impl Layout {
    fn listing(&self) -> String {
        let mut out = String::new();
        for (f, file) in self.files.iter().enumerate() {
            let kind = if file.test_only {
                " (test code)".to_owned()
            } else if self.unattached.contains(&f) {
                " (in no module tree)".to_owned()
            } else {
                String::new()
            };
            out += &format!(
                "{}: {} lines, {} of non-test code{kind}\n",
                file.name, file.total_lines, file.non_test_lines
            );
            for ((_, to), imports) in self.edges.range((f, 0)..(f + 1, 0)) {
                let names: BTreeSet<&str> = imports.iter().map(|i| i.path.as_str()).collect();
                out += &format!(
                    "    -> {}: {}\n",
                    self.files[*to].name,
                    names.into_iter().collect::<Vec<_>>().join(", ")
                );
            }
        }
        out
    }

    fn describe_cycles(&self) -> String {
        let mut out = String::new();
        for (group, cycle) in self.cycles() {
            let names: Vec<&str> = cycle.iter().map(|&f| self.files[f].name.as_str()).collect();
            out += &format!("  cycle: {}\n", names.join(" -> "));
            if group.len() > cycle.len() - 1 {
                let all: Vec<&str> = group.iter().map(|&f| self.files[f].name.as_str()).collect();
                out += &format!(
                    "    (these files all reach each other: {})\n",
                    all.join(", ")
                );
            }
            for (&(a, b), imports) in &self.edges {
                if group.contains(&a) && group.contains(&b) {
                    let first = &imports[0];
                    let more = if imports.len() > 1 {
                        format!(" and {} more", imports.len() - 1)
                    } else {
                        String::new()
                    };
                    out += &format!(
                        "    {}:{} -> {} ({}{more})\n",
                        self.files[a].name, first.line, self.files[b].name, first.path
                    );
                }
            }
        }
        out
    }

    fn oversized(&self) -> Vec<(&str, usize)> {
        self.files
            .iter()
            .filter(|f| f.non_test_lines > MAX_LINES)
            .map(|f| (f.name.as_str(), f.non_test_lines))
            .collect()
    }
}

#[test]
fn no_import_cycle_between_files_and_no_file_over_500_lines_of_non_test_code() {
    let layout = layout();
    if std::env::var_os("LAYOUT_LISTING").is_some() {
        println!("{}", layout.listing());
    }
    let cycles = layout.describe_cycles();
    let oversized = layout.oversized();
    let mut report = String::new();
    if !cycles.is_empty() {
        report += &format!(
            "import cycles between source files (each line: file:line -> file it imports, and the path):\n{cycles}"
        );
    }
    if !oversized.is_empty() {
        report += &format!("source files with more than {MAX_LINES} lines of non-test code:\n");
        for (name, lines) in &oversized {
            report += &format!("  {name}: {lines} lines\n");
        }
    }
    assert!(
        report.is_empty(),
        "\n{report}(scripts/layout.sh lists every file with its line counts and imports)\n"
    );
}

impl Layout {
    /// Every import from a file that `from` accepts into a file that `to` accepts, as
    /// `file:line -> file (path)` lines.
    fn imports_between(
        &self,
        from: impl Fn(&str) -> bool,
        to: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        self.edges
            .iter()
            .filter(|((a, b), _)| from(&self.files[*a].name) && to(&self.files[*b].name))
            .map(|((a, b), imports)| {
                format!(
                    "{}:{} -> {} ({})",
                    self.files[*a].name, imports[0].line, self.files[*b].name, imports[0].path
                )
            })
            .collect()
    }
}

/// The emulators are for tests, benchmarks and `demo`: no production module imports them, only
/// the subcommands that run them (`demo`, and the hidden `sim-router`/`sim-gateway`).
#[test]
fn only_demo_and_the_emulator_subcommands_import_the_emulators() {
    let layout = layout();
    let runs_them = ["src/cli/demo.rs", "src/cli/sim.rs"];
    let wrong = layout.imports_between(
        |f| !f.starts_with("crates/emulators/") && !runs_them.contains(&f),
        |t| t.starts_with("crates/emulators/"),
    );
    assert!(
        wrong.is_empty(),
        "production code imports the emulators:\n{}",
        wrong.join("\n")
    );
}

/// The mapping core speaks its own request type: of its files only the NAT-PMP adapter
/// (`orchestrator.rs`, where packets become `Command`s) imports NAT-PMP's packet format.
#[test]
fn the_mapping_core_imports_natpmp_wire_only_in_its_natpmp_adapter() {
    let layout = layout();
    let wrong = layout.imports_between(
        |f| f.starts_with("src/mapping/") && f != "src/mapping/orchestrator.rs",
        |t| {
            t == "crates/codec/src/natpmp/wire.rs" || t.starts_with("crates/codec/src/natpmp/wire/")
        },
    );
    assert!(
        wrong.is_empty(),
        "the mapping core imports natpmp::wire:\n{}",
        wrong.join("\n")
    );
}

/// The mapping core speaks to the router through its seam, in its own terms: of its files only
/// the seam (`router/seam.rs`, which passes the router's error through) imports `crate::routeros`,
/// the RouterOS implementation behind it.
#[test]
fn the_mapping_core_imports_routeros_only_in_its_router_seam() {
    let layout = layout();
    let wrong = layout.imports_between(
        |f| f.starts_with("src/mapping/") && f != "src/mapping/router/seam.rs",
        |t| t.starts_with("src/routeros/"),
    );
    assert!(
        wrong.is_empty(),
        "the mapping core imports RouterOS types outside its router seam:\n{}",
        wrong.join("\n")
    );
}

// ------------------------------------------------------------------ the checker's own tests

/// The layout of a crate made of `files` (paths from the crate root), in a directory of its own.
fn layout_of(files: &[(&str, &str)]) -> Layout {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("layout-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let layout = Layout::read(&dir, &[("demo", "src"), ("demo_other", "other/src")]);
    let _ = std::fs::remove_dir_all(&dir);
    layout
}

fn edge_names(layout: &Layout) -> BTreeSet<(String, String)> {
    layout
        .edges
        .keys()
        .map(|&(a, b)| (layout.files[a].name.clone(), layout.files[b].name.clone()))
        .collect()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

#[test]
fn paths_resolve_to_the_deepest_module_file() {
    let layout = layout_of(&[
        ("src/lib.rs", "pub mod a;\npub mod b;\n"),
        ("src/a/mod.rs", "pub mod wire;\npub struct Config;\n"),
        ("src/a/wire.rs", "pub enum Protocol {}\n"),
        (
            "src/b.rs",
            "use crate::a::Config;\nfn f() { let _ = crate::a::wire::Protocol::X; }\n",
        ),
    ]);
    assert_eq!(
        edge_names(&layout),
        BTreeSet::from([
            pair("src/b.rs", "src/a/mod.rs"),
            pair("src/b.rs", "src/a/wire.rs")
        ])
    );
}

#[test]
fn a_path_through_another_crates_name_is_an_import_of_its_file() {
    let layout = layout_of(&[
        ("src/lib.rs", "pub mod b;\n"),
        (
            "src/b.rs",
            "use demo_other::codec::Word;\nuse tokio::net::UdpSocket;\n",
        ),
        ("other/src/lib.rs", "pub mod codec;\n"),
        ("other/src/codec.rs", "pub struct Word;\n"),
    ]);
    assert_eq!(
        edge_names(&layout),
        BTreeSet::from([pair("src/b.rs", "other/src/codec.rs")]),
        "a crate outside the layout (tokio) is no edge"
    );
}

#[test]
fn a_cycle_through_super_and_a_child_module_is_found_and_printed() {
    let layout = layout_of(&[
        ("src/lib.rs", "mod m;\n"),
        (
            "src/m/mod.rs",
            "mod c;\nuse c::{helper, Other};\npub struct Shared;\n",
        ),
        (
            "src/m/c.rs",
            "use super::{self as parent, Shared};\npub fn helper() {}\n",
        ),
    ]);
    let cycles = layout.describe_cycles();
    assert!(
        cycles.contains("cycle: src/m/c.rs -> src/m/mod.rs -> src/m/c.rs")
            || cycles.contains("cycle: src/m/mod.rs -> src/m/c.rs -> src/m/mod.rs"),
        "{cycles}"
    );
    assert!(
        cycles.contains("src/m/c.rs:1 -> src/m/mod.rs (super"),
        "{cycles}"
    );
    assert!(
        cycles.contains("src/m/mod.rs:2 -> src/m/c.rs (c::helper"),
        "{cycles}"
    );
}

#[test]
fn comments_strings_mod_declarations_and_test_code_are_not_imports() {
    let layout = layout_of(&[
        ("src/lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "src/a.rs",
            "// use crate::b::X;\n/* crate::b::Y */\nconst S: &str = \"crate::b::Z\";\nconst R: &str = r#\"use crate::b::W;\"#;\nconst C: char = '\\'';\nfn f<'a>(x: &'a str) -> &'a str { x }\n#[cfg(test)]\nmod tests;\n",
        ),
        ("src/a/tests.rs", "use crate::b::X;\n"),
        (
            "src/b.rs",
            "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::a::f;\n}\n",
        ),
    ]);
    assert_eq!(
        edge_names(&layout),
        BTreeSet::from([pair("src/b.rs", "src/a.rs")])
    );
    let tests = layout
        .files
        .iter()
        .find(|f| f.name == "src/a/tests.rs")
        .unwrap();
    assert!(tests.test_only && tests.non_test_lines == 0);
    let b = layout.files.iter().find(|f| f.name == "src/b.rs").unwrap();
    assert_eq!(b.non_test_lines, 1, "lines before #[cfg(test)]");
    assert!(layout.cycles().is_empty());
}

#[test]
fn attributes_path_attributes_and_inline_modules_are_followed() {
    let layout = layout_of(&[
        (
            "src/lib.rs",
            "#[doc(hidden)]\npub mod a;\n#[path = \"elsewhere/b_impl.rs\"]\nmod b;\npub mod outer {\n    pub mod inner {\n        use super::super::a::A;\n    }\n}\n",
        ),
        ("src/a/mod.rs", "mod deep;\npub struct A;\n"),
        ("src/a/deep.rs", "use crate::b::B;\nuse crate::outer::inner;\n"),
        ("src/elsewhere/b_impl.rs", "pub struct B;\n"),
    ]);
    assert_eq!(
        edge_names(&layout),
        BTreeSet::from([
            pair("src/lib.rs", "src/a/mod.rs"),
            pair("src/a/deep.rs", "src/elsewhere/b_impl.rs"),
            pair("src/a/deep.rs", "src/lib.rs"),
        ])
    );
    assert!(layout.unattached.is_empty());
}

#[test]
fn files_over_the_limit_are_listed_with_their_count() {
    let long = "fn f() {}\n".repeat(MAX_LINES + 1);
    let short_with_tests = format!(
        "{}#[cfg(test)]\nmod tests {{\n{}}}\n",
        "fn g() {}\n".repeat(10),
        "fn t() {}\n".repeat(MAX_LINES)
    );
    let layout = layout_of(&[
        ("src/lib.rs", "mod long;\nmod short;\n"),
        ("src/long.rs", &long),
        ("src/short.rs", &short_with_tests),
    ]);
    assert_eq!(layout.oversized(), vec![("src/long.rs", MAX_LINES + 1)]);
}
