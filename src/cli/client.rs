//! `double-natpmp client`: a small NAT-PMP client for users on a LAN host, like `natpmpc`.
//!
//! It asks the gateway (by default the host's default gateway, read from `/proc/net/route`) for
//! the external address, maps a TCP or UDP port, or deletes a mapping, and prints the answer for
//! a person or, with `--json`, as one JSON object. Exit status: 0 on success, 1 when the gateway
//! answers with an error or does not answer, 2 on a usage error.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::value::{parse_gateway, parse_timeout, NATPMP_PORT};
use crate::natpmp::upstream::{
    Upstream, UpstreamClient, UpstreamConfig, UpstreamError, UpstreamMap,
};
use double_natpmp_codec::natpmp::wire::ResultCode;

use double_natpmp_codec::protocol::Protocol;
/// `double-natpmp client` options.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The NAT-PMP gateway, IPv4[:port]; default: this host's default gateway, port 5351.
    #[arg(long, short = 'g', value_parser = parse_gateway)]
    pub gateway: Option<SocketAddrV4>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for an answer, retransmissions included (RFC 6886 §3.1 timing; 1ms to
    /// 1d).
    #[arg(long, default_value = "3s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// What to ask.
    #[command(subcommand)]
    pub action: ClientAction,
}

/// What `client` asks the gateway.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientAction {
    /// Show the gateway's external (public) address.
    Address,
    /// Map a port: the gateway forwards an external port to INTERNAL_PORT on this host.
    Map {
        /// tcp or udp.
        #[arg(value_parser = parse_protocol)]
        protocol: Protocol,
        /// The port on this host that should receive the traffic.
        internal_port: u16,
        /// The external port you would like (the gateway may give another); 0 = any.
        #[arg(long, short = 'e', default_value = "0")]
        external_port: u16,
        /// Requested lifetime in seconds (the gateway may grant less); renew before it ends.
        #[arg(long, short = 'l', default_value = "7200", value_parser = clap::value_parser!(u32).range(1..))]
        lifetime: u32,
    },
    /// Delete the mapping of INTERNAL_PORT (0 deletes all of this host's mappings of PROTOCOL).
    Delete {
        /// tcp or udp.
        #[arg(value_parser = parse_protocol)]
        protocol: Protocol,
        /// The port on this host the mapping forwards to.
        internal_port: u16,
    },
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(&s.to_ascii_lowercase()).ok_or_else(|| "expected tcp or udp".to_owned())
}

/// Runs `client`.
pub(crate) async fn run(args: ClientArgs) -> ExitCode {
    let gateway = match args.gateway {
        Some(g) => g,
        None => match std::fs::read_to_string("/proc/net/route")
            .ok()
            .and_then(|t| default_gateway(&t))
        {
            Some(ip) => SocketAddrV4::new(ip, NATPMP_PORT),
            None => {
                eprintln!("error: cannot find this host's default gateway in /proc/net/route; give it with --gateway <ip>");
                return ExitCode::from(2);
            }
        },
    };
    let client = UpstreamClient::new(UpstreamConfig {
        budget: args.timeout,
        ..UpstreamConfig::new(gateway)
    });
    let outcome = match args.action {
        ClientAction::Address => client.external_address().await.map(|a| Output::Address {
            epoch: a.epoch,
            address: a.address,
        }),
        ClientAction::Map {
            protocol,
            internal_port,
            external_port,
            lifetime,
        } => client
            .map(UpstreamMap {
                protocol,
                internal_port,
                suggested_external_port: external_port,
                lifetime,
            })
            .await
            .map(|g| Output::Map {
                protocol,
                epoch: g.epoch,
                internal_port: g.internal_port,
                external_port: g.external_port,
                lifetime: g.lifetime,
            }),
        ClientAction::Delete {
            protocol,
            internal_port,
        } => client
            .map(UpstreamMap::delete(protocol, internal_port))
            .await
            .map(|g| Output::Deleted {
                protocol,
                epoch: g.epoch,
                internal_port,
            }),
    };
    match outcome {
        Ok(out) => {
            if args.json {
                println!("{}", out.json(gateway));
            } else {
                println!("{}", out.text(gateway));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = match &e {
                UpstreamError::Rejected { result, .. } => Some(result.to_u16()),
                UpstreamError::UnknownResult { code, .. } => Some(*code),
                _ => None,
            };
            let message = error_text(&e);
            if args.json {
                let mut obj = Json::new();
                obj.str("gateway", &gateway.to_string());
                obj.str("error", &message);
                if let Some(code) = code {
                    obj.num("result_code", u64::from(code));
                }
                println!("{}", obj.finish());
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What the gateway granted.
enum Output {
    Address {
        epoch: u32,
        address: Ipv4Addr,
    },
    Map {
        protocol: Protocol,
        epoch: u32,
        internal_port: u16,
        external_port: u16,
        lifetime: u32,
    },
    Deleted {
        protocol: Protocol,
        epoch: u32,
        internal_port: u16,
    },
}

impl Output {
    fn text(&self, gateway: SocketAddrV4) -> String {
        match self {
            Output::Address { epoch, address } => format!(
                "gateway {gateway}: public address {address} (epoch {epoch})"
            ),
            Output::Map {
                protocol,
                epoch,
                internal_port,
                external_port,
                lifetime,
            } => format!(
                "gateway {gateway}: mapped public port {external_port} protocol {} to local port {internal_port}, lifetime {lifetime} s (epoch {epoch})",
                protocol.as_str().to_ascii_uppercase()
            ),
            Output::Deleted {
                protocol,
                epoch,
                internal_port,
            } => format!(
                "gateway {gateway}: deleted the {} mapping of local port {internal_port} (epoch {epoch})",
                protocol.as_str().to_ascii_uppercase()
            ),
        }
    }

    fn json(&self, gateway: SocketAddrV4) -> String {
        let mut obj = Json::new();
        obj.str("gateway", &gateway.to_string());
        match self {
            Output::Address { epoch, address } => {
                obj.str("action", "address");
                obj.num("epoch", u64::from(*epoch));
                obj.str("external_address", &address.to_string());
            }
            Output::Map {
                protocol,
                epoch,
                internal_port,
                external_port,
                lifetime,
            } => {
                obj.str("action", "map");
                obj.str("protocol", protocol.as_str());
                obj.num("epoch", u64::from(*epoch));
                obj.num("internal_port", u64::from(*internal_port));
                obj.num("external_port", u64::from(*external_port));
                obj.num("lifetime", u64::from(*lifetime));
            }
            Output::Deleted {
                protocol,
                epoch,
                internal_port,
            } => {
                obj.str("action", "delete");
                obj.str("protocol", protocol.as_str());
                obj.num("epoch", u64::from(*epoch));
                obj.num("internal_port", u64::from(*internal_port));
            }
        }
        obj.finish()
    }
}

/// The error in words, with the result code's meaning and what to try.
fn error_text(e: &UpstreamError) -> String {
    match e {
        UpstreamError::Rejected { gateway, result } => {
            format!(
                "gateway {gateway} answered result code {result}: {}",
                result_hint(*result)
            )
        }
        UpstreamError::UnknownResult { gateway, code } => format!(
            "gateway {gateway} answered result code {code}, which RFC 6886 does not define"
        ),
        UpstreamError::Timeout { gateway, after } => format!(
            "no NAT-PMP answer from {gateway} within {after:?}: is this the right gateway, and does it run NAT-PMP (on a MikroTik: the double-natpmp container and its UDP 5351 redirect)?"
        ),
        UpstreamError::Refused { gateway } => format!(
            "{gateway} refused NAT-PMP (ICMP port unreachable): nothing listens on that port; check the router's UDP 5351 redirect to double-natpmp"
        ),
        other => other.to_string(),
    }
}

/// What a failure result code means for the user (RFC 6886 §3.5).
fn result_hint(result: ResultCode) -> &'static str {
    match result {
        ResultCode::Success => "success",
        ResultCode::UnsupportedVersion => "the gateway does not speak NAT-PMP version 0",
        ResultCode::NotAuthorized => {
            "the gateway refused: NAT-PMP may be disabled, or this host is not allowed to map ports"
        }
        ResultCode::NetworkFailure => {
            "the gateway cannot reach its upstream (the VPN or the router API may be down); try again later"
        }
        ResultCode::OutOfResources => {
            "no port is free or this host has used its quota of mappings; delete one you no longer need"
        }
        ResultCode::UnsupportedOpcode => "the gateway does not support this request",
    }
}

/// The default gateway in the text of `/proc/net/route`: the first route to 0.0.0.0/0 that is
/// up and has a gateway. The kernel prints addresses as host-order hex (little-endian here).
pub(crate) fn default_gateway(proc_net_route: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    proc_net_route.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw, flags, mask) = (
            fields.get(1)?,
            fields.get(2)?,
            fields.get(3)?,
            fields.get(7)?,
        );
        let dest = u32::from_str_radix(dest, 16).ok()?;
        let mask = u32::from_str_radix(mask, 16).ok()?;
        let flags = u32::from_str_radix(flags, 16).ok()?;
        let gw = u32::from_str_radix(gw, 16).ok()?;
        (dest == 0 && mask == 0 && flags & RTF_UP != 0 && flags & RTF_GATEWAY != 0 && gw != 0)
            .then(|| Ipv4Addr::from(gw.to_le_bytes()))
    })
}

/// A flat JSON object written by hand: a few fields in the order they are added, no more
/// machinery needed.
struct Json(String);

impl Json {
    fn new() -> Json {
        Json(String::from("{"))
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        push_json_string(&mut self.0, key);
        self.0.push(':');
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(&mut self.0, value);
    }

    fn num(&mut self, key: &str, value: u64) {
        self.key(key);
        self.0.push_str(&value.to_string());
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Appends `s` as a JSON string literal (RFC 8259 §7 escaping).
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t0058A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
        eth0\t00000000\t0158A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";

    #[test]
    fn default_gateway_is_read_from_proc_net_route() {
        assert_eq!(default_gateway(ROUTE), Some(Ipv4Addr::new(192, 168, 88, 1)));
    }

    #[test]
    fn no_default_route_means_no_gateway() {
        let only_lan = ROUTE.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(default_gateway(&only_lan), None);
        assert_eq!(default_gateway(""), None);
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut obj = Json::new();
        obj.str("error", "a \"quoted\" \\ path\nnext\u{1}");
        obj.num("n", 7);
        assert_eq!(
            obj.finish(),
            r#"{"error":"a \"quoted\" \\ path\nnext\u0001","n":7}"#
        );
    }
}
