//! A reader for RouterOS scripts (`.rsc`), as far as the command checker needs one: commands
//! made of words, words made of parts (text, `"strings"`, `$variables`, `[sub-commands]`,
//! `(expressions)` and `{blocks}`). It does not evaluate anything.
//!
//! Syntax followed (RouterOS scripting manual): a command ends at a new line or `;`; a `\` at
//! the end of a line continues it; `#` starts a comment at the beginning of a line; `{ }`,
//! `[ ]` and `( )` nest; inside `( )` new lines are spaces.

/// A piece of a word.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Plain characters, e.g. `name=` or `add` or `>=`.
    Text(String),
    /// A `"…"` string, its escapes kept as written.
    Str(String),
    /// `$name`.
    Var(String),
    /// `[ … ]`: commands whose result is the value.
    Sub(Vec<Cmd>),
    /// `( … )`: an expression.
    Paren(Vec<Word>),
    /// `{ … }`: a block of commands (or an array literal).
    Brace(Vec<Cmd>),
}

/// Parts written together without white space, e.g. `comment=` + `"x"`.
#[derive(Clone, Debug, PartialEq)]
pub struct Word {
    /// The parts, in order.
    pub parts: Vec<Part>,
}

/// One command: its words and the line it starts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Cmd {
    /// 1-based line number of the first word.
    pub line: usize,
    /// The words, command name first.
    pub words: Vec<Word>,
}

/// A script that cannot be read.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Word {
    /// The text of a word that is one plain text part.
    pub fn text(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// For `name=value` and `name~value` (the value may be any parts, or none): the name,
    /// the operator and the value's parts.
    pub fn assignment(&self) -> Option<(&str, char, &[Part])> {
        let Some(Part::Text(t)) = self.parts.first() else {
            return None;
        };
        let at = t.find(['=', '~'])?;
        let name = &t[..at];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return None;
        }
        let op = t[at..].chars().next()?;
        Some((name, op, &self.parts[1..]))
    }
}

/// Reads a whole script.
pub fn parse(src: &str) -> Result<Vec<Cmd>, ParseError> {
    let mut r = Reader {
        chars: src.chars().collect(),
        pos: 0,
        line: 1,
    };
    r.block(None)
}

/// RouterOS string escapes (`\"`, `\\`, `\$`, `\n`, `\t`, `\_`, two hex digits, …) turned into
/// the characters they stand for, e.g. the code inside `:parse "…"`.
pub fn unescape(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' || i + 1 >= chars.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let n = chars[i + 1];
        let hex = |c: char| c.is_ascii_digit() || ('A'..='F').contains(&c);
        if i + 2 < chars.len() && hex(n) && hex(chars[i + 2]) {
            let byte = u8::from_str_radix(&format!("{n}{}", chars[i + 2]), 16).unwrap_or(b'?');
            out.push(char::from(byte));
            i += 3;
            continue;
        }
        out.push(match n {
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            '_' => ' ',
            '\n' => ' ',
            other => other,
        });
        i += 2;
    }
    out
}

struct Reader {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

/// Characters that end a plain text part.
fn special(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '[' | ']' | '(' | ')' | '{' | '}' | ';' | '$')
}

impl Reader {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            message: message.into(),
        }
    }

    /// Skips blanks and `\`-continued line ends; new lines too when `newlines`.
    fn skip_blank(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            if c == '\\' && matches!(self.peek_at(1), Some('\n')) {
                self.bump();
                self.bump();
            } else if c == '\\' && self.peek_at(1) == Some('\r') && self.peek_at(2) == Some('\n') {
                self.bump();
                self.bump();
                self.bump();
            } else if c == '\n' && !newlines {
                return;
            } else if c.is_whitespace() {
                self.bump();
            } else {
                return;
            }
        }
    }

    /// Commands up to `close` (consumed) or the end of the text.
    fn block(&mut self, close: Option<char>) -> Result<Vec<Cmd>, ParseError> {
        let mut cmds = Vec::new();
        loop {
            self.skip_blank(true);
            match self.peek() {
                None => {
                    return match close {
                        Some(c) => Err(self.error(format!("`{c}` is missing"))),
                        None => Ok(cmds),
                    };
                }
                Some(';') => {
                    self.bump();
                }
                Some('#') => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                Some(c) if Some(c) == close => {
                    self.bump();
                    return Ok(cmds);
                }
                Some(c @ (']' | ')' | '}')) => {
                    return Err(self.error(format!("`{c}` closes nothing")));
                }
                Some(_) => {
                    let line = self.line;
                    let mut words = Vec::new();
                    loop {
                        self.skip_blank(false);
                        match self.peek() {
                            None | Some('\n' | ';') => break,
                            Some(c) if Some(c) == close => break,
                            Some(_) => words.push(self.word()?),
                        }
                    }
                    cmds.push(Cmd { line, words });
                }
            }
        }
    }

    /// One word: parts up to white space or a closing character.
    fn word(&mut self) -> Result<Word, ParseError> {
        let mut parts = Vec::new();
        loop {
            match self.peek() {
                None => break,
                Some(c) if c.is_whitespace() || matches!(c, ']' | ')' | '}' | ';') => break,
                Some('"') => parts.push(Part::Str(self.string()?)),
                Some('[') => {
                    self.bump();
                    parts.push(Part::Sub(self.block(Some(']'))?));
                }
                Some('{') => {
                    self.bump();
                    parts.push(Part::Brace(self.block(Some('}'))?));
                }
                Some('(') => {
                    self.bump();
                    parts.push(Part::Paren(self.paren()?));
                }
                Some('$') => {
                    self.bump();
                    let mut name = String::new();
                    while let Some(c) = self.peek() {
                        if c.is_ascii_alphanumeric() || c == '_' {
                            name.push(c);
                            self.bump();
                        } else {
                            break;
                        }
                    }
                    parts.push(if name.is_empty() {
                        Part::Text("$".into())
                    } else {
                        Part::Var(name)
                    });
                }
                Some(_) => {
                    let mut t = String::new();
                    while let Some(c) = self.peek() {
                        if special(c) {
                            break;
                        }
                        t.push(c);
                        self.bump();
                    }
                    parts.push(Part::Text(t));
                }
            }
        }
        if parts.is_empty() {
            return Err(self.error("empty word"));
        }
        Ok(Word { parts })
    }

    /// The words of `( … )` after the `(`, the `)` consumed.
    fn paren(&mut self) -> Result<Vec<Word>, ParseError> {
        let mut words = Vec::new();
        loop {
            self.skip_blank(true);
            match self.peek() {
                None => return Err(self.error("`)` is missing")),
                Some(')') => {
                    self.bump();
                    return Ok(words);
                }
                Some(c @ (']' | '}' | ';')) => {
                    return Err(self.error(format!("`{c}` inside ( )")));
                }
                Some(_) => words.push(self.word()?),
            }
        }
    }

    /// A `"…"` string, the quotes consumed, escapes kept.
    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.line;
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(ParseError {
                        line: start,
                        message: "the string is not closed".into(),
                    })
                }
                Some('"') => return Ok(s),
                Some('\\') => {
                    s.push('\\');
                    if let Some(c) = self.bump() {
                        s.push(c);
                    }
                }
                Some(c) => s.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Part {
        Part::Text(t.into())
    }

    #[test]
    fn commands_words_and_nesting() {
        let cmds = parse(
            "# comment\n{\n  /ip firewall nat add chain=dstnat comment=\"a \\\"b\\\"\" place-before=[:pick $x 0]\n  :if (($a >= 1) && $b) do={ :put \"x\" } ; :put 1\n}\n",
        )
        .unwrap();
        assert_eq!(cmds.len(), 1);
        let [Part::Brace(inner)] = cmds[0].words[0].parts.as_slice() else {
            panic!("{cmds:?}")
        };
        assert_eq!(inner.len(), 3);
        assert_eq!(inner[0].line, 3);
        let w = &inner[0].words;
        assert_eq!(w[0].parts, vec![text("/ip")]);
        assert_eq!(
            w[5].parts,
            vec![text("comment="), Part::Str("a \\\"b\\\"".into())]
        );
        assert_eq!(
            w[6].assignment().map(|(n, o, _)| (n, o)),
            Some(("place-before", '='))
        );
        assert!(matches!(&w[6].parts[1], Part::Sub(s) if s[0].words.len() == 3));
        assert!(matches!(&inner[1].words[1].parts[0], Part::Paren(p) if p.len() == 3));
        assert_eq!(inner[2].words[0].text(), Some(":put"));
    }

    #[test]
    fn continuation_lines_and_bad_nesting() {
        let cmds = parse("/ip route add \\\n    gateway=x\n").unwrap();
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].words.len(), 4);
        assert_eq!(parse("{ :put 1\n").unwrap_err().message, "`}` is missing");
        assert_eq!(parse(":put \"x\n").unwrap_err().line, 1);
        assert!(parse(":put (1\n").is_err());
    }

    #[test]
    fn escapes_of_parse_strings() {
        assert_eq!(
            unescape(r#"/x add a=\$v b=\"c d\" e=\\ f=\41"#),
            r#"/x add a=$v b="c d" e=\ f=A"#
        );
    }
}
