//! Typed RouterOS operations the daemon needs, over the pooled connections.
//!
//! CONTRACT (kept by whoever implements this file): the public types and the [`Router`] trait
//! below keep their names and shapes; more may be added.

use std::future::Future;
use std::net::Ipv4Addr;

use thiserror::Error;

use crate::natpmp::wire::Protocol;

/// A RouterOS item id such as `*1F`: opaque, as the router made it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub String);

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A dst-nat rule to add: traffic arriving on `in_interface` for `protocol`/`dst_port` goes to
/// `to_address:to_port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DstNatRule {
    /// tcp or udp.
    pub protocol: Protocol,
    /// The VPN interface (e.g. `wg-proton`).
    pub in_interface: String,
    /// The router port R that the upstream forwards to.
    pub dst_port: u16,
    /// The LAN client.
    pub to_address: Ipv4Addr,
    /// The client's internal port.
    pub to_port: u16,
    /// Our ownership marker and restart data (ASCII; see `mapping::rule`).
    pub comment: String,
}

/// A NAT rule as `/ip/firewall/nat/print` returns it; unset fields are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatRule {
    /// `.id`.
    pub id: Option<RuleId>,
    /// `chain`.
    pub chain: Option<String>,
    /// `action`.
    pub action: Option<String>,
    /// `protocol`.
    pub protocol: Option<String>,
    /// `in-interface`.
    pub in_interface: Option<String>,
    /// `dst-port` (may be a list or range on rules we did not make).
    pub dst_port: Option<String>,
    /// `to-addresses`.
    pub to_addresses: Option<String>,
    /// `to-ports`.
    pub to_ports: Option<String>,
    /// `comment`.
    pub comment: Option<String>,
    /// `disabled=true`.
    pub disabled: bool,
    /// `dynamic=true` (made by a router service; never ours).
    pub dynamic: bool,
}

/// What the router says about itself, for the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterInfo {
    /// `/system/identity` name.
    pub identity: String,
    /// `/system/resource` version, e.g. `7.18.2 (stable)`.
    pub version: String,
    /// `/system/resource` board-name, if given.
    pub board: Option<String>,
}

/// A failed RouterOS operation, in words a router owner understands.
#[derive(Debug, Error)]
pub enum RouterError {
    /// The item does not exist (`no such item`).
    #[error("RouterOS: no such item {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The API user lacks a policy (`not enough permissions`).
    #[error("RouterOS refused {command}: {message}{}", policy.map(|p| format!(" (the API user's group needs the '{p}' policy)")).unwrap_or_default())]
    PermissionDenied {
        /// The command.
        command: String,
        /// The router's text.
        message: String,
        /// The policy that is probably missing, where it can be told.
        policy: Option<&'static str>,
    },
    /// A value the router did not accept (e.g. an unknown interface).
    #[error("RouterOS rejected {command}: {message}")]
    InvalidValue {
        /// The command.
        command: String,
        /// The router's text.
        message: String,
    },
    /// Any other `!trap`.
    #[error("RouterOS error on {command}: {message}")]
    Trap {
        /// The command.
        command: String,
        /// The router's text.
        message: String,
        /// The `category`, if given.
        category: Option<u8>,
    },
    /// Login refused.
    #[error("RouterOS API login failed for user '{user}' at {address}: {message}")]
    LoginRefused {
        /// The user name.
        user: String,
        /// The API address.
        address: String,
        /// The router's text.
        message: String,
    },
    /// The connection could not be made or broke (includes TLS failures and `!fatal`).
    #[error("RouterOS API at {address}: {message}")]
    Connection {
        /// The API address.
        address: String,
        /// What happened.
        message: String,
    },
    /// No answer in time (connect, login, command, or waiting for a pooled connection).
    #[error("RouterOS API at {address}: no answer to {what} within {after:?}")]
    Timeout {
        /// The API address.
        address: String,
        /// What timed out.
        what: String,
        /// The limit.
        after: std::time::Duration,
    },
}

/// What the daemon needs of the router. Implemented over the pool; tests may swap in a fake.
pub trait Router: Send + Sync + 'static {
    /// `/ip/firewall/nat/add chain=dstnat action=dst-nat …` in one command; returns the new id
    /// from `!done =ret=`.
    fn add_dstnat(
        &self,
        rule: &DstNatRule,
    ) -> impl Future<Output = Result<RuleId, RouterError>> + Send;
    /// `/ip/firewall/nat/remove =.id=…`; `NotFound` when it was already gone.
    fn remove_rule(&self, id: &RuleId) -> impl Future<Output = Result<(), RouterError>> + Send;
    /// The dst-nat rules whose in-interface is `in_interface` (with `.proplist`).
    fn list_dstnat(
        &self,
        in_interface: &str,
    ) -> impl Future<Output = Result<Vec<NatRule>, RouterError>> + Send;
}
