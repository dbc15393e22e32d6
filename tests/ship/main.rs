//! The ship ring: what is shipped besides the code: the static binaries, the container images
//! under podman, the `demo` subcommand, the Containerfile, the workflows and the RouterOS scripts.
//!
//! One test binary for the ring, so the test support crate is linked once for all its files.

use double_natpmp_test_support as common;

mod container;
mod container_arches;
mod demo;
mod ship;
