//! The lease store: what the daemon holds and what it may still hold. One concept: state and
//! its arithmetic, behind the [`LeaseTable`](table::LeaseTable). Nothing here asks the router
//! or the gateway; the transactions and the loops do, and write what they learn here.
//!
//! * [`table`]: the [`LeaseTable`](table::LeaseTable), the only store of leases and router-port
//!   holds.
//! * [`slab`]: the leases side by side in one `Vec`.
//! * [`lease`]: the lease and the lifetime arithmetic (C-30).
//! * [`key`]: the mapping's identity (C-29).
//! * [`ports`]: what the router says about its ports, and the choice of a router port.
//! * [`keylock`]: per-key serialization and the retransmission memo.
//! * [`limits`]: the caps on mappings and the per-client request rate.
//! * [`caps`]: the caps as a new mapping meets them, counting the creates in flight.
//! * [`quota`]: the gateway's quota: when a new mapping asks the gateway before the router.

pub(crate) mod caps;
pub(crate) mod key;
pub(crate) mod keylock;
pub(crate) mod lease;
pub(crate) mod limits;
pub(crate) mod ports;
pub(crate) mod quota;
pub(crate) mod slab;
pub(crate) mod table;
