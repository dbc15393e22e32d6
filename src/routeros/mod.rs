//! The RouterOS binary API: one connection (its framing is the codec crate's,
//! `double_natpmp_codec::routeros::wire`), TLS, the pool,
//! and the typed operations the daemon needs.

pub(crate) mod address;
pub(crate) mod api;
pub(crate) mod conn;
pub(crate) mod error;
pub(crate) mod nat;
pub(crate) mod pool;
pub(crate) mod tls;
