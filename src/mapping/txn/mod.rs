//! The transactions: answering one [`Command`](crate::mapping::Command) across both layers, the
//! router rules and the upstream mapping, each step with its undo. One concept: what a request
//! (or the start, for the rules already on the router) does to the store and the two layers.
//!
//! * [`transaction`]: answering a command: the entry point and renewals.
//! * [`create`]: a new mapping: the router rules and the upstream mapping asked at once, each
//!   with its undo (sequential only while the gateway's quota is used up).
//! * [`patience`]: CREATE_PATIENCE: a create or a lapsed renewal tried again through a
//!   transient failure until both layers are made or the window ends (C-17b).
//! * [`teardown`]: delete, delete-all, expiry and shutdown: both layers, upstream first.
//! * [`twin`]: MAP_BOTH_PROTOCOLS: the UDP twin of a TCP mapping, made, kept and ended with it.
//! * [`adopt`]: a start without loss: the router's rules of ours become leases again.

pub(crate) mod adopt;
pub(crate) mod create;
pub(crate) mod patience;
pub(crate) mod teardown;
pub(crate) mod transaction;
pub(crate) mod twin;
