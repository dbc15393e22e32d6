//! The arguments of the subcommands that run the emulators (feature `demo`): `demo`, and the
//! hidden `sim-router` and `sim-gateway` the namespace tests start.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Args;

use crate::config::status::parse_status_addr;
use crate::config::value::{
    parse_duration_within, parse_listen_addr, parse_log_level, parse_password, Expected, LogLevel,
    MAX_INTERVAL,
};
use crate::routeros::conn::Password;

/// `double-natpmp sim-router`: the RouterOS API emulator alone, for tests in namespaces.
#[derive(Debug, Clone, Args)]
pub struct SimRouterArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8728", value_parser = parse_listen_addr)]
    pub listen: SocketAddr,
    /// API user.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// API password.
    #[arg(long, default_value = "admin", value_parser = parse_password)]
    pub password: Password,
    /// The user's policies, comma-separated.
    #[arg(long, default_value = "read,write,api,test")]
    pub policies: String,
    /// Interfaces the router has (repeatable), `name` or `name:type` (the `/interface/print`
    /// type, e.g. `rtr-v:wg`; guessed from the name otherwise).
    #[arg(long = "interface", default_values = ["ether1", "bridge", "wg-proton"])]
    pub interfaces: Vec<String>,
    /// A route for /ip/route/check: `network/len,interface,gateway` (repeatable).
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// An interface-list member: `LIST=interface` (repeatable).
    #[arg(long = "interface-list")]
    pub interface_lists: Vec<String>,
    /// An address: `address/len,interface` (repeatable; replaces the defaults).
    #[arg(long = "address")]
    pub addresses: Vec<String>,
    /// A NAT rule present from the start, as an admin made it: `key=value,key=value…`
    /// (repeatable).
    #[arg(long = "nat-rule")]
    pub nat_rules: Vec<String>,
    /// Mirror dst-nat and src-nat rules into nftables in this network namespace.
    #[arg(long)]
    pub nft_netns: Option<String>,
    /// The nftables table (family ip) of the mirror.
    #[arg(long, default_value = "mikrotik")]
    pub nft_table: String,
    /// The nftables chain of the mirror.
    #[arg(long, default_value = "dstnat")]
    pub nft_chain: String,
    /// The nftables chain src-nat and masquerade rules are mirrored into, in table order.
    #[arg(long, default_value = "srcnat")]
    pub nft_srcnat_chain: String,
}

/// `double-natpmp sim-gateway`: the NAT-PMP gateway emulator alone, for tests in namespaces.
#[derive(Debug, Clone, Args)]
pub struct SimGatewayArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:5351", value_parser = parse_listen_addr)]
    pub listen: SocketAddr,
    /// The external address it reports.
    #[arg(long, default_value = "198.51.101.7")]
    pub external_address: Ipv4Addr,
    /// Lifetime cap in seconds.
    #[arg(long, default_value = "60")]
    pub max_lifetime: u32,
    /// Ports per peer before result 4.
    #[arg(long, default_value = "5")]
    pub quota: usize,
}

/// `double-natpmp demo` settings.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where the demo daemon listens for NAT-PMP.
    #[arg(long, default_value = "127.0.0.1:5351", value_parser = parse_listen_addr)]
    pub listen: SocketAddr,
    /// Stop by itself after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = demo_duration)]
    pub duration: Option<Duration>,
    /// Log level (DEBUG, INFO, WARN, ERROR).
    #[arg(long, env = "LOG_LEVEL", default_value = "INFO", value_parser = parse_log_level)]
    pub log_level: LogLevel,
    /// Where the demo serves the status page, the API and /metrics.
    #[arg(long, env = "STATUS_ADDR", default_value = "127.0.0.1:8080", value_parser = parse_status_addr)]
    pub status_addr: SocketAddr,
}

/// `demo --duration`: 1 s to 1 week.
fn demo_duration(s: &str) -> Result<Duration, Expected> {
    parse_duration_within(s, Duration::from_secs(1), MAX_INTERVAL)
}
