//! One setting's value: its type and how it is parsed from the text of a flag or environment
//! variable. Every parser refuses what cannot work with an [`Expected`] that says what would
//! (clap adds the variable's name and the value: `error: VPN_GATEWAY='x': expected …`).
//!
//! Durations have documented bounds ([`MAX_TIMEOUT`], [`MIN_INTERVAL`], [`MAX_INTERVAL`]): a
//! zero timeout or interval cannot work, and a huge one would overflow the `Instant + Duration`
//! arithmetic of deadlines (which panics).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use rustls_pki_types::ServerName;
use thiserror::Error;

use crate::routeros::conn::Password;

/// Default NAT-PMP port of the upstream gateway and of our listener.
pub(crate) const NATPMP_PORT: u16 = 5351;

/// Longest timeout (MIKROTIK_API_TIMEOUT, UPSTREAM_TIMEOUT, UPSTREAM_RETRY, SHUTDOWN_TIMEOUT,
/// EXPIRY_GRACE, and the subcommands' `--timeout`): one day.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Shortest timeout: 1 ms (zero cannot work).
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// Shortest interval of a periodic task (ADDRESS_REFRESH, RECONCILE_INTERVAL): one second;
/// asking the router or the gateway more often helps nobody.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest interval of a periodic task: one week.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest MAX_LIFETIME, in seconds: one week.
pub(crate) const MAX_LIFETIME_LIMIT: u32 = 7 * 24 * 3600;

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
    /// The port, if given (never 0).
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
pub(crate) struct Expected(pub String);

fn expected(s: &str) -> Expected {
    Expected(s.to_owned())
}

/// `VPN_GATEWAY`: IPv4 with an optional port (default 5351); a unicast address and a port
/// other than 0.
pub(crate) fn parse_gateway(s: &str) -> Result<SocketAddrV4, Expected> {
    let want = "expected the gateway's IPv4 address such as 10.2.0.1, optionally with :port";
    let s = s.trim();
    let addr = match Ipv4Addr::from_str(s) {
        Ok(ip) => SocketAddrV4::new(ip, NATPMP_PORT),
        Err(_) => SocketAddrV4::from_str(s).map_err(|_| expected(want))?,
    };
    let ip = addr.ip();
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || addr.port() == 0 {
        return Err(expected(want));
    }
    Ok(addr)
}

/// `MIKROTIK_API_ADDRESS`: `host`, `host:port`, `[v6]:port` or a bare IPv6 address; port not 0.
pub(crate) fn parse_host_port(s: &str) -> Result<HostPort, Expected> {
    let want = "expected host[:port], such as 172.30.254.1:8728 or router.lan";
    let s = s.trim();
    if s.is_empty() {
        return Err(expected(want));
    }
    if let Ok(sa) = SocketAddr::from_str(s) {
        if sa.port() == 0 {
            return Err(expected(want));
        }
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

/// `LISTEN_ADDR` of `health`: `:port` (all IPv4 addresses, as the original tool took it),
/// `ip:port` or `ip`.
pub(crate) fn parse_listen_addr(s: &str) -> Result<SocketAddr, Expected> {
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

/// The daemon's `LISTEN_ADDR`: as [`parse_listen_addr`], IPv4 only (NAT-PMP is IPv4; an IPv6
/// socket would see every client as a foreign address and drop it).
pub(crate) fn parse_natpmp_listen_addr(s: &str) -> Result<SocketAddr, Expected> {
    let want =
        "expected an IPv4 [ip]:port such as :5351 or 192.168.88.250:5351 (NAT-PMP is IPv4 only)";
    match parse_listen_addr(s) {
        Ok(addr @ SocketAddr::V4(_)) => Ok(addr),
        _ => Err(expected(want)),
    }
}

/// The address to reach a socket bound to `addr` from this host: an unspecified address
/// (`0.0.0.0` or `::`) replaced by 127.0.0.1, any other left as it is.
pub(crate) fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
    } else {
        addr
    }
}

/// `LOG_LEVEL`: DEBUG, INFO, WARN (or WARNING), ERROR, any case; TRACE counts as DEBUG.
pub(crate) fn parse_log_level(s: &str) -> Result<LogLevel, Expected> {
    match s.trim().to_ascii_lowercase().as_str() {
        "trace" | "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" | "warning" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        _ => Err(expected("expected one of DEBUG, INFO, WARN, ERROR")),
    }
}

/// Booleans: true/false, yes/no, 1/0, on/off (any case).
pub(crate) fn parse_bool(s: &str) -> Result<bool, Expected> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" | "" => Ok(false),
        _ => Err(expected("expected true or false")),
    }
}

const DURATION_FORMS: &str = "such as 250ms, 2s, 10m, 1h or 1d (a bare number means seconds)";

/// Durations: `250ms`, `2s`, `10m`, `1h`, `1d`, or a bare number of seconds. A value too large
/// for a [`Duration`] is refused, not saturated; the settings' own bounds come on top
/// ([`parse_timeout`], [`parse_grace`], [`parse_interval`]).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, Expected> {
    let want = format!("expected a duration {DURATION_FORMS}");
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| Expected(want.clone()))?;
    let seconds = |per: u64| n.checked_mul(per).map(Duration::from_secs);
    let d = match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(24 * 3600),
        _ => None,
    };
    d.ok_or(Expected(want))
}

/// A duration within `min..=max`.
pub(crate) fn parse_duration_within(
    s: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, Expected> {
    let out_of_range = || {
        Expected(format!(
            "expected a duration from {} to {}, {DURATION_FORMS}",
            show_duration(min),
            show_duration(max)
        ))
    };
    let d = parse_duration(s).map_err(|_| out_of_range())?;
    if d < min || d > max {
        return Err(out_of_range());
    }
    Ok(d)
}

/// A timeout: 1 ms to 1 day.
pub(crate) fn parse_timeout(s: &str) -> Result<Duration, Expected> {
    parse_duration_within(s, MIN_TIMEOUT, MAX_TIMEOUT)
}

/// A grace period: 0 to 1 day.
pub(crate) fn parse_grace(s: &str) -> Result<Duration, Expected> {
    parse_duration_within(s, Duration::ZERO, MAX_TIMEOUT)
}

/// The longest CREATE_PATIENCE: a minute (a client gives up long before).
pub(crate) const MAX_PATIENCE: Duration = Duration::from_secs(60);

/// CREATE_PATIENCE: 0 to 1 minute.
pub(crate) fn parse_patience(s: &str) -> Result<Duration, Expected> {
    parse_duration_within(s, Duration::ZERO, MAX_PATIENCE)
}

/// The interval of a periodic task: 1 s to 1 week.
pub(crate) fn parse_interval(s: &str) -> Result<Duration, Expected> {
    parse_duration_within(s, MIN_INTERVAL, MAX_INTERVAL)
}

/// A duration in the largest unit that shows it exactly (`1d`, `10m`, `250ms`).
pub(crate) fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// A SHA-256 fingerprint in hex, with or without colons.
pub(crate) fn parse_fingerprint(s: &str) -> Result<Fingerprint, Expected> {
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

/// MIKROTIK_API_TLS_SERVER_NAME: a DNS name or an IP address, as the certificate names it.
pub(crate) fn parse_server_name(s: &str) -> Result<String, Expected> {
    let s = s.trim();
    match ServerName::try_from(s) {
        Ok(_) => Ok(s.to_owned()),
        Err(_) => Err(expected(
            "expected the DNS name or IP address the router's certificate carries, such as router.lan",
        )),
    }
}

/// A name that must not be empty (MIKROTIK_API_USER, MIKROTIK_IN_INTERFACE).
pub(crate) fn parse_name(s: &str) -> Result<String, Expected> {
    let s = s.trim();
    if s.is_empty() {
        return Err(expected("expected a name, not an empty value"));
    }
    Ok(s.to_owned())
}

/// A password, kept in a type whose `Debug` and `Display` never show it.
pub(crate) fn parse_password(s: &str) -> Result<Password, Expected> {
    Ok(Password::new(s))
}
