//! `double-natpmp status`: the running daemon's mappings, read from its status server
//! (`GET /api/v1/mappings` at STATUS_ADDR, 127.0.0.1 when that is unspecified), printed as a
//! table, or as the server's JSON with `--json`. Without STATUS_ADDR it says how to turn the
//! server on. Exit 0 on an answer, 1 when there is no server to ask or it does not answer.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use hyper::{Method, StatusCode, Uri};
use serde_json::Value;

use crate::config::status::parse_status_addr;
use crate::config::value::{loopback_if_unspecified, parse_timeout};
use crate::status::client;

/// `double-natpmp status` options.
#[derive(Debug, Clone, Args)]
pub struct StatusCmdArgs {
    /// The daemon's status server (the same STATUS_ADDR the daemon uses).
    #[arg(long, env = "STATUS_ADDR", value_name = "STATUS_ADDR", value_parser = parse_status_addr)]
    pub status_addr: Option<SocketAddr>,
    /// Print the JSON of /api/v1/mappings instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the answer (1ms to 1d).
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// One mapping as the API gives it (only what the table shows).
#[derive(Debug)]
struct Row {
    client: Ipv4Addr,
    protocol: String,
    internal_port: u16,
    router_port: u16,
    external_address: Option<Ipv4Addr>,
    external_port: u16,
    lifetime_left: Option<u64>,
    origin: String,
}

impl Row {
    /// The row of one element of `/api/v1/mappings`; `None` when it is not a mapping.
    fn from_json(v: &Value) -> Option<Row> {
        let text = |k: &str| v.get(k).and_then(Value::as_str);
        let port = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
        };
        Some(Row {
            client: text("client")?.parse().ok()?,
            protocol: text("protocol")?.to_owned(),
            internal_port: port("internal_port")?,
            router_port: port("router_port")?,
            external_address: text("external_address").and_then(|a| a.parse().ok()),
            external_port: port("external_port")?,
            lifetime_left: v.get("lifetime_left").and_then(Value::as_u64),
            origin: text("origin")?.to_owned(),
        })
    }
}

/// The table of `rows`, one line each, under a header.
fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<5} {:<22} {:<22} {:>6}  {:<7} {}\n",
        "PROTO", "CLIENT", "EXTERNAL", "ROUTER", "ORIGIN", "LEFT"
    );
    for r in rows {
        let external = match r.external_address {
            Some(a) => format!("{a}:{}", r.external_port),
            None => format!("?:{}", r.external_port),
        };
        let left = r
            .lifetime_left
            .map_or_else(|| "never expires".to_owned(), |s| format!("{s}s"));
        out.push_str(&format!(
            "{:<5} {:<22} {:<22} {:>6}  {:<7} {}\n",
            r.protocol,
            format!("{}:{}", r.client, r.internal_port),
            external,
            r.router_port,
            r.origin,
            left
        ));
    }
    out
}

/// Runs `status`.
pub(crate) async fn run(args: StatusCmdArgs) -> ExitCode {
    let Some(addr) = args.status_addr else {
        println!("the status server is off: start the daemon with STATUS_ADDR set (for example STATUS_ADDR=:8080), then run `STATUS_ADDR=:8080 double-natpmp status` (or --status-addr)");
        return ExitCode::FAILURE;
    };
    // The address to ask: STATUS_ADDR with an unspecified address replaced by loopback.
    let addr = loopback_if_unspecified(addr);
    let uri: Uri = match format!("http://{addr}/api/v1/mappings").parse() {
        Ok(u) => u,
        Err(e) => {
            println!("error: cannot build the URL for {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (status, body) = match client::send(&uri, Method::GET, None, None, args.timeout).await {
        Ok(answer) => answer,
        Err(e) => {
            println!("error: the daemon's status server does not answer: {e}");
            return ExitCode::FAILURE;
        }
    };
    if status != StatusCode::OK {
        println!("error: {uri} answered {status}");
        return ExitCode::FAILURE;
    }
    if args.json {
        println!("{}", String::from_utf8_lossy(&body).trim_end());
        return ExitCode::SUCCESS;
    }
    let rows: Option<Vec<Row>> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.as_array().map(|a| a.iter().map(Row::from_json).collect()))
        .flatten();
    match rows.ok_or("expected a JSON list of mappings") {
        Ok(rows) if rows.is_empty() => {
            println!("no mappings");
            ExitCode::SUCCESS
        }
        Ok(rows) => {
            print!("{}", table(&rows));
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error: {uri} did not answer a list of mappings: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_header_and_one_line_per_mapping() {
        let rows = vec![Row {
            client: Ipv4Addr::new(192, 168, 88, 20),
            protocol: "tcp".into(),
            internal_port: 32400,
            router_port: 32400,
            external_address: Some(Ipv4Addr::new(198, 51, 100, 7)),
            external_port: 45123,
            lifetime_left: None,
            origin: "static".into(),
        }];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("PROTO"), "{text}");
        assert!(lines[1].contains("192.168.88.20:32400"), "{text}");
        assert!(lines[1].contains("198.51.100.7:45123"), "{text}");
        assert!(lines[1].contains("never expires"), "{text}");
        assert_eq!(
            loopback_if_unspecified("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse().unwrap()
        );
    }
}
