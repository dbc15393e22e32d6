//! A forward of the forwards API against the whole daemon and both emulators, and its own
//! client speaking NAT-PMP to the daemon: what the administrator made with `API_TOKEN`, a
//! NAT-PMP request cannot delete or shorten (C-35, C-36); the API's own DELETE still removes it.
//!
//! Network safety: everything is bound to and sent to loopback only.

use crate::common;

use common::daemon::{gateway_config, get_json, http, map, start_with_token, Client, Lab, TOKEN};
use double_natpmp_codec::natpmp::wire::{Protocol, ResultCode};
use double_natpmp_emulators::gateway::GatewayConfig;
use hyper::{Method, StatusCode};

/// The forward of 127.0.0.20's TCP 32400 as `/api/v1/mappings` shows it, if it is there.
async fn forward(lab: &Lab) -> Option<serde_json::Value> {
    let mappings = get_json(lab.status(), "/api/v1/mappings", StatusCode::OK).await;
    mappings.as_array().expect("list").iter().find_map(|m| {
        (m["protocol"] == "tcp" && m["internal_port"] == 32400 && m["origin"] == "api")
            .then(|| m.clone())
    })
}

/// Both layers of the forward: our TCP rule for its router port, and the gateway's mapping of
/// that port.
fn both_layers(lab: &Lab, router_port: u64) -> (bool, bool) {
    let rule = lab.our_rules().iter().any(|r| {
        r.fields.get("dst-port") == Some(&router_port.to_string())
            && r.fields.get("protocol").map(String::as_str) == Some("tcp")
    });
    let at_gateway = lab
        .gateway
        .mappings()
        .iter()
        .any(|m| m.protocol == Protocol::Tcp && u64::from(m.internal_port) == router_port);
    (rule, at_gateway)
}

#[tokio::test]
async fn c35_c36_a_forward_made_with_the_token_survives_a_natpmp_delete_and_delete_all_from_its_client(
) {
    // A gateway that grants an hour, so a shortened lifetime would show.
    let gateway = GatewayConfig {
        max_lifetime: 3600,
        ..gateway_config()
    };
    let mut lab = start_with_token(gateway).await;
    let addr = lab.status();
    let bearer = format!("Bearer {TOKEN}");
    let body =
        r#"{"client": "127.0.0.20", "protocol": "tcp", "internal_port": 32400, "lifetime": 3600}"#;
    let (status, _, text) = http(
        addr,
        Method::POST,
        "/api/v1/forwards",
        &[("authorization", &bearer)],
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let made = forward(&lab).await.expect("the forward is listed");
    assert_eq!(made["lifetime"], 3600, "{made}");
    let router_port = made["router_port"].as_u64().expect("router_port");
    assert_eq!(both_layers(&lab, router_port), (true, true));

    // Its client has a mapping of its own too, and speaks NAT-PMP.
    let client = Client::on(20, lab.daemon.listen).await;
    let own = client.ask(map(Protocol::Tcp, 6881, 3600)).await;
    assert_eq!(own.result, ResultCode::Success, "{own:?}");

    // A delete of the forward: 2 (not authorized), and both layers stay (C-35).
    let reply = client.ask(map(Protocol::Tcp, 32400, 0)).await;
    assert_eq!(reply.result, ResultCode::NotAuthorized, "{reply:?}");
    assert_eq!((reply.external_port, reply.lifetime), (0, 0), "{reply:?}");
    assert_eq!(both_layers(&lab, router_port), (true, true));

    // A delete-all of TCP: the client's own mapping goes, the forward stays, and the answer
    // is non-zero because one could not be deleted (C-36).
    let reply = client.ask(map(Protocol::Tcp, 0, 0)).await;
    assert_eq!(reply.result, ResultCode::NotAuthorized, "{reply:?}");
    assert_eq!(reply.internal_port, 0);
    let listed = get_json(addr, "/api/v1/mappings", StatusCode::OK).await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "only the forward is left: {listed}"
    );
    assert_eq!(both_layers(&lab, router_port), (true, true));

    // A renewal for 10 s is answered 10 s, but the forward keeps its hour.
    let reply = client.ask(map(Protocol::Tcp, 32400, 10)).await;
    assert_eq!(reply.result, ResultCode::Success, "{reply:?}");
    assert_eq!(reply.lifetime, 10);
    let kept = forward(&lab).await.expect("the forward is still listed");
    assert_eq!(kept["lifetime"], 3600, "{kept}");
    let left = kept["lifetime_left"].as_u64().expect("lifetime_left");
    assert!(left > 3000, "not shortened: {kept}");

    // The administrator's DELETE removes it from both layers.
    let (status, _, text) = http(
        addr,
        Method::DELETE,
        "/api/v1/forwards/tcp/127.0.0.20/32400",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(forward(&lab).await.is_none());
    assert_eq!(both_layers(&lab, router_port), (false, false));
    lab.stop().await;
}
