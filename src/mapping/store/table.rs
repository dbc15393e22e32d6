//! [`LeaseTable`]: the only store of leases and of the router ports we hold.
//!
//! One lock guards everything, and nothing inside it awaits, so a lease and its port can never
//! disagree: a port is reserved, leased, draining or free in the same step as its lease appears
//! or goes. The table knows three kinds of used ports:
//!
//! * **router view** ([`RouterView`]): ports of the rules the last listing showed that can catch
//!   tunnel traffic, and of enabled router services. Replaced wholesale by each reconcile pass.
//! * **holds**: ports we hold: in flight (reserved, transaction running), leased (a live lease
//!   owns it) or draining (the lease is gone, but the gateway may still forward the port until
//!   its mapping is known deleted or lapsed).
//! * **suspects**: ports where a rule of ours may exist although we hold nothing (an add whose
//!   answer could not be settled, a remove that failed, a transaction cancelled half-way). They
//!   stay used until a reconcile pass that *started after* they were marked has looked.
//!
//! [`LeaseTable::snapshot`] gives the live leases; [`LeaseTable::adopt`] puts back a lease whose
//! rule was found on the router (a restart rebuilds the table that way).
//!
//! **Limits count creates in flight.** [`LeaseTable::reserve_within`] checks the caps
//! ([`Caps`]) against the live leases *and* the reservations of creates still running, in the
//! same step as it reserves (see `caps.rs`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::mapping::store::caps::{Caps, Refusal};
use crate::mapping::store::key::MappingKey;
use crate::mapping::store::lease::{Lease, LeaseInfo};
use crate::mapping::store::ports::{choose_port, slot, RouterView};
use crate::mapping::store::slab::Leases;
use double_natpmp_codec::protocol::Protocol;

/// Why a router port is held by us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Reserved by a transaction that has not finished.
    InFlight(MappingKey),
    /// The router port of the live lease of this key.
    Leased(MappingKey),
    /// The lease of this key is gone, but the gateway may still forward the port: it stays ours
    /// until the upstream mapping is known deleted or lapsed.
    Draining(MappingKey),
}

/// Where a reconcile pass starts: suspects marked before it are settled by its listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(u64);

/// Why [`LeaseTable::adopt`] refused a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdoptError {
    /// The key already has a lease.
    KeyTaken,
    /// Another lease or transaction holds the router port.
    PortTaken,
}

#[derive(Debug, Default)]
struct State {
    leases: Leases,
    /// Reservations not finished yet (creates in flight).
    in_flight: usize,
    /// Of those, the ones that count toward their client ([`Caps::own`]), by client.
    in_flight_of: HashMap<Ipv4Addr, usize>,
    holds: HashMap<(Protocol, u16), Hold>,
    suspects: HashMap<(Protocol, u16), u64>,
    view: RouterView,
    cursor: [u32; 2],
    generation: u64,
    serial: u64,
}

impl State {
    fn is_used(&self, protocol: Protocol, port: u16) -> bool {
        self.view.is_used(protocol, port)
            || self.suspects.contains_key(&(protocol, port))
            || self.holds.contains_key(&(protocol, port))
    }

    fn count_of(&self, client: Ipv4Addr) -> usize {
        let leased = self
            .leases
            .iter()
            .filter(|(k, l)| k.client == client && l.origin.twin_of().is_none())
            .count();
        leased + self.in_flight_of.get(&client).copied().unwrap_or(0)
    }

    /// A reservation of `client` finished, whatever its outcome.
    fn landed(&mut self, client: Ipv4Addr, own: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if own {
            if let Some(n) = self.in_flight_of.get_mut(&client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.in_flight_of.remove(&client);
                }
            }
        }
    }

    fn mark_suspect(&mut self, protocol: Protocol, port: u16) {
        let generation = self.generation;
        self.suspects.insert((protocol, port), generation);
    }
}

/// The lease table (see the module docs).
#[derive(Debug)]
pub struct LeaseTable {
    range: RangeInclusive<u16>,
    state: Mutex<State>,
}

impl LeaseTable {
    /// An empty table allocating fallback ports from `range`.
    pub fn new(range: RangeInclusive<u16>) -> LeaseTable {
        let start = u32::from(*range.start());
        LeaseTable {
            range,
            state: Mutex::new(State {
                cursor: [start, start],
                ..State::default()
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock still holds consistent maps: every critical section is a few
        // infallible inserts and removes.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a free router port for `key`, trying `preferred` ports first, then the range.
    /// `None` when every port of the range is used.
    pub fn reserve(self: &Arc<Self>, key: MappingKey, preferred: &[u16]) -> Option<Reservation> {
        self.reserve_within(key, preferred, Caps::NONE).ok()
    }

    /// [`LeaseTable::reserve`] within `caps`, counting the creates in flight as if they had
    /// succeeded (see the module docs); the check and the reservation are one step.
    pub fn reserve_within(
        self: &Arc<Self>,
        key: MappingKey,
        preferred: &[u16],
        caps: Caps,
    ) -> Result<Reservation, Refusal> {
        let protocol = key.protocol;
        let mut guard = self.state();
        let st = &mut *guard;
        if st.leases.len().saturating_add(st.in_flight) >= caps.total {
            return Err(Refusal::Total);
        }
        if let Some(cap) = caps.per_client {
            if st.count_of(key.client) >= cap {
                return Err(Refusal::Client);
            }
        }
        let mut cursor = st.cursor[slot(protocol)];
        let port = choose_port(protocol, preferred, &self.range, &mut cursor, |p, port| {
            st.is_used(p, port)
        })
        .ok_or(Refusal::Ports)?;
        st.cursor[slot(protocol)] = cursor;
        st.holds.insert((protocol, port), Hold::InFlight(key));
        st.in_flight += 1;
        if caps.own {
            *st.in_flight_of.entry(key.client).or_insert(0) += 1;
        }
        Ok(Reservation {
            table: Arc::clone(self),
            key,
            port,
            own: caps.own,
            done: false,
        })
    }

    /// The live lease of `key`.
    pub fn get(&self, key: &MappingKey) -> Option<Lease> {
        self.state().leases.get(key).cloned()
    }

    /// Whether `key` has a live lease (without copying it).
    pub fn contains(&self, key: &MappingKey) -> bool {
        self.state().leases.contains_key(key)
    }

    /// Changes the live lease of `key` in place; `false` when there is none.
    pub fn update(&self, key: &MappingKey, change: impl FnOnce(&mut Lease)) -> bool {
        match self.state().leases.get_mut(key) {
            Some(lease) => {
                change(lease);
                true
            }
            None => false,
        }
    }

    /// The number of live leases.
    pub fn len(&self) -> usize {
        self.state().leases.len()
    }

    /// Whether there is no live lease.
    pub fn is_empty(&self) -> bool {
        self.state().leases.is_empty()
    }

    /// Every live lease, sorted by key.
    pub fn snapshot(&self) -> Vec<LeaseInfo> {
        let mut out: Vec<LeaseInfo> = self
            .state()
            .leases
            .iter()
            .map(|(key, lease)| LeaseInfo {
                key: *key,
                lease: lease.clone(),
            })
            .collect();
        out.sort_by_key(|l| l.key);
        out
    }

    /// How many mappings `client` has: live leases (both protocols; twins are not the client's
    /// own) and its own creates in flight.
    pub fn count_of(&self, client: Ipv4Addr) -> usize {
        self.state().count_of(client)
    }

    /// The keys of `client`'s live leases of `protocol`.
    pub fn keys_of(&self, client: Ipv4Addr, protocol: Protocol) -> Vec<MappingKey> {
        let mut keys: Vec<MappingKey> = self
            .state()
            .leases
            .keys()
            .filter(|k| k.client == client && k.protocol == protocol)
            .copied()
            .collect();
        keys.sort();
        keys
    }

    /// The earliest client deadline of any live lease (static ones never expire, twins end
    /// with their TCP mapping).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.state()
            .leases
            .values()
            .filter(|l| l.origin.expires())
            .map(|l| l.deadline)
            .min()
    }

    /// The keys whose deadline is at or before `now` (never a static one or a twin).
    pub fn due(&self, now: Instant) -> Vec<MappingKey> {
        self.state()
            .leases
            .iter()
            .filter(|(_, l)| l.origin.expires() && l.deadline <= now)
            .map(|(k, _)| *k)
            .collect()
    }

    /// The earliest time the keeper must renew an upstream mapping.
    pub fn next_renewal(&self) -> Option<Instant> {
        self.state().leases.values().map(|l| l.renew_at).min()
    }

    /// The keys whose upstream renewal is due at `now`.
    pub fn renewals_due(&self, now: Instant) -> Vec<MappingKey> {
        self.state()
            .leases
            .iter()
            .filter(|(_, l)| l.renew_at <= now)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Makes every live lease's upstream renewal due now and its upstream mapping unknown (the
    /// gateway lost its state); returns how many.
    pub fn renew_all_now(&self, now: Instant) -> usize {
        let mut st = self.state();
        for lease in st.leases.values_mut() {
            lease.renew_at = now;
            lease.upstream_deadline = lease.upstream_deadline.min(now);
        }
        st.leases.len()
    }

    /// Puts back a lease whose rule was found on the router (a restart): the lease goes live and
    /// its router port is held, unless the key or the port is taken.
    pub fn adopt(&self, key: MappingKey, mut lease: Lease) -> Result<u64, AdoptError> {
        let mut st = self.state();
        if st.leases.contains_key(&key) {
            return Err(AdoptError::KeyTaken);
        }
        let port = (key.protocol, lease.router_port);
        if st.holds.contains_key(&port) {
            return Err(AdoptError::PortTaken);
        }
        st.serial += 1;
        lease.serial = st.serial;
        st.suspects.remove(&port);
        st.holds.insert(port, Hold::Leased(key));
        st.leases.insert(key, lease);
        Ok(st.serial)
    }

    /// Both layers of `key`'s lease are gone: the lease goes and its port is free.
    pub fn remove(&self, key: &MappingKey) -> Option<Lease> {
        let mut st = self.state();
        let lease = st.leases.remove(key)?;
        st.holds.remove(&(key.protocol, lease.router_port));
        Some(lease)
    }

    /// `key`'s lease goes, but a rule of it may be left: its port becomes a suspect until the
    /// next reconcile has looked.
    pub fn remove_rule_left(&self, key: &MappingKey) -> Option<Lease> {
        let mut st = self.state();
        let lease = st.leases.remove(key)?;
        st.holds.remove(&(key.protocol, lease.router_port));
        st.mark_suspect(key.protocol, lease.router_port);
        Some(lease)
    }

    /// `key`'s lease goes, but the gateway may still forward its port: the port stays held
    /// ([`Hold::Draining`]) until [`LeaseTable::drained`].
    pub fn remove_draining(&self, key: &MappingKey) -> Option<Lease> {
        let mut st = self.state();
        let lease = st.leases.remove(key)?;
        st.holds
            .insert((key.protocol, lease.router_port), Hold::Draining(*key));
        Some(lease)
    }

    /// A draining port is known free upstream; `rule_left` when its rule could not be removed.
    pub fn drained(&self, protocol: Protocol, port: u16, rule_left: bool) {
        let mut st = self.state();
        if matches!(st.holds.get(&(protocol, port)), Some(Hold::Draining(_))) {
            st.holds.remove(&(protocol, port));
            if rule_left {
                st.mark_suspect(protocol, port);
            }
        }
    }

    /// Whether `port` is used for `protocol` (by the router view, a hold or a suspect).
    pub fn is_used(&self, protocol: Protocol, port: u16) -> bool {
        self.state().is_used(protocol, port)
    }

    /// How `port` is held, if it is.
    pub fn hold(&self, protocol: Protocol, port: u16) -> Option<Hold> {
        self.state().holds.get(&(protocol, port)).copied()
    }

    /// A rule of ours may exist at this port although nothing holds it.
    pub fn mark_suspect(&self, protocol: Protocol, port: u16) {
        self.state().mark_suspect(protocol, port);
    }

    /// Whether a foreign rule forwards `protocol` traffic to `client` (on `port`, or any port),
    /// as of the last listing (C-35, C-36).
    pub fn foreign_target(&self, protocol: Protocol, client: Ipv4Addr, port: Option<u16>) -> bool {
        self.state().view.foreign_target(protocol, client, port)
    }

    /// Starts a refresh; call before listing the router's rules.
    pub fn begin_refresh(&self) -> Generation {
        let mut st = self.state();
        st.generation += 1;
        Generation(st.generation)
    }

    /// The serial the newest lease got: every lease live now has one at most this, and a
    /// lease made later (or made again) gets a greater one.
    pub fn last_serial(&self) -> u64 {
        self.state().serial
    }

    /// Calls `f` with each live lease whose serial is at most `mark` (it went live before
    /// [`LeaseTable::last_serial`] returned `mark`, and has lived since), under the lock.
    pub fn each_live_since(&self, mark: u64, mut f: impl FnMut(&MappingKey, &Lease)) {
        let st = self.state();
        for (key, lease) in st.leases.iter() {
            if lease.serial <= mark {
                f(key, lease);
            }
        }
    }

    /// Looks at the live lease of `key` and the hold of router port `at` together, under the
    /// table's lock, without copying either.
    pub fn look<T>(
        &self,
        key: &MappingKey,
        at: (Protocol, u16),
        f: impl FnOnce(Option<&Lease>, Option<Hold>) -> T,
    ) -> T {
        let st = self.state();
        f(st.leases.get(key), st.holds.get(&at).copied())
    }

    /// Replaces the router view with a fresh listing's, and forgets suspects marked before the
    /// listing began (the listing has seen them, and the reconciler handled what it found).
    pub fn apply_refresh(&self, generation: Generation, view: RouterView) {
        let mut st = self.state();
        st.view = view;
        st.suspects.retain(|_, g| *g >= generation.0);
    }

    fn finish(&self, key: MappingKey, port: u16, own: bool, outcome: Outcome) -> u64 {
        let mut st = self.state();
        st.landed(key.client, own);
        let at = (key.protocol, port);
        match outcome {
            Outcome::Leased(mut lease) => {
                st.serial += 1;
                lease.serial = st.serial;
                st.holds.insert(at, Hold::Leased(key));
                st.leases.insert(key, lease);
                st.serial
            }
            Outcome::Free => {
                st.holds.remove(&at);
                0
            }
            Outcome::Suspect => {
                st.holds.remove(&at);
                st.mark_suspect(key.protocol, port);
                0
            }
        }
    }
}

enum Outcome {
    Leased(Lease),
    Free,
    Suspect,
}

/// A reserved router port. [`Reservation::commit`] when the lease goes live,
/// [`Reservation::release`] when nothing was made at the port; dropped otherwise (an error or a
/// cancellation with a rule possibly made), the port becomes a suspect until the next reconcile.
#[derive(Debug)]
pub struct Reservation {
    table: Arc<LeaseTable>,
    key: MappingKey,
    port: u16,
    own: bool,
    done: bool,
}

impl Reservation {
    /// The reserved port R.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The lease goes live (atomically with its port); returns its serial.
    pub fn commit(mut self, lease: Lease) -> u64 {
        self.done = true;
        self.table
            .finish(self.key, self.port, self.own, Outcome::Leased(lease))
    }

    /// Nothing was made at this port: free it.
    pub fn release(mut self) {
        self.done = true;
        self.table
            .finish(self.key, self.port, self.own, Outcome::Free);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.table
                .finish(self.key, self.port, self.own, Outcome::Suspect);
        }
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
