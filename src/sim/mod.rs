//! Emulators of the two far sides, for tests, benchmarks and `double-natpmp demo`: a NAT-PMP
//! gateway that behaves like ProtonVPN's, and a RouterOS API server that follows the real wire
//! protocol and reply texts. Both hold their replies for the injected latency with `delay`,
//! exact to a tenth of a millisecond.

pub mod delay;
pub mod gateway;
pub mod routeros;
