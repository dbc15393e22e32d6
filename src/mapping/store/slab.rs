//! [`Leases`]: the live leases by key, kept side by side in one array.
//!
//! A map from key to lease would make the lease table one allocation of `buckets × (key +
//! lease)`, which at 10,000 leases is 16,384 buckets of some 140 bytes each (2.3 MB), and a map
//! to boxed leases 10,000 small allocations scattered between the short-lived ones of the
//! requests that made them, which the allocator then cannot give back. Here the leases sit in
//! one `Vec` (grown by the allocator's own means, so the room beyond the last lease is never
//! touched) and a small map holds each key's index. A removal moves the last lease into the
//! hole.

use std::collections::HashMap;

use crate::mapping::store::key::MappingKey;
use crate::mapping::store::lease::Lease;

/// The live leases by key (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Leases {
    index: HashMap<MappingKey, u32>,
    slots: Vec<(MappingKey, Lease)>,
}

impl Leases {
    fn slot(&self, key: &MappingKey) -> Option<usize> {
        self.index.get(key).map(|&i| i as usize)
    }

    /// The lease of `key`.
    pub(crate) fn get(&self, key: &MappingKey) -> Option<&Lease> {
        self.slot(key).map(|i| &self.slots[i].1)
    }

    /// The lease of `key`, to change it.
    pub(crate) fn get_mut(&mut self, key: &MappingKey) -> Option<&mut Lease> {
        self.slot(key).map(|i| &mut self.slots[i].1)
    }

    /// Whether `key` has a lease.
    pub(crate) fn contains_key(&self, key: &MappingKey) -> bool {
        self.index.contains_key(key)
    }

    /// Puts `lease` in as `key`'s, in place of any it had.
    pub(crate) fn insert(&mut self, key: MappingKey, lease: Lease) {
        match self.slot(&key) {
            Some(i) => self.slots[i].1 = lease,
            None => {
                // More leases than a u32 counts cannot exist: every one holds a router port.
                let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.index.insert(key, i);
                self.slots.push((key, lease));
            }
        }
    }

    /// Takes `key`'s lease out.
    pub(crate) fn remove(&mut self, key: &MappingKey) -> Option<Lease> {
        let i = self.index.remove(key)? as usize;
        let (_, lease) = self.slots.swap_remove(i);
        if let Some((moved, _)) = self.slots.get(i) {
            self.index.insert(*moved, i as u32);
        }
        Some(lease)
    }

    /// How many leases.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there is none.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every key and its lease, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&MappingKey, &Lease)> {
        self.slots.iter().map(|(k, l)| (k, l))
    }

    /// Every key.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &MappingKey> {
        self.slots.iter().map(|(k, _)| k)
    }

    /// Every lease.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Lease> {
        self.slots.iter().map(|(_, l)| l)
    }

    /// Every lease, to change them.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Lease> {
        self.slots.iter_mut().map(|(_, l)| l)
    }
}
