//! The forwards API end to end in network namespaces with real peers: the daemon runs in the
//! router namespace with STATUS_ADDR and API_TOKEN, the gateway is a real `miniupnpd`, and `curl`
//! (a real HTTP client) asks for a forward for the LAN host, which never speaks NAT-PMP. Without
//! the token the answer is 401, with a wrong one 403; with the right one the forward is made on
//! both layers, and a packet from the "internet" reaches the LAN host through both NAT layers.

use crate::common;

use std::time::Duration;

use common::lab::{self, Host, Lab, CLIENT_IP};
use common::traffic::{lan_listener, router_rules, send_from_internet};

const TOKEN: &str = "lab-token-0123456789abcdef";
const API: &str = "http://127.0.0.1:8080/api/v1/forwards";

/// Runs curl in the router namespace; returns (HTTP status, body).
fn curl(lab: &Lab, args: &[&str]) -> (u16, String) {
    lab.curl(Host::Router, args, 10)
}

#[test]
fn a_forward_made_with_the_token_carries_a_packet_to_the_lan_host() {
    let test = "a_forward_made_with_the_token_carries_a_packet_to_the_lan_host";
    if !lab::available(test) {
        return;
    }
    if lab::which("curl").is_none() {
        common::skip::skip(test, "needs curl (the test command installs it)");
        return;
    }
    let mut lab = Lab::up();
    lab.start_miniupnpd("1024-65535 10.2.0.0/24 1024-65535");
    lab.start_router_emulator(&[]);
    lab.start_daemon(&[("STATUS_ADDR", "127.0.0.1:8080"), ("API_TOKEN", TOKEN)]);
    let listener = lan_listener(&mut lab, "tcp", 8000);
    let body = format!(
        r#"{{"client": "{CLIENT_IP}", "protocol": "tcp", "internal_port": 8000, "lifetime": 600}}"#
    );
    let json = [
        "-H",
        "Content-Type: application/json",
        "--data",
        body.as_str(),
    ];

    let mut no_token = vec!["-X", "POST"];
    no_token.extend_from_slice(&json);
    no_token.push(API);
    assert_eq!(curl(&lab, &no_token).0, 401);
    let mut wrong = vec!["-X", "POST", "-H", "Authorization: Bearer not-the-token"];
    wrong.extend_from_slice(&json);
    wrong.push(API);
    assert_eq!(curl(&lab, &wrong).0, 403);
    assert_eq!(router_rules(&lab).len(), 0, "nothing was made");

    let bearer = format!("Authorization: Bearer {TOKEN}");
    let mut right = vec!["-X", "POST", "-H", bearer.as_str()];
    right.extend_from_slice(&json);
    right.push(API);
    let (code, answer) = curl(&lab, &right);
    assert_eq!(code, 200, "{answer}");
    let lease: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(lease["origin"], "api");
    assert_eq!(lease["client"], CLIENT_IP);
    let external = lease["external_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("port");
    assert_eq!(
        router_rules(&lab).len(),
        1,
        "one dst-nat rule on the router"
    );

    send_from_internet(&lab, "tcp", external, "hello-through-the-api");
    let line = lab::wait_for_line(&listener, "got", Duration::from_secs(10));
    assert!(line.contains("hello-through-the-api"), "{line}");

    let path = format!("{API}/tcp/{CLIENT_IP}/8000");
    let (code, answer) = curl(
        &lab,
        &["-X", "DELETE", "-H", bearer.as_str(), path.as_str()],
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(router_rules(&lab).len(), 0, "the rule is removed");
}
