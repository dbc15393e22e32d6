//! The settings of what shows the daemon to people and scripts ([`StatusArgs`]): the HTTP status
//! server (STATUS_ADDR), its forwards API (API_TOKEN, API_TOKEN_FILE), the webhook (WEBHOOK_*),
//! the status file (STATUS_FILE) and the static reservations (STATIC_MAPPINGS). All are off
//! unless set.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use hyper::Uri;

use crate::config::value::{
    parse_duration_within, parse_listen_addr, parse_timeout, Expected, MIN_TIMEOUT,
};
use crate::mapping::store::lease::MappingKey;
use crate::routeros::conn::Password;
use double_natpmp_codec::protocol::Protocol;

/// The status server, its API, the webhook, the status file and the static reservations.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Where the HTTP status server listens, [ip]:port such as :8080 (the page at /, /healthz,
    /// /readyz, /metrics, /api/v1/…). Off when not set.
    #[arg(long, env = "STATUS_ADDR", value_name = "STATUS_ADDR", value_parser = parse_status_addr)]
    pub status_addr: Option<SocketAddr>,

    /// The bearer token that turns on POST/DELETE /api/v1/forwards (needs STATUS_ADDR): at least
    /// 16 characters, no spaces. Off when neither this nor API_TOKEN_FILE is set; setting both
    /// is an error.
    #[arg(long, env = "API_TOKEN", value_name = "API_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub api_token: Option<Password>,

    /// File holding the API token, instead of API_TOKEN (setting both is an error). A trailing
    /// newline is ignored.
    #[arg(long, env = "API_TOKEN_FILE", value_name = "API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,

    /// An http:// URL that receives a JSON POST when a mapping is created, changes its external
    /// port or is removed, and when the upstream is lost or healed. Off when not set.
    #[arg(long, env = "WEBHOOK_URL", value_name = "WEBHOOK_URL", value_parser = parse_webhook_url)]
    pub webhook_url: Option<WebhookUrl>,

    /// Time limit for one webhook delivery: connect, send, and the receiver's answer (1ms to 1d).
    #[arg(long, env = "WEBHOOK_TIMEOUT", value_name = "WEBHOOK_TIMEOUT", default_value = "5s", value_parser = parse_timeout)]
    pub webhook_timeout: Duration,

    /// How often a failed webhook delivery is tried again, 0 to 20.
    #[arg(long, env = "WEBHOOK_RETRIES", value_name = "WEBHOOK_RETRIES", default_value = "5", value_parser = clap::value_parser!(u32).range(0..=20))]
    pub webhook_retries: u32,

    /// Pause before the first webhook retry; it doubles after each, up to 1m (1ms to 1m).
    #[arg(long, env = "WEBHOOK_BACKOFF", value_name = "WEBHOOK_BACKOFF", default_value = "1s", value_parser = parse_backoff)]
    pub webhook_backoff: Duration,

    /// Webhook events waiting for delivery, 1 to 65536; when full, new events are dropped and
    /// counted in /metrics.
    #[arg(long, env = "WEBHOOK_QUEUE", value_name = "WEBHOOK_QUEUE", default_value = "256", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub webhook_queue: u32,

    /// Host names the status server answers to besides its own IP address, comma-separated
    /// such as natpmp.lan,router.home.arpa (IP addresses may be listed too, such as the host's
    /// when a container's port is published). A request whose Host header is any other name
    /// gets 421 and no data, so a web page cannot rebind a name of its own to the server and
    /// read it. /healthz answers every Host, /readyz any IP address too.
    #[arg(long, env = "STATUS_HOSTNAMES", value_name = "STATUS_HOSTNAMES", default_value = "", hide_default_value = true, value_parser = parse_hostnames)]
    pub status_hostnames: StatusHostnames,

    /// Longest time one connection to the status server stays open, busy or idle (1s to 1h);
    /// then it is closed, a response in progress given one second more. Clients that never
    /// read or never finish a request cannot hold the server's 64 connections longer.
    #[arg(long, env = "STATUS_CONNECTION_TIMEOUT", value_name = "STATUS_CONNECTION_TIMEOUT", default_value = "30s", value_parser = parse_connection_timeout)]
    pub status_connection_timeout: Duration,

    /// A file that holds the current mappings as JSON, replaced atomically (a temporary file,
    /// then a rename) at each change, at most once a second. Off when not set.
    #[arg(long, env = "STATUS_FILE", value_name = "STATUS_FILE")]
    pub status_file: Option<PathBuf>,

    /// Mappings the daemon keeps itself, comma-separated protocol:client:port such as
    /// tcp:192.168.88.20:32400; they never expire and are made again after any loss. Each
    /// client must lie inside ALLOWED_CLIENTS, or the daemon refuses to start.
    #[arg(long, env = "STATIC_MAPPINGS", value_name = "STATIC_MAPPINGS", default_value = "", hide_default_value = true, value_parser = parse_static_mappings)]
    pub static_mappings: StaticMappings,
}

/// WEBHOOK_URL: an absolute `http://` URL with a host. `Display` and `Debug` show it
/// [`redacted`](redact_url): a Home Assistant webhook id in the path is a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(pub Uri);

impl std::fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WebhookUrl")
            .field(&redact_url(&self.0))
            .finish()
    }
}

/// A URL as logs may show it: scheme, host and port, then `/***` in place of the path and the
/// query (which may hold a secret, like a Home Assistant webhook id). A user name or password
/// before the host is left out too.
pub(crate) fn redact_url(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or_default();
    match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}/***"),
        None => format!("{scheme}://{host}/***"),
    }
}

/// STATUS_HOSTNAMES: host names (lower case, without a trailing dot) and IP addresses (in
/// their canonical text) the status server answers to besides its own address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusHostnames(pub Vec<String>);

/// STATIC_MAPPINGS: the keys of the mappings the daemon keeps alive itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticMappings(pub Vec<MappingKey>);

/// The longest pause between two webhook tries.
pub(crate) const MAX_WEBHOOK_BACKOFF: Duration = Duration::from_secs(60);

/// `STATUS_ADDR`: `:port`, `ip:port` or `[v6]:port`; a port must be given (there is no
/// standard one).
pub(crate) fn parse_status_addr(s: &str) -> Result<SocketAddr, Expected> {
    let want = "expected [ip]:port such as :8080 or 192.168.88.250:8080";
    let s = s.trim();
    if std::net::IpAddr::from_str(s).is_ok() {
        return Err(Expected(want.to_owned()));
    }
    parse_listen_addr(s).map_err(|_| Expected(want.to_owned()))
}

/// The longest STATUS_CONNECTION_TIMEOUT: an hour.
pub(crate) const MAX_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// `STATUS_CONNECTION_TIMEOUT`: 1 s to 1 h.
pub(crate) fn parse_connection_timeout(s: &str) -> Result<Duration, Expected> {
    parse_duration_within(s, Duration::from_secs(1), MAX_CONNECTION_TIMEOUT)
}

/// `STATUS_HOSTNAMES`: host names or IP addresses, comma-separated, without ports; empty means
/// none. Names are kept in lower case without a trailing dot, addresses in canonical text.
pub(crate) fn parse_hostnames(s: &str) -> Result<StatusHostnames, Expected> {
    let want = "expected host names or IP addresses without a port, comma-separated, such as natpmp.lan,192.168.88.250";
    let mut names: Vec<String> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bare = item.strip_prefix('[').and_then(|i| i.strip_suffix(']'));
        let name = if let Ok(ip) = std::net::IpAddr::from_str(bare.unwrap_or(item)) {
            ip.to_canonical().to_string()
        } else if is_dns_name(item) {
            item.trim_end_matches('.').to_ascii_lowercase()
        } else {
            return Err(Expected(format!("{want}; '{item}' is not")));
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(StatusHostnames(names))
}

/// A DNS name (the same check as a TLS server name's).
fn is_dns_name(s: &str) -> bool {
    matches!(
        rustls_pki_types::ServerName::try_from(s),
        Ok(rustls_pki_types::ServerName::DnsName(_))
    )
}

/// `WEBHOOK_BACKOFF`: 1 ms to 1 minute.
pub(crate) fn parse_backoff(s: &str) -> Result<Duration, Expected> {
    parse_duration_within(s, MIN_TIMEOUT, MAX_WEBHOOK_BACKOFF)
}

/// `WEBHOOK_URL`: `http://host[:port]/path`; https is refused (no TLS client for it here).
pub(crate) fn parse_webhook_url(s: &str) -> Result<WebhookUrl, Expected> {
    let want = "expected an http:// URL such as http://192.168.88.5:8123/api/webhook/natpmp (https is not supported: point it at a local receiver or a TLS proxy)";
    let uri = Uri::from_str(s.trim()).map_err(|_| Expected(want.to_owned()))?;
    let http = uri.scheme_str() == Some("http");
    let host = uri.host().is_some_and(|h| !h.is_empty());
    if !http || !host || uri.port_u16() == Some(0) {
        return Err(Expected(want.to_owned()));
    }
    Ok(WebhookUrl(uri))
}

/// Shortest API token accepted: a shorter one could be guessed.
pub(crate) const MIN_TOKEN_LEN: usize = 16;

/// `API_TOKEN`: at least [`MIN_TOKEN_LEN`] characters, without spaces or control characters.
/// The error never repeats the value.
pub(crate) fn parse_token(s: &str) -> Result<Password, Expected> {
    let s = s.trim();
    if s.chars().count() < MIN_TOKEN_LEN || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Expected(format!(
            "expected a token of at least {MIN_TOKEN_LEN} characters without spaces, such as the output of `openssl rand -hex 32`"
        )));
    }
    Ok(Password::new(s))
}

/// `STATIC_MAPPINGS`: `protocol:client:port` items, comma-separated; empty means none.
pub(crate) fn parse_static_mappings(s: &str) -> Result<StaticMappings, Expected> {
    let want = "expected protocol:client:port items, comma-separated, such as tcp:192.168.88.20:32400,udp:192.168.88.20:32400 (port 1 to 65535)";
    let mut keys: Vec<MappingKey> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let mut parts = item.split(':');
        let (Some(proto), Some(client), Some(port), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Expected(format!("{want}; '{item}' is not")));
        };
        let protocol = Protocol::parse(proto.trim());
        let client = Ipv4Addr::from_str(client.trim()).ok();
        let port = port.trim().parse::<u16>().ok().filter(|p| *p != 0);
        let (Some(protocol), Some(client), Some(internal_port)) = (protocol, client, port) else {
            return Err(Expected(format!("{want}; '{item}' is not")));
        };
        let key = MappingKey {
            client,
            protocol,
            internal_port,
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(StaticMappings(keys))
}
