//! Configuration: command-line flags, each backed by an environment variable, and the checks
//! of values against each other.
//!
//! The original tool's variables keep their names and meanings (VPN_GATEWAY,
//! MIKROTIK_API_ADDRESS, MIKROTIK_API_USER, MIKROTIK_API_PASSWORD, MIKROTIK_API_TLS,
//! MIKROTIK_IN_INTERFACE, LISTEN_ADDR, LOG_LEVEL), so a user can switch without touching the
//! router. Values are parsed at the edge into typed values ([`value`]); a bad one stops the
//! program with one line that names the variable, the value and what is expected
//! ([`render_error`](crate::cli::args::render_error)). Values that cannot work together are
//! refused by [`DaemonArgs::validate`] in the same form ([`ConfigError`]).
//!
//! Bounds (also in `--help` and docs/configuration.md): timeouts 1ms to 1d
//! ([`value::MAX_TIMEOUT`]), EXPIRY_GRACE 0 to 1d, CREATE_PATIENCE 0 to 1m
//! ([`value::MAX_PATIENCE`]), ADDRESS_REFRESH and RECONCILE_INTERVAL 1s to 7d
//! ([`value::MAX_INTERVAL`]), MAX_LIFETIME 1 to 604800 s ([`value::MAX_LIFETIME_LIMIT`]).

pub(crate) mod reachability;
pub(crate) mod status;
pub(crate) mod value;

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use thiserror::Error;

use self::status::{parse_token, StatusArgs};
use self::value::{
    parse_bool, parse_fingerprint, parse_gateway, parse_grace, parse_host_port, parse_interval,
    parse_log_level, parse_name, parse_natpmp_listen_addr, parse_password, parse_patience,
    parse_server_name, parse_timeout, show_duration, Fingerprint, HostPort, LogFormat, LogLevel,
    MAX_LIFETIME_LIMIT,
};
use crate::cidr::{parse_cidr_list, CidrList};
use crate::routeros::conn::Password;

/// How to reach the RouterOS API.
#[derive(Debug, Clone, Args)]
pub struct RouterArgs {
    /// RouterOS API address, host[:port]; the port defaults to 8728, or 8729 with TLS.
    #[arg(long, env = "MIKROTIK_API_ADDRESS", value_name = "MIKROTIK_API_ADDRESS", value_parser = parse_host_port)]
    pub mikrotik_api_address: HostPort,

    /// RouterOS API user (its group needs the read, write, api and test policies).
    #[arg(
        long,
        env = "MIKROTIK_API_USER",
        value_name = "MIKROTIK_API_USER",
        default_value = "admin",
        value_parser = parse_name
    )]
    pub mikrotik_api_user: String,

    /// RouterOS API password (never logged or shown).
    #[arg(
        long,
        env = "MIKROTIK_API_PASSWORD",
        value_name = "MIKROTIK_API_PASSWORD",
        hide_env_values = true,
        required_unless_present = "mikrotik_api_password_file",
        value_parser = parse_password
    )]
    pub mikrotik_api_password: Option<Password>,

    /// File holding the RouterOS API password (container secrets), instead of
    /// MIKROTIK_API_PASSWORD (setting both is an error). A trailing newline is ignored.
    #[arg(
        long,
        env = "MIKROTIK_API_PASSWORD_FILE",
        value_name = "MIKROTIK_API_PASSWORD_FILE"
    )]
    pub mikrotik_api_password_file: Option<PathBuf>,

    /// Use api-ssl (TLS). Then give a CA file or a certificate fingerprint, or explicitly allow
    /// an unverified connection.
    #[arg(long, env = "MIKROTIK_API_TLS", value_name = "MIKROTIK_API_TLS", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub mikrotik_api_tls: bool,

    /// PEM file with the CA that signed the router's api-ssl certificate.
    #[arg(
        long,
        env = "MIKROTIK_API_TLS_CA_FILE",
        value_name = "MIKROTIK_API_TLS_CA_FILE"
    )]
    pub mikrotik_api_tls_ca_file: Option<PathBuf>,

    /// SHA-256 fingerprint of the router's api-ssl certificate (hex, colons allowed). Only
    /// this certificate is accepted; its name is not checked.
    #[arg(long, env = "MIKROTIK_API_TLS_FINGERPRINT", value_name = "MIKROTIK_API_TLS_FINGERPRINT", value_parser = parse_fingerprint)]
    pub mikrotik_api_tls_fingerprint: Option<Fingerprint>,

    /// The name the router's certificate must carry, checked with MIKROTIK_API_TLS_CA_FILE
    /// (default: the host of MIKROTIK_API_ADDRESS). For a certificate made for another name
    /// than the address the daemon connects to.
    #[arg(long, env = "MIKROTIK_API_TLS_SERVER_NAME", value_name = "MIKROTIK_API_TLS_SERVER_NAME", value_parser = parse_server_name)]
    pub mikrotik_api_tls_server_name: Option<String>,

    /// Accept any api-ssl certificate without verification (a warning is logged at start).
    #[arg(long, env = "MIKROTIK_API_TLS_INSECURE", value_name = "MIKROTIK_API_TLS_INSECURE", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub mikrotik_api_tls_insecure: bool,

    /// Number of pooled RouterOS API connections, 1 to 64.
    #[arg(long, env = "MIKROTIK_POOL_SIZE", value_name = "MIKROTIK_POOL_SIZE", default_value = "4", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub mikrotik_pool_size: u16,

    /// Time limit for connecting, logging in, and each API command (1ms to 1d).
    #[arg(long, env = "MIKROTIK_API_TIMEOUT", value_name = "MIKROTIK_API_TIMEOUT", default_value = "5s", value_parser = parse_timeout)]
    pub mikrotik_api_timeout: Duration,
}

/// The daemon's settings.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// The upstream VPN gateway that speaks NAT-PMP, IPv4[:port] (ProtonVPN: 10.2.0.1).
    #[arg(long, env = "VPN_GATEWAY", value_name = "VPN_GATEWAY", value_parser = parse_gateway)]
    pub vpn_gateway: SocketAddrV4,

    /// How to reach the RouterOS API.
    #[command(flatten)]
    pub router: RouterArgs,

    /// The router's VPN interface our dst-nat rules match (in-interface). Found with
    /// /ip/route/check toward VPN_GATEWAY when not set (needs the API user's 'test' policy).
    #[arg(
        long,
        env = "MIKROTIK_IN_INTERFACE",
        value_name = "MIKROTIK_IN_INTERFACE",
        value_parser = parse_name
    )]
    pub mikrotik_in_interface: Option<String>,

    /// Where LAN clients' NAT-PMP requests arrive, IPv4 [ip]:port or ip. Bind the exact
    /// address the router forwards to: replies must come from the address the request was
    /// sent to.
    #[arg(long, env = "LISTEN_ADDR", value_name = "LISTEN_ADDR", default_value = ":5351", value_parser = parse_natpmp_listen_addr)]
    pub listen_addr: SocketAddr,

    /// Log level: DEBUG, INFO, WARN or ERROR (any case).
    #[arg(long, env = "LOG_LEVEL", value_name = "LOG_LEVEL", default_value = "INFO", value_parser = parse_log_level)]
    pub log_level: LogLevel,

    /// Log format: text or json.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        default_value = "text",
        value_enum,
        ignore_case = true
    )]
    pub log_format: LogFormat,

    /// Comma-separated IPv4 networks whose hosts may ask for mappings; requests from any other
    /// source are dropped silently (RFC 6886 §3.3), and so, whatever this says, are requests
    /// from VPN_GATEWAY, the router's own addresses, the network and broadcast addresses of its
    /// subnets (read from the router at each reconcile) and the daemon's own addresses.
    #[arg(long, env = "ALLOWED_CLIENTS", value_name = "ALLOWED_CLIENTS", default_value = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16", value_parser = parse_cidr_list)]
    pub allowed_clients: CidrList,

    /// Longest lifetime granted to a client, in seconds, 1 to 604800 (a week); the upstream may
    /// grant less.
    #[arg(long, env = "MAX_LIFETIME", value_name = "MAX_LIFETIME", default_value = "3600", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIFETIME_LIMIT)))]
    pub max_lifetime: u32,

    /// Total time one upstream NAT-PMP exchange may take, retransmissions included (1ms to 1d).
    #[arg(long, env = "UPSTREAM_TIMEOUT", value_name = "UPSTREAM_TIMEOUT", default_value = "2s", value_parser = parse_timeout)]
    pub upstream_timeout: Duration,

    /// First upstream retransmission interval; it doubles after each try (RFC 6886 §3.1). 1ms
    /// to UPSTREAM_TIMEOUT (and at most 1d).
    #[arg(long, env = "UPSTREAM_RETRY", value_name = "UPSTREAM_RETRY", default_value = "250ms", value_parser = parse_timeout)]
    pub upstream_retry: Duration,

    /// How long a new mapping (or a renewal that must ask the gateway) keeps trying when the
    /// router or the gateway does not answer, refuses the connection or sends ICMP
    /// unreachable, before it is answered 3; 0s to 1m, 0s tries once. Inside libtorrent's ~11 s
    /// of retransmissions, after which it waits two hours.
    #[arg(long, env = "CREATE_PATIENCE", value_name = "CREATE_PATIENCE", default_value = "9s", value_parser = parse_patience)]
    pub create_patience: Duration,

    /// How often the upstream's external address is asked again (also after any error); 1s to
    /// 7d.
    #[arg(long, env = "ADDRESS_REFRESH", value_name = "ADDRESS_REFRESH", default_value = "60s", value_parser = parse_interval)]
    pub address_refresh: Duration,

    /// Lowest router port used when neither the client's suggested nor its internal port is free.
    #[arg(long, env = "ROUTER_PORT_MIN", value_name = "ROUTER_PORT_MIN", default_value = "40000", value_parser = clap::value_parser!(u16).range(1..))]
    pub router_port_min: u16,

    /// Highest router port of that range (at least ROUTER_PORT_MIN).
    #[arg(long, env = "ROUTER_PORT_MAX", value_name = "ROUTER_PORT_MAX", default_value = "65000", value_parser = clap::value_parser!(u16).range(1..))]
    pub router_port_max: u16,

    /// Extra time after a granted lifetime before an unrenewed mapping is removed, so a client
    /// renewing a little late keeps its ports (0 to 1d).
    #[arg(long, env = "EXPIRY_GRACE", value_name = "EXPIRY_GRACE", default_value = "5s", value_parser = parse_grace)]
    pub expiry_grace: Duration,

    /// How often orphaned rules are removed and missing ones restored (1s to 7d).
    #[arg(long, env = "RECONCILE_INTERVAL", value_name = "RECONCILE_INTERVAL", default_value = "10m", value_parser = parse_interval)]
    pub reconcile_interval: Duration,

    /// Requests handled at once, 1 to 65536; past this, new requests are dropped (clients
    /// retransmit). Renewals of a live mapping and addresses already known are answered
    /// without a slot; as many address requests may wait for the VPN gateway besides, and
    /// an eighth more slots are kept for deletes.
    #[arg(long, env = "MAX_INFLIGHT", value_name = "MAX_INFLIGHT", default_value = "256", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_inflight: u32,

    /// Time allowed at SIGTERM/SIGINT to remove every mapping from both layers (1ms to 1d).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", value_name = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub shutdown_timeout: Duration,

    /// Keep every mapping (router rule and gateway mapping) at SIGTERM/SIGINT, for an upgrade:
    /// the next start adopts them. By default a stop removes both layers.
    #[arg(long, env = "KEEP_MAPPINGS_ON_STOP", value_name = "KEEP_MAPPINGS_ON_STOP", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub keep_mappings_on_stop: bool,

    /// Most live mappings at once, 1 to 100000; past it new mappings are answered 4.
    #[arg(long, env = "MAX_MAPPINGS", value_name = "MAX_MAPPINGS", default_value = "4096", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_mappings: u32,

    /// Most live mappings of one client, 1 to 65535; past it its new mappings are answered 4.
    #[arg(long, env = "MAX_MAPPINGS_PER_CLIENT", value_name = "MAX_MAPPINGS_PER_CLIENT", default_value = "64", value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub max_mappings_per_client: u32,

    /// Mapping requests one client may make per second, 1 to 10000 (bursts of twice that),
    /// and as many address requests; past it mapping requests are answered 4 and address
    /// requests dropped.
    #[arg(long, env = "CLIENT_RATE_LIMIT", value_name = "CLIENT_RATE_LIMIT", default_value = "50", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub client_rate_limit: u32,

    /// The status server, the forwards API, the webhook, the status file, static mappings.
    #[command(flatten)]
    pub status: StatusArgs,

    /// The reachability self-test (REACHABILITY_CHECK, STUN_SERVERS, …).
    #[command(flatten)]
    pub reachability: crate::config::reachability::ReachabilityArgs,

    /// Give every UDP mapping a src-nat rule too, placed before the VPN interface's masquerade,
    /// so what the client sends from its internal port leaves the tunnel from the mapped port
    /// (RFC 6886 §3.9: DHT, uTP, games). Costs one more router lookup and rule per UDP mapping.
    #[arg(long, env = "UDP_SRCNAT", value_name = "UDP_SRCNAT", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub udp_srcnat: bool,

    /// Give every TCP mapping a UDP twin (same client, internal port and, when free, router
    /// port; the gateway is asked for the same external port), kept and ended with it: for
    /// clients that map only TCP but use UDP too (Transmission's uTP). Twins take gateway ports.
    #[arg(long, env = "MAP_BOTH_PROTOCOLS", value_name = "MAP_BOTH_PROTOCOLS", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub map_both_protocols: bool,
}

/// Errors found after parsing, when values are checked against each other or files are read.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The password file could not be read.
    #[error("MIKROTIK_API_PASSWORD_FILE={path}: cannot read it: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The password file is empty.
    #[error(
        "MIKROTIK_API_PASSWORD_FILE={path}: the file is empty, expected the RouterOS API password"
    )]
    EmptyPasswordFile {
        /// The file.
        path: PathBuf,
    },
    /// ROUTER_PORT_MIN > ROUTER_PORT_MAX.
    #[error("ROUTER_PORT_MIN={min} is above ROUTER_PORT_MAX={max}: expected MIN <= MAX")]
    PortRange {
        /// The minimum.
        min: u16,
        /// The maximum.
        max: u16,
    },
    /// UPSTREAM_RETRY > UPSTREAM_TIMEOUT: not even the first retransmission would happen.
    #[error("UPSTREAM_RETRY={} is above UPSTREAM_TIMEOUT={}: expected UPSTREAM_RETRY <= UPSTREAM_TIMEOUT (the first retransmission must fit in the exchange's total time)", show_duration(*retry), show_duration(*timeout))]
    RetryAboveTimeout {
        /// UPSTREAM_RETRY.
        retry: Duration,
        /// UPSTREAM_TIMEOUT.
        timeout: Duration,
    },
    /// LISTEN_ADDR is VPN_GATEWAY itself: the daemon would ask itself for mappings.
    #[error("LISTEN_ADDR={listen} is VPN_GATEWAY itself: expected the address LAN clients' requests arrive on, not the VPN gateway's")]
    ListenIsGateway {
        /// The address.
        listen: SocketAddr,
    },
    /// TLS settings that contradict each other; the text names them and what to set.
    #[error("{0}")]
    Tls(String),
    /// The API token file could not be read.
    #[error("API_TOKEN_FILE={path}: cannot read it: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The API token file holds no usable token.
    #[error("API_TOKEN_FILE={path}: {expected}")]
    BadTokenFile {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: String,
    },
    /// Status settings that do not fit together; the text names them and what to set.
    #[error("{0}")]
    Status(String),
    /// A secret and its `_FILE` variable are both set: which one counts would be a guess.
    #[error("{value} and {file} are both set: expected one or the other")]
    BothSet {
        /// The variable holding the secret itself.
        value: &'static str,
        /// The variable naming a file that holds it.
        file: &'static str,
    },
}

impl RouterArgs {
    /// The password, from MIKROTIK_API_PASSWORD or else MIKROTIK_API_PASSWORD_FILE; both set
    /// is an error.
    pub fn password(&self) -> Result<Password, ConfigError> {
        if self.mikrotik_api_password.is_some() && self.mikrotik_api_password_file.is_some() {
            return Err(ConfigError::BothSet {
                value: "MIKROTIK_API_PASSWORD",
                file: "MIKROTIK_API_PASSWORD_FILE",
            });
        }
        if let Some(p) = &self.mikrotik_api_password {
            return Ok(p.clone());
        }
        let Some(path) = &self.mikrotik_api_password_file else {
            // clap's required_unless_present makes this unreachable from the command line;
            // an empty password is what RouterOS's default admin has.
            return Ok(Password::new(""));
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::PasswordFile {
            path: path.clone(),
            source,
        })?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() {
            return Err(ConfigError::EmptyPasswordFile { path: path.clone() });
        }
        Ok(Password::new(text))
    }

    /// Checks that the TLS options fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let tls = |m: String| Err(ConfigError::Tls(m));
        let ca = self.mikrotik_api_tls_ca_file.is_some();
        let pinned = self.mikrotik_api_tls_fingerprint.is_some();
        let insecure = self.mikrotik_api_tls_insecure;
        if !self.mikrotik_api_tls {
            let set = [
                (ca, "MIKROTIK_API_TLS_CA_FILE"),
                (pinned, "MIKROTIK_API_TLS_FINGERPRINT"),
                (
                    self.mikrotik_api_tls_server_name.is_some(),
                    "MIKROTIK_API_TLS_SERVER_NAME",
                ),
                (insecure, "MIKROTIK_API_TLS_INSECURE"),
            ];
            if let Some((_, name)) = set.iter().find(|(is_set, _)| *is_set) {
                return tls(format!("{name} is set but MIKROTIK_API_TLS is false: expected MIKROTIK_API_TLS=true with it (api-ssl), or {name} unset"));
            }
            return Ok(());
        }
        if !ca && !pinned && !insecure {
            return tls("MIKROTIK_API_TLS=true: set MIKROTIK_API_TLS_CA_FILE (the CA's PEM file) or MIKROTIK_API_TLS_FINGERPRINT (SHA-256 of the router's certificate), or MIKROTIK_API_TLS_INSECURE=true to skip verification".into());
        }
        if insecure && (ca || pinned) {
            let which = if ca {
                "MIKROTIK_API_TLS_CA_FILE"
            } else {
                "MIKROTIK_API_TLS_FINGERPRINT"
            };
            return tls(format!("MIKROTIK_API_TLS_INSECURE=true turns off the certificate check that {which} asks for: expected one or the other"));
        }
        if let Some(name) = &self.mikrotik_api_tls_server_name {
            if !ca {
                return tls(format!("MIKROTIK_API_TLS_SERVER_NAME='{name}' is checked against the chain of MIKROTIK_API_TLS_CA_FILE, which is not set: expected MIKROTIK_API_TLS_CA_FILE with it (a pinned fingerprint or MIKROTIK_API_TLS_INSECURE checks no name)"));
            }
        }
        Ok(())
    }
}

impl DaemonArgs {
    /// Checks values against each other (single values were checked while parsing).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.router_port_min > self.router_port_max {
            return Err(ConfigError::PortRange {
                min: self.router_port_min,
                max: self.router_port_max,
            });
        }
        if self.upstream_retry > self.upstream_timeout {
            return Err(ConfigError::RetryAboveTimeout {
                retry: self.upstream_retry,
                timeout: self.upstream_timeout,
            });
        }
        if self.listen_addr == SocketAddr::V4(self.vpn_gateway) {
            return Err(ConfigError::ListenIsGateway {
                listen: self.listen_addr,
            });
        }
        self.status.validate(&self.allowed_clients)?;
        self.router.validate()
    }
}

impl StatusArgs {
    /// The API token, from API_TOKEN or else API_TOKEN_FILE; `None` when neither is set.
    pub fn token(&self) -> Result<Option<Password>, ConfigError> {
        if let Some(t) = &self.api_token {
            return Ok(Some(t.clone()));
        }
        let Some(path) = &self.api_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
            path: path.clone(),
            source,
        })?;
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        parse_token(line)
            .map(Some)
            .map_err(|e| ConfigError::BadTokenFile {
                path: path.clone(),
                expected: e.0,
            })
    }

    /// Checks the settings against each other and against ALLOWED_CLIENTS.
    pub fn validate(&self, allowed: &crate::cidr::CidrList) -> Result<(), ConfigError> {
        let token_set = self.api_token.is_some() || self.api_token_file.is_some();
        if self.api_token.is_some() && self.api_token_file.is_some() {
            return Err(ConfigError::BothSet {
                value: "API_TOKEN",
                file: "API_TOKEN_FILE",
            });
        }
        if token_set && self.status_addr.is_none() {
            return Err(ConfigError::Status(
                "API_TOKEN is set but STATUS_ADDR is not: expected STATUS_ADDR (such as :8080) for the forwards API to listen on".into(),
            ));
        }
        if let Some(key) = self
            .static_mappings
            .0
            .iter()
            .find(|k| !allowed.contains(k.client))
        {
            return Err(ConfigError::Status(format!(
                "STATIC_MAPPINGS has {}:{}:{}, whose client is outside ALLOWED_CLIENTS={allowed}: expected LAN clients that may ask for mappings",
                key.protocol, key.client, key.internal_port
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
