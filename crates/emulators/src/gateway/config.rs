//! How the emulated gateway behaves ([`GatewayConfig`]) and what it does with requests
//! ([`Mode`]).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::Duration;

use double_natpmp_codec::natpmp::wire::ResultCode;

/// How the emulated gateway behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The VPN exit address reported by op 0.
    pub external_address: Ipv4Addr,
    /// Granted lifetimes are capped at this many seconds (Proton: 60).
    pub max_lifetime: u32,
    /// How many distinct internal ports one peer may map (TCP and UDP of one internal port
    /// count once); the next gets result 4 (Proton: about 5).
    pub quota_per_peer: usize,
    /// External ports are drawn from this range.
    pub port_range: RangeInclusive<u16>,
    /// `true`: a new mapping gets its suggested external port when free; `false` (Proton):
    /// always a random one.
    pub honour_suggested: bool,
    /// Delay before each reply is sent.
    pub latency: Duration,
    /// How long the gateway has been up when the emulator starts: its epoch (SSSoE) starts
    /// there, so a later [`lose_state`](crate::gateway::Gateway::lose_state) is a visible
    /// step back (RFC 6886 §3.6 allows 2 s of slack).
    pub up_for: Duration,
}

impl Default for GatewayConfig {
    /// ProtonVPN-like: 60 s, 5 ports, random ports in 32768..=65535, no latency; the exit
    /// address is from TEST-NET-2 (RFC 5737), never routed.
    fn default() -> Self {
        GatewayConfig {
            external_address: Ipv4Addr::new(198, 51, 100, 7),
            max_lifetime: 60,
            quota_per_peer: 5,
            port_range: 32768..=65535,
            honour_suggested: false,
            latency: Duration::ZERO,
            up_for: Duration::ZERO,
        }
    }
}

/// What the gateway does with requests, set with
/// [`Gateway::set_mode`](crate::gateway::Gateway::set_mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Serve requests normally.
    #[default]
    Normal,
    /// Read and count requests, never answer.
    Silent,
    /// Answer every address and mapping request with this result code (external port and
    /// lifetime 0, address 0.0.0.0 unless the code is success), without touching the table.
    Refuse(ResultCode),
    /// Close the socket, so the OS answers ICMP port unreachable (C-40: port forwarding off).
    /// Any other mode reopens it on the same address.
    Unreachable,
}
