//! The background loops: what the daemon does without a client asking. One concept: work on a
//! clock or on news from a layer, which meets the transactions only through the store and the
//! per-key locks.
//!
//! * [`keeper`]: upstream renewals the daemon makes itself, and healing after a gateway's loss.
//! * [`reconcile`]: the reconcile pass (orphans removed, deleted live rules recreated, ids
//!   re-bound, the router view refreshed), at start and every `reconcile_interval`.
//! * [`tasks`]: the expiry and reconcile loops.
//! * [`epoch_watch`]: the upstream epoch watch (C-48).

pub mod epoch_watch;
pub mod keeper;
pub mod reconcile;
pub mod tasks;
