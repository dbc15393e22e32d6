//! Subcommands other than the daemon itself.

pub mod demo;
pub mod sim;
