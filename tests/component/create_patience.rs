//! CREATE_PATIENCE (C-17b): a new mapping, or a renewal that must ask the gateway, rides out a
//! transient failure of either layer instead of answering 3 at the first timeout, which would
//! make libtorrent wait two hours. Against the in-process fakes on tokio's paused clock, so
//! every timeout and window runs exactly; a fault lasts a set (virtual) time, then ends. The
//! last test runs the whole daemon against both emulators over loopback (the forwards API).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use double_natpmp::Orchestrator;
use double_natpmp::{AddressReply, MapGrant, Upstream, UpstreamError, UpstreamMap};
use double_natpmp::{MapHandler, MapReply};
use double_natpmp_codec::natpmp::epoch::Epoch;
use double_natpmp_codec::natpmp::wire::{Protocol, ResultCode};
use tokio::time::Instant;

use common::fakes::*;

/// Asks for lan(10) TCP 6881 in a task of its own; the fault is ended while it waits.
fn ask_in_background(orch: &Orch) -> tokio::task::JoinHandle<(MapReply, Duration)> {
    let orch = orch.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let reply = orch
            .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
            .await;
        (reply, started.elapsed())
    })
}

#[tokio::test(start_paused = true)]
async fn c17b_a_gateway_silent_for_4s_still_gets_the_mapping_with_one_rule_made_once() {
    let (router, upstream, orch) = fresh().await;
    upstream.state().fault = Some(UpFault::Silent);
    let asking = ask_in_background(&orch);
    // The gateway is silent for 4 s (the fault's duration), then answers again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    upstream.state().fault = None;

    let (reply, took) = asking.await.expect("the request task");
    success(reply);
    assert!(
        took > Duration::from_secs(4) && took < config().create_patience,
        "{took:?}"
    );
    assert_eq!(orch.lease_count(), 1);
    assert_eq!(upstream.mapped().len(), 1, "one gateway mapping");
    // The rule made by the first attempt was kept while the gateway was asked again.
    assert_eq!(
        router.state().adds,
        1,
        "one rule add, no add-and-remove churn"
    );
    assert_eq!(router.state().removes, 0);
    assert_eq!(router.our_rules().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn c17b_a_router_unreachable_for_3s_still_gets_the_mapping_with_one_gateway_exchange() {
    let (router, upstream, orch) = fresh().await;
    router.state().fault = Some(RouterFault::CutBefore);
    let asking = ask_in_background(&orch);
    tokio::time::sleep(Duration::from_secs(3)).await;
    router.state().fault = None;

    let (reply, took) = asking.await.expect("the request task");
    success(reply);
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert_eq!(router.our_rules().len(), 1);
    // The gateway's mapping, made at once, was kept while the router was tried again.
    assert_eq!(upstream.exchanges(), 1, "one gateway exchange");
    assert_eq!(upstream.mapped().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn c17b_a_router_that_timed_out_is_looked_up_before_another_add() {
    let (router, upstream, orch) = fresh().await;
    router.state().fault = Some(RouterFault::Timeout);
    let asking = ask_in_background(&orch);
    // The router swallows commands for 4 s; the first add times out after ROUTER_TIMEOUT (5 s
    // in these tests), and the next attempt finds the router answering again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    router.state().fault = None;

    let (reply, _) = asking.await.expect("the request task");
    success(reply);
    assert_eq!(router.our_rules().len(), 1, "{:?}", router.rules());
    assert!(router.state().finds >= 1, "looked up before adding again");
    assert_eq!(upstream.mapped().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn c17b_refusals_are_answered_at_once_without_waiting_for_the_window() {
    let (router, upstream, orch) = fresh().await;
    upstream.state().fault = Some(UpFault::Quota);
    let started = Instant::now();
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::OutOfResources));
    assert_eq!(started.elapsed(), Duration::ZERO, "4 at once");

    upstream.state().fault = None;
    router.state().add_fault = Some(AddFault::PermissionDenied);
    let started = Instant::now();
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6882, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NotAuthorized));
    assert_eq!(started.elapsed(), Duration::ZERO, "2 at once");
    orch.settled().await;
    assert!(router.our_rules().is_empty());
    assert!(upstream.mapped().is_empty());
}

#[tokio::test(start_paused = true)]
async fn c17b_a_gateway_refusing_with_icmp_for_longer_than_the_window_gets_3_as_it_ends_and_leaves_nothing(
) {
    let (router, upstream, orch) = fresh().await;
    upstream.state().fault = Some(UpFault::Refused);
    let started = Instant::now();
    let reply = orch
        .handle_map(lan(10), map(Protocol::Udp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    assert_eq!(started.elapsed(), config().create_patience);
    assert!(
        upstream.exchanges() >= 4,
        "asked again and again: {}",
        upstream.exchanges()
    );
    orch.settled().await;
    assert!(
        router.our_rules().is_empty(),
        "the kept rule went at the end"
    );
    assert!(upstream.mapped().is_empty());
    assert_eq!(orch.lease_count(), 0);
    // Nothing half-made is left reserved: the same router port once the gateway is back.
    upstream.state().fault = None;
    ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    assert_eq!(
        router.our_rules()[0].dst_port.as_deref(),
        Some("6881"),
        "{:?}",
        router.rules()
    );
}

#[tokio::test(start_paused = true)]
async fn c17b_a_renewal_whose_gateway_mapping_lapsed_rides_out_a_gateway_hiccup() {
    let (_router, upstream, orch) = fresh().await;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    // The gateway goes silent long enough for its mapping (60 s) to lapse unrenewed.
    upstream.state().fault = Some(UpFault::Silent);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let asking = ask_in_background(&orch);
    tokio::time::sleep(Duration::from_secs(3)).await;
    upstream.state().fault = None;

    let (reply, took) = asking.await.expect("the request task");
    let reply = success(reply);
    assert!(
        took >= Duration::from_secs(3),
        "it waited for the gateway: {took:?}"
    );
    assert!(reply.external_port != 0 && reply.lifetime > 0, "{reply:?}");
    assert_eq!(orch.lease_count(), 1);
}

/// A gateway that grants a day whatever it is asked (RFC 6886 §3.3 says it may grant less,
/// never more).
#[derive(Clone)]
struct Generous(FakeUpstream);

impl Upstream for Generous {
    async fn external_address(&self) -> Result<AddressReply, UpstreamError> {
        self.0.external_address().await
    }

    async fn map(&self, ask: UpstreamMap) -> Result<MapGrant, UpstreamError> {
        let grant = self.0.map(ask).await?;
        Ok(MapGrant {
            lifetime: if ask.lifetime == 0 { 0 } else { 86_400 },
            ..grant
        })
    }
}

#[tokio::test(start_paused = true)]
async fn c30_a_gateway_granting_more_than_asked_is_counted_on_for_what_was_asked_only() {
    let router = FakeRouter::default();
    let upstream = FakeUpstream::new();
    let orch = match Orchestrator::start(
        router.clone(),
        Generous(upstream.clone()),
        Arc::new(Epoch::new()),
        config(),
    )
    .await
    {
        Ok(o) => o,
        Err(e) => panic!("orchestrator did not start: {e}"),
    };
    let reply = success(
        orch.handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 30))
            .await,
    );
    assert_eq!(reply.lifetime, 30);
    let leases = orch.leases();
    assert_eq!(
        leases[0].lease.upstream_lifetime, 30,
        "not the day it granted"
    );
    // So the keeper renews it upstream well within what was asked, not a day later.
    let exchanges = upstream.exchanges();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        upstream.exchanges() > exchanges,
        "renewed upstream within 30 s"
    );
}

/// C-17b: the forwards API waits the same way. A forward posted while the gateway is silent for
/// 2 s is made, with a 200, instead of a 502 at the first timeout (real sockets, both emulators).
#[tokio::test]
async fn c17b_a_forward_posted_while_the_gateway_is_silent_for_2s_is_made() {
    use common::daemon::{gateway_config, http, start_with_token, TOKEN};
    use double_natpmp_emulators::gateway::Mode;
    use hyper::{Method, StatusCode};

    let mut lab = start_with_token(gateway_config()).await;
    let addr = lab.status();
    lab.gateway
        .set_mode(Mode::Silent)
        .await
        .unwrap_or_else(|e| panic!("gateway mode: {e}"));
    let posting = tokio::spawn(async move {
        let body = r#"{"client": "127.0.0.20", "protocol": "tcp", "internal_port": 32400, "lifetime": 3600}"#;
        let bearer = format!("Bearer {TOKEN}");
        http(
            addr,
            Method::POST,
            "/api/v1/forwards",
            &[("authorization", &bearer)],
            Some(body),
        )
        .await
    });
    // The gateway is silent for 2 s (the fault's duration), then answers again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.gateway
        .set_mode(Mode::Normal)
        .await
        .unwrap_or_else(|e| panic!("gateway mode: {e}"));

    let (status, _, body) = posting.await.expect("the POST task");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(lab.our_rules().len(), 1);
    assert_eq!(lab.gateway.mappings().len(), 1);
    lab.stop().await;
}
