//! Emulators of the two far sides, for tests, benchmarks and `double-natpmp demo`: a NAT-PMP
//! gateway that behaves like ProtonVPN's, and a RouterOS API server that follows the real wire
//! protocol and reply texts.

pub mod gateway;
pub mod routeros;
