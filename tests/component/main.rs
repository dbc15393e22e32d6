//! The component ring: the daemon's parts in process and over loopback against the emulators
//! and fakes (mapping transactions, the NAT-PMP server, the RouterOS client and emulator, the
//! VPN gateway client, the status API and page, the command line). No root needed.
//!
//! One test binary for the ring, so the test support crate is linked once for all its files.

use double_natpmp_test_support as common;

mod cli;
mod cli_check;
mod cli_client;
mod create_patience;
mod fault_matrix;
mod health;
mod mapping_both_ways;
mod mapping_emulators;
mod mapping_inprocess;
mod natpmp_server;
mod reachability;
mod refused_clients;
mod routeros_client;
mod routeros_commands;
mod routeros_emulator_librouteros;
mod status_api;
mod status_forwards;
mod status_guard;
mod status_page;
mod status_static;
mod status_webhook;
mod upstream_gateway;
