//! `double-natpmp health`: is the daemon answering NAT-PMP? For a container HEALTHCHECK in exec
//! form (the image is `FROM scratch`, there is no shell).
//!
//! It sends an external-address request (op 0) to the daemon's own LISTEN_ADDR (127.0.0.1 when
//! that is 0.0.0.0); the server answers op 0 from the host itself whatever ALLOWED_CLIENTS says.
//! Exit 0 when the answer has result 0, 1 otherwise; one line of output either way.

use std::net::{SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::config::value::{loopback_if_unspecified, parse_listen_addr, parse_timeout};
use crate::natpmp::upstream::{Upstream, UpstreamClient, UpstreamConfig, UpstreamError};
use crate::natpmp::wire::ResultCode;

/// `double-natpmp health` options.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The daemon's NAT-PMP address (the same LISTEN_ADDR the daemon uses).
    #[arg(long, env = "LISTEN_ADDR", value_name = "LISTEN_ADDR", default_value = ":5351", value_parser = parse_listen_addr)]
    pub listen_addr: SocketAddr,
    /// How long to wait for the answer, retransmissions included (1ms to 1d).
    #[arg(long, default_value = "2s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// Where to send the probe: LISTEN_ADDR, with an unspecified address replaced by 127.0.0.1.
pub fn probe_target(listen: SocketAddr) -> Option<SocketAddrV4> {
    if listen.is_ipv6() {
        return None;
    }
    match loopback_if_unspecified(listen) {
        SocketAddr::V4(target) => Some(target),
        SocketAddr::V6(_) => None,
    }
}

/// Runs `health`.
pub async fn run(args: HealthArgs) -> ExitCode {
    let Some(target) = probe_target(args.listen_addr) else {
        println!("unhealthy: LISTEN_ADDR={} is not IPv4", args.listen_addr);
        return ExitCode::FAILURE;
    };
    let client = UpstreamClient::new(UpstreamConfig {
        budget: args.timeout,
        ..UpstreamConfig::new(target)
    });
    match client.external_address().await {
        Ok(reply) => {
            println!(
                "healthy: double-natpmp at {target} answers, public address {}",
                reply.address
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("unhealthy: {}", describe(target, &e));
            ExitCode::FAILURE
        }
    }
}

/// The failure in the daemon's terms (the upstream client's texts speak of a VPN gateway).
fn describe(target: SocketAddrV4, e: &UpstreamError) -> String {
    match e {
        UpstreamError::Refused { .. } => {
            format!("nothing listens for NAT-PMP at {target}: is the daemon running, and is LISTEN_ADDR the same as the daemon's?")
        }
        UpstreamError::Timeout { after, .. } => {
            format!("double-natpmp at {target} did not answer within {after:?}")
        }
        UpstreamError::Rejected {
            result: ResultCode::NetworkFailure,
            ..
        } => format!(
            "double-natpmp at {target} answers, but cannot reach the VPN gateway (result 3); run double-natpmp check"
        ),
        UpstreamError::Rejected { result, .. } => {
            format!("double-natpmp at {target} answered result {result}")
        }
        UpstreamError::UnknownResult { code, .. } => {
            format!("{target} answered an undefined result code {code}")
        }
        UpstreamError::Io { source, .. } => format!("cannot ask {target}: {source}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_address_is_probed_on_loopback() {
        assert_eq!(
            probe_target("0.0.0.0:5351".parse().unwrap()),
            Some("127.0.0.1:5351".parse().unwrap())
        );
        assert_eq!(
            probe_target("172.30.254.2:5351".parse().unwrap()),
            Some("172.30.254.2:5351".parse().unwrap())
        );
    }
}
