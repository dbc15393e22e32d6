//! The ship ring: what is shipped besides the code: the static binaries, the container images
//! under podman, the `demo` subcommand, the Containerfile, the workflows and the RouterOS scripts.
//!
//! One test binary for the ring, so `tests/common` is compiled once for all its files.

#[path = "../common/mod.rs"]
mod common;

mod container;
mod container_arches;
mod demo;
mod ship;
