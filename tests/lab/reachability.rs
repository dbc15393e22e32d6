//! The reachability self-test (issue 22) end to end in the namespace lab: the daemon in the
//! router namespace makes its test mapping (origin `selftest`, for 192.168.88.250) through our
//! RouterOS emulator (mirrored into nftables) and a real `miniupnpd` (our gateway emulator for
//! its port quota), and asks a real coturn on the lab's internet host (`stun_lab::LabCoturn`)
//! through both NAT layers. The results are read from the status API with curl in the router
//! namespace, `/metrics` with the Prometheus project's parser; the router's NAT table is
//! changed behind the daemon's back through the router's API with librouteros.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{metrics_parser, parse_metrics, value};
use common::lab::{self, Host, Lab, EXT_IP, ROUTER_LAN_IP};
use common::stun_lab::{CoturnMode, LabCoturn};
use common::traffic::router_rules;
use serde_json::Value;

const TOKEN: &str = "lab-token-0123456789abcdef";
/// The status server in the router namespace.
const STATUS_ADDR: &str = "127.0.0.1:8080";
/// Bounds the wait for the check at start: a mapping, two STUN exchanges and a delete take
/// well under a second in the lab; a lost exchange costs the 5.5 s schedule.
const FIRST_RESULT: Duration = Duration::from_secs(30);
/// The address the gateway does not report, from which the exit-mismatch lab's traffic leaves.
const OTHER_EXIT: &str = "198.51.101.8";

#[test]
fn a_healthy_path_without_udp_srcnat_is_reached_matches_and_leaves_no_test_mapping() {
    healthy_path(
        "a_healthy_path_without_udp_srcnat_is_reached_matches_and_leaves_no_test_mapping",
        false,
    );
}

#[test]
fn a_healthy_path_with_udp_srcnat_is_reached_matches_and_leaves_no_test_mapping() {
    healthy_path(
        "a_healthy_path_with_udp_srcnat_is_reached_matches_and_leaves_no_test_mapping",
        true,
    );
}

/// The check at start against coturn with RFC 5780: the answer from coturn's other address
/// reaches the external port, the internet sees the gateway's address, and the test mapping
/// is gone afterwards (from the daemon's mappings and from the router's table).
///
/// Outbound pairing, as the lab measures it: the daemon gives the test mapping the socket's
/// own port P as router port R when no rule uses it (always here), miniupnpd honours R as the
/// external port E, and Linux's masquerade keeps a free source port at both layers (docs/lab.md
/// §7). So coturn sees the packet come from EXT_IP:E in both modes: without UDP_SRCNAT because
/// P = R = E and both masquerades keep P; with UDP_SRCNAT because the router's src-nat rule
/// (a second rule of the test mapping) sends it from R, which the gateway's masquerade keeps.
/// A real VPN exit that picks E ≠ R (docs/lab.md §7, "what the lab cannot prove") would show
/// `outbound_paired: false` without UDP_SRCNAT; the lab has no such gateway.
fn healthy_path(test: &str, udp_srcnat: bool) {
    let Some(python) = available(test) else {
        return;
    };
    let (mut lab, coturn) = lab_with(CoturnMode::Rfc5780, None);
    let srcnat = udp_srcnat.to_string();
    let logs = lab.start_daemon(&[
        ("STATUS_ADDR", STATUS_ADDR),
        ("REACHABILITY_CHECK", "true"),
        ("STUN_SERVERS", &coturn.server()),
        ("UDP_SRCNAT", &srcnat),
    ]);
    let view = wait_for_result(&lab);
    eprintln!("UDP_SRCNAT={udp_srcnat}: {view:#}");
    let o = &view["last"];
    assert_eq!(o["inbound"]["result"], "reached", "{view}");
    assert_eq!(o["exit_address"], "matches", "{view}");
    assert_eq!(o["healed"], false, "{view}");
    assert_eq!(o["server"], coturn.server().as_str());
    let external = o["external"].as_str().expect("external");
    let e: u16 = external
        .strip_prefix(&format!("{EXT_IP}:"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("external is not {EXT_IP}:<port>: {external}"));
    assert_eq!(o["router_port"], e, "miniupnpd honoured R as E: {view}");
    assert_eq!(o["seen_from"], external, "coturn saw EXT_IP:E: {view}");
    assert_eq!(o["outbound_paired"], true, "{view}");
    // What made it paired (see the doc comment): the test mapping's own line in the log.
    let mapped = lab::wait_for_line(
        &logs,
        &format!("mapped mapping=udp {ROUTER_LAN_IP}:"),
        Duration::from_secs(1),
    );
    let rules = mapped.matches('*').count();
    assert_eq!(rules, if udp_srcnat { 2 } else { 1 }, "{mapped}");
    assert!(
        mapped.contains(&format!(
            "{ROUTER_LAN_IP}:{e} router_port={e} external_port={e}"
        )),
        "R = P: {mapped}"
    );
    assert!(view["line"]
        .as_str()
        .is_some_and(|l| l.starts_with("reachable from the internet: yes, UDP")));

    let mappings = get_json(&lab, "/api/v1/mappings");
    let origins: Vec<&Value> = mappings
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| &m["origin"])
        .collect();
    assert!(
        !origins.iter().any(|o| *o == "selftest"),
        "the test mapping is deleted: {mappings}"
    );
    assert_no_rule_to_the_daemon(&lab);

    let samples = metrics(&lab, &python);
    assert_eq!(value(&samples, "double_natpmp_reachable", &[]), 1.0);
    assert_eq!(
        value(
            &samples,
            "double_natpmp_reachability_exit_address_matches",
            &[]
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "double_natpmp_reachability_outbound_paired", &[]),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "double_natpmp_reachability_last_check_timestamp_seconds",
            &[]
        ),
        o["checked_at"].as_f64().expect("checked_at")
    );
}

/// The VPN's exit sends the tunnel's traffic from 198.51.101.8 while its NAT-PMP keeps
/// reporting 198.51.101.7: the check says so, with the fix, on the page and in the log.
#[test]
fn an_exit_address_other_than_the_gateways_is_an_exit_mismatch_with_its_fix() {
    let test = "an_exit_address_other_than_the_gateways_is_an_exit_mismatch_with_its_fix";
    let Some(python) = available(test) else {
        return;
    };
    let (mut lab, coturn) = lab_with(CoturnMode::Rfc5780, Some(OTHER_EXIT));
    let logs = lab.start_daemon(&[
        ("STATUS_ADDR", STATUS_ADDR),
        ("REACHABILITY_CHECK", "true"),
        ("STUN_SERVERS", &coturn.server()),
    ]);
    let view = wait_for_result(&lab);
    eprintln!("{view:#}");
    let o = &view["last"];
    assert_eq!(o["exit_address"], "differs", "{view}");
    let seen = o["seen_from"].as_str().expect("seen_from");
    assert!(seen.starts_with(&format!("{OTHER_EXIT}:")), "{seen}");
    assert!(
        o["external"]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("{EXT_IP}:"))),
        "the gateway still reports {EXT_IP}: {view}"
    );
    let line = view["line"].as_str().expect("line");
    assert!(line.contains("exit mismatch"), "{line}");
    let fix = view["fix"].as_str().expect("a fix");
    assert!(fix.contains("another server"), "{fix}");
    let warned = lab::wait_for_line(&logs, "reachability check: exit mismatch", FIRST_RESULT);
    assert!(warned.contains("WARN"), "{warned}");
    assert!(
        warned.contains("Fix: connect to another server"),
        "{warned}"
    );
    let samples = metrics(&lab, &python);
    assert_eq!(
        value(
            &samples,
            "double_natpmp_reachability_exit_address_matches",
            &[]
        ),
        0.0
    );
}

/// The test mapping's dst-nat rule is removed through the router's API while the check waits
/// (REACHABILITY_SETTLE): the answer from coturn's other address does not arrive, the heal's
/// reconcile pass makes the rule again, and the next try reaches the port.
///
/// The next try must come from another source than the first: the first try's answers
/// (198.51.101.2:3479 → 10.2.0.2:R) found no rule and left a connection-tracking entry without
/// NAT in the router namespace, which an answer on the same tuple matches for 30 s, past the
/// restored rule. The daemon's retry asks for "change IP" only (198.51.101.2:3478).
#[test]
fn a_test_rule_removed_behind_the_daemons_back_is_made_again_and_the_port_reached() {
    let test = "a_test_rule_removed_behind_the_daemons_back_is_made_again_and_the_port_reached";
    if available(test).is_none() {
        return;
    }
    let (mut lab, coturn) = lab_with(CoturnMode::Rfc5780, None);
    lab.start_daemon(&[
        ("STATUS_ADDR", STATUS_ADDR),
        ("API_TOKEN", TOKEN),
        ("STUN_SERVERS", &coturn.server()),
        ("REACHABILITY_SETTLE", "3s"),
    ]);
    let (view, removed) = std::thread::scope(|s| {
        let asked = s.spawn(|| check_now(&lab));
        let removed = remove_dstnat_rule_when_it_appears(&lab, ROUTER_LAN_IP, 10);
        (asked.join().expect("the POST"), removed)
    });
    eprintln!("removed {removed}\nthe check answered {view:#}");
    let o = &view["last"];
    assert_eq!(o["healed"], true, "{view}");
    assert_eq!(o["inbound"]["result"], "reached", "{view}");
    assert_eq!(o["exit_address"], "matches", "{view}");
    let status = get_json(&lab, "/api/v1/status");
    let events = status["events"].as_array().expect("events");
    eprintln!("events: {events:#?}");
    assert!(
        events.iter().any(|e| e["event"] == "reconciled"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("1 rule(s) made again"))),
        "the heal's reconcile made the rule again: {events:?}"
    );
    assert!(
        events.iter().any(|e| e["event"] == "reachability"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reachable from the internet: yes"))),
        "{events:?}"
    );
    assert_eq!(status["reachability"]["last"], *o);
    assert_no_rule_to_the_daemon(&lab);
}

/// coturn without RFC 5780 gives no OTHER-ADDRESS: inbound is "not tested", never "not
/// reached", and the gauge says -1.
#[test]
fn a_stun_server_without_rfc_5780_leaves_inbound_not_tested() {
    let test = "a_stun_server_without_rfc_5780_leaves_inbound_not_tested";
    let Some(python) = available(test) else {
        return;
    };
    let (mut lab, coturn) = lab_with(CoturnMode::Plain, None);
    lab.start_daemon(&[
        ("STATUS_ADDR", STATUS_ADDR),
        ("REACHABILITY_CHECK", "true"),
        ("STUN_SERVERS", &coturn.server()),
    ]);
    let view = wait_for_result(&lab);
    eprintln!("{view:#}");
    let o = &view["last"];
    assert_eq!(o["inbound"]["result"], "not_tested", "{view}");
    assert_eq!(o["healed"], false, "no heal for an untested port: {view}");
    assert_eq!(o["exit_address"], "matches", "{view}");
    let line = view["line"].as_str().expect("line");
    assert!(line.contains("not tested"), "{line}");
    assert!(view.get("fix").is_none(), "{view}");
    let samples = metrics(&lab, &python);
    assert_eq!(value(&samples, "double_natpmp_reachable", &[]), -1.0);
}

/// Our gateway emulator with a quota of 2 ports, both taken by LAN clients: a check asked for
/// then is blocked (first by its own mapping's result 4, then without asking, while the quota
/// is known to be full), leaves nothing behind on either layer, and takes no client's port:
/// once a client frees one, another client's mapping is granted. (The first check's router
/// rule, asked for together with the gateway's mapping as for any new mapping while no 4 has
/// been seen, is removed again after the 4: src/mapping/store/quota.rs; the gateway never
/// adds one.)
#[test]
fn a_full_gateway_quota_blocks_the_check_without_taking_a_clients_port() {
    let test = "a_full_gateway_quota_blocks_the_check_without_taking_a_clients_port";
    if available(test).is_none() {
        return;
    }
    let mut lab = Lab::up();
    let gateway = lab.start_gateway_emulator(&["--quota", "2"]);
    lab.start_router_emulator(&[]);
    lab.start_daemon(&[
        ("STATUS_ADDR", STATUS_ADDR),
        ("API_TOKEN", TOKEN),
        ("STUN_SERVERS", "198.51.101.1:3478"),
    ]);
    for port in ["6001", "6002"] {
        let out = lab.natpmpc(&["-a", "0", port, "udp", "600"]);
        assert!(out.success, "{out:?}");
        lab::wait_for_line(&gateway, "mapping added", Duration::from_secs(5));
    }
    for round in ["its own result 4", "the quota known to be full"] {
        let view = check_now(&lab);
        eprintln!("blocked by {round}: {view:#}");
        assert_eq!(view["last"]["blocked"]["kind"], "quota_full", "{view}");
        assert_eq!(view["last"]["inbound"]["result"], "not_tested", "{view}");
        assert!(view["line"]
            .as_str()
            .is_some_and(|l| l.contains("quota is full")));
        assert_no_rule_to_the_daemon(&lab);
        assert_eq!(router_rules(&lab).len(), 2, "the clients' rules only");
    }
    let mappings = get_json(&lab, "/api/v1/mappings");
    assert_eq!(mappings.as_array().map(Vec::len), Some(2), "{mappings}");

    let freed = lab.natpmpc(&["-a", "0", "6001", "udp", "0"]);
    assert!(freed.success, "{freed:?}");
    let next = lab.natpmpc(&["-a", "0", "6003", "udp", "600"]);
    assert!(next.success, "a client gets the freed port: {next:?}");
    let (external, local, _) = next.mapping().expect("a mapping");
    assert_eq!(local, 6003);
    // The gateway's log is in order: the first mapping it added after the clients' two is
    // 6003's, so the checks added none.
    let added = lab::wait_for_line(&gateway, "mapping added", Duration::from_secs(5));
    assert!(
        added.contains(&format!("external_port={external} ")),
        "{added}"
    );
}

/// Whether this test can run: the lab's tools, turnserver, curl, miniupnpd and the `.venv`
/// (the Prometheus parser, librouteros); its python. Under CI=true a missing piece fails.
fn available(test: &str) -> Option<PathBuf> {
    if !lab::available(test) {
        return None;
    }
    for tool in ["turnserver", "curl", "miniupnpd"] {
        if lab::which(tool).is_none() {
            common::skip::skip(
                test,
                &format!("needs {tool} (the test command installs it)"),
            );
            return None;
        }
    }
    let python = metrics_parser();
    if python.is_none() {
        common::skip::skip(
            test,
            "needs .venv with prometheus-client and librouteros (scripts/test.sh installs them)",
        );
    }
    python
}

/// The lab with miniupnpd, the tunnel's egress (from `exit` instead of EXT_IP when given),
/// the router emulator and coturn.
fn lab_with(mode: CoturnMode, exit: Option<&str>) -> (Lab, LabCoturn) {
    let mut lab = Lab::up();
    lab.start_miniupnpd("1024-65535 10.2.0.0/24 1024-65535");
    match exit {
        Some(exit) => lab.allow_tunnel_egress_from(exit),
        None => lab.allow_tunnel_egress(),
    }
    lab.start_router_emulator(&[]);
    let coturn = LabCoturn::start(&lab, mode);
    (lab, coturn)
}

#[track_caller]
fn assert_no_rule_to_the_daemon(lab: &Lab) {
    let rules = router_rules(lab);
    assert!(
        !rules.iter().any(|r| r.contains(ROUTER_LAN_IP)),
        "no dst-nat rule to the daemon's own address: {rules:?}"
    );
}

/// Runs curl in the router namespace against the status server (`extra` before the URL);
/// returns (HTTP status, body).
fn curl(lab: &Lab, extra: &[&str], path: &str) -> (u16, String) {
    let url = format!("http://{STATUS_ADDR}{path}");
    let mut args = extra.to_vec();
    args.push(&url);
    lab.curl(Host::Router, &args, 60)
}

/// `GET path`, answered 200 with JSON.
fn get_json(lab: &Lab, path: &str) -> Value {
    let (code, body) = curl(lab, &[], path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// `POST /api/v1/reachability` with the token: a check now; the view it answers (200).
fn check_now(lab: &Lab) -> Value {
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (code, body) = curl(lab, &["-X", "POST", "-H", &bearer], "/api/v1/reachability");
    assert_eq!(code, 200, "POST /api/v1/reachability: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("POST: {e}: {body}"))
}

/// Polls `GET /api/v1/reachability` until it has a `last` result (up to [`FIRST_RESULT`]).
fn wait_for_result(lab: &Lab) -> Value {
    let deadline = Instant::now() + FIRST_RESULT;
    loop {
        let view = get_json(lab, "/api/v1/reachability");
        if view.get("last").is_some() {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "no reachability result within {FIRST_RESULT:?}: {view}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/metrics`, read by the Prometheus project's parser.
fn metrics(lab: &Lab, python: &Path) -> Vec<common::daemon::Sample> {
    let (code, text) = curl(lab, &[], "/metrics");
    assert_eq!(code, 200, "{text}");
    parse_metrics(python, &text)
}

/// Through the router emulator's API (librouteros from the repository's `.venv`, run in the
/// router namespace): polls `/ip/firewall/nat` until a dst-nat rule to `to_address` exists (up
/// to `limit_s` seconds), removes it, and returns it as JSON.
fn remove_dstnat_rule_when_it_appears(lab: &Lab, to_address: &str, limit_s: u32) -> String {
    const SCRIPT: &str = r#"
import json, sys, time
from librouteros import connect
api = connect('127.0.0.1', 'admin', 'admin', port=8728, timeout=10)
nat = api.path('ip', 'firewall', 'nat')
deadline = time.monotonic() + float(sys.argv[2])
while True:
    rows = [r for r in nat if r.get('chain') == 'dstnat' and r.get('to-addresses') == sys.argv[1]]
    if rows:
        nat.remove(rows[0]['.id'])
        print(json.dumps({k: str(v) for k, v in rows[0].items()}), flush=True)
        break
    if time.monotonic() > deadline:
        sys.exit('no dst-nat rule to ' + sys.argv[1])
    time.sleep(0.02)
"#;
    let python = common::repo_root().join(".venv/bin/python");
    let python = python.to_str().unwrap_or_default();
    let limit = limit_s.to_string();
    let out = lab.exec(Host::Router, &[python, "-c", SCRIPT, to_address, &limit]);
    assert!(
        out.status.success(),
        "removing the rule through the router's API failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
