//! The router-port allocator: chooses R without a round trip to the router.
//!
//! Upstream, every LAN client has the same identity (the router's tunnel address), so R is
//! unique per protocol across all clients, and it must not collide with any dst-nat rule on the
//! VPN in-interface, ours or foreign. The index knows three kinds of used ports:
//!
//! * **router view**: ports of the rules the last listing showed (foreign rules, including
//!   dynamic ones; `dst-port` lists and ranges like `1000-2000,3000` are parsed), plus our own
//!   rules the reconciler could not remove. Replaced wholesale by each reconcile pass.
//! * **holds**: ports we hold, in flight (reserved, rule not yet confirmed) or leased (a live
//!   mapping's rule). These are the orchestrator's own adds and removes, kept current without
//!   asking the router.
//! * **suspects**: ports where a rule of ours may exist although we hold nothing (an add whose
//!   answer was lost, a remove that failed, a transaction cancelled half-way). They stay used
//!   until a reconcile pass that *started after* they were marked has looked at the router.
//!
//! Reservation is atomic (one lock, no `.await` inside), so two concurrent requests never get the
//! same port. Preference order: the client's suggested external port, then its internal port,
//! then the next free port of the configured range (next-fit, so a just-freed port is not reused
//! at once). Preferred ports below 1024 are skipped: a dst-nat rule on a well-known port of the
//! tunnel address only confuses whoever reads the router's rules.
//!
//! A foreign rule without `dst-port` matches every port; it is not counted as using any port
//! (counting it would make allocation impossible, and our rule after it would be shadowed anyway).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::mapping::lease::MappingKey;
use crate::natpmp::wire::Protocol;
use crate::routeros::api::{NatRule, RuleId};

/// Preferred ports (suggested or internal) below this are not used as router ports.
pub const MIN_PREFERRED_PORT: u16 = 1024;

/// Parses a RouterOS port list such as `1000-2000,3000`; `None` if any part is malformed.
pub fn parse_port_list(text: &str) -> Option<Vec<RangeInclusive<u16>>> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let range = match part.split_once('-') {
            Some((a, b)) => {
                let a: u16 = a.trim().parse().ok()?;
                let b: u16 = b.trim().parse().ok()?;
                a.min(b)..=a.max(b)
            }
            None => {
                let p: u16 = part.parse().ok()?;
                p..=p
            }
        };
        out.push(range);
    }
    Some(out)
}

fn slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Udp => 0,
        Protocol::Tcp => 1,
    }
}

/// Which protocols a rule's `protocol` field covers: absent means both.
fn protocols_of(field: Option<&str>) -> [bool; 2] {
    match field.map(Protocol::parse) {
        None => [true, true],
        Some(Some(p)) => {
            let mut out = [false, false];
            out[slot(p)] = true;
            out
        }
        Some(None) => [false, false],
    }
}

/// A set of ports, one bit each.
#[derive(Clone, Debug)]
struct PortSet {
    words: Vec<u64>,
}

impl Default for PortSet {
    fn default() -> Self {
        PortSet {
            words: vec![0; 65536 / 64],
        }
    }
}

impl PortSet {
    fn insert(&mut self, port: u16) {
        let p = usize::from(port);
        if let Some(w) = self.words.get_mut(p / 64) {
            *w |= 1 << (p % 64);
        }
    }

    fn insert_range(&mut self, range: &RangeInclusive<u16>) {
        for p in range.clone() {
            self.insert(p);
        }
    }

    fn contains(&self, port: u16) -> bool {
        let p = usize::from(port);
        self.words
            .get(p / 64)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    }
}

/// A foreign rule's target, for C-35 (a delete aimed at a mapping someone else made answers 2).
#[derive(Clone, Debug)]
struct ForeignTarget {
    protocols: [bool; 2],
    address: Ipv4Addr,
    ports: Vec<RangeInclusive<u16>>,
}

/// What one router listing says about used ports and foreign targets; built by the reconciler
/// and handed to [`PortIndex::apply_refresh`].
#[derive(Clone, Debug, Default)]
pub struct RouterView {
    used: [PortSet; 2],
    targets: Vec<ForeignTarget>,
}

impl RouterView {
    /// An empty view.
    pub fn new() -> RouterView {
        RouterView::default()
    }

    /// Counts a foreign rule: its dst-ports become used, its target is remembered.
    pub fn add_foreign_rule(&mut self, rule: &NatRule) {
        let protocols = protocols_of(rule.protocol.as_deref());
        let dst = rule.dst_port.as_deref().and_then(parse_port_list);
        if let Some(ranges) = &dst {
            for (i, on) in protocols.iter().enumerate() {
                if *on {
                    for r in ranges {
                        self.used[i].insert_range(r);
                    }
                }
            }
        }
        let address = rule
            .to_addresses
            .as_deref()
            .and_then(|a| a.trim().parse::<Ipv4Addr>().ok());
        // dst-nat without to-ports keeps the destination port.
        let ports = match rule.to_ports.as_deref() {
            Some(p) => parse_port_list(p),
            None => dst,
        };
        if let (Some(address), Some(ports)) = (address, ports) {
            self.targets.push(ForeignTarget {
                protocols,
                address,
                ports,
            });
        }
    }

    /// Marks one port used (an own rule the reconciler could not remove).
    pub fn add_used(&mut self, protocol: Protocol, port: u16) {
        self.used[slot(protocol)].insert(port);
    }
}

/// Why a port is held by us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Reserved by a transaction that has not finished.
    InFlight(MappingKey),
    /// The router port of a live mapping, whose rule has this id.
    Leased {
        /// The mapping.
        key: MappingKey,
        /// Its rule.
        rule: RuleId,
    },
}

#[derive(Debug, Default)]
struct State {
    router: RouterView,
    suspects: HashMap<(Protocol, u16), u64>,
    holds: HashMap<(Protocol, u16), Hold>,
    cursor: [u32; 2],
    generation: u64,
}

impl State {
    fn is_used(&self, protocol: Protocol, port: u16) -> bool {
        self.router.used[slot(protocol)].contains(port)
            || self.suspects.contains_key(&(protocol, port))
            || self.holds.contains_key(&(protocol, port))
    }
}

/// The in-memory index of router ports (see the module docs).
#[derive(Debug)]
pub struct PortIndex {
    range: RangeInclusive<u16>,
    state: Mutex<State>,
}

impl PortIndex {
    /// An empty index allocating fallback ports from `range`.
    pub fn new(range: RangeInclusive<u16>) -> PortIndex {
        let start = u32::from(*range.start());
        PortIndex {
            range,
            state: Mutex::new(State {
                cursor: [start, start],
                ..State::default()
            }),
        }
    }

    /// The fallback range.
    pub fn range(&self) -> &RangeInclusive<u16> {
        &self.range
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock still holds consistent sets: every critical section is a few
        // infallible inserts and removes.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a free router port for `key`, trying `preferred` ports first (0 and ports below
    /// 1024 are skipped), then the range. `None` when every port of the range is used.
    pub fn reserve(self: &Arc<Self>, key: MappingKey, preferred: &[u16]) -> Option<Reservation> {
        let protocol = key.protocol;
        let mut st = self.state();
        let mut chosen = preferred
            .iter()
            .copied()
            .find(|&p| p >= MIN_PREFERRED_PORT && !st.is_used(protocol, p));
        if chosen.is_none() {
            let lo = u32::from(*self.range.start());
            let hi = u32::from(*self.range.end());
            if lo <= hi {
                let len = hi - lo + 1;
                let cursor = st.cursor[slot(protocol)].clamp(lo, hi);
                for i in 0..len {
                    let candidate = lo + (cursor - lo + i) % len;
                    // candidate <= hi <= u16::MAX, so the conversion cannot fail.
                    let Ok(port) = u16::try_from(candidate) else {
                        continue;
                    };
                    if !st.is_used(protocol, port) {
                        st.cursor[slot(protocol)] =
                            if candidate == hi { lo } else { candidate + 1 };
                        chosen = Some(port);
                        break;
                    }
                }
            }
        }
        let port = chosen?;
        st.holds.insert((protocol, port), Hold::InFlight(key));
        Some(Reservation {
            index: Arc::clone(self),
            protocol,
            port,
            done: false,
        })
    }

    /// Whether `port` is used for `protocol` (by any rule, hold or suspect).
    pub fn is_used(&self, protocol: Protocol, port: u16) -> bool {
        self.state().is_used(protocol, port)
    }

    /// A rule of ours may exist at this port although nothing holds it.
    pub fn mark_suspect(&self, protocol: Protocol, port: u16) {
        let mut st = self.state();
        let generation = st.generation;
        st.suspects.insert((protocol, port), generation);
    }

    /// A live mapping ended; `rule_left` when its rule could not be removed.
    pub fn release_leased(&self, protocol: Protocol, port: u16, rule_left: bool) {
        let mut st = self.state();
        st.holds.remove(&(protocol, port));
        if rule_left {
            let generation = st.generation;
            st.suspects.insert((protocol, port), generation);
        }
    }

    /// A live mapping's rule was recreated under a new id.
    pub fn relabel(&self, protocol: Protocol, port: u16, rule: RuleId) {
        let mut st = self.state();
        if let Some(Hold::Leased { rule: r, .. }) = st.holds.get_mut(&(protocol, port)) {
            *r = rule;
        }
    }

    /// A copy of every hold, for the reconciler.
    pub fn holds(&self) -> HashMap<(Protocol, u16), Hold> {
        self.state().holds.clone()
    }

    /// Starts a refresh; call before listing the router's rules. Returns the generation to pass
    /// to [`PortIndex::apply_refresh`].
    pub fn begin_refresh(&self) -> u64 {
        let mut st = self.state();
        st.generation += 1;
        st.generation
    }

    /// Replaces the router view with a fresh listing's, and forgets suspects marked before the
    /// listing began (the listing has seen them, and the reconciler handled what it found).
    pub fn apply_refresh(&self, generation: u64, view: RouterView) {
        let mut st = self.state();
        st.router = view;
        st.suspects.retain(|_, g| *g >= generation);
    }

    /// Whether a foreign rule forwards `protocol` traffic to `client` (on `port`, or on any port
    /// when `port` is `None`), as of the last listing (C-35, C-36).
    pub fn foreign_target(&self, protocol: Protocol, client: Ipv4Addr, port: Option<u16>) -> bool {
        let st = self.state();
        st.router.targets.iter().any(|t| {
            t.protocols[slot(protocol)]
                && t.address == client
                && port.is_none_or(|p| t.ports.iter().any(|r| r.contains(&p)))
        })
    }

    fn finish(&self, protocol: Protocol, port: u16, outcome: Outcome) {
        let mut st = self.state();
        match outcome {
            Outcome::Leased(hold) => {
                st.holds.insert((protocol, port), hold);
            }
            Outcome::Free => {
                st.holds.remove(&(protocol, port));
            }
            Outcome::Suspect => {
                st.holds.remove(&(protocol, port));
                let generation = st.generation;
                st.suspects.insert((protocol, port), generation);
            }
        }
    }
}

enum Outcome {
    Leased(Hold),
    Free,
    Suspect,
}

/// A reserved router port. [`Reservation::commit`] when the mapping is live,
/// [`Reservation::release`] when no rule was made; dropped otherwise (error or cancellation with
/// a rule possibly made), the port becomes a suspect until the next reconcile.
#[derive(Debug)]
pub struct Reservation {
    index: Arc<PortIndex>,
    protocol: Protocol,
    port: u16,
    done: bool,
}

impl Reservation {
    /// The reserved port R.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The mapping is live with rule `rule`.
    pub fn commit(mut self, key: MappingKey, rule: RuleId) {
        self.done = true;
        self.index.finish(
            self.protocol,
            self.port,
            Outcome::Leased(Hold::Leased { key, rule }),
        );
    }

    /// Nothing was made at this port: free it.
    pub fn release(mut self) {
        self.done = true;
        self.index.finish(self.protocol, self.port, Outcome::Free);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.index
                .finish(self.protocol, self.port, Outcome::Suspect);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> MappingKey {
        MappingKey {
            client: Ipv4Addr::new(192, 168, 88, 10),
            protocol: Protocol::Udp,
            internal_port: port,
        }
    }

    fn foreign(protocol: Option<&str>, dst: &str, to: &str, to_port: Option<&str>) -> NatRule {
        NatRule {
            protocol: protocol.map(str::to_owned),
            dst_port: Some(dst.to_owned()),
            to_addresses: Some(to.to_owned()),
            to_ports: to_port.map(str::to_owned),
            ..NatRule::default()
        }
    }

    #[test]
    fn port_lists_and_ranges_parse() {
        assert_eq!(
            parse_port_list("1000-2000,3000"),
            Some(vec![1000..=2000, 3000..=3000])
        );
        assert_eq!(parse_port_list("80"), Some(vec![80..=80]));
        assert_eq!(parse_port_list("x"), None);
        assert_eq!(parse_port_list("1-70000"), None);
    }

    #[test]
    fn prefers_suggested_then_internal_then_range() {
        let idx = Arc::new(PortIndex::new(40000..=40010));
        let a = idx.reserve(key(6881), &[5000, 6881]).map(|r| r.port());
        assert_eq!(a, Some(5000));
        // The dropped reservation leaves 5000 a suspect; the next preference is the internal port.
        let r = idx.reserve(key(6881), &[0, 6881]);
        assert_eq!(r.as_ref().map(Reservation::port), Some(6881));
        let low = idx.reserve(key(80), &[80, 443]);
        assert_eq!(low.as_ref().map(Reservation::port), Some(40000));
    }

    #[test]
    fn skips_foreign_ports_including_ranges() {
        let idx = Arc::new(PortIndex::new(40000..=40005));
        let mut view = RouterView::new();
        view.add_foreign_rule(&foreign(
            Some("udp"),
            "40000-40002,40004",
            "192.168.88.5",
            None,
        ));
        view.add_foreign_rule(&foreign(Some("tcp"), "40003", "192.168.88.5", None));
        let g = idx.begin_refresh();
        idx.apply_refresh(g, view);
        let r = idx.reserve(key(1), &[40001]);
        assert_eq!(r.as_ref().map(Reservation::port), Some(40003));
        let r2 = idx.reserve(key(2), &[]);
        assert_eq!(r2.as_ref().map(Reservation::port), Some(40005));
        assert!(idx.reserve(key(3), &[]).is_none(), "range exhausted");
    }

    #[test]
    fn release_frees_but_drop_leaves_a_suspect_until_refresh() {
        let idx = Arc::new(PortIndex::new(40000..=40000));
        let r = idx.reserve(key(1), &[]);
        assert!(r.is_some());
        drop(r);
        assert!(idx.is_used(Protocol::Udp, 40000), "suspect after drop");
        let g = idx.begin_refresh();
        idx.apply_refresh(g, RouterView::new());
        assert!(!idx.is_used(Protocol::Udp, 40000));
        let r = idx.reserve(key(1), &[]);
        assert!(r.is_some());
        if let Some(r) = r {
            r.release();
        }
        assert!(!idx.is_used(Protocol::Udp, 40000));
    }

    #[test]
    fn suspects_marked_during_a_refresh_survive_it() {
        let idx = Arc::new(PortIndex::new(40000..=40010));
        let g = idx.begin_refresh();
        idx.mark_suspect(Protocol::Tcp, 40001);
        idx.apply_refresh(g, RouterView::new());
        assert!(idx.is_used(Protocol::Tcp, 40001));
    }

    #[test]
    fn ports_are_per_protocol() {
        let idx = Arc::new(PortIndex::new(40000..=40000));
        let udp = idx.reserve(key(1), &[]);
        let tcp_key = MappingKey {
            protocol: Protocol::Tcp,
            ..key(1)
        };
        let tcp = idx.reserve(tcp_key, &[]);
        assert_eq!(udp.as_ref().map(Reservation::port), Some(40000));
        assert_eq!(tcp.as_ref().map(Reservation::port), Some(40000));
    }

    #[test]
    fn foreign_targets_answer_c35() {
        let idx = Arc::new(PortIndex::new(40000..=40010));
        let mut view = RouterView::new();
        view.add_foreign_rule(&foreign(Some("tcp"), "2222", "192.168.88.10", Some("22")));
        let g = idx.begin_refresh();
        idx.apply_refresh(g, view);
        let c = Ipv4Addr::new(192, 168, 88, 10);
        assert!(idx.foreign_target(Protocol::Tcp, c, Some(22)));
        assert!(idx.foreign_target(Protocol::Tcp, c, None));
        assert!(!idx.foreign_target(Protocol::Udp, c, Some(22)));
        assert!(!idx.foreign_target(Protocol::Tcp, c, Some(2222)));
        assert!(idx.is_used(Protocol::Tcp, 2222));
    }
}
