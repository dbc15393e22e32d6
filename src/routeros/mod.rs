//! The RouterOS binary API: framing shared with the emulator, one connection, TLS, the pool,
//! and the typed operations the daemon needs.

pub mod address;
pub mod api;
pub mod conn;
pub mod error;
pub mod nat;
pub mod pool;
pub mod rule_id;
pub mod tls;
pub mod wire;
