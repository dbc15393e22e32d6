//! The status server over real HTTP against the whole daemon and both emulators: every endpoint,
//! `/metrics` read by the Prometheus project's OpenMetrics parser with its counters moving as a
//! client maps and deletes, the forwards API and its token (401, 403, the forward made and
//! removed on both layers), STATUS_FILE, and `double-natpmp status`.
//!
//! Network safety: everything is bound to and sent to loopback only.

use crate::common;

use std::time::{Duration, Instant};

use common::daemon::{
    gateway_config, get_json, http, map, metrics_parser, parse_metrics, start, start_with_token,
    value, wait_event, Client, TOKEN,
};
use common::skip::skip;
use double_natpmp::MappingEvent;
use double_natpmp_codec::natpmp::wire::{Protocol, ResultCode};
use hyper::{Method, StatusCode};

#[tokio::test]
async fn every_endpoint_answers_and_metrics_move_as_a_client_maps_and_deletes() {
    let Some(python) = metrics_parser() else {
        skip(
            "every_endpoint_answers_and_metrics_move_as_a_client_maps_and_deletes",
            "needs .venv with prometheus-client (scripts/test.sh installs it)",
        );
        return;
    };
    let mut lab = start(gateway_config(), &[]).await;
    let addr = lab.status();

    let health = get_json(addr, "/healthz", StatusCode::OK).await;
    assert_eq!(health["status"], "ok");
    let ready = get_json(addr, "/readyz", StatusCode::OK).await;
    assert_eq!(ready["ready"], true, "{ready}");
    let names: Vec<&str> = ready["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["router", "gateway", "interface"]);

    let (status, headers, page) = http(addr, Method::GET, "/", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(page.contains("<title>double-natpmp</title>"), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing from outside"
    );

    // Without API_TOKEN the forwards routes do not exist.
    let (status, _, _) = http(addr, Method::POST, "/api/v1/forwards", &[], Some("{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = http(addr, Method::GET, "/nothing", &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, headers, _) = http(addr, Method::POST, "/metrics", &[], None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD");

    let before = metrics(&python, addr).await;
    assert_eq!(value(&before, "double_natpmp_requests_total", &[]), 0.0);
    assert_eq!(
        value(
            &before,
            "double_natpmp_mappings",
            &[("protocol", "tcp"), ("origin", "natpmp")]
        ),
        0.0
    );

    // A client maps a port.
    let mut events = lab.daemon.orchestrator.subscribe();
    let client = Client::on(10, lab.daemon.listen).await;
    let reply = client.ask(map(Protocol::Tcp, 6881, 3600)).await;
    assert_eq!(reply.result, ResultCode::Success);
    let mappings = get_json(addr, "/api/v1/mappings", StatusCode::OK).await;
    let list = mappings.as_array().expect("a list");
    assert_eq!(list.len(), 1, "{mappings}");
    let m = &list[0];
    assert_eq!(m["client"], "127.0.0.10");
    assert_eq!(m["protocol"], "tcp");
    assert_eq!(m["internal_port"], 6881);
    assert_eq!(m["router_port"], 6881);
    assert_eq!(m["external_port"], reply.external_port);
    assert_eq!(m["external_address"], "198.51.100.7");
    assert_eq!(m["origin"], "natpmp");
    assert_eq!(m["lifetime"], 60, "the gateway grants 60 s");
    let left = m["lifetime_left"].as_u64().expect("lifetime_left");
    assert!((55..=60).contains(&left), "{m}");
    let created = m["created"].as_u64().expect("created");
    assert_eq!(m["last_renewed"].as_u64(), Some(created));

    let status = get_json(addr, "/api/v1/status", StatusCode::OK).await;
    assert_eq!(status["external_address"], "198.51.100.7");
    assert_eq!(status["mappings"], 1);
    assert_eq!(status["events"][0]["event"], "created", "{status}");

    let mapped = metrics(&python, addr).await;
    let tcp_ok = [("opcode", "2"), ("result", "0")];
    assert_eq!(value(&mapped, "double_natpmp_requests_total", &tcp_ok), 1.0);
    assert_eq!(
        value(
            &mapped,
            "double_natpmp_mappings",
            &[("protocol", "tcp"), ("origin", "natpmp")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &mapped,
            "double_natpmp_mappings_created_total",
            &[("protocol", "tcp"), ("origin", "natpmp")]
        ),
        1.0
    );
    assert!(
        value(
            &mapped,
            "double_natpmp_router_command_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert!(
        value(
            &mapped,
            "double_natpmp_upstream_exchange_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert!(
        value(
            &mapped,
            "double_natpmp_datagrams_total",
            &[("outcome", "replied")]
        ) >= 1.0
    );

    // The client deletes it.
    let reply = client.ask(map(Protocol::Tcp, 6881, 0)).await;
    assert_eq!(reply.result, ResultCode::Success);
    wait_event(&mut events, Duration::from_secs(5), "removed", |e| {
        matches!(e, MappingEvent::Removed { .. }).then_some(())
    })
    .await;
    let deleted = metrics(&python, addr).await;
    assert_eq!(
        value(&deleted, "double_natpmp_requests_total", &tcp_ok),
        2.0
    );
    assert_eq!(
        value(&deleted, "double_natpmp_mappings", &[("protocol", "tcp")]),
        0.0
    );
    assert_eq!(
        value(
            &deleted,
            "double_natpmp_mappings_removed_total",
            &[("reason", "deleted")]
        ),
        1.0
    );
    let mappings = get_json(addr, "/api/v1/mappings", StatusCode::OK).await;
    assert_eq!(mappings, serde_json::json!([]));

    // A reconcile pass is counted.
    lab.daemon
        .orchestrator
        .reconcile()
        .await
        .expect("reconcile");
    let reconciled = metrics(&python, addr).await;
    assert_eq!(
        value(
            &reconciled,
            "double_natpmp_reconcile_runs_total",
            &[("result", "ok")]
        ),
        1.0
    );
    lab.stop().await;
}

/// GET /metrics, parsed strictly.
async fn metrics(
    python: &std::path::Path,
    addr: std::net::SocketAddr,
) -> Vec<common::daemon::Sample> {
    let (status, headers, text) = http(addr, Method::GET, "/metrics", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    parse_metrics(python, &text)
}

#[tokio::test]
async fn readyz_is_503_and_names_the_failing_check_when_the_interface_is_down() {
    let lab = start(gateway_config(), &[]).await;
    let addr = lab.status();
    lab.router
        .set_interface_running(common::daemon::IFACE, false);
    let _ = lab.daemon.orchestrator.reconcile().await;
    let ready = get_json(addr, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(ready["ready"], false);
    let interface = ready["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "interface"))
        .expect("interface check")
        .clone();
    assert_eq!(interface["ok"], false, "{ready}");
    assert!(
        interface["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(common::daemon::IFACE),
        "{ready}"
    );
}

#[tokio::test]
async fn forwards_need_the_token_401_without_403_wrong_and_work_with_it() {
    let mut lab = start_with_token(gateway_config()).await;
    let addr = lab.status();
    let body =
        r#"{"client": "127.0.0.20", "protocol": "tcp", "internal_port": 32400, "lifetime": 3600}"#;
    let bearer = format!("Bearer {TOKEN}");

    let (status, headers, _) = http(addr, Method::POST, "/api/v1/forwards", &[], Some(body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, headers, answer) = http(
        addr,
        Method::POST,
        "/api/v1/forwards",
        &[("authorization", "Bearer wrong-token")],
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(lab.our_rules().is_empty(), "nothing was made");
    // A wrong token is never echoed back.
    assert!(!answer.contains("wrong-token"), "{answer}");
    assert!(
        !format!("{headers:?}").contains("wrong-token"),
        "{headers:?}"
    );

    // Outside ALLOWED_CLIENTS, and NAT-PMP's limits.
    for (bad, want) in [
        (
            r#"{"client": "127.0.1.20", "protocol": "tcp", "internal_port": 80, "lifetime": 60}"#,
            StatusCode::FORBIDDEN,
        ),
        (
            r#"{"client": "127.0.0.20", "protocol": "sctp", "internal_port": 80, "lifetime": 60}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"client": "127.0.0.20", "protocol": "tcp", "internal_port": 0, "lifetime": 60}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"client": "127.0.0.20", "protocol": "tcp", "internal_port": 80, "lifetime": 0}"#,
            StatusCode::BAD_REQUEST,
        ),
        ("not json", StatusCode::BAD_REQUEST),
    ] {
        let (status, _, text) = http(
            addr,
            Method::POST,
            "/api/v1/forwards",
            &[("authorization", &bearer)],
            Some(bad),
        )
        .await;
        assert_eq!(status, want, "{bad}: {text}");
    }

    let started = Instant::now();
    let (status, _, text) = http(
        addr,
        Method::POST,
        "/api/v1/forwards",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let lease: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(lease["origin"], "api");
    assert_eq!(lease["client"], "127.0.0.20");
    assert_eq!(lease["internal_port"], 32400);
    let external = lease["external_port"].as_u64().expect("external_port");
    let rules = lab.our_rules();
    assert_eq!(rules.len(), 1, "one dst-nat rule on the router");
    assert_eq!(
        rules[0].fields.get("to-addresses").map(String::as_str),
        Some("127.0.0.20")
    );
    let at_gateway = lab.gateway.mappings();
    assert_eq!(at_gateway.len(), 1);
    assert_eq!(u64::from(at_gateway[0].external_port), external);

    // DELETE: the same three answers for the token, then the forward goes from both layers.
    let path = "/api/v1/forwards/tcp/127.0.0.20/32400";
    let (status, _, _) = http(addr, Method::DELETE, path, &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = http(
        addr,
        Method::DELETE,
        path,
        &[("authorization", "Bearer nope")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, text) = http(
        addr,
        Method::DELETE,
        path,
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("\"deleted\""), "{text}");
    assert!(lab.our_rules().is_empty(), "the rule is removed");
    assert!(
        lab.gateway.mappings().is_empty(),
        "the gateway's mapping is removed"
    );
    let (status, _, _) = http(
        addr,
        Method::DELETE,
        path,
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    lab.stop().await;
}

#[tokio::test]
async fn status_file_holds_the_mappings_and_is_replaced_atomically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("mappings.json");
    let mut lab = start(
        gateway_config(),
        &[("status-file", file.display().to_string())],
    )
    .await;
    read_mappings(&file, 0).await;
    let client = Client::on(11, lab.daemon.listen).await;
    let reply = client.ask(map(Protocol::Udp, 5000, 60)).await;
    let v = read_mappings(&file, 1).await;
    assert_eq!(v[0]["external_port"], reply.external_port);
    assert_eq!(v[0]["protocol"], "udp");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["mappings.json"], "no temporary file left behind");
    lab.stop().await;
    read_mappings(&file, 0).await;
}

#[tokio::test]
async fn status_file_is_not_written_through_a_symlink_planted_at_its_temporary_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").expect("victim");
    let file = dir.path().join("mappings.json");
    std::os::unix::fs::symlink(&victim, dir.path().join(".mappings.json.tmp")).expect("plant");
    let mut lab = start(
        gateway_config(),
        &[("status-file", file.display().to_string())],
    )
    .await;
    read_mappings(&file, 0).await;
    let client = Client::on(13, lab.daemon.listen).await;
    client.ask(map(Protocol::Tcp, 5100, 60)).await;
    read_mappings(&file, 1).await;
    lab.stop().await;
    read_mappings(&file, 0).await;
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious"
    );
    assert!(std::fs::symlink_metadata(&file)
        .expect("status file")
        .file_type()
        .is_file());
}

#[tokio::test]
async fn the_status_subcommand_prints_the_mappings_as_a_table_and_as_json() {
    let mut lab = start(gateway_config(), &[]).await;
    let addr = lab.status();
    let client = Client::on(12, lab.daemon.listen).await;
    let reply = client.ask(map(Protocol::Tcp, 7000, 60)).await;
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_double-natpmp"))
                .args(args)
                .env_clear()
                .output()
                .expect("run status")
        })
    };
    let out = run(vec!["status".into(), format!("--status-addr={addr}")])
        .await
        .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("PROTO"), "{text}");
    assert!(text.contains("127.0.0.12:7000"), "{text}");
    assert!(
        text.contains(&format!("198.51.100.7:{}", reply.external_port)),
        "{text}"
    );
    let out = run(vec![
        "status".into(),
        "--json".into(),
        format!("--status-addr={addr}"),
    ])
    .await
    .expect("join");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v[0]["internal_port"], 7000);
    let out = run(vec!["status".into()]).await.expect("join");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("STATUS_ADDR"),
        "says how to turn it on"
    );
    lab.stop().await;
}

/// Waits (bounded) until STATUS_FILE holds `want` mappings; every read must be whole JSON (the
/// writer runs after the event; a reader sees the old file or the new one, never a part).
async fn read_mappings(file: &std::path::Path, want: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("STATUS_FILE is not whole JSON ({e}): {text}"));
            if v.as_array().map(Vec::len) == Some(want) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "STATUS_FILE never held {want} mapping(s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn bad_status_settings_are_refused_with_the_variable_value_and_what_is_expected() {
    let base = [
        ("VPN_GATEWAY", "10.2.0.1"),
        ("MIKROTIK_API_ADDRESS", "127.0.0.1:1"),
        ("MIKROTIK_API_PASSWORD", "x"),
    ];
    for (var, value, expected) in [
        ("STATUS_ADDR", "192.168.88.2", "expected [ip]:port"),
        ("STATUS_ADDR", "nowhere", "expected [ip]:port"),
        (
            "WEBHOOK_URL",
            "https://hooks.example/x",
            "expected an http:// URL",
        ),
        ("WEBHOOK_URL", "not a url", "expected an http:// URL"),
        ("WEBHOOK_TIMEOUT", "0", "expected a duration from 1ms to 1d"),
        ("WEBHOOK_RETRIES", "21", "0..=20"),
        (
            "WEBHOOK_BACKOFF",
            "2m",
            "expected a duration from 1ms to 1m",
        ),
        ("WEBHOOK_QUEUE", "0", "1..=65536"),
        (
            "STATIC_MAPPINGS",
            "tcp:192.168.88.20",
            "expected protocol:client:port",
        ),
        (
            "STATIC_MAPPINGS",
            "sctp:192.168.88.20:80",
            "expected protocol:client:port",
        ),
        (
            "STATUS_HOSTNAMES",
            "natpmp.lan:8080",
            "expected host names or IP addresses without a port",
        ),
        (
            "STATUS_HOSTNAMES",
            "natpmp.lan,bad name",
            "expected host names or IP addresses without a port",
        ),
        (
            "STATUS_CONNECTION_TIMEOUT",
            "0",
            "expected a duration from 1s to 1h",
        ),
        (
            "STATUS_CONNECTION_TIMEOUT",
            "2h",
            "expected a duration from 1s to 1h",
        ),
        (
            "API_TOKEN",
            "has space",
            "at least 16 characters without spaces",
        ),
        (
            "API_TOKEN",
            "0123456789abcde",
            "at least 16 characters without spaces",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_double-natpmp"))
            .env_clear()
            .envs(base)
            .env(var, value)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(var), "{var}={value}: {err}");
        if var == "API_TOKEN" {
            // A secret, even a wrong one, is never shown.
            assert!(!err.contains(value), "{var}={value}: {err}");
        } else {
            assert!(err.contains(value), "{var}={value}: {err}");
        }
        assert!(err.contains(expected), "{var}={value}: {err}");
    }
    // Settings that do not fit together.
    for (env, expected) in [
        (
            vec![("API_TOKEN", "t0ken-0123456789abcdef")],
            "API_TOKEN is set but STATUS_ADDR is not",
        ),
        (
            vec![
                ("STATUS_ADDR", ":0"),
                ("API_TOKEN", "t0ken-0123456789abcdef"),
                ("API_TOKEN_FILE", "/nonexistent"),
            ],
            "API_TOKEN and API_TOKEN_FILE are both set",
        ),
        (
            vec![
                ("STATUS_ADDR", ":0"),
                ("API_TOKEN_FILE", "/nonexistent/token"),
            ],
            "API_TOKEN_FILE=/nonexistent/token: cannot read it",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_double-natpmp"))
            .env_clear()
            .envs(base)
            .envs(env.iter().copied())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{env:?}: {err}");
        assert_ne!(out.status.code(), Some(0), "{env:?}: {err}");
    }
}
