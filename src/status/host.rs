//! [`HostRule`]: which `Host` values the status server answers with data.
//!
//! A web page in a LAN browser can point a name of its own (`attacker.example`) at the
//! server's address after loading (DNS rebinding); its scripts then read the server as their
//! own origin. They can only ever send that name as `Host`, though. So the server answers:
//!
//! - with data, only a `Host` that is the address the connection arrived at (an IP literal,
//!   with or without a port), `localhost` on a loopback connection, or a name or address in
//!   STATUS_HOSTNAMES; any other (or none, or two) gets 421 and no data;
//! - `/healthz` (which says only "ok") whatever the `Host`;
//! - `/readyz` (the checks) also for any IP literal, so a health probe that sends the address
//!   it was given works behind a published container port: no rebinding page can send one.
//!
//! The port of `Host` is not compared: a published port may differ from the listener's.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hyper::header::HOST;
use hyper::Request;

use crate::config::status::StatusHostnames;

/// What a request's `Host` is allowed to see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Every route.
    All,
    /// `/healthz` and `/readyz` only: an IP literal of another address.
    Probes,
    /// `/healthz` only.
    Health,
}

/// The `Host` values the server answers (see the module's rules).
#[derive(Clone, Debug, Default)]
pub(crate) struct HostRule {
    names: Vec<String>,
}

impl HostRule {
    /// The rule with STATUS_HOSTNAMES.
    pub(crate) fn new(names: &StatusHostnames) -> HostRule {
        HostRule {
            names: names.0.clone(),
        }
    }

    /// What a request that arrived at `local` may see.
    pub(crate) fn reach<B>(&self, req: &Request<B>, local: SocketAddr) -> Reach {
        // The authority of an absolute-form target wins over Host (RFC 9112 §3.2.2).
        let host = match req.uri().authority() {
            Some(a) => Some(a.as_str().to_owned()),
            None => {
                let mut all = req.headers().get_all(HOST).iter();
                match (all.next(), all.next()) {
                    (Some(one), None) => one.to_str().ok().map(str::to_owned),
                    _ => None,
                }
            }
        };
        match host.as_deref().and_then(split_host) {
            Some(host) => self.reach_of(&host, local),
            None => Reach::Health,
        }
    }

    /// What a `Host` of `host` (without its port) may see at `local`.
    fn reach_of(&self, host: &str, local: SocketAddr) -> Reach {
        let local_ip = local.ip().to_canonical();
        match IpAddr::from_str(host) {
            Ok(ip) => {
                let ip = ip.to_canonical();
                if ip == local_ip || self.names.contains(&ip.to_string()) {
                    Reach::All
                } else {
                    Reach::Probes
                }
            }
            Err(_) => {
                let name = host.trim_end_matches('.').to_ascii_lowercase();
                if self.names.contains(&name) || (name == "localhost" && local_ip.is_loopback()) {
                    Reach::All
                } else {
                    Reach::Health
                }
            }
        }
    }
}

/// The host of a `Host` value: without its port, an IPv6 literal without its brackets.
/// `None` when it is not of that form.
fn split_host(value: &str) -> Option<String> {
    let port_ok = |p: &str| p.is_empty() || p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = value.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after {
            "" => "",
            p => p.strip_prefix(':')?,
        };
        return (port_ok(port) && ip.parse::<std::net::Ipv6Addr>().is_ok()).then(|| ip.to_owned());
    }
    let host = match value.rsplit_once(':') {
        Some((h, p)) if port_ok(p) => h,
        Some(_) => return None,
        None => value,
    };
    (!host.is_empty() && !host.contains(':')).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(names: &str, host: &str, local: &str) -> Reach {
        let names = crate::config::status::parse_hostnames(names).unwrap();
        let req = Request::builder()
            .uri("/api/v1/mappings")
            .header(HOST, host)
            .body(())
            .unwrap();
        HostRule::new(&names).reach(&req, local.parse().unwrap())
    }

    #[test]
    fn own_address_listed_names_and_loopback_localhost_see_everything() {
        let local = "192.168.88.250:8080";
        assert_eq!(reach("", "192.168.88.250:8080", local), Reach::All);
        assert_eq!(reach("", "192.168.88.250", local), Reach::All);
        assert_eq!(reach("", "192.168.88.250:18080", local), Reach::All);
        assert_eq!(reach("natpmp.lan", "NatPmp.Lan.:8080", local), Reach::All);
        assert_eq!(reach("natpmp.lan", "natpmp.lan", local), Reach::All);
        assert_eq!(reach("10.0.0.5", "10.0.0.5:8081", local), Reach::All);
        assert_eq!(reach("", "[::1]:8080", "[::1]:8080"), Reach::All);
        assert_eq!(
            reach("", "127.0.0.1", "[::ffff:127.0.0.1]:8080"),
            Reach::All
        );
        assert_eq!(reach("", "localhost:8080", "127.0.0.1:8080"), Reach::All);
    }

    #[test]
    fn other_names_see_only_health_and_other_addresses_the_probes() {
        let local = "192.168.88.250:8080";
        assert_eq!(
            reach("natpmp.lan", "attacker.example", local),
            Reach::Health
        );
        assert_eq!(reach("", "attacker.example:8080", local), Reach::Health);
        assert_eq!(reach("", "localhost", local), Reach::Health);
        assert_eq!(
            reach("", "natpmp.lan.attacker.example", local),
            Reach::Health
        );
        assert_eq!(reach("", "192.168.88.250:80x", local), Reach::Health);
        assert_eq!(reach("", "", local), Reach::Health);
        assert_eq!(reach("", "10.0.0.5:8080", local), Reach::Probes);
        // Two Host headers, or none: only the health answer.
        let req = Request::builder()
            .uri("/")
            .header(HOST, "192.168.88.250")
            .header(HOST, "attacker.example")
            .body(())
            .unwrap();
        let rule = HostRule::default();
        assert_eq!(rule.reach(&req, local.parse().unwrap()), Reach::Health);
        let req = Request::builder().uri("/").body(()).unwrap();
        assert_eq!(rule.reach(&req, local.parse().unwrap()), Reach::Health);
    }
}
