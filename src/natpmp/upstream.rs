//! The NAT-PMP client toward the upstream VPN gateway (RFC 6886 §3.1).
//!
//! CONTRACT (kept by whoever implements this file): the public names below stay as they are.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use thiserror::Error;

use crate::natpmp::wire::{Protocol, ResultCode};

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

/// What the daemon needs of the upstream gateway. Implemented by [`UpstreamClient`]; tests may
/// swap in a fake.
pub trait Upstream: Send + Sync + 'static {
    /// Opcode 0: the external address.
    fn external_address(&self) -> impl Future<Output = Result<AddressReply, UpstreamError>> + Send;
    /// Opcode 1/2: map, renew (lifetime > 0) or delete (lifetime 0) `internal_port`.
    fn map(
        &self,
        protocol: Protocol,
        internal_port: u16,
        suggested_external_port: u16,
        lifetime: u32,
    ) -> impl Future<Output = Result<MapGrant, UpstreamError>> + Send;
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

/// The NAT-PMP client toward the VPN gateway: one socket per exchange.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    config: UpstreamConfig,
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
}

impl Upstream for UpstreamClient {
    async fn external_address(&self) -> Result<AddressReply, UpstreamError> {
        Err(UpstreamError::Timeout {
            gateway: self.config.gateway,
            after: self.config.budget,
        })
    }

    async fn map(
        &self,
        _protocol: Protocol,
        _internal_port: u16,
        _suggested_external_port: u16,
        _lifetime: u32,
    ) -> Result<MapGrant, UpstreamError> {
        Err(UpstreamError::Timeout {
            gateway: self.config.gateway,
            after: self.config.budget,
        })
    }
}
