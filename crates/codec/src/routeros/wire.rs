//! RouterOS API framing: words, sentences, commands and replies, without I/O.
//!
//! Shared by the daemon's client and the RouterOS emulator, so both speak exactly one encoding.
//! A word is a 1..5-byte big-endian length prefix and that many bytes; a sentence is words
//! ended by a zero-length word (docs/routeros-api.md §1.1, §1.2). The decoder never scans for
//! terminators: a 256-byte word's prefix `81 00` contains a zero byte.

use thiserror::Error;

/// Longest word the decoder accepts. RouterOS words are short (a NAT rule row is a few hundred
/// bytes); this bound stops a hostile or broken peer from making us allocate gigabytes.
pub const MAX_WORD_LEN: usize = 1 << 20;
/// Most words one sentence may hold, for the same reason.
pub const MAX_SENTENCE_WORDS: usize = 4096;
/// Most bytes one sentence may take on the wire, prefixes included: a peer that sends many
/// long words in one sentence is stopped here, before the reader's buffer holds more. Room
/// for one word of [`MAX_WORD_LEN`] and then some; a real reply row is a few hundred bytes.
pub const MAX_SENTENCE_LEN: usize = 2 * MAX_WORD_LEN;

/// A framing error: the byte stream cannot be read further and the connection must be dropped.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WireError {
    /// A first length byte ≥ 0xF8: a reserved control byte (docs/routeros-api.md §1.1).
    #[error("reserved control byte 0x{0:02X} in the API stream")]
    ControlByte(u8),
    /// A word longer than [`MAX_WORD_LEN`].
    #[error("API word of {0} bytes is longer than the {MAX_WORD_LEN}-byte limit")]
    WordTooLong(usize),
    /// A sentence with more than [`MAX_SENTENCE_WORDS`] words.
    #[error("API sentence has more than {MAX_SENTENCE_WORDS} words")]
    TooManyWords,
    /// A sentence longer than [`MAX_SENTENCE_LEN`] bytes (`.0`: its length so far, with the
    /// word that crossed the limit).
    #[error("API sentence of at least {0} bytes is longer than the {MAX_SENTENCE_LEN}-byte limit")]
    SentenceTooLong(usize),
    /// A reply sentence whose first word is not a known reply word.
    #[error("unknown reply word {0:?}")]
    UnknownReply(String),
    /// A command sentence whose first word does not start with '/'.
    #[error("command word {0:?} does not start with '/'")]
    BadCommand(String),
}

/// Appends the length prefix of a `len`-byte word (all five forms of docs/routeros-api.md §1.1).
pub fn encode_length(len: usize, out: &mut Vec<u8>) {
    // Lengths beyond u32 cannot be framed; words that long are never built here (MAX_WORD_LEN).
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0x3FFF => out.extend_from_slice(&((len | 0x8000) as u16).to_be_bytes()),
        0x4000..=0x1F_FFFF => out.extend_from_slice(&(len | 0xC0_0000).to_be_bytes()[1..]),
        0x20_0000..=0x0FFF_FFFF => out.extend_from_slice(&(len | 0xE000_0000).to_be_bytes()),
        _ => {
            out.push(0xF0);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// Reads a length prefix. `Ok(None)`: more bytes are needed. `Ok(Some((len, used)))`.
pub fn decode_length(buf: &[u8]) -> Result<Option<(usize, usize)>, WireError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (extra, base) = match first {
        0x00..=0x7F => (0, u32::from(first)),
        0x80..=0xBF => (1, u32::from(first & 0x3F)),
        0xC0..=0xDF => (2, u32::from(first & 0x1F)),
        0xE0..=0xEF => (3, u32::from(first & 0x0F)),
        0xF0..=0xF7 => {
            if first != 0xF0 {
                // 0xF1..0xF7 are not lengths either: only 0xF0 introduces the 5-byte form.
                return Err(WireError::ControlByte(first));
            }
            (4, 0)
        }
        _ => return Err(WireError::ControlByte(first)),
    };
    let Some(rest) = buf.get(1..1 + extra) else {
        return Ok(None);
    };
    let len = rest.iter().fold(base, |acc, b| (acc << 8) | u32::from(*b));
    Ok(Some((len as usize, 1 + extra)))
}

/// Appends one word.
pub fn encode_word(word: &[u8], out: &mut Vec<u8>) {
    encode_length(word.len(), out);
    out.extend_from_slice(word);
}

/// Appends one sentence: the words and the zero-length terminator.
pub fn encode_sentence<W: AsRef<[u8]>>(words: &[W], out: &mut Vec<u8>) {
    for w in words {
        encode_word(w.as_ref(), out);
    }
    out.push(0);
}

/// A decoded sentence's words and how many bytes it took.
pub type Decoded = (Vec<Vec<u8>>, usize);

/// Reads one sentence from the front of `buf`, in one go (a fresh [`SentenceDecoder`]).
///
/// `Ok(None)`: the sentence is not complete yet. `Ok(Some((words, used)))`: `used` bytes were
/// consumed. An empty sentence (a lone terminator) comes back as an empty word list; callers
/// skip it (docs/routeros-api.md §1.2). Words are bytes; RouterOS does not promise UTF-8.
/// A reader that gets its bytes in pieces keeps a [`SentenceDecoder`] instead, which does not
/// read the sentence's first words again at every piece.
pub fn decode_sentence(buf: &[u8]) -> Result<Option<Decoded>, WireError> {
    SentenceDecoder::default().decode(buf)
}

/// Reads sentences that arrive in pieces, resuming where the last call stopped.
///
/// Each call gets the same buffer as the one before, possibly grown at its end, until a
/// sentence comes back complete: the caller then removes its `used` bytes from the front and
/// the decoder starts afresh. Words already read are kept and never read again, so a long
/// sentence read in many pieces costs its length once, not once per piece. A sentence longer
/// than [`MAX_SENTENCE_LEN`] is refused as soon as a length prefix announces it, before its
/// bytes arrive, so the caller's buffer never holds much more than that.
#[derive(Debug, Default)]
pub struct SentenceDecoder {
    /// The complete words of the sentence in progress.
    words: Vec<Vec<u8>>,
    /// Where the next word's length prefix starts in the buffer.
    pos: usize,
}

impl SentenceDecoder {
    /// Continues the sentence at the front of `buf` (see the type's rules). After an error the
    /// stream cannot be read further; the decoder is left as it was.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<Decoded>, WireError> {
        loop {
            let rest = buf.get(self.pos..).unwrap_or_default();
            let Some((len, used)) = decode_length(rest)? else {
                return Ok(None);
            };
            if len > MAX_WORD_LEN {
                return Err(WireError::WordTooLong(len));
            }
            let end = self.pos + used + len;
            if end > MAX_SENTENCE_LEN {
                return Err(WireError::SentenceTooLong(end));
            }
            if len == 0 {
                let words = std::mem::take(&mut self.words);
                self.pos = 0;
                return Ok(Some((words, end)));
            }
            let Some(word) = buf.get(self.pos + used..end) else {
                return Ok(None);
            };
            if self.words.len() == MAX_SENTENCE_WORDS {
                return Err(WireError::TooManyWords);
            }
            self.words.push(word.to_vec());
            self.pos = end;
        }
    }

    /// How many bytes of the buffer the sentence in progress has used so far (its complete
    /// words): they are not read again.
    pub fn consumed(&self) -> usize {
        self.pos
    }
}

/// Splits an attribute word `=name=value` on the first `=` after the leading one (§1.2).
/// Returns `None` for words that are not attribute words. A bare `=name` gives an empty value.
pub fn split_attribute(word: &str) -> Option<(&str, &str)> {
    let body = word.strip_prefix('=')?;
    Some(match body.split_once('=') {
        Some((k, v)) => (k, v),
        None => (body, ""),
    })
}

fn lossy(word: &[u8]) -> String {
    String::from_utf8_lossy(word).into_owned()
}

/// A command sentence, as a client sends it and the emulator reads it. `Debug` shows `***`
/// for the value of a password attribute (`/login =password=`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Command {
    /// The command word, e.g. `/ip/firewall/nat/add`.
    pub path: String,
    /// `=name=value` attribute words, in order.
    pub attributes: Vec<(String, String)>,
    /// `?` query words, verbatim without the leading `?`, in order (order matters, §1.5).
    pub queries: Vec<String>,
    /// The `.tag=` API attribute, if any.
    pub tag: Option<String>,
}

/// Whether an attribute holds a secret (`password`, `old-password`, `new-password`).
fn is_secret(name: &str) -> bool {
    name.ends_with("password")
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let attributes: Vec<(&str, &str)> = self
            .attributes
            .iter()
            .map(|(name, value)| {
                let shown = if is_secret(name) {
                    "***"
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("Command")
            .field("path", &self.path)
            .field("attributes", &attributes)
            .field("queries", &self.queries)
            .field("tag", &self.tag)
            .finish()
    }
}

impl Command {
    /// A command with no attributes.
    pub fn new(path: impl Into<String>) -> Command {
        Command {
            path: path.into(),
            ..Command::default()
        }
    }

    /// Adds `=name=value`.
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Command {
        self.attributes.push((name.into(), value.into()));
        self
    }

    /// Adds a query word (without its leading `?`).
    pub fn query(mut self, q: impl Into<String>) -> Command {
        self.queries.push(q.into());
        self
    }

    /// Sets `.tag=`.
    pub fn tagged(mut self, tag: impl Into<String>) -> Command {
        self.tag = Some(tag.into());
        self
    }

    /// The value of attribute `name`, if present (the first one).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The words of this command, in the order we send them.
    pub fn to_words(&self) -> Vec<String> {
        let mut words = Vec::with_capacity(2 + self.attributes.len() + self.queries.len());
        words.push(self.path.clone());
        words.extend(self.attributes.iter().map(|(k, v)| format!("={k}={v}")));
        words.extend(self.queries.iter().map(|q| format!("?{q}")));
        if let Some(t) = &self.tag {
            words.push(format!(".tag={t}"));
        }
        words
    }

    /// Encodes the command as one sentence.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_sentence(&self.to_words(), out);
    }

    /// Reads a command from a decoded sentence (emulator side). Unknown word kinds are kept
    /// as attributes with an empty value so the caller can reject them by name.
    pub fn from_words(words: &[Vec<u8>]) -> Result<Command, WireError> {
        let mut it = words.iter().map(|w| lossy(w));
        let path = it.next().unwrap_or_default();
        if !path.starts_with('/') {
            return Err(WireError::BadCommand(path));
        }
        let mut cmd = Command::new(path);
        for w in it {
            if let Some(t) = w.strip_prefix(".tag=") {
                cmd.tag = Some(t.to_owned());
            } else if let Some(q) = w.strip_prefix('?') {
                cmd.queries.push(q.to_owned());
            } else if let Some((k, v)) = split_attribute(&w) {
                cmd.attributes.push((k.to_owned(), v.to_owned()));
            } else {
                cmd.attributes.push((w, String::new()));
            }
        }
        Ok(cmd)
    }
}

/// The first word of a reply sentence (§1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// `!re`: one data row.
    Re,
    /// `!done`: the command finished (may carry `=ret=`).
    Done,
    /// `!trap`: an error; `!done` still follows.
    Trap,
    /// `!fatal`: the router closes the connection; the reason is a bare word.
    Fatal,
    /// `!empty` (RouterOS 7.18+): a print matched nothing; `!done` still follows.
    Empty,
}

impl ReplyKind {
    /// The reply word.
    pub fn word(self) -> &'static str {
        match self {
            ReplyKind::Re => "!re",
            ReplyKind::Done => "!done",
            ReplyKind::Trap => "!trap",
            ReplyKind::Fatal => "!fatal",
            ReplyKind::Empty => "!empty",
        }
    }

    fn parse(word: &str) -> Option<ReplyKind> {
        Some(match word {
            "!re" => ReplyKind::Re,
            "!done" => ReplyKind::Done,
            "!trap" => ReplyKind::Trap,
            "!fatal" => ReplyKind::Fatal,
            "!empty" => ReplyKind::Empty,
            _ => return None,
        })
    }
}

/// A reply sentence, as the router sends it and our client reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Which reply.
    pub kind: ReplyKind,
    /// `.tag=` if present, wherever it stood in the sentence.
    pub tag: Option<String>,
    /// `=name=value` words, in order.
    pub attributes: Vec<(String, String)>,
    /// Bare words that are neither attributes nor the tag: the reason of a `!fatal`.
    pub bare: Vec<String>,
}

impl Reply {
    /// A reply with no words but its kind.
    pub fn new(kind: ReplyKind) -> Reply {
        Reply {
            kind,
            tag: None,
            attributes: Vec::new(),
            bare: Vec::new(),
        }
    }

    /// Adds `=name=value`.
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        self.attributes.push((name.into(), value.into()));
        self
    }

    /// Sets `.tag=`.
    pub fn tagged(mut self, tag: Option<String>) -> Reply {
        self.tag = tag;
        self
    }

    /// A `!fatal` with its bare reason word (§1.2: not `=message=`).
    pub fn fatal(reason: impl Into<String>) -> Reply {
        let mut r = Reply::new(ReplyKind::Fatal);
        r.bare.push(reason.into());
        r
    }

    /// The value of attribute `name` (the first one).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The words of this reply in the order real routers send them: reply word, `.tag`, then
    /// attributes (LIBROS captures), then bare words.
    pub fn to_words(&self) -> Vec<String> {
        let mut words = vec![self.kind.word().to_owned()];
        if let Some(t) = &self.tag {
            words.push(format!(".tag={t}"));
        }
        words.extend(self.attributes.iter().map(|(k, v)| format!("={k}={v}")));
        words.extend(self.bare.iter().cloned());
        words
    }

    /// Encodes the reply as one sentence.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_sentence(&self.to_words(), out);
    }

    /// Reads a reply from a decoded, non-empty sentence. Words may come in any order.
    pub fn from_words(words: &[Vec<u8>]) -> Result<Reply, WireError> {
        let mut it = words.iter().map(|w| lossy(w));
        let first = it.next().unwrap_or_default();
        let kind = ReplyKind::parse(&first).ok_or(WireError::UnknownReply(first))?;
        let mut reply = Reply::new(kind);
        for w in it {
            if let Some(t) = w.strip_prefix(".tag=") {
                reply.tag = Some(t.to_owned());
            } else if let Some((k, v)) = split_attribute(&w) {
                reply.attributes.push((k.to_owned(), v.to_owned()));
            } else {
                reply.bare.push(w);
            }
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_login_command_hides_the_password() {
        let cmd = Command::new("/login")
            .attr("name", "natpmp")
            .attr("password", "s3cret!")
            .tagged("1");
        let shown = format!("{cmd:?} {cmd:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("natpmp") && shown.contains("***"), "{shown}");
        let cmd = Command::new("/password")
            .attr("old-password", "old-s3cret")
            .attr("new-password", "new-s3cret");
        assert!(!format!("{cmd:?}").contains("s3cret"));
        // The wire form still carries it: only `Debug` hides it.
        assert_eq!(cmd.get("new-password"), Some("new-s3cret"));
    }

    /// docs/routeros-api.md §1.1 test vectors.
    #[test]
    fn length_prefix_vectors() {
        let cases: &[(usize, &[u8])] = &[
            (0x7F, &[0x7F]),
            (0x80, &[0x80, 0x80]),
            (0xFF, &[0x80, 0xFF]),
            (0x100, &[0x81, 0x00]),
            (0x3FFF, &[0xBF, 0xFF]),
            (0x4000, &[0xC0, 0x40, 0x00]),
            (0x1F_FFFF, &[0xDF, 0xFF, 0xFF]),
            (0x20_0000, &[0xE0, 0x20, 0x00, 0x00]),
            (0x0FFF_FFFF, &[0xEF, 0xFF, 0xFF, 0xFF]),
            (0x1000_0000, &[0xF0, 0x10, 0x00, 0x00, 0x00]),
            (0xFFFF_FFFF, &[0xF0, 0xFF, 0xFF, 0xFF, 0xFF]),
        ];
        for (len, bytes) in cases {
            let mut out = Vec::new();
            encode_length(*len, &mut out);
            assert_eq!(&out[..], *bytes, "encode {len:#x}");
            assert_eq!(
                decode_length(bytes),
                Ok(Some((*len, bytes.len()))),
                "decode {len:#x}"
            );
        }
    }

    #[test]
    fn word_of_256_bytes_is_not_cut_at_the_zero_in_its_prefix() {
        let word = vec![b'a'; 256];
        let mut buf = Vec::new();
        encode_sentence(&[b"/x".to_vec(), word.clone()], &mut buf);
        let (words, used) = decode_sentence(&buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(words, vec![b"/x".to_vec(), word]);
    }

    #[test]
    fn incomplete_sentence_asks_for_more() {
        let mut buf = Vec::new();
        encode_sentence(&["!done", "=ret=*1"], &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(decode_sentence(&buf[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn sentence_over_the_size_cap_is_refused_when_its_length_is_announced() {
        // A full-size word, then only the prefix of another: the second word's bytes are not
        // needed to see that the sentence would be too long.
        let mut buf = Vec::new();
        encode_word(&vec![b'a'; MAX_WORD_LEN], &mut buf);
        encode_length(MAX_WORD_LEN, &mut buf);
        assert_eq!(
            decode_sentence(&buf),
            Err(WireError::SentenceTooLong(buf.len() + MAX_WORD_LEN))
        );
        // Many short words cross the cap as well, long before the word count limit.
        let word = vec![b'b'; 1000];
        let mut buf = Vec::new();
        while buf.len() <= MAX_SENTENCE_LEN {
            encode_word(&word, &mut buf);
        }
        assert!(matches!(
            decode_sentence(&buf),
            Err(WireError::SentenceTooLong(n)) if n > MAX_SENTENCE_LEN
        ));
        // Right at the cap is still a sentence.
        let mut buf = Vec::new();
        encode_word(&vec![b'c'; MAX_WORD_LEN], &mut buf);
        let room = MAX_SENTENCE_LEN - buf.len() - 1 - 3;
        encode_word(&vec![b'd'; room], &mut buf);
        buf.push(0);
        assert_eq!(buf.len(), MAX_SENTENCE_LEN);
        assert!(matches!(decode_sentence(&buf), Ok(Some((_, n))) if n == MAX_SENTENCE_LEN));
    }

    #[test]
    fn a_sentence_read_in_pieces_resumes_where_it_stopped() {
        let words: Vec<Vec<u8>> = vec![
            b"!re".to_vec(),
            vec![b'x'; 300],
            b"=name=value".to_vec(),
            b".tag=4".to_vec(),
        ];
        let mut stream = Vec::new();
        encode_sentence(&words, &mut stream);
        let first_len = stream.len();
        encode_sentence(&[b"!done".to_vec()], &mut stream);

        let mut decoder = SentenceDecoder::default();
        let mut buf = Vec::new();
        let mut got = None;
        for (i, byte) in stream[..first_len].iter().enumerate() {
            buf.push(*byte);
            // What the decoder has taken is never read again: spoil it with a control byte,
            // which a parse that restarts from the front would stop at.
            let taken = decoder.consumed();
            buf[..taken].fill(0xF8);
            match decoder.decode(&buf) {
                Ok(None) => assert!(i + 1 < first_len, "complete at byte {i}"),
                Ok(Some(sentence)) => got = Some(sentence),
                Err(e) => panic!("byte {i}: {e}"),
            }
        }
        let (decoded, used) = got.expect("the sentence completes with its last byte");
        assert_eq!(used, first_len);
        assert_eq!(decoded, words);
        // The decoder starts afresh for the next sentence of the stream.
        let next = &stream[first_len..];
        assert_eq!(
            decoder.decode(next),
            Ok(Some((vec![b"!done".to_vec()], next.len())))
        );
    }

    #[test]
    fn control_byte_is_an_error() {
        assert_eq!(decode_sentence(&[0xF8]), Err(WireError::ControlByte(0xF8)));
    }

    #[test]
    fn reply_reads_tag_anywhere_and_splits_on_first_equals() {
        let words: Vec<Vec<u8>> = ["!re", "=comment=a=b", ".tag=7", "=x="]
            .iter()
            .map(|w| w.as_bytes().to_vec())
            .collect();
        let r = Reply::from_words(&words).unwrap();
        assert_eq!(r.kind, ReplyKind::Re);
        assert_eq!(r.tag.as_deref(), Some("7"));
        assert_eq!(r.get("comment"), Some("a=b"));
        assert_eq!(r.get("x"), Some(""));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn word() -> impl Strategy<Value = Vec<u8>> {
            // Mostly short words, some across the 1- and 2-byte prefix boundaries (0x7F, 0x80,
            // 0x100 whose prefix holds a zero byte, 0x3FFF/0x4000).
            prop_oneof![
                4 => proptest::collection::vec(any::<u8>(), 1..200),
                1 => proptest::collection::vec(any::<u8>(), 250..300),
                1 => proptest::collection::vec(any::<u8>(), 0x3FF0..0x4010),
            ]
        }

        proptest! {
            #[test]
            fn decode_of_encode_gives_back_the_words(
                words in proptest::collection::vec(word(), 0..8)
            ) {
                let mut buf = Vec::new();
                encode_sentence(&words, &mut buf);
                let (decoded, used) = decode_sentence(&buf).unwrap().unwrap();
                prop_assert_eq!(used, buf.len());
                prop_assert_eq!(decoded, words);
            }

            #[test]
            fn pieces_of_any_size_decode_like_the_whole(
                words in proptest::collection::vec(word(), 0..6),
                step in 1usize..700,
            ) {
                let mut stream = Vec::new();
                encode_sentence(&words, &mut stream);
                let mut decoder = SentenceDecoder::default();
                let mut end = 0;
                let decoded = loop {
                    end = (end + step).min(stream.len());
                    if let Some(done) = decoder.decode(&stream[..end]).unwrap() {
                        break done;
                    }
                    prop_assert!(end < stream.len());
                };
                prop_assert_eq!(decoded, (words, stream.len()));
            }

            #[test]
            fn length_prefix_round_trips(len in 0usize..=u32::MAX as usize) {
                let mut out = Vec::new();
                encode_length(len, &mut out);
                prop_assert_eq!(decode_length(&out), Ok(Some((len, out.len()))));
            }
        }
    }
}
