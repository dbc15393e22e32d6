//! The router-facing policy: how the core treats the router (and the gateway) it talks to. One
//! concept: the rules of ours and their place, and the bounds on every exchange with either
//! layer.
//!
//! * [`seam`]: the router seam, the trait a router implements in the core's terms, with its
//!   data: [`nat`] (the rules), [`facts`] (interfaces, services, lists, addresses) and
//!   [`rule_id`] (a rule's opaque id).
//! * [`layers`]: the router and the gateway under our bounds; rules found by comment, lost
//!   replies settled at once.
//! * [`epoch_watch`]: the upstream epoch watch (C-48), fed by every gateway reply the layers
//!   see; when the epoch went backwards the keeper heals.
//! * [`interface`]: proving the VPN in-interface before any rule is added.
//! * [`rule`]: the comment format that marks our rules (and names their kind).
//! * [`srcnat`]: UDP_SRCNAT: where a src-nat rule goes in the `srcnat` chain, and what comes
//!   before it (RFC 6886 §3.9, C-42).

pub(crate) mod epoch_watch;
pub(crate) mod facts;
pub(crate) mod interface;
pub(crate) mod layers;
pub(crate) mod nat;
pub(crate) mod rule;
pub(crate) mod rule_id;
pub(crate) mod seam;
pub(crate) mod srcnat;
