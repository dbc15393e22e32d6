//! Subcommands other than the daemon itself.
