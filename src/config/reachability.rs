//! The settings of the reachability self-test ([`ReachabilityArgs`]): REACHABILITY_CHECK turns
//! it on (it is off by default: it talks to STUN servers on the internet), STUN_SERVERS names
//! them, REACHABILITY_INTERVAL says how often it runs. docs/reachability.md says what it does.

use std::time::Duration;

use clap::Args;

use crate::config::value::{parse_bool, parse_duration_within, parse_host_port, Expected};

/// Public STUN servers that do RFC 5780 (they answer from a second address and port), from the
/// list the always-online-stun project keeps by checking public servers every hour
/// (`valid_nat_testing_hosts.txt`), as of December 2026: five run by organisations that
/// publish them for their own products. Used only when the check is on.
pub(crate) const DEFAULT_STUN_SERVERS: &str = "stun.nextcloud.com:3478,stun.freeswitch.org:3478,stun.telnyx.com:3478,stun.signalwire.com:3478,stun.sonetel.com:3478";

/// At most this many STUN servers.
const MAX_SERVERS: usize = 16;

/// The reachability self-test's settings.
#[derive(Debug, Clone, Args)]
pub struct ReachabilityArgs {
    /// Prove the forwarded port from the internet: a short-lived test mapping of the daemon's
    /// own, probed through both NAT layers by a STUN server (RFC 5780), at start, every
    /// REACHABILITY_INTERVAL and after each heal. Off by default: it talks to STUN_SERVERS.
    #[arg(long, env = "REACHABILITY_CHECK", value_name = "REACHABILITY_CHECK", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub reachability_check: bool,

    /// The STUN servers the check asks, host[:port] separated by commas (port 3478 when none),
    /// tried in order until one answers; 1 to 16; they should do RFC 5780, or the inbound
    /// test is "not tested". The default lists five public ones.
    #[arg(long, env = "STUN_SERVERS", value_name = "STUN_SERVERS", default_value = DEFAULT_STUN_SERVERS, value_parser = parse_stun_servers)]
    pub stun_servers: StunServers,

    /// How often the check runs (1m to 7d); also after each heal, and once at start.
    #[arg(long, env = "REACHABILITY_INTERVAL", value_name = "REACHABILITY_INTERVAL", default_value = "30m", value_parser = parse_reachability_interval)]
    pub reachability_interval: Duration,

    /// A pause between making the test mapping and the first STUN request (0 to 1m), for a
    /// gateway that installs its forward late.
    #[arg(long, env = "REACHABILITY_SETTLE", value_name = "REACHABILITY_SETTLE", default_value = "0s", value_parser = parse_settle)]
    pub reachability_settle: Duration,
}

/// STUN_SERVERS: `host[:port]`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunServers(pub Vec<String>);

/// `host[:port],…`: 1 to 16 entries.
pub(crate) fn parse_stun_servers(s: &str) -> Result<StunServers, Expected> {
    let want = || {
        Expected(format!(
            "expected 1 to {MAX_SERVERS} STUN servers, host[:port] separated by commas, such as stun.example.net:3478"
        ))
    };
    let servers = s
        .split(',')
        .map(str::trim)
        .map(|entry| {
            let hp = parse_host_port(entry).map_err(|_| want())?;
            if hp.host.contains(':') {
                // IPv6: the check is IPv4 (the gateway's NAT-PMP is).
                return Err(want());
            }
            Ok(match hp.port {
                Some(port) => format!("{}:{port}", hp.host),
                None => hp.host,
            })
        })
        .collect::<Result<Vec<String>, Expected>>()?;
    if servers.is_empty() || servers.len() > MAX_SERVERS {
        return Err(want());
    }
    Ok(StunServers(servers))
}

/// REACHABILITY_INTERVAL: 1 minute to 1 week.
fn parse_reachability_interval(s: &str) -> Result<Duration, Expected> {
    parse_duration_within(
        s,
        Duration::from_secs(60),
        Duration::from_secs(7 * 24 * 3600),
    )
}

/// REACHABILITY_SETTLE: 0 to 1 minute.
fn parse_settle(s: &str) -> Result<Duration, Expected> {
    parse_duration_within(s, Duration::ZERO, Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_servers_are_host_and_optional_port_in_order() {
        let s = parse_stun_servers(" stun.a.example:3479, 192.0.2.7 ,stun.b.example").unwrap();
        assert_eq!(s.0, ["stun.a.example:3479", "192.0.2.7", "stun.b.example"]);
        assert_eq!(parse_stun_servers(DEFAULT_STUN_SERVERS).unwrap().0.len(), 5);
    }

    #[test]
    fn bad_stun_servers_are_refused_with_what_is_expected() {
        for bad in [
            "",
            "a,,b",
            "stun.example:0",
            "stun.example:x",
            "[2001:db8::1]:3478",
            "sp ace",
        ] {
            let e = parse_stun_servers(bad).unwrap_err();
            assert!(
                e.0.contains("host[:port] separated by commas"),
                "{bad}: {e:?}"
            );
        }
        let many = vec!["s.example"; 17].join(",");
        assert!(parse_stun_servers(&many).is_err());
    }

    #[test]
    fn the_interval_is_a_minute_to_a_week() {
        assert_eq!(
            parse_reachability_interval("30m").unwrap(),
            Duration::from_secs(1800)
        );
        assert!(parse_reachability_interval("59s").is_err());
        assert!(parse_reachability_interval("8d").is_err());
    }
}
