//! NAT-PMP (RFC 6886): the packet format (with the protocol and result code it carries), the
//! epoch clock, the server that LAN clients talk to (with the trait it hands mapping requests
//! to, its cache of the upstream address, the slots a request holds while served, and the
//! per-client request rate), and the client we use toward the upstream VPN gateway.

pub mod address_cache;
pub mod epoch;
pub mod handler;
pub mod protocol;
pub mod rate;
pub mod result;
pub mod server;
mod slots;
pub mod upstream;
pub mod wire;
