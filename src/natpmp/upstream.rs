//! The NAT-PMP client toward the upstream VPN gateway (RFC 6886 §3.1).
//!
//! NAT-PMP has no transaction id, so every exchange gets its own UDP socket, `connect()`ed to the
//! gateway: the kernel then drops datagrams from any other source and reports an ICMP port
//! unreachable as `ECONNREFUSED` ([`UpstreamError::Refused`]). The request is retransmitted after
//! [`UpstreamConfig::initial_timeout`] (250 ms), then after twice that, and so on, until
//! [`UpstreamConfig::budget`] is spent. A reply counts only if its version is 0, its opcode is
//! 128 + the request's opcode and, for a mapping, it echoes the requested internal port; anything
//! else is ignored and the wait goes on.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use double_natpmp_codec::natpmp::wire::{
    encode_request, parse_response, MapRequest, Protocol, Request, Response, ResponseError,
    ResultCode, MAP_REQUEST_LEN, VERSION,
};

/// The upstream's answer to an external-address request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressReply {
    /// The gateway's SSSoE.
    pub epoch: u32,
    /// The VPN exit address.
    pub address: Ipv4Addr,
}

/// The upstream's answer to a mapping request with result 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapGrant {
    /// The gateway's SSSoE.
    pub epoch: u32,
    /// The internal port the gateway echoed.
    pub internal_port: u16,
    /// The external port it mapped (0 after a delete).
    pub external_port: u16,
    /// The lifetime it granted (0 after a delete).
    pub lifetime: u32,
}

/// Why an upstream exchange failed.
#[derive(Debug, Error)]
pub enum UpstreamError {
    /// No matching reply within the retransmission budget.
    #[error("VPN gateway {gateway} did not answer NAT-PMP within {after:?}")]
    Timeout {
        /// The gateway.
        gateway: SocketAddrV4,
        /// The budget that ran out.
        after: Duration,
    },
    /// ICMP port unreachable: the gateway does not run NAT-PMP (port forwarding off?).
    #[error("VPN gateway {gateway} refused NAT-PMP (ICMP port unreachable): is port forwarding enabled for this VPN connection?")]
    Refused {
        /// The gateway.
        gateway: SocketAddrV4,
    },
    /// The gateway answered with a non-zero result code.
    #[error("VPN gateway {gateway} answered result {result}")]
    Rejected {
        /// The gateway.
        gateway: SocketAddrV4,
        /// Its result code.
        result: ResultCode,
    },
    /// The gateway answered with a result code RFC 6886 does not define (C-20).
    #[error("VPN gateway {gateway} answered undefined result code {code}")]
    UnknownResult {
        /// The gateway.
        gateway: SocketAddrV4,
        /// The raw code.
        code: u16,
    },
    /// A local socket error.
    #[error("NAT-PMP socket toward {gateway}: {source}")]
    Io {
        /// The gateway.
        gateway: SocketAddrV4,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One mapping asked of the gateway (opcode 1/2): map or renew (lifetime > 0), or delete
/// (lifetime 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamMap {
    /// The mapping's transport protocol.
    pub protocol: Protocol,
    /// The port the gateway forwards to (for the daemon, the router port R).
    pub internal_port: u16,
    /// The external port to suggest; 0 for any (C-28).
    pub suggested_external_port: u16,
    /// The lifetime to ask for; 0 deletes (C-33).
    pub lifetime: u32,
}

impl UpstreamMap {
    /// The delete of the mapping of `internal_port` (lifetime 0, no suggestion).
    pub fn delete(protocol: Protocol, internal_port: u16) -> UpstreamMap {
        UpstreamMap {
            protocol,
            internal_port,
            suggested_external_port: 0,
            lifetime: 0,
        }
    }
}

/// What the daemon needs of the upstream gateway. Implemented by [`UpstreamClient`]; tests may
/// swap in a fake.
pub trait Upstream: Send + Sync + 'static {
    /// Opcode 0: the external address.
    fn external_address(&self) -> impl Future<Output = Result<AddressReply, UpstreamError>> + Send;
    /// Opcode 1/2: map, renew (lifetime > 0) or delete (lifetime 0) one mapping.
    fn map(&self, ask: UpstreamMap)
        -> impl Future<Output = Result<MapGrant, UpstreamError>> + Send;
}

/// Timing of the upstream client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The gateway's address and NAT-PMP port.
    pub gateway: SocketAddrV4,
    /// First retransmission interval (RFC 6886 §3.1: 250 ms, doubling).
    pub initial_timeout: Duration,
    /// Total time one exchange may take before it fails with a timeout.
    pub budget: Duration,
}

impl UpstreamConfig {
    /// RFC 6886 §3.1 first retransmission interval.
    pub const DEFAULT_INITIAL_TIMEOUT: Duration = Duration::from_millis(250);
    /// Default budget per exchange: sends at 0, 0.25, 0.75 and 1.75 s, so a LAN client that is
    /// itself retransmitting still gets an answer (result 3) early in its own schedule.
    pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

    /// A configuration for `gateway` with the RFC timing and the default budget.
    pub fn new(gateway: SocketAddrV4) -> UpstreamConfig {
        UpstreamConfig {
            gateway,
            initial_timeout: Self::DEFAULT_INITIAL_TIMEOUT,
            budget: Self::DEFAULT_BUDGET,
        }
    }
}

/// The NAT-PMP client toward the VPN gateway: one socket per exchange.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    config: UpstreamConfig,
}

/// What a reply must look like to answer our request.
#[derive(Clone, Copy, Debug)]
struct Expect {
    /// 128 + request opcode.
    reply_opcode: u8,
    /// The requested internal port, for mapping requests; `None` for op 0 or when the request
    /// asked with internal port 0 (Proton's symmetric default port may come back with any).
    internal_port: Option<u16>,
}

/// A reply that matched the request.
enum Matched {
    Reply(Response),
    UnknownResult(u16),
}

impl UpstreamClient {
    /// A client for `config.gateway`.
    pub fn new(config: UpstreamConfig) -> UpstreamClient {
        UpstreamClient { config }
    }

    /// The configuration.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    fn io_err(&self, source: io::Error) -> UpstreamError {
        if source.kind() == io::ErrorKind::ConnectionRefused {
            UpstreamError::Refused {
                gateway: self.config.gateway,
            }
        } else {
            UpstreamError::Io {
                gateway: self.config.gateway,
                source,
            }
        }
    }

    /// One request/reply exchange with RFC 6886 §3.1 retransmission.
    async fn exchange(&self, request: &Request, expect: Expect) -> Result<Matched, UpstreamError> {
        let started = Instant::now();
        let deadline = started + self.config.budget;
        let mut attempts = 0u32;
        let outcome = self
            .exchange_inner(request, expect, deadline, &mut attempts)
            .await;
        tracing::debug!(
            gateway = %self.config.gateway,
            op = expect.reply_opcode & 0x7f,
            attempts,
            elapsed_ms = started.elapsed().as_millis() as u64,
            ok = outcome.is_ok(),
            "upstream NAT-PMP exchange"
        );
        outcome
    }

    async fn exchange_inner(
        &self,
        request: &Request,
        expect: Expect,
        deadline: Instant,
        attempts: &mut u32,
    ) -> Result<Matched, UpstreamError> {
        let gateway = self.config.gateway;
        let timeout = || UpstreamError::Timeout {
            gateway,
            after: self.config.budget,
        };
        // A loopback gateway (tests, the demo) is only reachable from a loopback source.
        let local = if gateway.ip().is_loopback() {
            Ipv4Addr::LOCALHOST
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let socket = UdpSocket::bind(SocketAddrV4::new(local, 0))
            .await
            .map_err(|e| self.io_err(e))?;
        // connect(): the kernel drops datagrams from other sources, and ICMP port unreachable
        // comes back as ECONNREFUSED on the next send or recv.
        socket.connect(gateway).await.map_err(|e| self.io_err(e))?;

        let mut packet = [0u8; MAP_REQUEST_LEN];
        let len = encode_request(request, &mut packet);
        let mut buf = [0u8; 64];
        let mut interval = self.config.initial_timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(timeout());
            }
            *attempts += 1;
            match tokio::time::timeout_at(deadline, socket.send(&packet[..len])).await {
                Err(_) => return Err(timeout()),
                Ok(Err(e)) => return Err(self.io_err(e)),
                Ok(Ok(_)) => {}
            }
            // Replies to an earlier transmission are as good as replies to this one.
            let resend_at = (Instant::now() + interval).min(deadline);
            loop {
                match tokio::time::timeout_at(resend_at, socket.recv_from(&mut buf)).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(self.io_err(e)),
                    Ok(Ok((n, from))) => {
                        if from != SocketAddr::V4(gateway) {
                            tracing::debug!(%from, %gateway, "ignoring NAT-PMP reply from another address");
                            continue;
                        }
                        if let Some(m) = match_reply(&buf[..n], expect) {
                            return Ok(m);
                        }
                        tracing::debug!(
                            %gateway,
                            len = n,
                            "ignoring NAT-PMP datagram that does not answer our request"
                        );
                    }
                }
            }
            interval = interval.saturating_mul(2);
        }
    }
}

/// Checks a datagram against what we asked; `None` means "not our answer, keep waiting".
fn match_reply(packet: &[u8], expect: Expect) -> Option<Matched> {
    match parse_response(packet) {
        Ok(Response::Map(m)) => {
            let opcode_ok = 0x80 | m.protocol.opcode() == expect.reply_opcode;
            let port_ok = expect.internal_port.is_none_or(|p| p == m.internal_port);
            (opcode_ok && port_ok).then_some(Matched::Reply(Response::Map(m)))
        }
        Ok(r @ Response::ExternalAddress { .. }) => {
            (expect.reply_opcode == 0x80).then_some(Matched::Reply(r))
        }
        // The 8-byte error form carries no internal port to check; with one socket per
        // exchange it can only be about our request.
        Ok(r @ Response::Short { opcode, .. }) => {
            (opcode == expect.reply_opcode).then_some(Matched::Reply(r))
        }
        // Erratum 3618 form: op 128 whatever the request was; only an op-0 request matches.
        Ok(r @ Response::UnsupportedVersion { .. }) => {
            (expect.reply_opcode == 0x80).then_some(Matched::Reply(r))
        }
        Err(ResponseError::UnknownResultCode { code }) => {
            // parse_response stopped at the result code; check the header ourselves.
            let header_ok =
                packet.first() == Some(&VERSION) && packet.get(1) == Some(&expect.reply_opcode);
            let port_ok = match expect.internal_port {
                None => true,
                Some(p) => match packet.get(8..10) {
                    Some(b) => u16::from_be_bytes([b[0], b[1]]) == p,
                    // Short error form: nothing to compare.
                    None => true,
                },
            };
            (header_ok && port_ok).then_some(Matched::UnknownResult(code))
        }
        Err(_) => None,
    }
}

impl Upstream for UpstreamClient {
    async fn external_address(&self) -> Result<AddressReply, UpstreamError> {
        let gateway = self.config.gateway;
        let expect = Expect {
            reply_opcode: 0x80,
            internal_port: None,
        };
        match self.exchange(&Request::ExternalAddress, expect).await? {
            Matched::UnknownResult(code) => Err(UpstreamError::UnknownResult { gateway, code }),
            Matched::Reply(Response::ExternalAddress {
                result: ResultCode::Success,
                epoch,
                address,
            }) => Ok(AddressReply { epoch, address }),
            Matched::Reply(r) => Err(UpstreamError::Rejected {
                gateway,
                result: r.result(),
            }),
        }
    }

    async fn map(&self, ask: UpstreamMap) -> Result<MapGrant, UpstreamError> {
        let UpstreamMap {
            protocol,
            internal_port,
            suggested_external_port,
            lifetime,
        } = ask;
        let gateway = self.config.gateway;
        let request = Request::Map(MapRequest {
            protocol,
            internal_port,
            suggested_external_port,
            lifetime,
        });
        let expect = Expect {
            reply_opcode: 0x80 | protocol.opcode(),
            // C-37: Proton answers a request for internal port 0 with the port it chose.
            internal_port: (internal_port != 0).then_some(internal_port),
        };
        match self.exchange(&request, expect).await? {
            Matched::UnknownResult(code) => Err(UpstreamError::UnknownResult { gateway, code }),
            Matched::Reply(Response::Map(m)) if m.result == ResultCode::Success => Ok(MapGrant {
                epoch: m.epoch,
                internal_port: m.internal_port,
                external_port: m.external_port,
                lifetime: m.lifetime,
            }),
            Matched::Reply(r) => Err(UpstreamError::Rejected {
                gateway,
                result: r.result(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use double_natpmp_codec::natpmp::wire::{encode_response, MapResponse};

    fn map_reply(protocol: Protocol, result: ResultCode, internal: u16) -> Vec<u8> {
        let mut out = [0u8; 16];
        let n = encode_response(
            &Response::Map(MapResponse {
                protocol,
                result,
                epoch: 7,
                internal_port: internal,
                external_port: 40000,
                lifetime: 60,
            }),
            &mut out,
        );
        out[..n].to_vec()
    }

    const UDP_1000: Expect = Expect {
        reply_opcode: 0x81,
        internal_port: Some(1000),
    };

    #[test]
    fn reply_for_other_protocol_is_ignored() {
        let p = map_reply(Protocol::Tcp, ResultCode::Success, 1000);
        assert!(match_reply(&p, UDP_1000).is_none());
    }

    #[test]
    fn reply_for_other_internal_port_is_ignored() {
        let p = map_reply(Protocol::Udp, ResultCode::Success, 1001);
        assert!(match_reply(&p, UDP_1000).is_none());
    }

    #[test]
    fn c37_internal_port_zero_accepts_any_echoed_port() {
        let p = map_reply(Protocol::Udp, ResultCode::Success, 51234);
        let any = Expect {
            reply_opcode: 0x81,
            internal_port: None,
        };
        assert!(matches!(match_reply(&p, any), Some(Matched::Reply(_))));
    }

    #[test]
    fn bad_version_is_ignored() {
        let mut p = map_reply(Protocol::Udp, ResultCode::Success, 1000);
        p[0] = 1;
        assert!(match_reply(&p, UDP_1000).is_none());
    }

    #[test]
    fn c20_undefined_result_with_matching_header_is_reported() {
        let mut p = map_reply(Protocol::Udp, ResultCode::Success, 1000);
        p[2..4].copy_from_slice(&9u16.to_be_bytes());
        assert!(matches!(
            match_reply(&p, UDP_1000),
            Some(Matched::UnknownResult(9))
        ));
        p[8..10].copy_from_slice(&1001u16.to_be_bytes());
        assert!(match_reply(&p, UDP_1000).is_none());
    }

    #[test]
    fn short_error_reply_with_matching_opcode_is_accepted() {
        let p = [0, 0x81, 0, 4, 0, 0, 0, 9];
        assert!(matches!(
            match_reply(&p, UDP_1000),
            Some(Matched::Reply(Response::Short {
                result: ResultCode::OutOfResources,
                ..
            }))
        ));
    }
}
