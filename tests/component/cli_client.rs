//! `double-natpmp client` as a LAN user runs it, against the NAT-PMP gateway emulator on
//! loopback: external address, map, delete, `--json`, and a gateway error code.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use double_natpmp_codec::natpmp::wire::{Protocol, ResultCode};
use double_natpmp_emulators::gateway::{Gateway, GatewayConfig, Mode};

async fn gateway() -> Gateway {
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Gateway::start(GatewayConfig::default(), bind)
        .await
        .expect("start the gateway emulator")
}

/// Runs `double-natpmp client --gateway <gw> <args…>` with a clean environment.
async fn client(gw: &Gateway, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_double-natpmp"));
    cmd.arg("client")
        .arg("--gateway")
        .arg(gw.local_addr().to_string())
        .args(args)
        .env_clear()
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("client finished within 30 s")
        .expect("run the binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The value of `"key":` in a flat JSON object: a number, or a string without escapes.
fn json_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[start..];
    if let Some(s) = rest.strip_prefix('"') {
        s.split('"').next()
    } else {
        rest.split([',', '}']).next()
    }
}

#[tokio::test]
async fn address_prints_the_gateways_public_address() {
    let gw = gateway().await;
    let out = client(&gw, &["address"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("public address 198.51.100.7"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn map_creates_a_mapping_at_the_gateway_and_reports_its_port() {
    let gw = gateway().await;
    let out = client(&gw, &["map", "tcp", "6881", "--lifetime", "3600"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mappings = gw.mappings();
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    let m = mappings[0];
    assert_eq!((m.protocol, m.internal_port), (Protocol::Tcp, 6881));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "mapped public port {} protocol TCP to local port 6881",
            m.external_port
        )),
        "{text}"
    );
    // The emulator caps lifetimes at 60 s like ProtonVPN; the client shows what was granted.
    assert!(text.contains("lifetime 60 s"), "{text}");
}

#[tokio::test]
async fn delete_removes_the_mapping_at_the_gateway() {
    let gw = gateway().await;
    let out = client(&gw, &["map", "udp", "5000"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(gw.mappings().len(), 1);
    let out = client(&gw, &["delete", "udp", "5000"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(gw.mappings().is_empty(), "{:?}", gw.mappings());
    assert!(
        stdout(&out).contains("deleted the UDP mapping of local port 5000"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn json_output_carries_the_granted_values() {
    let gw = gateway().await;
    let out = client(&gw, &["--json", "map", "udp", "7000", "-e", "7000"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = stdout(&out);
    let json = json.trim();
    assert!(
        json.starts_with('{') && json.ends_with('}') && !json.contains('\n'),
        "{json}"
    );
    let m = gw.mappings()[0];
    assert_eq!(json_field(json, "action"), Some("map"), "{json}");
    assert_eq!(json_field(json, "protocol"), Some("udp"), "{json}");
    assert_eq!(json_field(json, "internal_port"), Some("7000"), "{json}");
    assert_eq!(
        json_field(json, "external_port"),
        Some(m.external_port.to_string().as_str()),
        "{json}"
    );
    assert_eq!(json_field(json, "lifetime"), Some("60"), "{json}");
    assert_eq!(
        json_field(json, "gateway"),
        Some(gw.local_addr().to_string().as_str()),
        "{json}"
    );

    let out = client(&gw, &["--json", "address"]).await;
    assert_eq!(
        json_field(stdout(&out).trim(), "external_address"),
        Some("198.51.100.7")
    );
}

#[tokio::test]
async fn gateway_error_code_exits_1_with_code_and_meaning() {
    let gw = gateway().await;
    gw.set_mode(Mode::Refuse(ResultCode::OutOfResources))
        .await
        .unwrap();
    let out = client(&gw, &["map", "tcp", "6881"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("result code 4 (out of resources)"), "{err}");
    assert!(err.contains("quota"), "{err}");

    let out = client(&gw, &["--json", "map", "tcp", "6881"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        json_field(stdout(&out).trim(), "result_code"),
        Some("4"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn silent_gateway_exits_1_after_the_timeout() {
    let gw = gateway().await;
    gw.set_mode(Mode::Silent).await.unwrap();
    let started = std::time::Instant::now();
    let out = client(&gw, &["--timeout", "600ms", "address"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        stderr(&out).contains("no NAT-PMP answer"),
        "{}",
        stderr(&out)
    );
    assert!(gw.requests_received() >= 2, "the request was retransmitted");
}

#[tokio::test]
async fn bad_protocol_is_a_usage_error() {
    let gw = gateway().await;
    let out = client(&gw, &["map", "sctp", "6881"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(gw.requests_received(), 0);
}
