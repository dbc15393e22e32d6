//! NAT-PMP (RFC 6886): the packet format, the epoch clock, the server that LAN clients talk
//! to, and the client we use toward the upstream VPN gateway.

pub mod epoch;
pub mod server;
pub mod upstream;
pub mod wire;
