//! [`RuleId`]: a RouterOS item id such as `*1F`, kept without a heap allocation.
//!
//! A lease holds the id of each of its rules for as long as it lives, so 10,000 leases would
//! otherwise hold 10,000 small strings of a few bytes each, scattered through the heap between
//! the short-lived allocations of requests. RouterOS writes ids as `*` and a hexadecimal
//! number, a few bytes (`*1A`, `*1fe`: docs/routeros-api.md §1.2, §2.10). No limit is
//! documented, so up to 22 bytes are kept inline and a longer id on the heap: any id still
//! round-trips exactly.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// Bytes kept inline.
const INLINE: usize = 22;

/// A RouterOS item id such as `*1F`: opaque, as the router made it.
#[derive(Clone)]
pub struct RuleId(Text);

#[derive(Clone)]
enum Text {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl RuleId {
    /// The id `text`, exactly.
    pub fn new(text: &str) -> RuleId {
        match u8::try_from(text.len()) {
            Ok(len) if text.len() <= INLINE => {
                let mut bytes = [0u8; INLINE];
                bytes[..text.len()].copy_from_slice(text.as_bytes());
                RuleId(Text::Inline { len, bytes })
            }
            _ => RuleId(Text::Heap(text.into())),
        }
    }

    /// The id as the router wrote it.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // The bytes are a copy of a whole `&str` (see `new`), so they are UTF-8 and
            // the fallback is never taken.
            Text::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Text::Heap(text) => text,
        }
    }
}

impl From<&str> for RuleId {
    fn from(text: &str) -> RuleId {
        RuleId::new(text)
    }
}

impl From<String> for RuleId {
    fn from(text: String) -> RuleId {
        RuleId::new(&text)
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RuleId").field(&self.as_str()).finish()
    }
}

impl PartialEq for RuleId {
    fn eq(&self, other: &RuleId) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RuleId {}

impl Hash for RuleId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for RuleId {
    fn partial_cmp(&self, other: &RuleId) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RuleId {
    fn cmp(&self, other: &RuleId) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_any_length_round_trip_and_compare_as_their_text() {
        let long = "*".repeat(INLINE) + "1F";
        for text in ["", "*1", "*1F2E3D4C", &"x".repeat(INLINE), &long, "*é"] {
            let id = RuleId::new(text);
            assert_eq!(id.as_str(), text);
            assert_eq!(id.to_string(), text);
            assert_eq!(format!("{id:?}"), format!("RuleId({text:?})"));
        }
        // Inline and heap ids compare and hash by their text alone.
        let (short, heap) = (RuleId::new("*A"), RuleId::new(&long));
        assert!(short > heap, "'*A' sorts after '***…'");
        assert_eq!(RuleId::new("*1F"), RuleId::from(String::from("*1F")));
        let set: std::collections::HashSet<RuleId> = ["*1", "*1", &long, &long]
            .into_iter()
            .map(RuleId::from)
            .collect();
        assert_eq!(set.len(), 2);
    }
}
