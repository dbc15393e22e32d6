//! `double-natpmp health`: is the daemon up and serving NAT-PMP? For a container HEALTHCHECK
//! in exec form (the image is `FROM scratch`, there is no shell).
//!
//! It reports the daemon, not the VPN gateway: a gateway that is down is a VPN problem, and a
//! container restarted for it would come back to the same tunnel (the gateway's state is in
//! `/readyz`, on the status page and in `double-natpmp check`). So the probe is a request the
//! daemon answers itself, at once, whatever the gateway does: a version-0 request with an
//! opcode NAT-PMP does not define ([`PROBE_OPCODE`]), which the daemon's NAT-PMP server answers
//! with result 5 and the request echoed (RFC 6886 §3.5, C-16). The probe carries a random
//! nonce, so only the daemon's echo of this very probe counts. It goes to the daemon's own
//! LISTEN_ADDR (127.0.0.1 when that is 0.0.0.0); the server answers such a request from the
//! host itself whatever ALLOWED_CLIENTS says (the host cannot map ports). Exit 0 on the echo, 1
//! otherwise; one line of output either way.

use std::net::{SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use thiserror::Error;
use tokio::net::UdpSocket;

use crate::config::value::{loopback_if_unspecified, parse_listen_addr, parse_timeout};
use double_natpmp_codec::natpmp::wire::ResultCode;

/// The probe's opcode: one NAT-PMP does not define, answered with result 5 (C-16).
pub(crate) const PROBE_OPCODE: u8 = 127;
/// The probe's length: version, opcode, two zero bytes, an 8-byte nonce.
const PROBE_LEN: usize = 12;
/// The first retransmission interval; it doubles after each try (as RFC 6886 §3.1 asks).
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Why the daemon did not answer the probe.
#[derive(Debug, Error)]
pub(crate) enum HealthError {
    /// ICMP port unreachable: nothing listens.
    #[error("nothing listens for NAT-PMP at {target}: is the daemon running, and is LISTEN_ADDR the same as the daemon's?")]
    Refused {
        /// Where the probe went.
        target: SocketAddrV4,
    },
    /// No echo of the probe in time.
    #[error("double-natpmp at {target} did not answer within {after:?}")]
    Timeout {
        /// Where the probe went.
        target: SocketAddrV4,
        /// The time waited.
        after: Duration,
    },
    /// The probe could not be sent.
    #[error("cannot ask {target}: {source}")]
    Io {
        /// Where the probe was to go.
        target: SocketAddrV4,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

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
pub(crate) fn probe_target(listen: SocketAddr) -> Option<SocketAddrV4> {
    if listen.is_ipv6() {
        return None;
    }
    match loopback_if_unspecified(listen) {
        SocketAddr::V4(target) => Some(target),
        SocketAddr::V6(_) => None,
    }
}

/// The probe with `nonce`.
pub(crate) fn probe_packet(nonce: u64) -> [u8; PROBE_LEN] {
    let mut p = [0u8; PROBE_LEN];
    p[1] = PROBE_OPCODE;
    p[4..].copy_from_slice(&nonce.to_be_bytes());
    p
}

/// Whether `reply` is the daemon's answer to `probe`: the probe echoed with the reply bit set
/// and result 5 (C-16).
pub(crate) fn is_echo(reply: &[u8], probe: &[u8; PROBE_LEN]) -> bool {
    reply.len() == PROBE_LEN
        && reply[0] == 0
        && reply[1] == PROBE_OPCODE | 0x80
        && reply[2..4] == ResultCode::UnsupportedOpcode.to_u16().to_be_bytes()
        && reply[4..] == probe[4..]
}

/// A nonce that differs from one run to the next (not a secret: it only tells this probe's
/// echo from any other datagram).
fn nonce() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

/// Sends the probe to `target` and waits up to `budget` for its echo, retransmitting after
/// 250 ms, then 500 ms, doubling.
pub(crate) async fn probe(target: SocketAddrV4, budget: Duration) -> Result<(), HealthError> {
    let io = |source| HealthError::Io { target, source };
    let local: SocketAddr = if target.ip().is_loopback() {
        (std::net::Ipv4Addr::LOCALHOST, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    // Connected: only the target's datagrams arrive, and its ICMP unreachable shows.
    socket.connect(target).await.map_err(io)?;
    let probe = probe_packet(nonce());
    let deadline = tokio::time::Instant::now() + budget;
    let mut wait = FIRST_RETRY;
    let mut buf = [0u8; 64];
    let failed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => HealthError::Refused { target },
        _ => io(e),
    };
    loop {
        // An ICMP port unreachable answering the last try shows on this send or the receive.
        socket.send(&probe).await.map_err(failed)?;
        let round_end = (tokio::time::Instant::now() + wait).min(deadline);
        loop {
            match tokio::time::timeout_at(round_end, socket.recv(&mut buf)).await {
                Ok(Ok(n)) if is_echo(&buf[..n], &probe) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(failed(e)),
                Err(_) => break,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HealthError::Timeout {
                target,
                after: budget,
            });
        }
        wait *= 2;
    }
}

/// Runs `health`.
pub(crate) async fn run(args: HealthArgs) -> ExitCode {
    let Some(target) = probe_target(args.listen_addr) else {
        println!("unhealthy: LISTEN_ADDR={} is not IPv4", args.listen_addr);
        return ExitCode::FAILURE;
    };
    match probe(target, args.timeout).await {
        Ok(()) => {
            println!(
                "healthy: double-natpmp at {target} answers (the VPN gateway's state: /readyz or double-natpmp check)"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_echo_of_this_probe_counts() {
        let probe = probe_packet(0x0102_0304_0506_0708);
        let mut echo = probe;
        echo[1] |= 0x80;
        echo[3] = 5;
        assert!(is_echo(&echo, &probe));
        // Another probe's echo, another result, a request, a short or long datagram: no.
        assert!(!is_echo(&probe_packet(9), &probe));
        let mut other = echo;
        other[11] ^= 1;
        assert!(!is_echo(&other, &probe));
        let mut result_0 = echo;
        result_0[3] = 0;
        assert!(!is_echo(&result_0, &probe));
        assert!(!is_echo(&probe, &probe));
        assert!(!is_echo(&echo[..8], &probe));
        assert!(!is_echo(&[&echo[..], &[0]].concat(), &probe));
    }

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
