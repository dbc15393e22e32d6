//! NAT-PMP (RFC 6886): the packet format, the result codes and opcodes it carries, and the
//! epoch clock whose value every reply carries.

pub mod epoch;
pub mod protocol;
pub mod result;
pub mod wire;
