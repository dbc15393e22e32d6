//! The reachability self-test (REACHABILITY_CHECK, docs/reachability.md) in process, against
//! the emulators: the STUN emulator with RFC 5780 sits "on the internet" behind both emulated
//! NAT layers (`double_natpmp_emulators::path`: the router emulator's rules and the gateway
//! emulator's mappings decide what the STUN server sees and where its answers arrive). Checks
//! are started with `POST /api/v1/reachability`. The namespace versions, with coturn and real
//! nftables, are in tests/lab/reachability.rs.

use crate::common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use common::daemon::{
    gateway_config, get_json, http, map, metrics_parser, our_sim_rules, parse_metrics, start,
    value, Client, Lab, TOKEN,
};
use double_natpmp_codec::natpmp::wire::{Protocol, ResultCode};
use double_natpmp_emulators::gateway::GatewayConfig;
use double_natpmp_emulators::path::EmulatedPath;
use double_natpmp_emulators::stun::{StunConfig, StunServer};
use hyper::{Method, StatusCode};
use serde_json::Value;

/// The gateway emulator's external address (GatewayConfig's default).
pub(crate) const EXIT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// The emulators, the daemon with the forwards API on (the check is started by POST), and a
/// STUN server behind both emulated layers leaving from `exit`.
pub(crate) async fn lab(
    gateway: GatewayConfig,
    stun: StunConfig,
    exit: Ipv4Addr,
    flags: &[(&str, String)],
) -> (Lab, StunServer) {
    let path = Arc::new(EmulatedPath::unattached(exit));
    let server = StunServer::start_behind(stun, Arc::clone(&path))
        .await
        .expect("STUN emulator");
    let mut all = vec![
        ("api-token", TOKEN.to_owned()),
        ("stun-servers", server.primary().to_string()),
    ];
    all.extend(flags.iter().map(|(k, v)| (*k, v.clone())));
    let lab = start(gateway, &all).await;
    path.attach(Arc::clone(&lab.router), Arc::clone(&lab.gateway));
    (lab, server)
}

/// `POST /api/v1/reachability` with the token: the view of the check it ran.
pub(crate) async fn check_now(lab: &Lab) -> Value {
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        lab.status(),
        Method::POST,
        "/api/v1/reachability",
        &[("authorization", bearer.as_str())],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

pub(crate) fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {pointer} in {v}"))
}

#[tokio::test]
async fn a_test_mapping_is_reached_through_both_layers_then_deleted_and_shown_everywhere() {
    let (lab, _stun) = lab(gateway_config(), StunConfig::default(), EXIT, &[]).await;
    let before = get_json(lab.status(), "/api/v1/reachability", StatusCode::OK).await;
    assert_eq!(
        text(&before, "/line"),
        "reachable from the internet: not checked (REACHABILITY_CHECK is off)"
    );
    let view = check_now(&lab).await;
    assert_eq!(text(&view, "/last/inbound/result"), "reached", "{view}");
    assert_eq!(text(&view, "/last/exit_address"), "matches");
    assert!(text(&view, "/last/external").starts_with("198.51.100.7:"));
    assert_eq!(view.pointer("/last/healed"), Some(&Value::Bool(false)));
    assert!(
        text(&view, "/line").starts_with("reachable from the internet: yes, UDP, checked"),
        "{view}"
    );
    assert!(view.get("fix").is_none(), "{view}");
    // The test mapping is gone from both layers and from the table.
    assert!(our_sim_rules(&lab.router).is_empty(), "no rule left");
    assert!(lab.gateway.mappings().is_empty(), "no gateway mapping left");
    let mappings = get_json(lab.status(), "/api/v1/mappings", StatusCode::OK).await;
    assert_eq!(mappings.as_array().map(Vec::len), Some(0), "{mappings}");
    // The page's summary carries the line, and the new verdict is an event.
    let status = get_json(lab.status(), "/api/v1/status", StatusCode::OK).await;
    assert_eq!(text(&status, "/reachability/line"), text(&view, "/line"));
    let events = status["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["event"] == "reachability"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("reachable from the internet: yes"))),
        "{events:?}"
    );
    // The gauges, read by the Prometheus project's parser.
    let python = metrics_parser().expect("the .venv with prometheus-client");
    let (_, _, text) = http(lab.status(), Method::GET, "/metrics", &[], None).await;
    let samples = parse_metrics(&python, &text);
    assert_eq!(value(&samples, "double_natpmp_reachable", &[]), 1.0);
    assert_eq!(
        value(
            &samples,
            "double_natpmp_reachability_exit_address_matches",
            &[]
        ),
        1.0
    );
    assert!(
        value(
            &samples,
            "double_natpmp_reachability_last_check_timestamp_seconds",
            &[]
        ) > 0.0
    );
}

#[tokio::test]
async fn an_exit_other_than_the_reported_address_is_an_exit_mismatch_with_its_fix() {
    let other = Ipv4Addr::new(198, 51, 100, 99);
    let (lab, _stun) = lab(gateway_config(), StunConfig::default(), other, &[]).await;
    let view = check_now(&lab).await;
    assert_eq!(text(&view, "/last/exit_address"), "differs", "{view}");
    assert!(text(&view, "/last/seen_from").starts_with("198.51.100.99:"));
    assert!(text(&view, "/line").contains("exit mismatch"), "{view}");
    assert!(text(&view, "/fix").contains("another server"), "{view}");
    let (_, _, metrics) = http(lab.status(), Method::GET, "/metrics", &[], None).await;
    assert!(
        metrics.contains("double_natpmp_reachability_exit_address_matches 0\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_server_without_rfc_5780_leaves_inbound_not_tested_never_closed() {
    let plain = StunConfig {
        rfc5780: false,
        ..StunConfig::default()
    };
    let (lab, _stun) = lab(gateway_config(), plain, EXIT, &[]).await;
    let view = check_now(&lab).await;
    assert_eq!(text(&view, "/last/inbound/result"), "not_tested", "{view}");
    assert!(text(&view, "/last/inbound/why").contains("RFC 5780"));
    assert_eq!(text(&view, "/last/exit_address"), "matches");
    assert!(text(&view, "/line").contains(": not tested ("), "{view}");
    assert!(!text(&view, "/line").contains(": no,"), "{view}");
    let (_, _, metrics) = http(lab.status(), Method::GET, "/metrics", &[], None).await;
    assert!(
        metrics.contains("double_natpmp_reachable -1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn while_the_gateway_quota_is_full_the_check_waits_and_no_client_is_refused_for_it() {
    let small = GatewayConfig {
        quota_per_peer: 2,
        ..GatewayConfig::default()
    };
    let (lab, _stun) = lab(small, StunConfig::default(), EXIT, &[]).await;
    let client = Client::on(9, lab.daemon.listen).await;
    for port in [6881, 6882] {
        let r = client.ask(map(Protocol::Udp, port, 60)).await;
        assert_eq!(r.result, ResultCode::Success);
    }
    let refused = client.ask(map(Protocol::Udp, 6883, 60)).await;
    assert_eq!(
        refused.result,
        ResultCode::OutOfResources,
        "the quota is full"
    );
    let asked = lab.gateway.map_requests();
    let view = check_now(&lab).await;
    assert_eq!(text(&view, "/last/blocked/kind"), "quota_full", "{view}");
    assert!(text(&view, "/line").contains("quota is full"), "{view}");
    assert_eq!(
        lab.gateway.map_requests(),
        asked,
        "the check asked the gateway nothing"
    );
    assert_eq!(
        our_sim_rules(&lab.router).len(),
        2,
        "only the clients' rules"
    );
    // A client's port freed is a client's again.
    let freed = client.ask(map(Protocol::Udp, 6881, 0)).await;
    assert_eq!(freed.result, ResultCode::Success);
    let again = client.ask(map(Protocol::Udp, 6883, 60)).await;
    assert_eq!(
        again.result,
        ResultCode::Success,
        "not refused because of the check"
    );
}

#[tokio::test]
async fn a_rule_removed_behind_the_daemons_back_is_made_again_by_the_heal() {
    let (lab, _stun) = lab(
        gateway_config(),
        StunConfig::default(),
        EXIT,
        &[("reachability-settle", "1s".into())],
    )
    .await;
    let router = Arc::clone(&lab.router);
    let remover = tokio::spawn(async move {
        // The test mapping's rule appears while the check settles; take it away.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(rule) = our_sim_rules(&router).first() {
                assert!(router.delete_nat_rule(&rule.id));
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no test rule appeared"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let view = check_now(&lab).await;
    remover.await.expect("the rule was removed");
    assert_eq!(
        view.pointer("/last/healed"),
        Some(&Value::Bool(true)),
        "{view}"
    );
    assert_eq!(text(&view, "/last/inbound/result"), "reached", "{view}");
    assert!(
        our_sim_rules(&lab.router).is_empty(),
        "the re-made rule went with the mapping"
    );
}

#[tokio::test]
async fn a_check_needs_the_token_and_only_get_and_post_are_served() {
    let (lab, _stun) = lab(gateway_config(), StunConfig::default(), EXIT, &[]).await;
    let (status, _, _) = http(
        lab.status(),
        Method::POST,
        "/api/v1/reachability",
        &[],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = http(
        lab.status(),
        Method::POST,
        "/api/v1/reachability",
        &[("authorization", "Bearer wrong-token-0123456789")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = http(
        lab.status(),
        Method::DELETE,
        "/api/v1/reachability",
        &[],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD, POST");
    assert!(lab.gateway.mappings().is_empty(), "no check ran");
}

/// `double-natpmp check --from-internet` with the daemon's own settings (`extra` on top).
async fn check_from_internet(lab: &Lab, extra: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_double-natpmp"));
    cmd.args(["check", "--from-internet"])
        .env_clear()
        .env("VPN_GATEWAY", lab.gateway.local_addr().to_string())
        .env("MIKROTIK_API_ADDRESS", lab.router.local_addr().to_string())
        .env("MIKROTIK_API_PASSWORD", "admin")
        .env("STATUS_ADDR", lab.status().to_string())
        .envs(extra.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("check --from-internet finished within 60 s")
        .expect("run the binary")
}

#[tokio::test]
async fn check_from_internet_runs_a_check_in_the_daemon_and_explains_it() {
    let (lab, _stun) = lab(gateway_config(), StunConfig::default(), EXIT, &[]).await;
    let out = check_from_internet(&lab, &[("API_TOKEN", TOKEN)]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("reachable from the internet: yes, UDP"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the internet saw the test come from:     198.51.100.7:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("a third party reached the external port:  yes"),
        "{stdout}"
    );
    let last = get_json(lab.status(), "/api/v1/reachability", StatusCode::OK).await;
    assert_eq!(
        text(&last, "/last/inbound/result"),
        "reached",
        "the daemon ran it"
    );
}

#[tokio::test]
async fn check_from_internet_without_the_token_says_what_to_set_and_fails() {
    let (lab, _stun) = lab(gateway_config(), StunConfig::default(), EXIT, &[]).await;
    let out = check_from_internet(&lab, &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL check from the internet: no API token. Fix: set API_TOKEN"),
        "{stdout}"
    );
    assert!(lab.gateway.mappings().is_empty(), "no check ran");
}

#[tokio::test]
async fn check_from_internet_outlasting_the_status_connection_limit_reads_the_result_after() {
    // Every STUN server silent: the check takes its whole schedule (5.5 s), past the status
    // server's connection limit of 1 s (+1 s for a response under way).
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let (lab, _stun) = lab(
        gateway_config(),
        StunConfig::default(),
        EXIT,
        &[
            ("stun-servers", silent_addr),
            ("status-connection-timeout", "1s".into()),
        ],
    )
    .await;
    let out = check_from_internet(&lab, &[("API_TOKEN", TOKEN)]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("reachable from the internet: not tested (no STUN server answered)"),
        "{stdout}"
    );
    assert!(stdout.contains("Fix: check STUN_SERVERS"), "{stdout}");
}
