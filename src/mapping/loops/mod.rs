//! The background loops: what the daemon does without a client asking. One concept: work on a
//! clock or on news from a layer (the renewals, the healing, the reconcile pass, expiry); it
//! takes the same per-key locks as the transactions.
//!
//! * [`keeper`]: upstream renewals the daemon makes itself, and healing after a gateway's loss.
//! * [`reconcile`]: the reconcile pass (orphans removed, deleted live rules recreated, ids
//!   re-bound, the router view refreshed), at start and every `reconcile_interval`.
//! * [`tasks`]: the expiry and reconcile loops.

pub(crate) mod keeper;
pub(crate) mod reconcile;
pub(crate) mod tasks;
