//! `double-natpmp check --from-internet`: asks the running daemon to run its reachability
//! self-test now (`POST /api/v1/reachability` at STATUS_ADDR, with API_TOKEN: the same
//! settings the daemon reads) and explains the result, one line per finding. It goes through
//! the daemon because only the daemon may make mappings on its router: a second process making
//! its own would fight the daemon's reconciler. A check can outlast the status server's
//! STATUS_CONNECTION_TIMEOUT (every STUN server silent: 5.5 s each); when the server closes the
//! connection first, the check goes on in the daemon, and this command reads its result from
//! `GET /api/v1/reachability` once it is newer than the request. Exit 0 when a third party
//! reached the port, 1 otherwise.

use std::process::ExitCode;
use std::time::Duration;

use hyper::{Method, StatusCode, Uri};
use serde_json::Value;

use crate::config::value::loopback_if_unspecified;
use crate::config::DaemonArgs;
use crate::status::client;

/// Long enough for a check that tries every configured STUN server and heals once.
const CHECK_TIMEOUT: Duration = Duration::from_secs(180);
/// How often the result is read when the daemon closed the connection before the check ended.
const POLL: Duration = Duration::from_millis(500);

/// Runs `check --from-internet`.
pub(crate) async fn run(args: &DaemonArgs) -> ExitCode {
    let Some(addr) = args.status.status_addr else {
        println!("FAIL check from the internet: the daemon's status server is off. Fix: start the daemon with STATUS_ADDR and API_TOKEN set, and give this command the same settings");
        return ExitCode::FAILURE;
    };
    let token = match args.status.token() {
        Ok(Some(t)) => t,
        Ok(None) => {
            println!("FAIL check from the internet: no API token. Fix: set API_TOKEN (or API_TOKEN_FILE) here and in the daemon: running a check makes a test mapping");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            println!("FAIL check from the internet: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = loopback_if_unspecified(addr);
    let Ok(uri) = format!("http://{addr}/api/v1/reachability").parse::<Uri>() else {
        println!("FAIL check from the internet: cannot build the URL for {addr}");
        return ExitCode::FAILURE;
    };
    println!("asking the daemon at {addr} to prove its forwarded port from the internet (STUN)…");
    let asked_at = unix_now();
    let deadline = tokio::time::Instant::now() + CHECK_TIMEOUT;
    let answer = client::send(
        &uri,
        Method::POST,
        None,
        Some(token.expose()),
        CHECK_TIMEOUT,
    )
    .await;
    let (status, body) = match answer {
        Ok(a) => a,
        Err(e) if matches!(e, client::ClientError::Http { .. }) => {
            // The server closed the connection during the check (its connection time limit).
            match newer_result(&uri, asked_at, deadline).await {
                Some(answer) => answer,
                None => {
                    println!("FAIL check from the internet: the daemon closed the connection ({e}) and gave no result within {CHECK_TIMEOUT:?}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            println!(
                "FAIL check from the internet: the daemon's status server does not answer: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let view: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != StatusCode::OK {
        let why = view
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        println!("FAIL check from the internet: the daemon answered {status}: {why}");
        return ExitCode::FAILURE;
    }
    explain(&view);
    let reached = view.pointer("/last/inbound/result").and_then(Value::as_str) == Some("reached");
    if reached && view.get("fix").is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Seconds since 1970.
fn unix_now() -> u64 {
    crate::status::history::unix_seconds(std::time::SystemTime::now())
}

/// `GET uri` until its last check ended at `asked_at` or later (or `deadline` passes).
async fn newer_result(
    uri: &Uri,
    asked_at: u64,
    deadline: tokio::time::Instant,
) -> Option<(StatusCode, bytes::Bytes)> {
    while tokio::time::Instant::now() < deadline {
        if let Ok((status, body)) = client::send(uri, Method::GET, None, None, POLL * 4).await {
            let view: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let checked = view.pointer("/last/checked_at").and_then(Value::as_u64);
            if status == StatusCode::OK && checked.is_some_and(|t| t >= asked_at) {
                return Some((status, body));
            }
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// Prints the daemon's answer, one finding per line.
fn explain(view: &Value) {
    let text = |p: &str| view.pointer(p).and_then(Value::as_str);
    if let Some(line) = text("/line") {
        println!("{line}");
    }
    if let Some(external) = text("/last/external") {
        let router_port = view
            .pointer("/last/router_port")
            .and_then(Value::as_u64)
            .map(|r| format!(" (router port {r})"))
            .unwrap_or_default();
        println!("  the gateway's external address and port: {external}{router_port}");
    }
    if let Some(seen) = text("/last/seen_from") {
        let meaning = match text("/last/exit_address") {
            Some("matches") => "the VPN's external address, as it should be",
            Some("differs") => "another address than the VPN reports: peers are told the wrong one",
            Some("outside_tunnel") => "the router's own address: outside the tunnel",
            _ => "not compared (the external address is not known)",
        };
        println!("  the internet saw the test come from:     {seen}: {meaning}");
    }
    if let Some(paired) = view
        .pointer("/last/outbound_paired")
        .and_then(Value::as_bool)
    {
        println!(
            "  outbound UDP left from the external port: {}",
            if paired {
                "yes (replies and DHT peers see the mapped port)"
            } else {
                "no (the VPN exit or the router picks another port; UDP_SRCNAT pairs the router's side)"
            }
        );
    }
    match text("/last/inbound/result") {
        Some("reached") => println!("  a third party reached the external port:  yes"),
        Some("not_reached") => println!("  a third party reached the external port:  no"),
        Some(_) => println!(
            "  a third party reached the external port:  not tested ({})",
            text("/last/inbound/why").unwrap_or("no reason given")
        ),
        None => {}
    }
    if view.pointer("/last/healed").and_then(Value::as_bool) == Some(true) {
        println!("  (the first try failed; a reconcile pass ran and the port was tried again)");
    }
    if let Some(fix) = text("/fix") {
        println!("Fix: {fix}");
    }
}
