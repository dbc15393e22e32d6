//! The RouterOS binary API: one connection (its framing is the codec crate's,
//! `double_natpmp_codec::routeros::wire`), TLS, the pool,
//! and the typed operations the daemon needs.

pub mod address;
pub mod api;
pub mod conn;
pub mod error;
pub mod nat;
pub mod pool;
pub mod tls;
