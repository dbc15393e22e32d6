//! Configuration: command-line flags, each backed by an environment variable.
//!
//! The original tool's variables keep their names and meanings (VPN_GATEWAY,
//! MIKROTIK_API_ADDRESS, MIKROTIK_API_USER, MIKROTIK_API_PASSWORD, MIKROTIK_API_TLS,
//! MIKROTIK_IN_INTERFACE, LISTEN_ADDR, LOG_LEVEL), so a user can switch without touching the
//! router. Values are parsed at the edge into typed values; a bad one stops the program with
//! one line that names the variable, the value and what is expected ([`render_error`](crate::cli::args::render_error)).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use thiserror::Error;

use crate::cidr::{parse_cidr_list, CidrList};

/// Default NAT-PMP port of the upstream gateway and of our listener.
pub const NATPMP_PORT: u16 = 5351;

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
        default_value = "admin"
    )]
    pub mikrotik_api_user: String,

    /// RouterOS API password.
    #[arg(
        long,
        env = "MIKROTIK_API_PASSWORD",
        value_name = "MIKROTIK_API_PASSWORD",
        hide_env_values = true,
        required_unless_present = "mikrotik_api_password_file"
    )]
    pub mikrotik_api_password: Option<String>,

    /// File holding the RouterOS API password (container secrets); used when
    /// MIKROTIK_API_PASSWORD is not set. A trailing newline is ignored.
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

    /// SHA-256 fingerprint of the router's api-ssl certificate (hex, colons allowed).
    #[arg(long, env = "MIKROTIK_API_TLS_FINGERPRINT", value_name = "MIKROTIK_API_TLS_FINGERPRINT", value_parser = parse_fingerprint)]
    pub mikrotik_api_tls_fingerprint: Option<Fingerprint>,

    /// Accept any api-ssl certificate without verification (a warning is logged at start).
    #[arg(long, env = "MIKROTIK_API_TLS_INSECURE", value_name = "MIKROTIK_API_TLS_INSECURE", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub mikrotik_api_tls_insecure: bool,

    /// Number of pooled RouterOS API connections.
    #[arg(long, env = "MIKROTIK_POOL_SIZE", value_name = "MIKROTIK_POOL_SIZE", default_value = "4", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub mikrotik_pool_size: u16,

    /// Time limit for connecting, logging in, and each API command.
    #[arg(long, env = "MIKROTIK_API_TIMEOUT", value_name = "MIKROTIK_API_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
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
        value_name = "MIKROTIK_IN_INTERFACE"
    )]
    pub mikrotik_in_interface: Option<String>,

    /// Where LAN clients' NAT-PMP requests arrive, [ip]:port or ip. Bind the exact address
    /// the router forwards to: replies must come from the address the request was sent to.
    #[arg(long, env = "LISTEN_ADDR", value_name = "LISTEN_ADDR", default_value = ":5351", value_parser = parse_listen_addr)]
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
    /// source are dropped silently (RFC 6886 §3.3).
    #[arg(long, env = "ALLOWED_CLIENTS", value_name = "ALLOWED_CLIENTS", default_value = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16", value_parser = parse_cidr_list)]
    pub allowed_clients: CidrList,

    /// Longest lifetime granted to a client, in seconds (the upstream may grant less).
    #[arg(long, env = "MAX_LIFETIME", value_name = "MAX_LIFETIME", default_value = "3600", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_lifetime: u32,

    /// Total time one upstream NAT-PMP exchange may take, retransmissions included.
    #[arg(long, env = "UPSTREAM_TIMEOUT", value_name = "UPSTREAM_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,

    /// First upstream retransmission interval; it doubles after each try (RFC 6886 §3.1).
    #[arg(long, env = "UPSTREAM_RETRY", value_name = "UPSTREAM_RETRY", default_value = "250ms", value_parser = parse_duration)]
    pub upstream_retry: Duration,

    /// How often the upstream's external address is asked again (also after any error).
    #[arg(long, env = "ADDRESS_REFRESH", value_name = "ADDRESS_REFRESH", default_value = "60s", value_parser = parse_duration)]
    pub address_refresh: Duration,

    /// Lowest router port used when neither the client's suggested nor its internal port is free.
    #[arg(long, env = "ROUTER_PORT_MIN", value_name = "ROUTER_PORT_MIN", default_value = "40000", value_parser = clap::value_parser!(u16).range(1..))]
    pub router_port_min: u16,

    /// Highest router port of that range.
    #[arg(long, env = "ROUTER_PORT_MAX", value_name = "ROUTER_PORT_MAX", default_value = "65000", value_parser = clap::value_parser!(u16).range(1..))]
    pub router_port_max: u16,

    /// Extra time after a granted lifetime before an unrenewed mapping is removed, so a client
    /// renewing a little late keeps its ports.
    #[arg(long, env = "EXPIRY_GRACE", value_name = "EXPIRY_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub expiry_grace: Duration,

    /// How often orphaned rules are removed and missing ones restored.
    #[arg(long, env = "RECONCILE_INTERVAL", value_name = "RECONCILE_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub reconcile_interval: Duration,

    /// Requests handled at once; past this, new requests are dropped (clients retransmit).
    #[arg(long, env = "MAX_INFLIGHT", value_name = "MAX_INFLIGHT", default_value = "256", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_inflight: u32,

    /// Time allowed at SIGTERM/SIGINT to remove every mapping from both layers.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", value_name = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything, including each packet.
    Debug,
    /// What changed.
    Info,
    /// What needs attention.
    Warn,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `host[:port]` with the port optional until the TLS setting is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port, if given.
    pub port: Option<u16>,
}

impl HostPort {
    /// `host:port`, with the API's default port (8728, or 8729 with TLS) when none was given.
    pub fn with_default_port(&self, tls: bool) -> String {
        let port = self.port.unwrap_or(if tls { 8729 } else { 8728 });
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

/// A SHA-256 certificate fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

/// A value that does not parse; the text is what is expected.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Expected(pub String);

fn expected(s: &str) -> Expected {
    Expected(s.to_owned())
}

/// `VPN_GATEWAY`: IPv4 with an optional port (default 5351).
pub fn parse_gateway(s: &str) -> Result<SocketAddrV4, Expected> {
    let want = "expected an IPv4 address such as 10.2.0.1, optionally with :port";
    let s = s.trim();
    if let Ok(ip) = Ipv4Addr::from_str(s) {
        return Ok(SocketAddrV4::new(ip, NATPMP_PORT));
    }
    SocketAddrV4::from_str(s).map_err(|_| expected(want))
}

/// `MIKROTIK_API_ADDRESS`: `host`, `host:port`, `[v6]:port` or a bare IPv6 address.
pub fn parse_host_port(s: &str) -> Result<HostPort, Expected> {
    let want = "expected host[:port], such as 172.30.254.1:8728 or router.lan";
    let s = s.trim();
    if s.is_empty() {
        return Err(expected(want));
    }
    if let Ok(sa) = SocketAddr::from_str(s) {
        return Ok(HostPort {
            host: sa.ip().to_string(),
            port: Some(sa.port()),
        });
    }
    if let Ok(ip) = IpAddr::from_str(s) {
        return Ok(HostPort {
            host: ip.to_string(),
            port: None,
        });
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| expected(want))?;
            (h, Some(port))
        }
        None => (s, None),
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !valid_host {
        return Err(expected(want));
    }
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

/// `LISTEN_ADDR`: `:port` (all IPv4 addresses, as the original tool took it), `ip:port` or `ip`.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, Expected> {
    let want = "expected [ip]:port such as :5351 or 192.168.88.250:5351";
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port = port.parse::<u16>().map_err(|_| expected(want))?;
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    if let Ok(sa) = SocketAddr::from_str(s) {
        return Ok(sa);
    }
    IpAddr::from_str(s)
        .map(|ip| SocketAddr::new(ip, NATPMP_PORT))
        .map_err(|_| expected(want))
}

/// `LOG_LEVEL`: DEBUG, INFO, WARN (or WARNING), ERROR, any case; TRACE counts as DEBUG.
pub fn parse_log_level(s: &str) -> Result<LogLevel, Expected> {
    match s.trim().to_ascii_lowercase().as_str() {
        "trace" | "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" | "warning" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        _ => Err(expected("expected one of DEBUG, INFO, WARN, ERROR")),
    }
}

/// Booleans: true/false, yes/no, 1/0, on/off (any case).
pub fn parse_bool(s: &str) -> Result<bool, Expected> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" | "" => Ok(false),
        _ => Err(expected("expected true or false")),
    }
}

/// Durations: `250ms`, `2s`, `10m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, Expected> {
    let want = "expected a duration such as 250ms, 2s, 10m or 1h (a bare number means seconds)";
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| expected(want))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(expected(want)),
    };
    Ok(d)
}

/// A SHA-256 fingerprint in hex, with or without colons.
pub fn parse_fingerprint(s: &str) -> Result<Fingerprint, Expected> {
    let want = "expected a SHA-256 fingerprint: 64 hex digits, colons allowed";
    let hex: Vec<u8> = s
        .trim()
        .bytes()
        .filter(|b| *b != b':' && *b != b' ')
        .collect();
    if hex.len() != 64 {
        return Err(expected(want));
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| expected(want))?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| expected(want))?;
    }
    Ok(Fingerprint(out))
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
    /// TLS settings that contradict each other.
    #[error("{0}")]
    Tls(String),
}

impl RouterArgs {
    /// The password, from MIKROTIK_API_PASSWORD or else MIKROTIK_API_PASSWORD_FILE.
    pub fn password(&self) -> Result<String, ConfigError> {
        if let Some(p) = &self.mikrotik_api_password {
            return Ok(p.clone());
        }
        let Some(path) = &self.mikrotik_api_password_file else {
            // clap's required_unless_present makes this unreachable from the command line;
            // an empty password is what RouterOS's default admin has.
            return Ok(String::new());
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
        Ok(text.to_owned())
    }

    /// Checks that the TLS options fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let tls_extras = self.mikrotik_api_tls_ca_file.is_some()
            || self.mikrotik_api_tls_fingerprint.is_some()
            || self.mikrotik_api_tls_insecure;
        if !self.mikrotik_api_tls && tls_extras {
            return Err(ConfigError::Tls(
                "MIKROTIK_API_TLS_CA_FILE, MIKROTIK_API_TLS_FINGERPRINT and MIKROTIK_API_TLS_INSECURE need MIKROTIK_API_TLS=true".into(),
            ));
        }
        if self.mikrotik_api_tls
            && self.mikrotik_api_tls_ca_file.is_none()
            && self.mikrotik_api_tls_fingerprint.is_none()
            && !self.mikrotik_api_tls_insecure
        {
            return Err(ConfigError::Tls(
                "MIKROTIK_API_TLS=true: set MIKROTIK_API_TLS_CA_FILE (the CA's PEM file) or MIKROTIK_API_TLS_FINGERPRINT (SHA-256 of the router's certificate), or MIKROTIK_API_TLS_INSECURE=true to skip verification".into(),
            ));
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
        self.router.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_takes_ip_or_ip_port() {
        assert_eq!(
            parse_gateway("10.2.0.1"),
            Ok("10.2.0.1:5351".parse().unwrap())
        );
        assert_eq!(
            parse_gateway("127.0.0.1:15351"),
            Ok("127.0.0.1:15351".parse().unwrap())
        );
        assert!(parse_gateway("notanip").is_err());
        assert!(parse_gateway("::1").is_err());
    }

    #[test]
    fn listen_addr_accepts_the_original_colon_port_form() {
        assert_eq!(
            parse_listen_addr(":5351"),
            Ok("0.0.0.0:5351".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("192.168.88.250:5351"),
            Ok("192.168.88.250:5351".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("192.168.88.250"),
            Ok("192.168.88.250:5351".parse().unwrap())
        );
        assert!(parse_listen_addr("x:1").is_err());
    }

    #[test]
    fn api_address_default_port_depends_on_tls() {
        let hp = parse_host_port("172.30.254.1").unwrap();
        assert_eq!(hp.with_default_port(false), "172.30.254.1:8728");
        assert_eq!(hp.with_default_port(true), "172.30.254.1:8729");
        let hp = parse_host_port("router.lan:18728").unwrap();
        assert_eq!(hp.with_default_port(true), "router.lan:18728");
        assert!(parse_host_port("bad host:1").is_err());
        assert!(parse_host_port("r:99999").is_err());
    }

    #[test]
    fn log_level_any_case() {
        assert_eq!(parse_log_level("debug"), Ok(LogLevel::Debug));
        assert_eq!(parse_log_level("Warn"), Ok(LogLevel::Warn));
        assert_eq!(parse_log_level("ERROR"), Ok(LogLevel::Error));
        assert!(parse_log_level("loud").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn fingerprint_with_colons() {
        let hex = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&hex), Ok(Fingerprint([0xAB; 32])));
        assert!(parse_fingerprint("abcd").is_err());
    }
}
