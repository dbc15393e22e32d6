//! STATIC_MAPPINGS against the whole daemon and both emulators: the daemon makes them itself,
//! they show in the API as `static` with no expiry, and they survive the deletion of their rule
//! on the router (the reconciler makes it again), the gateway's loss of its state (the keeper
//! maps them again, with the gateway's new external port in the API), and a client's delete or
//! delete-all, which is answered 2 (not authorized) and changes nothing.
//!
//! Network safety: everything is bound to and sent to loopback only.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::daemon::{gateway_config, get_json, http, map, start, Client, Lab};
use double_natpmp::Origin;
use double_natpmp_codec::natpmp::wire::{Protocol, ResultCode};
use double_natpmp_emulators::gateway::GatewayConfig;
use hyper::{Method, StatusCode};

const CLIENT: &str = "127.0.0.30";

/// Waits (bounded, woken by the mapping core's events) until `cond` holds.
async fn until(lab: &Lab, what: &str, mut cond: impl FnMut(&Lab) -> bool) {
    let mut events = lab.daemon.orchestrator.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond(lab) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("{what}: events ended: {e}"),
            Err(_) => panic!("{what}: not within 15 s"),
        }
    }
}

/// The daemon's static leases: (protocol, router port) -> external port.
fn static_leases(lab: &Lab) -> BTreeMap<(Protocol, u16), u16> {
    lab.daemon
        .orchestrator
        .leases()
        .into_iter()
        .filter(|l| l.lease.origin == Origin::Static)
        .map(|l| ((l.key.protocol, l.lease.router_port), l.lease.external_port))
        .collect()
}

/// The gateway's mappings: (protocol, internal port = router port) -> external port.
fn at_gateway(lab: &Lab) -> BTreeMap<(Protocol, u16), u16> {
    lab.gateway
        .mappings()
        .into_iter()
        .map(|m| ((m.protocol, m.internal_port), m.external_port))
        .collect()
}

#[tokio::test]
async fn static_mappings_survive_a_deleted_rule_a_gateway_that_lost_its_state_and_a_delete() {
    // A short upstream lifetime, so the keeper's renewals (at half of it) come quickly.
    let gateway = GatewayConfig {
        max_lifetime: 4,
        ..gateway_config()
    };
    let mut lab = start(
        gateway,
        &[(
            "static-mappings",
            format!("tcp:{CLIENT}:32400,udp:{CLIENT}:32400"),
        )],
    )
    .await;
    until(&lab, "both static mappings made", |l| {
        static_leases(l).len() == 2 && l.our_rules().len() == 2
    })
    .await;
    assert_eq!(static_leases(&lab), at_gateway(&lab), "both layers agree");

    let addr = lab.status();
    let mappings = get_json(addr, "/api/v1/mappings", StatusCode::OK).await;
    for m in mappings.as_array().expect("list") {
        assert_eq!(m["origin"], "static", "{m}");
        assert_eq!(m["client"], CLIENT, "{m}");
        assert_eq!(
            m["lifetime_left"],
            serde_json::Value::Null,
            "never expires: {m}"
        );
    }

    // Someone deletes the TCP rule on the router: the reconciler makes it again.
    let tcp_rule = lab
        .our_rules()
        .into_iter()
        .find(|r| r.fields.get("protocol").map(String::as_str) == Some("tcp"))
        .expect("the tcp rule");
    assert!(lab.router.delete_nat_rule(&tcp_rule.id));
    assert_eq!(lab.our_rules().len(), 1);
    let report = lab
        .daemon
        .orchestrator
        .reconcile()
        .await
        .expect("reconcile");
    assert_eq!(report.recreated, 1, "{report:?}");
    let rules = lab.our_rules();
    assert_eq!(rules.len(), 2);
    assert!(
        rules
            .iter()
            .any(|r| r.fields.get("comment") == tcp_rule.fields.get("comment")),
        "the same rule is back: {rules:?}"
    );

    // The gateway loses its state: the keeper maps both again, and the API shows the gateway's
    // (new) external ports.
    lab.gateway.lose_state();
    assert!(at_gateway(&lab).is_empty());
    until(&lab, "the gateway holds both mappings again", |l| {
        at_gateway(l).len() == 2 && static_leases(l) == at_gateway(l)
    })
    .await;
    let mappings = get_json(addr, "/api/v1/mappings", StatusCode::OK).await;
    let shown: BTreeMap<(Protocol, u16), u16> = mappings
        .as_array()
        .expect("list")
        .iter()
        .map(|m| {
            let protocol =
                Protocol::parse(m["protocol"].as_str().unwrap_or_default()).expect("protocol");
            let port =
                |k: &str| u16::try_from(m[k].as_u64().unwrap_or_default()).unwrap_or_default();
            ((protocol, port("router_port")), port("external_port"))
        })
        .collect();
    assert_eq!(
        shown,
        at_gateway(&lab),
        "the API shows the current external ports"
    );

    // The client itself cannot delete them (C-35, C-36): its delete is answered 2, and so is
    // its delete-all; both layers stay as they were.
    let before = static_leases(&lab);
    let client = Client::on(30, lab.daemon.listen).await;
    let reply = client.ask(map(Protocol::Udp, 32400, 0)).await;
    assert_eq!(reply.result, ResultCode::NotAuthorized, "{reply:?}");
    let reply = client.ask(map(Protocol::Udp, 0, 0)).await;
    assert_eq!(reply.result, ResultCode::NotAuthorized, "{reply:?}");
    assert_eq!(
        static_leases(&lab),
        before,
        "the same leases, not made again"
    );
    assert_eq!(at_gateway(&lab), before);
    assert_eq!(lab.our_rules().len(), 2);

    let (_, _, metrics) = http(addr, Method::GET, "/metrics", &[], None).await;
    let renewed = metrics
        .lines()
        .find(|l| l.starts_with("double_natpmp_keeper_renewals_total{result=\"renewed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        renewed >= 2,
        "the keeper's renewals are counted:\n{metrics}"
    );
    assert!(
        metrics.contains("double_natpmp_mappings{protocol=\"tcp\",origin=\"static\"} 1"),
        "{metrics}"
    );

    // At the daemon's stop the static mappings go too, and are not made again.
    lab.stop().await;
    assert!(lab.our_rules().is_empty());
    assert!(at_gateway(&lab).is_empty());
}

#[tokio::test]
async fn a_static_mapping_outside_allowed_clients_is_refused_by_name() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_double-natpmp"))
        .env_clear()
        .envs([
            ("VPN_GATEWAY", "10.2.0.1"),
            ("MIKROTIK_API_ADDRESS", "127.0.0.1:1"),
            ("MIKROTIK_API_PASSWORD", "x"),
            ("ALLOWED_CLIENTS", "192.168.88.0/24"),
            ("STATIC_MAPPINGS", "tcp:192.168.99.20:32400"),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("STATIC_MAPPINGS")
            && err.contains("192.168.99.20")
            && err.contains("ALLOWED_CLIENTS"),
        "{err}"
    );
}
