//! NAT-PMP (RFC 6886): the server that LAN clients talk to (with the trait it hands mapping
//! requests to, its cache of the upstream address, the slots a request holds while served, and
//! the per-client request rate), and the client we use toward the upstream VPN gateway. The
//! packet format, result codes, opcodes and the epoch clock are the codec crate's
//! (`double_natpmp_codec::natpmp`).

pub(crate) mod address_cache;
pub(crate) mod handler;
pub(crate) mod rate;
pub(crate) mod server;
mod slots;
pub(crate) mod upstream;
