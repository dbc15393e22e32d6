//! Subcommands other than the daemon itself.

pub mod args;
mod bounded;
pub mod check;
pub mod check_srcnat;
pub mod client;
pub mod demo;
pub mod fixes;
pub mod health;
pub mod sim;
pub mod status;
