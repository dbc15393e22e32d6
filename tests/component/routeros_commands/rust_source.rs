//! The daemon's RouterOS API commands, read from its Rust source as text: every
//! `Command::new(<path>)` followed by a chain of builder calls, for example
//!
//! ```text
//! Command::new("/ip/firewall/nat/print").attr(".proplist", NAT_PROPLIST).query("chain=dstnat")
//! ```
//!
//! `<path>` and an `.attr` name may be a string literal or a `const NAME: &str = "…"` of the
//! same file (the nearest one above). Attribute names are kept as written (`.proplist`, `.id`
//! included; the checker decides what they mean); `.query(…)` and `.tagged(…)` are API words
//! and are listed apart. Items under `#[cfg(test)]` are skipped. A command built another way
//! (a path from `format!`, attributes pushed later) is reported as unreadable, so it cannot
//! slip past the check silently.

/// One command the daemon sends.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiCommand {
    /// 1-based line of `Command::new`.
    pub line: usize,
    /// The command path, e.g. `/ip/route/check`.
    pub path: String,
    /// `.attr` names, in order.
    pub attrs: Vec<String>,
    /// API words that are not attributes: `?query` and `.tag`.
    pub api_words: Vec<String>,
}

/// A `Command::new` or `.attr` whose path or name is not a literal or a const.
#[derive(Clone, Debug, PartialEq)]
pub struct Unreadable {
    /// 1-based line.
    pub line: usize,
    /// The expression as written (tokens joined by spaces).
    pub expr: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
    Other,
}

/// Every command in one source file, and what could not be read.
pub fn extract(src: &str) -> (Vec<ApiCommand>, Vec<Unreadable>) {
    let toks = strip_cfg_test(tokenize(src));
    let mut cmds = Vec::new();
    let mut bad = Vec::new();
    let mut i = 0;
    while i + 4 < toks.len() {
        let is_new = toks[i].0 == Tok::Ident("Command".into())
            && toks[i + 1].0 == Tok::Punct(':')
            && toks[i + 2].0 == Tok::Punct(':')
            && toks[i + 3].0 == Tok::Ident("new".into())
            && toks[i + 4].0 == Tok::Punct('(');
        if !is_new {
            i += 1;
            continue;
        }
        let line = toks[i].1;
        let (args, mut next) = call_args(&toks, i + 4);
        let path = match args.as_slice() {
            [a] => resolve(&toks, i, a),
            _ => None,
        };
        let Some(path) = path else {
            bad.push(Unreadable {
                line,
                expr: args.iter().map(|a| show(a)).collect::<Vec<_>>().join(", "),
            });
            i = next;
            continue;
        };
        let mut cmd = ApiCommand {
            line,
            path,
            attrs: Vec::new(),
            api_words: Vec::new(),
        };
        // The builder chain: `.name(args)` calls.
        while next + 2 < toks.len()
            && toks[next].0 == Tok::Punct('.')
            && toks[next + 2].0 == Tok::Punct('(')
        {
            let Tok::Ident(method) = &toks[next + 1].0 else {
                break;
            };
            let method = method.clone();
            let (margs, after) = call_args(&toks, next + 2);
            match method.as_str() {
                "attr" => match margs.first().and_then(|a| resolve(&toks, i, a)) {
                    Some(name) => cmd.attrs.push(name),
                    None => bad.push(Unreadable {
                        line: toks[next].1,
                        expr: format!(
                            ".attr({})",
                            margs.first().map(|a| show(a)).unwrap_or_default()
                        ),
                    }),
                },
                "query" => cmd.api_words.push(format!(
                    "?{}",
                    margs.first().map(|a| show(a)).unwrap_or_default()
                )),
                "tagged" => cmd.api_words.push(".tag".into()),
                _ => break,
            }
            next = after;
        }
        cmds.push(cmd);
        i = next;
    }
    (cmds, bad)
}

/// The comma-separated arguments of the call whose `(` is at `open`, and the index after `)`.
fn call_args(toks: &[(Tok, usize)], open: usize) -> (Vec<Vec<Tok>>, usize) {
    let mut args = vec![Vec::new()];
    let mut depth = 0usize;
    let mut i = open + 1;
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') if depth == 0 => {
                if args.last().is_some_and(Vec::is_empty) {
                    args.pop();
                }
                return (args, i + 1);
            }
            Tok::Punct(')' | ']' | '}') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                args.push(Vec::new());
                i += 1;
                continue;
            }
            _ => {}
        }
        if let Some(a) = args.last_mut() {
            a.push(toks[i].0.clone());
        }
        i += 1;
    }
    (args, toks.len())
}

/// A literal, or a `const NAME: &str = "…";` declared before `at` (the nearest one).
fn resolve(toks: &[(Tok, usize)], at: usize, arg: &[Tok]) -> Option<String> {
    match arg {
        [Tok::Str(s)] => Some(s.clone()),
        [Tok::Ident(name)] => (0..at).rev().find_map(|j| {
            let w = toks.get(j..j + 8)?;
            let is_const = w[0].0 == Tok::Ident("const".into())
                && w[1].0 == Tok::Ident(name.clone())
                && w[2].0 == Tok::Punct(':')
                && w[3].0 == Tok::Punct('&')
                && w[4].0 == Tok::Ident("str".into())
                && w[5].0 == Tok::Punct('=')
                && w[7].0 == Tok::Punct(';');
            match (&w[6].0, is_const) {
                (Tok::Str(s), true) => Some(s.clone()),
                _ => None,
            }
        }),
        _ => None,
    }
}

fn show(arg: &[Tok]) -> String {
    arg.iter()
        .map(|t| match t {
            Tok::Ident(s) => s.clone(),
            Tok::Str(s) => format!("{s:?}"),
            Tok::Punct(c) => c.to_string(),
            Tok::Other => "…".into(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Drops `#[cfg(test)]` and the item after it (up to its `;` or its closing `}`).
fn strip_cfg_test(toks: Vec<(Tok, usize)>) -> Vec<(Tok, usize)> {
    let marker = [
        Tok::Punct('#'),
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let here = toks
            .get(i..i + marker.len())
            .map(|w| w.iter().map(|t| &t.0));
        if here.is_some_and(|w| w.eq(marker.iter())) {
            i += marker.len();
            let mut depth = 0usize;
            while i < toks.len() {
                match toks[i].0 {
                    Tok::Punct('(' | '[') => depth += 1,
                    Tok::Punct(')' | ']') => depth = depth.saturating_sub(1),
                    Tok::Punct('{') => depth += 1,
                    Tok::Punct('}') => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    Tok::Punct(';') if depth == 0 => {
                        i += 1;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            continue;
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// Rust tokens with their lines: identifiers, string literals (decoded), punctuation;
/// comments dropped; numbers, chars and lifetimes as `Other`.
fn tokenize(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' || ((ch == 'r' || ch == 'b') && starts_string(&c, i)) {
            let start_line = line;
            // Optional b, optional r + hashes, then the quote.
            let mut j = i;
            if c[j] == 'b' {
                j += 1;
            }
            let raw = c.get(j) == Some(&'r');
            if raw {
                j += 1;
            }
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1; // the quote
            let mut s = String::new();
            while j < c.len() {
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                if c[j] == '\n' {
                    line += 1;
                }
                if !raw && c[j] == '\\' {
                    j += 1;
                    match c.get(j) {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('0') => s.push('\0'),
                        Some('\n') => {
                            line += 1;
                            while c.get(j + 1).is_some_and(|c| c.is_whitespace()) {
                                j += 1;
                            }
                        }
                        Some(other) => s.push(*other),
                        None => {}
                    }
                    j += 1;
                    continue;
                }
                s.push(c[j]);
                j += 1;
            }
            out.push((Tok::Str(s), start_line));
            i = j;
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{1F}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
            out.push((Tok::Other, line));
        } else if ch.is_alphabetic() || ch == '_' {
            let mut s = String::new();
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                s.push(c[i]);
                i += 1;
            }
            out.push((Tok::Ident(s), line));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Other, line));
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// Whether a `b`/`r` at `i` starts a (byte, raw) string literal rather than an identifier.
fn starts_string(c: &[char], i: usize) -> bool {
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return false;
    }
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    if c.get(j) == Some(&'r') {
        j += 1;
        while c.get(j) == Some(&'#') {
            j += 1;
        }
    }
    j > i && c.get(j) == Some(&'"')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r##"
fn a() {
    const PATH: &str = "/ip/route/check";
    let c = Command::new(PATH).attr("dst-ip", x.to_string()).attr("once", "");
    // Command::new("/commented/out")
    let s = r#"Command::new("/in/a/raw/string")"#;
}
fn b() {
    const PATH: &str = "/ip/firewall/nat/add";
    let c = Command::new(PATH)
        .attr("chain", "dstnat")
        .attr(NAME, 'x');
    self.run(Command::new("/ip/firewall/nat/print").attr(".proplist", P).query("chain=dstnat").tagged("t")).await?;
    let bad = Command::new(format!("/ip/{x}/print"));
}
#[cfg(test)]
mod tests {
    fn t() { conn.run(Command::new("/x/print")).await.unwrap(); }
}
fn c() { Command::new("/system/identity/print") }
"##;

    #[test]
    fn literals_consts_chains_and_unreadable_paths() {
        let (cmds, bad) = extract(SRC);
        let paths: Vec<&str> = cmds.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/ip/route/check",
                "/ip/firewall/nat/add",
                "/ip/firewall/nat/print",
                "/system/identity/print"
            ]
        );
        assert_eq!(cmds[0].attrs, ["dst-ip", "once"]);
        assert_eq!(cmds[0].line, 4);
        // NAME is no const of the file: unreadable, not silently dropped.
        assert_eq!(cmds[1].attrs, ["chain"]);
        assert_eq!(cmds[2].attrs, [".proplist"]);
        assert_eq!(cmds[2].api_words, ["?\"chain=dstnat\"", ".tag"]);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!(bad[0].expr, ".attr(NAME)");
        assert!(bad[1].expr.starts_with("format !"), "{bad:?}");
    }
}
