//! The mapping orchestrator against in-process fakes of the router and the VPN gateway: every
//! transaction of docs/architecture.md §3 (Transactions), failure handling, the reconciler, expiry and
//! shutdown. Time is tokio's paused clock, so expiry and timeouts run instantly and exactly.
//! Rule numbers (C-xx) refer to docs/conformance.md.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use double_natpmp::RuleComment;
use double_natpmp::RuleId;
use double_natpmp::RuleKind;
use double_natpmp::{MapHandler, MapReply};
use double_natpmp::{MappingConfig, Orchestrator, Origin};
use double_natpmp_codec::natpmp::epoch::Epoch;
use double_natpmp_codec::natpmp::wire::{Protocol, ResultCode};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::common;

use common::fakes::*;

/// A fresh router and gateway, and an orchestrator that tries once (CREATE_PATIENCE 0: the
/// window has its own tests, tests/component/create_patience.rs).
async fn fresh_impatient() -> (FakeRouter, FakeUpstream, Orch) {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let config = MappingConfig {
        create_patience: Duration::ZERO,
        ..config()
    };
    let orch = start_with(&router, &upstream, config).await;
    (router, upstream, orch)
}

// ---------------------------------------------------------------------------------------------
// New mappings, renewals, lifetimes

#[tokio::test(start_paused = true)]
async fn new_mapping_costs_one_router_command_and_one_upstream_exchange() {
    let (router, upstream, orch) = fresh().await;
    let commands = router.commands();

    let reply = success(
        orch.handle_map(lan(10), map(Protocol::Tcp, 6881, 6881, 60))
            .await,
    );

    assert_eq!(
        router.commands() - commands,
        1,
        "exactly one router command"
    );
    assert_eq!(router.state().adds, 1);
    assert_eq!(upstream.exchanges(), 1, "exactly one upstream exchange");
    let rules = router.rules();
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    // C-25/C-26: the rule forwards to the request's source, for the requested protocol only.
    assert_eq!(rule.protocol.as_deref(), Some("tcp"));
    assert_eq!(rule.in_interface.as_deref(), Some(IFACE));
    assert_eq!(rule.to_addresses.as_deref(), Some("192.168.88.10"));
    assert_eq!(rule.to_ports.as_deref(), Some("6881"));
    let router_port: u16 = rule
        .dst_port
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // The gateway maps R and the client gets the gateway's external port.
    let up = upstream.mapped();
    assert_eq!(
        up.get(&(Protocol::Tcp, router_port)).map(|m| m.0),
        Some(reply.external_port)
    );
    assert_eq!(reply.lifetime, 60);
    // The comment carries what a restart needs.
    let comment = RuleComment::parse(rule.comment.as_deref().unwrap_or_default());
    assert_eq!(
        comment.map(|c| (c.key.client, c.key.internal_port, c.router_port)),
        Some((lan(10), 6881, router_port))
    );
    assert_eq!(orch.lease_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn c29_retransmit_and_renewal_return_same_external_port_with_no_router_command() {
    let (router, upstream, orch) = fresh().await;
    let first = success(
        orch.handle_map(lan(10), map(Protocol::Udp, 6881, 6881, 3600))
            .await,
    );
    let commands = router.commands();

    // A retransmit, then a renewal suggesting a different port (Transmission suggests its local port).
    let again = success(
        orch.handle_map(lan(10), map(Protocol::Udp, 6881, 6881, 3600))
            .await,
    );
    let renewal = success(
        orch.handle_map(lan(10), map(Protocol::Udp, 6881, 1234, 3600))
            .await,
    );

    assert_eq!(again.external_port, first.external_port);
    assert_eq!(renewal.external_port, first.external_port);
    assert_eq!(
        router.commands(),
        commands,
        "a renewal costs zero router commands"
    );
    assert_eq!(router.rules().len(), 1, "no second rule");
    assert_eq!(
        upstream.exchanges(),
        1,
        "renewals are answered from the lease while the keeper keeps the upstream mapping valid"
    );
}

#[tokio::test(start_paused = true)]
async fn the_keeper_sees_a_moved_external_port_and_the_next_renewal_carries_it() {
    let (router, upstream, orch) = fresh().await;
    let first = ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    upstream.state().move_on_renewal = true;
    // The keeper renews at about half of the 60 s grant, without the client.
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(upstream.exchanges(), 2, "one map, one keeper renewal");
    let renewal = ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    assert_ne!(renewal.external_port, first.external_port);
    assert_eq!(orch.leases()[0].lease.external_port, renewal.external_port);
    assert_eq!(
        upstream.exchanges(),
        2,
        "the client's renewal was answered from the lease"
    );
    let comment = router.our_rules()[0].comment.clone().unwrap_or_default();
    assert!(
        comment.ends_with(&format!(" e={}", renewal.external_port)),
        "the rule's comment records the new port for a restart: {comment}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_keeper_renews_once_per_half_lifetime_and_never_touches_the_router() {
    let (router, upstream, orch) = fresh().await;
    ask_ok(&orch, Protocol::Udp, 6881, 3600).await;
    let commands = router.commands();
    // Five minutes of a 60 s upstream grant, the client renewing every 50 s: the keeper renews
    // every ~30 s (±10 %), so 9 to 11 times, and the client's renewals cost nothing upstream.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(50)).await;
        ask_ok(&orch, Protocol::Udp, 6881, 3600).await;
    }
    let renewals = upstream.exchanges() - 1;
    assert!((9..=11).contains(&renewals), "{renewals} keeper renewals");
    assert_eq!(
        router.commands(),
        commands,
        "keeping a mapping costs no router command"
    );
    assert_eq!(orch.lease_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_gateway_hiccup_during_a_client_renewal_never_reaches_the_client() {
    let (_router, upstream, orch) = fresh().await;
    let first = ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    upstream.state().fault = Some(UpFault::Silent);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let renewal = ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    assert_eq!(renewal.external_port, first.external_port);
}

#[tokio::test(start_paused = true)]
async fn a_client_gets_a_failure_only_when_the_upstream_mapping_is_really_gone() {
    // One attempt per request: the failed renewal is answered after UPSTREAM_TIMEOUT, which
    // the keeper's and the lease's timing below assume.
    let (_router, upstream, orch) = fresh_impatient().await;
    ask_ok(&orch, Protocol::Udp, 6881, 3600).await;
    upstream.state().fault = Some(UpFault::Silent);
    // Within the 60 s upstream grant a renewal is answered from the lease…
    tokio::time::sleep(Duration::from_secs(50)).await;
    ask_ok(&orch, Protocol::Udp, 6881, 3600).await;
    // …past it, with every keeper renewal lost, the mapping is really gone: the client is told.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let reply = orch
        .handle_map(lan(10), map(Protocol::Udp, 6881, 0, 3600))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    // The gateway comes back: the keeper makes the mapping again on its own.
    upstream.state().fault = None;
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(upstream.mapped().len(), 1);
    ask_ok(&orch, Protocol::Udp, 6881, 3600).await;
}

#[tokio::test(start_paused = true)]
async fn c30_lifetime_is_never_more_than_asked_granted_or_capped() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let orch = start_with(
        &router,
        &upstream,
        MappingConfig {
            max_lifetime: 45,
            ..config()
        },
    )
    .await;
    // Upstream grants 60 at most; our cap is 45.
    assert_eq!(ask_ok(&orch, Protocol::Tcp, 1000, 3600).await.lifetime, 45);
    assert_eq!(ask_ok(&orch, Protocol::Tcp, 1001, 30).await.lifetime, 30);
    // We never ask the gateway for more than the client asked or than our cap.
    assert_eq!(upstream.state().asked, vec![45, 30]);

    let orch = start(&FakeRouter::default(), &FakeUpstream::new()).await;
    assert_eq!(ask_ok(&orch, Protocol::Tcp, 1000, 3600).await.lifetime, 60);
    assert_eq!(ask_ok(&orch, Protocol::Tcp, 1001, 30).await.lifetime, 30);
}

#[tokio::test(start_paused = true)]
async fn c37_internal_port_zero_with_a_lifetime_answers_2_and_changes_nothing() {
    let (router, upstream, orch) = fresh().await;
    let commands = router.commands();
    let reply = orch.handle_map(lan(10), map(Protocol::Udp, 0, 1, 60)).await;
    assert_eq!(reply, MapReply::failure(ResultCode::NotAuthorized));
    assert_eq!(router.commands(), commands);
    assert_eq!(upstream.exchanges(), 0);
}

// ---------------------------------------------------------------------------------------------
// Failures: answered, never half made

#[tokio::test(start_paused = true)]
async fn router_trap_on_add_answers_3_and_leaves_no_upstream_mapping() {
    let (router, upstream, orch) = fresh().await;
    router.state().add_fault = Some(AddFault::Trap);
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    // Asked at once with the router, the gateway's mapping was deleted before the reply.
    assert_eq!(upstream.exchanges(), 2, "the map, and its rollback");
    assert!(upstream.mapped().is_empty(), "no upstream mapping");
    assert!(router.rules().is_empty());
    assert_eq!(orch.lease_count(), 0);

    // The port was freed: once the router works again the same preferred port is used.
    router.state().add_fault = None;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    assert_eq!(router.rules()[0].dst_port.as_deref(), Some("6881"));
}

#[tokio::test(start_paused = true)]
async fn router_permission_refusal_answers_2_and_leaves_no_upstream_mapping() {
    let (router, upstream, orch) = fresh().await;
    router.state().add_fault = Some(AddFault::PermissionDenied);
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NotAuthorized));
    assert!(
        upstream.mapped().is_empty(),
        "the gateway's mapping was rolled back"
    );
    assert!(router.rules().is_empty());
}

#[tokio::test(start_paused = true)]
async fn upstream_silent_answers_3_when_create_patience_ends_and_leaves_no_rule() {
    let (router, upstream, orch) = fresh().await;
    upstream.state().fault = Some(UpFault::Silent);
    let started = Instant::now();
    let reply = orch
        .handle_map(lan(10), map(Protocol::Udp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    // Not before the window ends (the gateway was asked again meanwhile), and not after it.
    assert_eq!(
        started.elapsed(),
        config().create_patience,
        "answered as the window ended"
    );
    assert!(upstream.exchanges() >= 2, "the gateway was asked again");
    // The gateway may have made the mapping: the undo asks it first, in the background.
    orch.settled().await;
    assert!(router.rules().is_empty(), "rule rolled back");
    assert_eq!(orch.lease_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn upstream_that_loses_its_reply_has_its_mapping_deleted_before_the_rule_goes() {
    let (router, upstream, orch) = fresh().await;
    upstream.state().fault = Some(UpFault::LosesReplies);
    let reply = orch
        .handle_map(lan(10), map(Protocol::Udp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    assert_eq!(upstream.mapped().len(), 1, "the gateway made the mapping");
    orch.settled().await;
    assert!(
        upstream.mapped().is_empty(),
        "the rollback deleted the mapping the gateway made"
    );
    assert!(router.rules().is_empty(), "and the rule");
    // The delete's own reply was lost too, so the port waits for the reconciler.
    assert!(orch.table().is_used(Protocol::Udp, 6881));
}

#[tokio::test(start_paused = true)]
async fn upstream_timeout_sends_a_delete_for_a_mapping_it_may_have_made() {
    // One attempt, so the gateway sees one map and its delete.
    let (_router, upstream, orch) = fresh_impatient().await;
    upstream.state().fault = Some(UpFault::Silent);
    let started = Instant::now();
    let reply = orch
        .handle_map(lan(10), map(Protocol::Udp, 6881, 0, 60))
        .await;
    assert_eq!(reply.result, ResultCode::NetworkFailure);
    assert_eq!(
        started.elapsed(),
        config().upstream_timeout,
        "one attempt's bound"
    );
    // The gateway comes back; the background delete gets through before the port is reused.
    upstream.state().fault = None;
    tokio::time::sleep(config().upstream_timeout * 2).await;
    assert_eq!(upstream.exchanges(), 2, "one map, one delete");
    assert!(
        !orch.table().is_used(Protocol::Udp, 6881),
        "port freed after the delete"
    );
}

#[tokio::test(start_paused = true)]
async fn upstream_quota_answers_4_and_leaves_no_rule() {
    let (router, upstream, orch) = fresh().await;
    upstream.state().fault = Some(UpFault::Quota);
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::OutOfResources));
    assert!(router.rules().is_empty(), "rule rolled back");
    assert_eq!(orch.lease_count(), 0);
    assert_eq!(
        upstream.exchanges(),
        1,
        "a definite refusal needs no upstream delete"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_rollback_is_answered_and_the_reconciler_removes_the_rule_later() {
    let (router, upstream, orch) = fresh().await;
    upstream.state().fault = Some(UpFault::Quota);
    router.state().remove_fails = true;
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::OutOfResources));
    assert_eq!(
        router.rules().len(),
        1,
        "the rollback could not remove the rule"
    );
    // The port is not handed to anyone else while that rule may still forward it.
    assert!(orch.table().is_used(Protocol::Tcp, 6881));

    router.state().remove_fails = false;
    let report = orch.reconcile().await.map_err(|e| e.to_string());
    assert_eq!(report.map(|r| r.orphans_removed), Ok(1));
    assert!(router.rules().is_empty());
    assert!(!orch.table().is_used(Protocol::Tcp, 6881));
}

#[tokio::test(start_paused = true)]
async fn add_whose_reply_is_lost_is_settled_by_comment_and_the_mapping_goes_on() {
    let (router, upstream, orch) = fresh().await;
    router.state().add_fault = Some(AddFault::ExecuteThenCut);
    let reply = ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    assert_eq!(router.state().adds, 1, "no second add");
    assert_eq!(router.our_rules().len(), 1, "exactly one rule");
    assert_eq!(upstream.exchanges(), 1);
    assert_eq!(
        orch.leases()[0].lease.rule_id(RuleKind::DstNat),
        router.our_rules()[0].id.as_ref(),
        "the lease holds the rule the lookup found"
    );
    assert_eq!(reply.external_port, orch.leases()[0].lease.external_port);
    router.state().add_fault = None;
    let report = orch.reconcile().await.map_err(|e| e.to_string());
    assert_eq!(report.map(|r| r.orphans_removed), Ok(0));
}

#[tokio::test(start_paused = true)]
async fn add_whose_reply_is_lost_and_cannot_be_looked_up_keeps_the_port_until_the_reconciler() {
    let (router, upstream, orch) = fresh().await;
    {
        let mut s = router.state();
        s.add_fault = Some(AddFault::ExecuteThenCut);
        s.remove_fails = true; // lookups fail too
    }
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    assert!(
        upstream.mapped().is_empty(),
        "the gateway's mapping was rolled back"
    );
    assert_eq!(router.rules().len(), 1, "the rule exists, unknown to us");
    assert!(
        orch.table().is_used(Protocol::Tcp, 6881),
        "R stays reserved"
    );

    {
        let mut s = router.state();
        s.add_fault = None;
        s.remove_fails = false;
    }
    let report = orch.reconcile().await.map_err(|e| e.to_string());
    assert_eq!(report.map(|r| r.orphans_removed), Ok(1));
    assert!(router.rules().is_empty(), "orphan removed");
    assert!(!orch.table().is_used(Protocol::Tcp, 6881));
}

#[tokio::test(start_paused = true)]
async fn router_ports_exhausted_answers_4() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let orch = start_with(
        &router,
        &upstream,
        MappingConfig {
            router_ports: 40000..=40001,
            ..config()
        },
    )
    .await;
    // Ports below 1024 are never used as preferences, so these draw from the range.
    ask_ok(&orch, Protocol::Tcp, 80, 60).await;
    success(
        orch.handle_map(lan(11), map(Protocol::Tcp, 80, 0, 60))
            .await,
    );
    let reply = orch
        .handle_map(lan(12), map(Protocol::Tcp, 80, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::OutOfResources));
    assert_eq!(router.rules().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Concurrency

#[tokio::test(start_paused = true)]
async fn two_hundred_concurrent_requests_get_two_hundred_distinct_router_ports() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    router.state().delay = Duration::from_millis(3);
    let orch = start(&router, &upstream).await;
    let mut set = JoinSet::new();
    for i in 0..200u16 {
        let orch = orch.clone();
        // Everyone wants the same port, so every preference collides.
        let client = Ipv4Addr::new(
            192,
            168,
            88 + u8::try_from(i / 100).unwrap_or(0),
            u8::try_from(i % 100).unwrap_or(0) + 2,
        );
        set.spawn(async move {
            orch.handle_map(client, map(Protocol::Udp, 6881, 6881, 60))
                .await
        });
    }
    let mut external = HashSet::new();
    while let Some(reply) = set.join_next().await {
        let reply = success(reply.unwrap_or_else(|e| panic!("task failed: {e}")));
        external.insert(reply.external_port);
    }
    let ports: HashSet<String> = router
        .rules()
        .iter()
        .filter_map(|r| r.dst_port.clone())
        .collect();
    assert_eq!(router.rules().len(), 200, "no duplicate rule");
    assert_eq!(ports.len(), 200, "200 distinct router ports");
    assert_eq!(external.len(), 200);
    assert_eq!(orch.lease_count(), 200);
}

#[tokio::test(start_paused = true)]
async fn key_locks_are_dropped_when_nobody_needs_them() {
    let (_router, _upstream, orch) = fresh().await;
    let mut set = JoinSet::new();
    for i in 0..20u8 {
        let orch = orch.clone();
        set.spawn(async move {
            orch.handle_map(lan(10 + i % 4), map(Protocol::Udp, 6881, 0, 60))
                .await
        });
    }
    while let Some(r) = set.join_next().await {
        assert!(
            matches!(
                r,
                Ok(MapReply {
                    result: ResultCode::Success,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    assert_eq!(orch.lease_count(), 4);
    assert_eq!(
        orch.locks_in_use(),
        0,
        "no lock entry outlives its transactions"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_identical_requests_are_serialized_into_one_rule() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    router.state().delay = Duration::from_millis(20);
    let orch = start(&router, &upstream).await;
    let (a, b) = tokio::join!(
        orch.handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60)),
        orch.handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60)),
    );
    assert_eq!(success(a).external_port, success(b).external_port);
    assert_eq!(router.rules().len(), 1);
    assert_eq!(router.state().adds, 1);
    // The copy that waited got the first request's answer: no renewal exchange upstream.
    assert_eq!(upstream.exchanges(), 1);
    // A request that arrives after the first finished is a renewal, answered from the lease.
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    assert_eq!(upstream.exchanges(), 1);
}

// ---------------------------------------------------------------------------------------------
// Deletes

#[tokio::test(start_paused = true)]
async fn c33_delete_removes_both_layers() {
    let (router, upstream, orch) = fresh().await;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6881, 9999, 0))
        .await;
    assert_eq!(reply, deleted());
    assert!(router.rules().is_empty());
    assert!(upstream.mapped().is_empty());
    assert_eq!(orch.lease_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn c34_delete_of_a_mapping_that_does_not_exist_succeeds() {
    let (router, upstream, orch) = fresh().await;
    let commands = router.commands();
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Udp, 6881)).await,
        deleted()
    );
    assert_eq!(router.commands(), commands);
    assert_eq!(upstream.exchanges(), 0);
}

#[tokio::test(start_paused = true)]
async fn c35_delete_of_a_port_held_by_a_foreign_rule_answers_2_and_keeps_the_rule() {
    let router = FakeRouter::default();
    let upstream = FakeUpstream::new();
    router.seed(
        "tcp",
        "2222",
        lan(10),
        Some("22"),
        Some("ssh for my laptop"),
    );
    let orch = start(&router, &upstream).await;
    let reply = orch.handle_map(lan(10), delete(Protocol::Tcp, 22)).await;
    assert_eq!(reply, MapReply::failure(ResultCode::NotAuthorized));
    assert_eq!(router.rules().len(), 1, "foreign rule untouched");
    // Another client's delete of the same port is not about that rule.
    assert_eq!(
        orch.handle_map(lan(11), delete(Protocol::Tcp, 22)).await,
        deleted()
    );
}

#[tokio::test(start_paused = true)]
async fn c36_delete_all_removes_only_that_protocol_of_that_client() {
    let (router, upstream, orch) = fresh().await;
    ask_ok(&orch, Protocol::Udp, 1000, 60).await;
    ask_ok(&orch, Protocol::Udp, 1001, 60).await;
    ask_ok(&orch, Protocol::Tcp, 2000, 60).await;
    success(
        orch.handle_map(lan(11), map(Protocol::Udp, 1000, 0, 60))
            .await,
    );
    let exchanges = upstream.exchanges();

    let reply = orch.handle_map(lan(10), delete(Protocol::Udp, 0)).await;
    assert_eq!(reply, deleted());

    let left: Vec<(Ipv4Addr, Protocol, u16)> = orch
        .leases()
        .iter()
        .map(|l| (l.key.client, l.key.protocol, l.key.internal_port))
        .collect();
    assert_eq!(
        left,
        vec![
            (lan(10), Protocol::Tcp, 2000),
            (lan(11), Protocol::Udp, 1000)
        ]
    );
    assert_eq!(router.rules().len(), 2);
    assert_eq!(upstream.mapped().len(), 2);
    // One upstream delete per mapping, never an upstream delete-all (internal port 0).
    assert_eq!(upstream.exchanges() - exchanges, 2);
}

#[tokio::test(start_paused = true)]
async fn c36_delete_all_with_a_foreign_rule_deletes_ours_and_answers_2() {
    let router = FakeRouter::default();
    let upstream = FakeUpstream::new();
    router.seed("udp", "3000", lan(10), None, None);
    let orch = start(&router, &upstream).await;
    ask_ok(&orch, Protocol::Udp, 1000, 60).await;
    let reply = orch.handle_map(lan(10), delete(Protocol::Udp, 0)).await;
    assert_eq!(reply, MapReply::failure(ResultCode::NotAuthorized));
    assert_eq!(orch.lease_count(), 0);
    assert_eq!(router.rules().len(), 1, "only the foreign rule is left");
}

#[tokio::test(start_paused = true)]
async fn delete_when_the_router_fails_answers_3_and_the_reconciler_removes_the_rule() {
    let (router, upstream, orch) = fresh().await;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    router.state().remove_fails = true;
    let reply = orch.handle_map(lan(10), delete(Protocol::Tcp, 6881)).await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    assert!(upstream.mapped().is_empty(), "upstream deleted first");
    assert_eq!(orch.lease_count(), 0);
    assert!(
        orch.table().is_used(Protocol::Tcp, 6881),
        "R is not handed out while the rule may still forward it"
    );
    // The client tries again: nothing is left of the mapping for it (C-34).
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Tcp, 6881)).await,
        deleted()
    );
    router.state().remove_fails = false;
    let report = orch.reconcile().await.map_err(|e| e.to_string());
    assert_eq!(report.map(|r| r.orphans_removed), Ok(1));
    assert!(router.rules().is_empty());
    assert!(!orch.table().is_used(Protocol::Tcp, 6881));
}

#[tokio::test(start_paused = true)]
async fn teardown_deletes_upstream_before_the_rule() {
    let (router, upstream, orch) = fresh().await;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    // A gateway that fails deletes: the rule must still be there (the gateway still forwards).
    upstream.state().fault = Some(UpFault::Silent);
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Tcp, 6881)).await,
        deleted()
    );
    assert_eq!(
        router.our_rules().len(),
        1,
        "the rule stays while the gateway may forward the port"
    );
    assert!(
        orch.table().is_used(Protocol::Tcp, 6881),
        "R stays reserved"
    );
    // The gateway answers again; before the drain's next try, another client asks for 6881.
    upstream.state().fault = None;
    success(
        orch.handle_map(lan(11), map(Protocol::Tcp, 6881, 6881, 60))
            .await,
    );
    let leases = orch.leases();
    assert_eq!(leases.len(), 1);
    assert_ne!(
        leases[0].lease.router_port, 6881,
        "a draining router port is not handed to another client"
    );
}

#[tokio::test(start_paused = true)]
async fn upstream_delete_failure_keeps_the_router_port_until_the_gateway_mapping_lapsed() {
    let (router, upstream, orch) = fresh().await;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    upstream.state().fault = Some(UpFault::Silent);
    let started = Instant::now();
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Tcp, 6881)).await,
        deleted()
    );
    // The drain retries while the gateway is silent, and gives up waiting once the gateway's
    // 60 s mapping has lapsed: then the rule goes and R is free.
    orch.settled().await;
    assert!(
        started.elapsed() >= Duration::from_secs(55),
        "R was held until the upstream lifetime ran out ({:?})",
        started.elapsed()
    );
    assert!(router.our_rules().is_empty());
    assert!(!orch.table().is_used(Protocol::Tcp, 6881));
}

#[tokio::test(start_paused = true)]
async fn a_drain_ends_early_when_the_gateway_answers_the_delete_again() {
    let (router, upstream, orch) = fresh().await;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    upstream.state().fault = Some(UpFault::Silent);
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Tcp, 6881)).await,
        deleted()
    );
    upstream.state().fault = None;
    let started = Instant::now();
    orch.settled().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(upstream.mapped().is_empty());
    assert!(router.our_rules().is_empty());
    assert!(!orch.table().is_used(Protocol::Tcp, 6881));
}

// ---------------------------------------------------------------------------------------------
// What an administrator made (the forwards API, STATIC_MAPPINGS), NAT-PMP cannot undo

#[tokio::test(start_paused = true)]
async fn c35_c36_a_natpmp_delete_or_delete_all_never_removes_a_forward_of_the_api_or_a_static_mapping(
) {
    let (router, upstream, orch) = fresh().await;
    let admin = |protocol, origin| {
        let orch = &orch;
        async move {
            success(
                orch.handle_from(lan(10), map(protocol, 32400, 0, 60), origin)
                    .await,
            )
        }
    };
    admin(Protocol::Tcp, Origin::Api).await;
    admin(Protocol::Udp, Origin::Static).await;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    let (commands, exchanges) = (router.commands(), upstream.exchanges());

    // A single delete of either: 2 (not authorized), and nothing is asked of either layer.
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        assert_eq!(
            orch.handle_map(lan(10), delete(protocol, 32400)).await,
            MapReply::failure(ResultCode::NotAuthorized),
            "{protocol}"
        );
    }
    assert_eq!(router.commands(), commands, "no router command");
    assert_eq!(upstream.exchanges(), exchanges, "no gateway exchange");
    assert_eq!(orch.lease_count(), 4);

    // A delete-all of each protocol: the client's own mapping goes, the administrator's stays,
    // and the answer is non-zero (C-36: some could not be deleted).
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        assert_eq!(
            orch.handle_map(lan(10), delete(protocol, 0)).await,
            MapReply::failure(ResultCode::NotAuthorized),
            "{protocol}"
        );
    }
    let left: HashSet<(Protocol, u16, Origin)> = orch
        .leases()
        .iter()
        .map(|l| (l.key.protocol, l.key.internal_port, l.lease.origin))
        .collect();
    assert_eq!(
        left,
        HashSet::from([
            (Protocol::Tcp, 32400, Origin::Api),
            (Protocol::Udp, 32400, Origin::Static)
        ])
    );
    assert_eq!(router.our_rules().len(), 2, "their rules stay");
    assert_eq!(upstream.mapped().len(), 2, "so do their gateway mappings");

    // The administrator's own delete (the forwards API) removes the forward.
    assert_eq!(
        orch.handle_from(lan(10), delete(Protocol::Tcp, 32400), Origin::Api)
            .await,
        deleted()
    );
    assert_eq!(orch.lease_count(), 1);
    assert_eq!(router.our_rules().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_natpmp_renewal_never_shortens_a_forward_of_the_api_or_a_static_mapping() {
    let (router, upstream, orch) = fresh().await;
    for (protocol, origin) in [
        (Protocol::Tcp, Origin::Api),
        (Protocol::Udp, Origin::Static),
    ] {
        success(
            orch.handle_from(lan(10), map(protocol, 32400, 0, 60), origin)
                .await,
        );
    }
    let held = |protocol| {
        orch.leases()
            .into_iter()
            .find(|l| l.key.protocol == protocol)
            .map(|l| (l.lease.lifetime, l.lease.deadline))
            .expect("the lease")
    };
    let before = [held(Protocol::Tcp), held(Protocol::Udp)];
    tokio::time::advance(Duration::from_secs(1)).await;
    // The client renews both for 2 s: it is answered 2 s, but the leases keep their 60 s.
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let reply = success(orch.handle_map(lan(10), map(protocol, 32400, 0, 2)).await);
        assert_eq!(reply.lifetime, 2, "{protocol}");
    }
    assert_eq!([held(Protocol::Tcp), held(Protocol::Udp)], before);
    // Well past the client's 2 s (and the expiry grace), the forward is still there.
    tokio::time::advance(Duration::from_secs(20)).await;
    orch.expire_due().await;
    assert_eq!(orch.lease_count(), 2);
    assert_eq!(router.our_rules().len(), 2);
    assert_eq!(upstream.mapped().len(), 2);
    // A longer renewal does lengthen the forward.
    success(
        orch.handle_map(lan(10), map(Protocol::Tcp, 32400, 0, 60))
            .await,
    );
    assert!(held(Protocol::Tcp).1 > before[0].1);
}

/// LAN host 10 deletes its TCP 6881 behind a gateway that takes `gateway` to answer; once the
/// rule's lookup by comment, made meanwhile, has been answered (and before anything was
/// removed), `meanwhile` runs.
async fn delete_behind_a_slow_gateway(
    router: &FakeRouter,
    upstream: &FakeUpstream,
    orch: &Orch,
    gateway: Duration,
    meanwhile: impl FnOnce(),
) -> MapReply {
    upstream.state().delay = gateway;
    let finds = router.state().finds;
    let watch = async {
        // The fake router has no event to await: it is polled on the paused clock, which
        // lets the gateway's delay run out if the lookup waited for it.
        while router.state().finds == finds {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            router.state().removes,
            0,
            "nothing is removed while the gateway's delete is under way"
        );
        assert_eq!(
            upstream.mapped().len(),
            1,
            "the gateway still holds the mapping"
        );
        meanwhile();
    };
    let (reply, ()) = tokio::join!(orch.handle_map(lan(10), delete(Protocol::Tcp, 6881)), watch);
    reply
}

#[tokio::test(start_paused = true)]
async fn a_delete_looks_its_rule_up_during_the_gateways_delete_and_removes_it_only_after() {
    let (router, upstream, orch) = fresh().await;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    let before = router.commands();
    let reply = delete_behind_a_slow_gateway(
        &router,
        &upstream,
        &orch,
        Duration::from_millis(500),
        || {
            assert_eq!(router.our_rules().len(), 1, "the rule is in place");
        },
    )
    .await;
    assert_eq!(reply, deleted());
    assert!(upstream.mapped().is_empty());
    assert!(router.our_rules().is_empty());
    assert_eq!(router.commands() - before, 2, "one lookup and one remove");

    // Timed (the paused clock is exact): a router that takes 100 ms a command and a gateway
    // that takes 500 ms: the delete costs max(500, 100) + 100 ms, not 500 + 2 × 100.
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    router.state().delay = Duration::from_millis(100);
    let started = Instant::now();
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Tcp, 6881)).await,
        deleted()
    );
    assert_eq!(started.elapsed(), Duration::from_millis(600));
    assert!(router.our_rules().is_empty());
}

/// LAN host 10's TCP 6881 next to an admin's rule is deleted behind a gateway that takes
/// `gateway` to answer; meanwhile (after the rule's lookup) the admin's rule goes and the router
/// renumbers, as after a reboot, and then `then` runs. The delete must be answered success.
/// Returns the router, the orchestrator and the id the lookup found for our rule.
async fn delete_while_the_router_renumbers(
    gateway: Duration,
    then: impl FnOnce(&FakeRouter),
) -> (FakeRouter, Orch, RuleId) {
    let (router, upstream, orch) = fresh().await;
    let admins = router.seed("tcp", "22", lan(2), None, Some("ssh to the nas"));
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    let ours = router.our_rules()[0].id.clone().expect("our rule's id");
    let reply = delete_behind_a_slow_gateway(&router, &upstream, &orch, gateway, || {
        router.delete_by_hand(&admins);
        router.renumber();
        then(&router);
    })
    .await;
    assert_eq!(reply, deleted());
    (router, orch, ours)
}

#[tokio::test(start_paused = true)]
async fn a_rule_renumbered_while_the_gateway_deletes_is_looked_up_again_and_removed() {
    // The id the lookup found names no rule any more, and ours has another.
    let (router, orch, _) =
        delete_while_the_router_renumbers(Duration::from_millis(500), |_| {}).await;
    assert!(
        router.our_rules().is_empty(),
        "our rule is removed under its new id: {:?}",
        router.rules()
    );
    assert!(!orch.table().is_used(Protocol::Tcp, 6881));
}

#[tokio::test(start_paused = true)]
async fn a_delete_behind_a_slow_gateway_looks_its_rule_up_again_and_never_removes_the_rule_that_took_its_id(
) {
    // A gateway slower than the lookup may be trusted for; meanwhile the admin adds a rule,
    // which gets the id the lookup found for ours.
    let mut foreign = None;
    let (router, _orch, ours) =
        delete_while_the_router_renumbers(Duration::from_millis(1500), |router| {
            foreign = Some(router.seed("tcp", "2222", lan(3), Some("22"), Some("game server")));
        })
        .await;
    assert_eq!(
        foreign.as_ref(),
        Some(&ours),
        "the found id names the admin's rule now"
    );
    let rules = router.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].id, foreign, "the admin's rule is untouched");
    assert!(router.our_rules().is_empty(), "ours is the one removed");
}

// ---------------------------------------------------------------------------------------------
// A rule is known by its comment (point 2 of the core issue)

#[tokio::test(start_paused = true)]
async fn renumbered_ids_never_make_a_delete_remove_a_foreign_rule() {
    let (router, _upstream, orch) = fresh().await;
    let first = router.seed("tcp", "22", lan(2), None, Some("ssh to the nas"));
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    let held = orch.leases()[0].lease.rule_id(RuleKind::DstNat).cloned();
    // The admin removes the first rule, adds another, and the router renumbers: the id we held
    // (*2) now names the admin's new rule.
    router.delete_by_hand(&first);
    router.renumber();
    let foreign = router.seed("tcp", "2222", lan(3), Some("22"), Some("game server"));
    assert_eq!(
        Some(foreign.clone()),
        held,
        "the old id now belongs to a foreign rule"
    );

    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Tcp, 6881)).await,
        deleted()
    );
    let rules = router.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].id, Some(foreign), "the foreign rule is untouched");
    assert!(router.our_rules().is_empty(), "our rule is the one removed");
}

#[tokio::test(start_paused = true)]
async fn renumbered_ids_are_re_bound_by_the_reconciler_and_expiry_removes_the_right_rule() {
    let (router, _upstream, orch) = fresh().await;
    let first = router.seed("udp", "53", lan(2), None, None);
    ask_ok(&orch, Protocol::Udp, 6881, 30).await;
    router.delete_by_hand(&first);
    router.renumber();
    let foreign = router.seed("udp", "5000", lan(3), None, Some("voip"));
    let report = orch.reconcile().await.map_err(|e| e.to_string());
    assert_eq!(
        report.map(|r| (r.rebound, r.orphans_removed, r.recreated)),
        Ok((1, 0, 0))
    );
    assert_eq!(
        orch.leases()[0].lease.rule_id(RuleKind::DstNat),
        router.our_rules()[0].id.as_ref(),
        "the lease follows the renumbered id"
    );
    tokio::time::sleep(Duration::from_secs(40)).await;
    orch.expire_due().await;
    assert_eq!(orch.lease_count(), 0);
    let rules = router.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].id, Some(foreign));
}

// ---------------------------------------------------------------------------------------------
// The port index sees every rule that can catch tunnel traffic (point 3)

#[tokio::test(start_paused = true)]
async fn rules_on_an_interface_list_with_the_tunnel_or_on_no_interface_are_never_collided_with() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    router.state().members.extend([
        ("WAN".into(), IFACE.into()),
        ("LAN".into(), "bridge".into()),
    ]);
    let listed = router.seed("tcp", "6881", lan(20), None, Some("list rule"));
    let anywhere = router.seed("tcp", "6882", lan(21), None, Some("no interface"));
    let lan_only = router.seed("tcp", "6883", lan(22), None, Some("lan list"));
    {
        let mut s = router.state();
        for r in s.rules.iter_mut() {
            if r.id.as_ref() == Some(&listed) {
                r.in_interface = None;
                r.in_interface_list = Some("WAN".into());
            } else if r.id.as_ref() == Some(&anywhere) {
                r.in_interface = None;
            } else if r.id.as_ref() == Some(&lan_only) {
                r.in_interface = None;
                r.in_interface_list = Some("LAN".into());
            }
        }
    }
    let orch = start(&router, &upstream).await;
    for port in [6881, 6882] {
        success(
            orch.handle_map(lan(10), map(Protocol::Tcp, port, port, 60))
                .await,
        );
    }
    success(
        orch.handle_map(lan(10), map(Protocol::Tcp, 6883, 6883, 60))
            .await,
    );
    let ports: HashMap<u16, u16> = orch
        .leases()
        .iter()
        .map(|l| (l.key.internal_port, l.lease.router_port))
        .collect();
    assert_ne!(ports[&6881], 6881, "WAN holds the tunnel: 6881 is taken");
    assert_ne!(
        ports[&6882], 6882,
        "a rule on no interface catches the tunnel too"
    );
    assert_eq!(
        ports[&6883], 6883,
        "a LAN-list rule cannot catch tunnel traffic"
    );
    // C-35 uses the same view: a delete aimed at the list rule's target answers 2.
    assert_eq!(
        orch.handle_map(lan(20), delete(Protocol::Tcp, 6881)).await,
        MapReply::failure(ResultCode::NotAuthorized)
    );
}

#[tokio::test(start_paused = true)]
async fn router_service_ports_are_never_router_ports() {
    let (_router, _upstream, orch) = fresh().await;
    let reply = success(
        orch.handle_map(lan(10), map(Protocol::Tcp, 8291, 8291, 60))
            .await,
    );
    assert_ne!(reply.external_port, 0);
    assert_ne!(orch.leases()[0].lease.router_port, 8291, "winbox's port");
}

// ---------------------------------------------------------------------------------------------
// The in-interface is proven before any rule is added (point 4)

#[tokio::test(start_paused = true)]
async fn a_route_to_the_gateway_off_the_tunnel_means_result_3_and_no_rule_until_it_is_back() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    router.state().route_via = Some("ether1".into());
    let orch = start(&router, &upstream).await;
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    assert_eq!(router.state().adds, 0, "no rule is ever added");
    assert_eq!(upstream.exchanges(), 0);

    router.state().route_via = None;
    let report = orch.reconcile().await.map_err(|e| e.to_string());
    assert_eq!(report.map(|r| r.interface_ok), Ok(true));
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_that_is_down_or_not_a_tunnel_type_adds_no_rule() {
    for (down, kind, found) in [(true, "wg", false), (false, "ether", true)] {
        let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
        {
            let mut s = router.state();
            s.iface_down = down;
            s.iface_type = Some(kind.into());
        }
        let orch = start_with(
            &router,
            &upstream,
            MappingConfig {
                in_interface_found: found,
                ..config()
            },
        )
        .await;
        let reply = orch
            .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
            .await;
        assert_eq!(
            reply,
            MapReply::failure(ResultCode::NetworkFailure),
            "down={down} type={kind}"
        );
        assert_eq!(router.state().adds, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_configured_interface_of_another_type_is_used() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    router.state().iface_type = Some("vlan".into());
    let orch = start(&router, &upstream).await;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
}

// ---------------------------------------------------------------------------------------------
// Expiry

#[tokio::test(start_paused = true)]
async fn c32_expiry_removes_both_layers_of_a_mapping_not_renewed() {
    let (router, upstream, orch) = fresh().await;
    let reply = ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    let grace = config().expiry_grace;

    tokio::time::sleep(
        Duration::from_secs(u64::from(reply.lifetime)) + grace - Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        orch.lease_count(),
        1,
        "still alive just before the deadline"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(orch.lease_count(), 0);
    assert!(router.rules().is_empty());
    assert!(upstream.mapped().is_empty());
}

#[tokio::test(start_paused = true)]
async fn renewal_postpones_expiry() {
    let (router, _upstream, orch) = fresh().await;
    for _ in 0..4 {
        ask_ok(&orch, Protocol::Udp, 6881, 60).await;
        tokio::time::sleep(Duration::from_secs(45)).await;
    }
    assert_eq!(orch.lease_count(), 1);
    assert_eq!(router.rules().len(), 1);
    assert_eq!(router.state().adds, 1);
}

// ---------------------------------------------------------------------------------------------
// Reconciler

#[tokio::test(start_paused = true)]
async fn start_adopts_our_rules_removes_the_original_tools_and_never_touches_foreign_ones() {
    let router = FakeRouter::default();
    let upstream = FakeUpstream::new();
    router.seed(
        "tcp",
        "40010",
        lan(10),
        Some("6881"),
        Some("double-natpmp:v1 tcp 192.168.88.10:6881 r=40010"),
    );
    router.seed(
        "udp",
        "40011",
        lan(10),
        Some("6881"),
        Some("double-natpmp-udp-192.168.88.10-6881"),
    );
    router.seed("tcp", "8080", lan(20), Some("80"), Some("web server"));
    router.seed("udp", "40000-40005,40007", lan(21), None, None);
    let orch = start(&router, &upstream).await;

    let comments: Vec<Option<String>> = router.rules().into_iter().map(|r| r.comment).collect();
    assert_eq!(
        comments,
        vec![
            Some("double-natpmp:v1 tcp 192.168.88.10:6881 r=40010".to_owned()),
            Some("web server".to_owned()),
            None
        ]
    );
    assert_eq!(orch.lease_count(), 1, "our rule is a lease again");
    assert_eq!(
        upstream.mapped().len(),
        1,
        "its gateway mapping is made again"
    );
    // The foreign range is skipped when choosing router ports.
    for port in [40000, 40003, 40005, 40007] {
        assert!(orch.table().is_used(Protocol::Udp, port), "{port}");
    }
    success(
        orch.handle_map(lan(30), map(Protocol::Udp, 100, 0, 60))
            .await,
    );
    let new_rule = router
        .our_rules()
        .into_iter()
        .find(|r| r.to_addresses.as_deref() == Some("192.168.88.30"));
    assert_eq!(new_rule.and_then(|r| r.dst_port), Some("40006".into()));
}

#[tokio::test(start_paused = true)]
async fn reconciler_recreates_a_live_rule_someone_deleted() {
    let (router, _upstream, orch) = fresh().await;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    let Some(old) = orch.leases()[0].lease.rule_id(RuleKind::DstNat).cloned() else {
        panic!("the lease has no dst-nat rule")
    };
    router.delete_by_hand(&old);

    let report = orch.reconcile().await.map_err(|e| e.to_string());
    assert_eq!(report.map(|r| r.recreated), Ok(1));
    let rules = router.our_rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].dst_port.as_deref(), Some("6881"));
    assert_eq!(rules[0].to_addresses.as_deref(), Some("192.168.88.10"));
    assert_eq!(
        rules[0].id.as_ref(),
        orch.leases()[0].lease.rule_id(RuleKind::DstNat),
        "lease follows the new id"
    );

    // A second pass changes nothing.
    let report = orch.reconcile().await.map_err(|e| e.to_string());
    assert_eq!(report.map(|r| (r.recreated, r.orphans_removed)), Ok((0, 0)));
}

#[tokio::test(start_paused = true)]
async fn reconciler_runs_on_its_own_every_interval() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let orch = start_with(
        &router,
        &upstream,
        MappingConfig {
            reconcile_interval: Duration::from_secs(600),
            ..config()
        },
    )
    .await;
    // An orphan appears (left by a crashed earlier run, say).
    router.seed(
        "tcp",
        "40500",
        lan(10),
        Some("6881"),
        Some("double-natpmp:v1 tcp 192.168.88.10:6881 r=40500"),
    );
    let lists = router.state().lists;
    tokio::time::sleep(Duration::from_secs(601)).await;
    assert_eq!(
        router.state().lists,
        lists + 2,
        "one pass: dst-nat and src-nat listings"
    );
    assert!(router.rules().is_empty());
    drop(orch);
}

// ---------------------------------------------------------------------------------------------
// Shutdown and epoch

#[tokio::test(start_paused = true)]
async fn shutdown_removes_everything_and_refuses_new_requests() {
    let (router, upstream, orch) = fresh().await;
    for port in 1000..1010 {
        ask_ok(&orch, Protocol::Udp, port, 60).await;
    }
    let report = orch.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        (
            report.removed,
            report.failed,
            report.remaining,
            report.timed_out
        ),
        (10, 0, 0, false)
    );
    assert!(router.rules().is_empty());
    assert!(upstream.mapped().is_empty());

    let reply = orch
        .handle_map(lan(10), map(Protocol::Udp, 2000, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    assert!(router.rules().is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_an_in_flight_transaction_and_removes_its_mapping() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    router.state().delay = Duration::from_secs(1);
    let orch = start(&router, &upstream).await;
    let in_flight = {
        let orch = orch.clone();
        tokio::spawn(async move {
            orch.handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
                .await
        })
    };
    tokio::task::yield_now().await;
    let report = orch.shutdown(Duration::from_secs(30)).await;
    let reply = in_flight.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        reply.result,
        ResultCode::Success,
        "the in-flight request finished"
    );
    assert_eq!(report.removed, 1);
    assert!(router.rules().is_empty());
    assert!(upstream.mapped().is_empty());
}

#[tokio::test(start_paused = true)]
async fn c48_upstream_epoch_going_backwards_resets_our_epoch() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let epoch = Arc::new(Epoch::starting_at(
        std::time::Instant::now() - Duration::from_secs(5000),
    ));
    let orch = match Orchestrator::start(
        router.clone(),
        upstream.clone(),
        Arc::clone(&epoch),
        config(),
    )
    .await
    {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    assert!(epoch.sssoe() >= 5000);
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The gateway restarted and lost its mappings: its epoch is near zero.
    upstream.state().epoch_offset = -9;
    upstream.state().maps.clear();
    let exchanges = upstream.exchanges();
    // The keeper's next renewal (at about 30 s) shows it; our epoch is reset and every mapping
    // is made again at once.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(epoch.sssoe() <= 25, "our epoch was reset");
    assert!(
        upstream.exchanges() >= exchanges + 2,
        "renewed, then healed"
    );
    assert_eq!(
        upstream.mapped().len(),
        1,
        "the mapping is back at the gateway"
    );
}

// ---------------------------------------------------------------------------------------------
// Events: what the status API, metrics and webhooks listen to

#[tokio::test(start_paused = true)]
async fn every_change_of_a_mapping_is_an_event_in_order() {
    use double_natpmp::{MappingEvent, Origin, RemovalReason};
    let (_router, upstream, orch) = fresh().await;
    let mut events = orch.subscribe();
    let first = ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    upstream.state().move_on_renewal = true;
    tokio::time::sleep(Duration::from_secs(35)).await;
    let renewed = ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Tcp, 6881)).await,
        deleted()
    );
    let key = orch_key(lan(10), Protocol::Tcp, 6881);
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            MappingEvent::RouterCommand { .. } | MappingEvent::UpstreamExchange { .. } => {}
            other => seen.push(other),
        }
    }
    assert_eq!(
        seen,
        vec![
            MappingEvent::Created {
                key,
                router_port: 6881,
                external_port: first.external_port,
                lifetime: 60,
                origin: Origin::NatPmp,
            },
            MappingEvent::ExternalPortChanged {
                key,
                old: first.external_port,
                new: renewed.external_port,
            },
            MappingEvent::Renewed { key, lifetime: 60 },
            MappingEvent::Removed {
                key,
                router_port: 6881,
                external_port: renewed.external_port,
                reason: RemovalReason::Deleted,
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_static_mapping_never_expires() {
    use double_natpmp::Origin;
    let (router, _upstream, orch) = fresh().await;
    success(
        orch.handle_from(lan(20), map(Protocol::Tcp, 32400, 0, 60), Origin::Static)
            .await,
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    orch.expire_due().await;
    assert_eq!(orch.lease_count(), 1);
    assert_eq!(orch.leases()[0].lease.origin, Origin::Static);
    assert_eq!(router.our_rules().len(), 1);
}

fn orch_key(client: Ipv4Addr, protocol: Protocol, internal_port: u16) -> double_natpmp::MappingKey {
    double_natpmp::MappingKey {
        client,
        protocol,
        internal_port,
    }
}

// ---------------------------------------------------------------------------------------------
// Limits that protect the router and the gateway's quota

/// A fresh router and gateway, and an orchestrator with these MAX_MAPPINGS,
/// MAX_MAPPINGS_PER_CLIENT and CLIENT_RATE_LIMIT.
async fn limited(
    max_mappings: usize,
    max_per_client: usize,
    requests_per_second: u32,
) -> (FakeRouter, FakeUpstream, Orch) {
    use double_natpmp::LimitsConfig;
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let limits = LimitsConfig {
        max_mappings,
        max_per_client,
        requests_per_second,
    };
    let orch = start_with(&router, &upstream, MappingConfig { limits, ..config() }).await;
    (router, upstream, orch)
}

#[tokio::test(start_paused = true)]
async fn limits_answer_4_past_the_cap_the_per_client_limit_and_the_request_rate() {
    let (router, _upstream, orch) = limited(3, 2, 5).await;
    // Per client: two mappings, the third is refused.
    for port in [1001, 1002] {
        ask_ok(&orch, Protocol::Tcp, port, 60).await;
    }
    let third = orch
        .handle_map(lan(10), map(Protocol::Tcp, 1003, 0, 60))
        .await;
    assert_eq!(third, MapReply::failure(ResultCode::OutOfResources));
    // A renewal of an existing one is still fine.
    ask_ok(&orch, Protocol::Tcp, 1001, 60).await;
    // The cap: one more from another client fills it; the next is refused.
    success(
        orch.handle_map(lan(11), map(Protocol::Tcp, 1001, 0, 60))
            .await,
    );
    let over = orch
        .handle_map(lan(12), map(Protocol::Tcp, 1001, 0, 60))
        .await;
    assert_eq!(over, MapReply::failure(ResultCode::OutOfResources));
    assert_eq!(orch.lease_count(), 3);
    assert_eq!(router.our_rules().len(), 3, "no rule for a refused request");

    // The rate: a burst of twice the rate, then 4 until the bucket refills.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let answers: Vec<ResultCode> = {
        let mut v = Vec::new();
        for _ in 0..12 {
            v.push(
                orch.handle_map(lan(10), map(Protocol::Tcp, 1001, 0, 60))
                    .await
                    .result,
            );
        }
        v
    };
    assert_eq!(
        answers
            .iter()
            .filter(|r| **r == ResultCode::Success)
            .count(),
        10,
        "{answers:?}"
    );
    assert_eq!(answers[10], ResultCode::OutOfResources);
    tokio::time::sleep(Duration::from_secs(1)).await;
    ask_ok(&orch, Protocol::Tcp, 1001, 60).await;
}

/// `n` concurrent new mappings (internal ports `first`..) from each of `clients`; the result
/// codes of all of them.
async fn burst(orch: &Orch, clients: &[Ipv4Addr], first: u16, n: u16) -> Vec<ResultCode> {
    let mut set = JoinSet::new();
    for &client in clients {
        for port in first..first + n {
            let orch = orch.clone();
            set.spawn(async move {
                orch.handle_map(client, map(Protocol::Tcp, port, 0, 60))
                    .await
                    .result
            });
        }
    }
    let mut results = Vec::new();
    while let Some(result) = set.join_next().await {
        results.push(result.unwrap_or_else(|e| panic!("task failed: {e}")));
    }
    results
}

fn count(results: &[ResultCode], code: ResultCode) -> usize {
    results.iter().filter(|r| **r == code).count()
}

/// A burst of creates that all run at once (the gateway takes a second for each) is held to
/// MAX_MAPPINGS_PER_CLIENT and MAX_MAPPINGS: the caps count the creates in flight, so the rest
/// are answered 4 (C-19) at once instead of every one of them passing a check made before any
/// had finished. Failed creates give their place back.
#[tokio::test(start_paused = true)]
async fn a_burst_of_creates_never_leaves_more_leases_than_the_per_client_and_global_caps() {
    // The rate is not what is tested here.
    let (router, upstream, orch) = limited(25, 10, 10_000).await;
    upstream.state().delay = Duration::from_secs(1);

    // Failed creates (the gateway refuses) leave nothing counted behind.
    upstream.state().fault = Some(UpFault::Refused);
    let failed = burst(&orch, &[lan(10)], 1000, 10).await;
    assert_eq!(count(&failed, ResultCode::NetworkFailure), 10, "{failed:?}");
    upstream.state().fault = None;
    // An attempt the end of CREATE_PATIENCE cut short is undone in the background (the gateway
    // may have acted); once that is done, nothing is counted.
    orch.settled().await;

    let started = Instant::now();
    let one = burst(&orch, &[lan(10)], 2000, 150).await;
    assert_eq!(count(&one, ResultCode::Success), 10, "{one:?}");
    assert_eq!(count(&one, ResultCode::OutOfResources), 140, "{one:?}");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "the creates ran at once"
    );
    assert_eq!(orch.table().count_of(lan(10)), 10);

    // Two clients at once meet the global cap: 15 places are left.
    let two = burst(&orch, &[lan(11), lan(12)], 3000, 150).await;
    assert_eq!(count(&two, ResultCode::Success), 15, "{two:?}");
    assert!(orch.table().count_of(lan(11)) <= 10);
    assert!(orch.table().count_of(lan(12)) <= 10);
    assert_eq!(orch.lease_count(), 25);
    assert_eq!(router.our_rules().len(), 25, "no rule beyond the caps");
    assert_eq!(
        upstream.mapped().len(),
        25,
        "no gateway mapping beyond the caps"
    );
}

/// C-29: the server asks `answer_now` before a request takes a slot. A renewal the lease
/// answers gets the very reply `handle_map` gives, with no router command or gateway exchange;
/// everything else is left to `handle_map`: a new mapping, a delete, a client past its rate
/// (which `handle_map` then answers 4), a renewal whose upstream mapping lapsed, and a renewal
/// whose key a transaction holds.
#[tokio::test(start_paused = true)]
async fn c29_a_renewal_is_answered_at_once_only_when_its_lease_answers_it() {
    let (router, upstream, orch) = limited(4096, 64, 2).await;
    let lease = ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    let renew = map(Protocol::Udp, 6881, 0, 60);
    let (commands, exchanges) = (router.commands(), upstream.exchanges());
    assert_eq!(orch.answer_now(lan(10), renew), Some(lease));
    assert_eq!(orch.handle_map(lan(10), renew).await, lease);
    assert_eq!(
        (router.commands(), upstream.exchanges()),
        (commands, exchanges)
    );
    assert_eq!(
        orch.answer_now(lan(10), map(Protocol::Udp, 7000, 0, 60)),
        None
    );
    assert_eq!(orch.answer_now(lan(10), delete(Protocol::Udp, 6881)), None);
    assert_eq!(orch.answer_now(lan(11), renew), None, "not lan(11)'s lease");

    // The rate: a burst of 4, three of them spent above.
    assert_eq!(orch.answer_now(lan(10), renew), Some(lease));
    assert_eq!(orch.answer_now(lan(10), renew), None);
    assert_eq!(
        orch.handle_map(lan(10), renew).await,
        MapReply::failure(ResultCode::OutOfResources)
    );

    // The gateway goes silent and the upstream mapping lapses (the lease itself lives on
    // until lifetime + grace): the gateway must be asked.
    upstream.state().fault = Some(UpFault::Silent);
    tokio::time::sleep(Duration::from_secs(62)).await;
    assert_eq!(orch.answer_now(lan(10), renew), None);

    // A delete in progress holds the key.
    upstream.state().fault = None;
    upstream.state().delay = Duration::from_secs(1);
    let deleting = {
        let orch = orch.clone();
        tokio::spawn(async move { orch.handle_map(lan(10), delete(Protocol::Udp, 6881)).await })
    };
    while upstream.exchanges() == exchanges {
        tokio::task::yield_now().await;
    }
    assert_eq!(orch.answer_now(lan(10), renew), None);
    assert_eq!(deleting.await.unwrap_or_else(|e| panic!("{e}")), deleted());
}

#[tokio::test(start_paused = true)]
async fn keep_on_stop_leaves_both_layers_and_the_next_start_adopts_them() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let keep = MappingConfig {
        keep_on_stop: true,
        ..config()
    };
    let orch = start_with(&router, &upstream, keep.clone()).await;
    let first = ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    let report = orch.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.kept, report.removed, report.remaining), (1, 0, 0));
    assert_eq!(router.our_rules().len(), 1, "the rule stays");
    assert_eq!(upstream.mapped().len(), 1, "the gateway mapping stays");

    let next = start_with(&router, &upstream, keep).await;
    assert_eq!(next.lease_count(), 1, "adopted");
    let renewal = success(
        next.handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
            .await,
    );
    assert_eq!(renewal.external_port, first.external_port);
    assert_eq!(router.our_rules().len(), 1);
}
