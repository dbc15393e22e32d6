//! Subcommands other than the daemon itself.

pub mod args;
mod bounded;
pub mod check;
pub mod check_srcnat;
pub mod client;
#[cfg(feature = "demo")]
pub mod demo;
pub mod fixes;
pub mod health;
#[cfg(feature = "demo")]
pub mod sim;
pub mod status;
