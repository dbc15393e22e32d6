//! The `?` query stack language of `print`/`getall` (docs/routeros-api.md §1.5). Pure functions.
//!
//! Each query word pushes one boolean onto a stack that starts as "infinitely many true";
//! `?#ops` manipulates the stack. A row is returned when every value left on the stack is true.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The stack of booleans; reading below the bottom gives `true` (the infinite base).
#[derive(Debug, Default)]
struct Stack(Vec<bool>);

impl Stack {
    fn pop(&mut self) -> bool {
        self.0.pop().unwrap_or(true)
    }

    fn push(&mut self, v: bool) {
        self.0.push(v);
    }

    /// The value at index `n`, top = 0.
    fn get(&self, n: usize) -> bool {
        self.0
            .len()
            .checked_sub(n + 1)
            .and_then(|i| self.0.get(i).copied())
            .unwrap_or(true)
    }
}

/// True when `row` (property name -> value, `.id` included) passes every query word.
pub(crate) fn matches(queries: &[String], row: &BTreeMap<String, String>) -> bool {
    let mut stack = Stack::default();
    for q in queries {
        if let Some(ops) = q.strip_prefix('#') {
            run_ops(ops, &mut stack);
            continue;
        }
        let v = if let Some(rest) = q.strip_prefix('<') {
            compare(rest, row, Ordering::Less)
        } else if let Some(rest) = q.strip_prefix('>') {
            compare(rest, row, Ordering::Greater)
        } else if let Some(name) = q.strip_prefix('-') {
            !row.contains_key(name)
        } else {
            // `?=name=x` is the same as `?name=x` (LIBROS emits the former).
            let body = q.strip_prefix('=').unwrap_or(q);
            match body.split_once('=') {
                Some((name, want)) => row.get(name).is_some_and(|have| equal(have, want)),
                None => row.contains_key(body),
            }
        };
        stack.push(v);
    }
    stack.0.iter().all(|v| *v)
}

fn compare(body: &str, row: &BTreeMap<String, String>, want: Ordering) -> bool {
    let (name, x) = body.split_once('=').unwrap_or((body, ""));
    row.get(name).is_some_and(|have| order(have, x) == want)
}

/// Orders numbers numerically, `*HEX` ids by their number, everything else lexically
/// (the real typing of `?<`/`?>` is unknown, docs/routeros-api.md §6).
fn order(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (a.parse::<i64>(), b.parse::<i64>()) {
        return x.cmp(&y);
    }
    let hex = |s: &str| {
        s.strip_prefix('*')
            .and_then(|h| u64::from_str_radix(h, 16).ok())
    };
    if let (Some(x), Some(y)) = (hex(a), hex(b)) {
        return x.cmp(&y);
    }
    a.cmp(b)
}

/// Equality, with booleans compared by meaning: `?disabled=no` matches `disabled=false`
/// (whether real routers do this is unknown; it is the forgiving choice).
fn equal(have: &str, want: &str) -> bool {
    have == want || matches!((boolean(have), boolean(want)), (Some(a), Some(b)) if a == b)
}

/// `yes|true` / `no|false`, the spellings RouterOS accepts for booleans.
pub(crate) fn boolean(v: &str) -> Option<bool> {
    match v {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// Runs the operations of one `?#` word, left to right.
fn run_ops(ops: &str, stack: &mut Stack) {
    let chars: Vec<char> = ops.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let digits: String = chars[start..i].iter().collect();
            let v = stack.get(digits.parse().unwrap_or(usize::MAX));
            if i == chars.len() {
                // An index at the end of the word replaces the whole stack.
                stack.0 = vec![v];
            } else {
                stack.push(v);
                if chars[i] == '.' {
                    // `.` after an index does nothing.
                    i += 1;
                }
            }
            continue;
        }
        match c {
            '!' => {
                let v = stack.pop();
                stack.push(!v);
            }
            '&' => {
                let (a, b) = (stack.pop(), stack.pop());
                stack.push(a && b);
            }
            '|' => {
                let (a, b) = (stack.pop(), stack.pop());
                stack.push(a || b);
            }
            '.' => {
                let v = stack.get(0);
                stack.push(v);
            }
            _ => {}
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn q(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn no_query_matches_everything() {
        assert!(matches(&[], &row(&[("a", "1")])));
    }

    #[test]
    fn words_are_anded_and_both_equality_forms_work() {
        let r = row(&[("chain", "dstnat"), ("in-interface", "wg-proton")]);
        assert!(matches(
            &q(&["chain=dstnat", "=in-interface=wg-proton"]),
            &r
        ));
        assert!(!matches(&q(&["chain=dstnat", "in-interface=ether1"]), &r));
    }

    #[test]
    fn presence_and_absence() {
        let r = row(&[("comment", "x")]);
        assert!(matches(&q(&["comment"]), &r));
        assert!(!matches(&q(&["-comment"]), &r));
        assert!(matches(&q(&["-dst-port"]), &r));
        assert!(!matches(&q(&["dst-port"]), &r));
    }

    /// §1.5 documented examples: `?type=ether ?type=vlan ?#|` and `?>comment=`.
    #[test]
    fn documented_or_and_nonempty_comment() {
        let ether = row(&[("type", "ether")]);
        let vlan = row(&[("type", "vlan")]);
        let wg = row(&[("type", "wg")]);
        let or = q(&["type=ether", "type=vlan", "#|"]);
        assert!(matches(&or, &ether));
        assert!(matches(&or, &vlan));
        assert!(!matches(&or, &wg));
        assert!(matches(&q(&[">comment="]), &row(&[("comment", "a")])));
        assert!(!matches(&q(&[">comment="]), &row(&[("comment", "")])));
        assert!(!matches(&q(&[">comment="]), &row(&[])));
    }

    /// §1.5: `?>distance=1 ?gateway=172.16.1.1 ?#&!` is `!(distance>1 && gateway=...)`.
    #[test]
    fn documented_nand_example() {
        let qs = q(&[">distance=1", "gateway=172.16.1.1", "#&!"]);
        assert!(!matches(
            &qs,
            &row(&[("distance", "2"), ("gateway", "172.16.1.1")])
        ));
        assert!(matches(
            &qs,
            &row(&[("distance", "1"), ("gateway", "172.16.1.1")])
        ));
        assert!(matches(&qs, &row(&[("distance", "5"), ("gateway", "x")])));
    }

    #[test]
    fn numbers_compare_numerically() {
        let r = row(&[("dst-port", "9000")]);
        assert!(matches(&q(&[">dst-port=800"]), &r));
        assert!(matches(&q(&["<dst-port=10000"]), &r));
    }

    #[test]
    fn index_ops_copy_and_replace() {
        let r = row(&[("a", "1")]);
        // stack: [true(a), false(b)]; "1" at end replaces the stack with index 1 = true.
        assert!(matches(&q(&["a", "b", "#1"]), &r));
        // "1." pushes a copy of index 1 then the `.` is a no-op; false remains -> no match.
        assert!(!matches(&q(&["a", "b", "#1."]), &r));
        // "0" replaces the stack with the top (false).
        assert!(!matches(&q(&["a", "b", "#0"]), &r));
        // `.` after `!` duplicates the top: !false = true, dup -> [true, true, true].
        assert!(matches(&q(&["a", "b", "#!."]), &r));
    }

    #[test]
    fn librouteros_not_equal_and_in() {
        let r = row(&[("protocol", "udp")]);
        assert!(matches(&q(&["=protocol=tcp", "#!"]), &r));
        assert!(matches(&q(&["=protocol=tcp", "=protocol=udp", "#|"]), &r));
    }

    #[test]
    fn booleans_match_by_meaning() {
        let r = row(&[("disabled", "false")]);
        assert!(matches(&q(&["disabled=no"]), &r));
        assert!(!matches(&q(&["disabled=yes"]), &r));
    }
}
