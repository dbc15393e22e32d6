//! Per-key serialization ([`KeyLocks`]) and the retransmission memo.
//!
//! Each [`MappingKey`] has its own async mutex, created on demand and dropped when nobody holds
//! or waits for it; different keys run in parallel. No map guard is ever held across an
//! `.await`.
//!
//! **The memo.** A client retransmits (250 ms, doubling) while its first try is still in flight
//! (a slow or silent gateway, a busy router pool). The copy asks exactly what the first try
//! asked, so it gets that answer: repeating the transaction would cost a second upstream
//! exchange (a renewal), or a router add and remove for a failure, and change nothing. The lock
//! remembers the last request served under it, when it finished and its answer; a request that
//! arrived before that finish and asks the same gets the same answer. Under CREATE_PATIENCE a
//! create may hold the lock for up to the window (`create.rs`, **Patience**): copies from the
//! same peer never reach the lock (the server's in-flight claim holds them), and a copy that did
//! queue here gets the answer the window ended with, not a second window.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

use crate::mapping::error::MappingError;
use crate::mapping::request::MappingRequest;
use crate::mapping::store::key::MappingKey;
use crate::natpmp::handler::MapReply;

/// What a key's lock remembers while requests for the key are queued on it.
#[derive(Debug, Default)]
pub(crate) struct KeyState {
    /// The last mapping request served under this lock, when it finished, and its answer.
    last: Option<(Instant, MappingRequest, MapReply)>,
}

/// The per-key locks.
#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    locks: DashMap<MappingKey, Arc<Mutex<KeyState>>>,
}

impl KeyLocks {
    /// No locks yet.
    pub(crate) fn new() -> KeyLocks {
        KeyLocks::default()
    }

    /// Waits for `key`'s lock.
    pub(crate) async fn lock(&self, key: MappingKey) -> KeyLock<'_> {
        let mutex = self.locks.entry(key).or_default().value().clone();
        let guard = mutex.lock_owned().await;
        KeyLock {
            locks: &self.locks,
            key,
            guard: Some(guard),
        }
    }

    /// Takes `key`'s lock when nobody holds it or waits for it; `None` otherwise (never waits).
    pub(crate) fn try_lock(&self, key: MappingKey) -> Option<KeyLock<'_>> {
        let mutex = self.locks.entry(key).or_default().value().clone();
        let guard = mutex.try_lock_owned().ok()?;
        Some(KeyLock {
            locks: &self.locks,
            key,
            guard: Some(guard),
        })
    }

    /// How many keys have a lock entry (held or waited for).
    pub(crate) fn len(&self) -> usize {
        self.locks.len()
    }
}

/// A held key lock; its map entry goes away when nobody holds or waits for it.
pub(crate) struct KeyLock<'a> {
    locks: &'a DashMap<MappingKey, Arc<Mutex<KeyState>>>,
    key: MappingKey,
    guard: Option<OwnedMutexGuard<KeyState>>,
}

impl KeyLock<'_> {
    /// The answer of an identical request that finished while this one, which arrived at
    /// `arrived`, waited for the lock.
    pub(crate) fn answered_while_waiting(
        &self,
        arrived: Instant,
        request: &MappingRequest,
    ) -> Option<MapReply> {
        let state = self.guard.as_ref()?;
        match state.last {
            Some((finished, ref served, reply))
                if finished >= arrived && served.same_ask(request) =>
            {
                Some(reply)
            }
            _ => None,
        }
    }

    /// Remembers how this request ended, for the copies queued behind it.
    pub(crate) fn record(
        &mut self,
        request: MappingRequest,
        outcome: &Result<MapReply, MappingError>,
    ) {
        if let Some(state) = self.guard.as_mut() {
            let reply = match outcome {
                Ok(reply) => *reply,
                Err(e) => MapReply::failure(e.result_code()),
            };
            state.last = Some((Instant::now(), request, reply));
        }
    }
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        self.guard.take();
        // Waiters hold a clone of the Arc, so a count of 1 (the map's) means nobody needs it;
        // the check runs under the shard lock, so nobody can clone it meanwhile.
        self.locks
            .remove_if(&self.key, |_, m| Arc::strong_count(m) == 1);
    }
}
