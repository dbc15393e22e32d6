//! What a request holds while it is served, so that no kind of request can starve another.
//!
//! * **Nothing**, for a request answered on the receive path: an address request when the
//!   address is cached, a renewal answered from its lease (`MapHandler::answer_now`), a packet
//!   answered with an error code, and a retransmission of a request still in progress
//!   ([`InFlight`]), which gets that request's reply.
//! * **An address slot**, for an address request that waits for the gateway's address: one of
//!   MAX_INFLIGHT of their own, apart from the request slots. All of them wait for the same one
//!   exchange (`AddressCache`), so a host that floods address requests while the gateway is dark
//!   takes no request slot from anyone.
//! * **A request slot**, for any other mapping request: one of MAX_INFLIGHT. A delete that finds
//!   them all taken takes one of the slots kept for deletes (MAX_INFLIGHT / 8, at least 1), so a
//!   client can always give a mapping back.
//!
//! A request that finds no slot it may take is dropped, not queued: NAT-PMP clients retransmit
//! (250 ms, doubling), so a burst is absorbed by the clients' own retry schedule and memory
//! stays bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a request needs a slot for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// An address request waiting for the gateway's answer.
    Address,
    /// A mapping request: a create, or a renewal that could not be answered at once.
    Map,
    /// A delete (lifetime 0), or a delete-all.
    Delete,
}

/// The slots (see the module docs).
pub(crate) struct Slots {
    requests: Arc<Semaphore>,
    deletes: Arc<Semaphore>,
    addresses: Arc<Semaphore>,
    sizes: [usize; 3],
}

impl Slots {
    /// `max_inflight` request slots, as many address slots, and an eighth of them (at least one)
    /// kept for deletes.
    pub(crate) fn new(max_inflight: usize) -> Slots {
        let requests = max_inflight.max(1);
        let sizes = [requests, requests.div_ceil(8), requests];
        Slots {
            requests: Arc::new(Semaphore::new(sizes[0])),
            deletes: Arc::new(Semaphore::new(sizes[1])),
            addresses: Arc::new(Semaphore::new(sizes[2])),
            sizes,
        }
    }

    /// A slot for a request of `lane`; `None` when every slot it may take is taken.
    pub(crate) fn take(&self, lane: Lane) -> Option<OwnedSemaphorePermit> {
        let first = match lane {
            Lane::Address => &self.addresses,
            Lane::Map | Lane::Delete => &self.requests,
        };
        match first.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if lane == Lane::Delete => self.deletes.clone().try_acquire_owned().ok(),
            Err(_) => None,
        }
    }

    /// Resolves once every slot is back: every request taken in is served.
    pub(crate) async fn drained(&self) {
        for (semaphore, size) in [&self.requests, &self.deletes, &self.addresses]
            .into_iter()
            .zip(self.sizes)
        {
            let all = u32::try_from(size).unwrap_or(u32::MAX);
            let _ = semaphore.acquire_many(all).await;
        }
    }
}

/// The requests being served, by peer and exact bytes, with how many copies of each arrived
/// meanwhile, so a retransmission that arrives while its first copy is in progress is
/// recognised and answered with that copy's reply.
#[derive(Clone, Default)]
pub(crate) struct InFlight(Arc<StdMutex<HashMap<InFlightKey, u32>>>);

/// A request's identity: its sender and its exact bytes.
type InFlightKey = (SocketAddr, Vec<u8>);

/// Most extra replies sent for copies of one request: a client following RFC 6886 §3.1
/// retransmits at most 8 times, and a flood of copies must not turn into a burst of replies.
const MAX_COPIES_ANSWERED: u32 = 8;

/// A request's entry in [`InFlight`]; removed when the reply is sent, or on drop.
pub(crate) struct InFlightEntry {
    set: InFlight,
    key: Option<InFlightKey>,
}

impl InFlight {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InFlightKey, u32>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still valid.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `packet` from `peer`; `None` (and the copy counted) when an identical one is
    /// still being served.
    pub(crate) fn claim(&self, peer: SocketAddr, packet: &[u8]) -> Option<InFlightEntry> {
        let key = (peer, packet.to_vec());
        let mut map = self.lock();
        if let Some(copies) = map.get_mut(&key) {
            *copies = copies.saturating_add(1);
            return None;
        }
        map.insert(key.clone(), 0);
        Some(InFlightEntry {
            set: self.clone(),
            key: Some(key),
        })
    }
}

impl InFlightEntry {
    /// Removes the entry (a copy arriving from now on is a request of its own) and returns how
    /// many copies arrived while it was served, at most [`MAX_COPIES_ANSWERED`].
    pub(crate) fn finish(&mut self) -> u32 {
        let copies = match self.key.take() {
            Some(key) => self.set.lock().remove(&key).unwrap_or(0),
            None => 0,
        };
        copies.min(MAX_COPIES_ANSWERED)
    }
}

impl Drop for InFlightEntry {
    fn drop(&mut self) {
        self.finish();
    }
}
