//! Both directions, in process with the fakes (issue 12, and point 1 of issue 14): the create
//! transaction asks the router and the gateway at once; UDP_SRCNAT pairs a UDP mapping's
//! outbound traffic with a src-nat rule placed before the masquerade; MAP_BOTH_PROTOCOLS gives
//! a TCP mapping its UDP twin. Time is tokio's paused clock: delays and lifetimes are exact.

use crate::common;

use std::time::Duration;

use common::fakes::*;
use double_natpmp::NatRule;
use double_natpmp::RuleComment;
use double_natpmp::RuleKind;
use double_natpmp::{MapHandler, MapReply};
use double_natpmp::{MappingConfig, MappingKey, Origin};
use double_natpmp_codec::natpmp::wire::{Protocol, ResultCode};
use tokio::time::Instant;

fn srcnat_config() -> MappingConfig {
    MappingConfig {
        udp_srcnat: true,
        ..config()
    }
}

fn both_config() -> MappingConfig {
    MappingConfig {
        map_both_protocols: true,
        ..config()
    }
}

fn key(protocol: Protocol, port: u16) -> MappingKey {
    MappingKey {
        client: lan(10),
        protocol,
        internal_port: port,
    }
}

fn comment_of(rule: &NatRule) -> RuleComment {
    rule.comment
        .as_deref()
        .and_then(RuleComment::parse)
        .unwrap_or_else(|| panic!("not a comment of ours: {rule:?}"))
}

/// The position of the rule with this id in the srcnat chain.
fn position(router: &FakeRouter, id: &double_natpmp::RuleId) -> usize {
    router
        .srcnat_chain()
        .iter()
        .position(|r| r.id.as_ref() == Some(id))
        .unwrap_or_else(|| panic!("{id} is not in the srcnat chain"))
}

// ---------------------------------------------------------------------------------------------
// Issue 14, point 1: the router and the gateway at once

#[tokio::test(start_paused = true)]
async fn a_new_mapping_costs_the_longer_round_trip_not_both() {
    let (router, upstream, orch) = fresh().await;
    router.state().delay = Duration::from_millis(20);
    upstream.state().delay = Duration::from_millis(50);
    let started = Instant::now();
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(50),
        "max(20, 50), not 70"
    );

    router.state().delay = Duration::from_millis(40);
    upstream.state().delay = Duration::from_millis(5);
    let started = Instant::now();
    ask_ok(&orch, Protocol::Tcp, 6882, 60).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(40),
        "max(40, 5), not 45"
    );
    assert_eq!(router.state().adds, 2, "one router command per new mapping");
}

#[tokio::test(start_paused = true)]
async fn either_side_failing_undoes_what_the_other_made() {
    // The gateway refuses while the rule is being added (the rule is made first, then goes).
    let (router, upstream, orch) = fresh().await;
    router.state().delay = Duration::from_millis(5);
    upstream.state().delay = Duration::from_millis(20);
    upstream.state().fault = Some(UpFault::Refused);
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    assert_eq!(router.state().adds, 1, "the rule was asked at once");
    assert!(router.our_rules().is_empty(), "and removed again");
    assert_eq!(orch.lease_count(), 0);

    // The router refuses while the gateway maps (the mapping is made first, then deleted).
    upstream.state().fault = None;
    router.state().add_fault = Some(AddFault::Trap);
    router.state().delay = Duration::from_millis(30);
    upstream.state().delay = Duration::from_millis(1);
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    assert!(
        upstream.mapped().is_empty(),
        "the gateway's mapping was deleted"
    );
    assert!(router.our_rules().is_empty());

    // Nothing was left reserved: the same router port once both work.
    router.state().add_fault = None;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    assert_eq!(orch.leases()[0].lease.router_port, 6881);
}

#[tokio::test(start_paused = true)]
async fn after_a_quota_refusal_creates_ask_the_gateway_first_and_touch_no_rule() {
    let (router, upstream, orch) = fresh().await;
    upstream.state().fault = Some(UpFault::Quota);
    let reply = orch
        .handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::OutOfResources));
    assert_eq!(router.state().adds, 1, "asked at once: the rule was added");
    assert_eq!(router.state().removes, 1, "and removed");

    // While the quota is known to be used up, a create asks the gateway first: no rule churn.
    let commands = router.commands();
    for port in 6882..6887 {
        let reply = orch
            .handle_map(lan(10), map(Protocol::Tcp, port, 0, 60))
            .await;
        assert_eq!(reply, MapReply::failure(ResultCode::OutOfResources));
    }
    assert_eq!(
        router.commands(),
        commands,
        "no router command for a refused request"
    );

    // The quota has room again: the first create (sequential, gateway first) succeeds and
    // ends the hold, so the next asks both at once again.
    upstream.state().fault = None;
    router.state().delay = Duration::from_millis(10);
    upstream.state().delay = Duration::from_millis(10);
    let started = Instant::now();
    ask_ok(&orch, Protocol::Tcp, 7000, 60).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(20),
        "sequential: 10 + 10"
    );
    let started = Instant::now();
    ask_ok(&orch, Protocol::Tcp, 7001, 60).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(10),
        "at once again"
    );
}

#[tokio::test(start_paused = true)]
async fn the_quota_hold_ends_by_itself_after_a_minute() {
    let (router, upstream, orch) = fresh().await;
    upstream.state().fault = Some(UpFault::Quota);
    orch.handle_map(lan(10), map(Protocol::Tcp, 6881, 0, 60))
        .await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    let adds = router.state().adds;
    orch.handle_map(lan(10), map(Protocol::Tcp, 6882, 0, 60))
        .await;
    assert_eq!(
        router.state().adds,
        adds + 1,
        "at once again: the rule was asked too"
    );
}

// ---------------------------------------------------------------------------------------------
// UDP_SRCNAT

#[tokio::test(start_paused = true)]
async fn udp_srcnat_adds_a_src_nat_rule_before_the_masquerade_with_the_mapping() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let masquerade = router.seed_masquerade(IFACE);
    let orch = start_with(&router, &upstream, srcnat_config()).await;
    let commands = router.commands();
    let reply = ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    assert_eq!(
        router.commands() - commands,
        3,
        "the dst-nat add, beside it the srcnat listing and the src-nat add"
    );
    let snat = router.our_srcnat();
    assert_eq!(snat.len(), 1, "{:?}", router.rules());
    let rule = &snat[0];
    let lease = orch.leases()[0].lease.clone();
    assert_eq!(rule.action.as_deref(), Some("masquerade"));
    assert_eq!(rule.protocol.as_deref(), Some("udp"));
    assert_eq!(rule.src_address.as_deref(), Some("192.168.88.10"));
    assert_eq!(rule.src_port.as_deref(), Some("6881"));
    assert_eq!(rule.out_interface.as_deref(), Some(IFACE));
    assert_eq!(rule.to_ports, Some(lease.router_port.to_string()));
    let c = comment_of(rule);
    assert_eq!(
        (c.kind, c.key, c.router_port),
        (
            RuleKind::SrcNat,
            key(Protocol::Udp, 6881),
            lease.router_port
        )
    );
    assert!(c.encode().ends_with(" k=snat"), "{}", c.encode());
    assert!(
        position(&router, rule.id.as_ref().unwrap()) < position(&router, &masquerade),
        "placed before the masquerade: {:?}",
        router.srcnat_chain()
    );
    assert_eq!(lease.rule_id(RuleKind::SrcNat), rule.id.as_ref());
    assert_eq!(reply.external_port, lease.external_port);

    // A TCP mapping gets no src-nat rule; a renewal costs no router command.
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    assert_eq!(router.our_srcnat().len(), 1);
    let commands = router.commands();
    ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    assert_eq!(router.commands(), commands);
}

#[tokio::test(start_paused = true)]
async fn a_failed_src_nat_add_rolls_the_whole_mapping_back() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    router.seed_masquerade(IFACE);
    let orch = start_with(&router, &upstream, srcnat_config()).await;
    router.state().srcnat_add_fails = true;
    let reply = orch
        .handle_map(lan(10), map(Protocol::Udp, 6881, 0, 60))
        .await;
    assert_eq!(reply, MapReply::failure(ResultCode::NetworkFailure));
    assert!(
        router.our_rules().is_empty(),
        "the dst-nat rule went too: {:?}",
        router.rules()
    );
    assert!(upstream.mapped().is_empty(), "and the gateway's mapping");
    assert_eq!(orch.lease_count(), 0);
    router.state().srcnat_add_fails = false;
    ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    assert_eq!(
        orch.leases()[0].lease.router_port,
        6881,
        "nothing left reserved"
    );
    assert_eq!(router.our_rules().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_masquerade_that_vanished_before_the_add_is_looked_up_again() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    router.seed_masquerade(IFACE);
    let later = router.seed_masquerade(IFACE);
    let orch = start_with(&router, &upstream, srcnat_config()).await;
    router.state().anchor_vanishes = true;
    ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    assert_eq!(
        router.state().srcnat_adds,
        2,
        "refused once (no such item), then placed"
    );
    let ours = router.our_srcnat()[0].id.clone().unwrap();
    assert!(
        position(&router, &ours) < position(&router, &later),
        "before the one left"
    );

    // Without any masquerade the rule is appended.
    for id in router.srcnat_chain().iter().filter_map(|r| r.id.clone()) {
        router.delete_by_hand(&id);
    }
    ask_ok(&orch, Protocol::Udp, 6882, 60).await;
    assert_eq!(router.our_srcnat().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn delete_and_expiry_remove_the_src_nat_rule_too() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    router.seed_masquerade(IFACE);
    let orch = start_with(&router, &upstream, srcnat_config()).await;
    ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    ask_ok(&orch, Protocol::Udp, 6882, 10).await;
    assert_eq!(router.our_srcnat().len(), 2);
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Udp, 6881)).await,
        deleted()
    );
    assert_eq!(router.our_srcnat().len(), 1);
    tokio::time::sleep(Duration::from_secs(20)).await;
    orch.expire_due().await;
    assert!(router.our_rules().is_empty(), "{:?}", router.rules());
    assert!(upstream.mapped().is_empty());
    assert_eq!(router.srcnat_chain().len(), 1, "the masquerade stays");
}

#[tokio::test(start_paused = true)]
async fn the_reconciler_restores_a_missing_src_nat_rule_and_removes_orphans() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let masquerade = router.seed_masquerade(IFACE);
    let orch = start_with(&router, &upstream, srcnat_config()).await;
    ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    let ours = router.our_srcnat()[0].id.clone().unwrap();
    router.delete_by_hand(&ours);
    // An orphan of ours: a src-nat rule no lease owns.
    let orphan = RuleComment::new(key(Protocol::Udp, 7000), 7000, 60).for_kind(RuleKind::SrcNat);
    {
        let mut s = router.state();
        let id = s.free_id();
        s.rules.push(NatRule {
            id: Some(id),
            chain: Some("srcnat".into()),
            action: Some("masquerade".into()),
            protocol: Some("udp".into()),
            to_ports: Some("7000".into()),
            comment: Some(orphan.encode()),
            ..NatRule::default()
        });
    }
    let report = orch.reconcile().await.map_err(|e| e.to_string());
    assert_eq!(
        report.map(|r| (r.recreated, r.orphans_removed, r.srcnat_shadowed)),
        Ok((1, 1, 0))
    );
    let snat = router.our_srcnat();
    assert_eq!(snat.len(), 1, "{:?}", router.rules());
    assert_eq!(comment_of(&snat[0]).key, key(Protocol::Udp, 6881));
    assert!(position(&router, snat[0].id.as_ref().unwrap()) < position(&router, &masquerade));
    assert_eq!(
        orch.leases()[0].lease.rule_id(RuleKind::SrcNat),
        snat[0].id.as_ref()
    );

    // Someone moves the masquerade above ours: the pass tells (and `check` says how to fix).
    {
        let mut s = router.state();
        let i = s
            .rules
            .iter()
            .position(|r| r.id.as_ref() == Some(&masquerade))
            .unwrap();
        let m = s.rules.remove(i);
        s.rules.insert(0, m);
    }
    let report = orch.reconcile().await.map_err(|e| e.to_string());
    assert_eq!(report.map(|r| r.srcnat_shadowed), Ok(1));
}

#[tokio::test(start_paused = true)]
async fn a_restart_adopts_the_src_nat_rule_and_one_without_the_setting_removes_it() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    router.seed_masquerade(IFACE);
    let orch = start_with(&router, &upstream, srcnat_config()).await;
    ask_ok(&orch, Protocol::Udp, 6881, 60).await;
    let before = router.our_rules();
    orch.abandon();

    let adds = router.state().adds;
    let orch = start_with(&router, &upstream, srcnat_config()).await;
    assert_eq!(router.state().adds, adds, "adopted, not made again");
    assert_eq!(router.our_rules(), before);
    let lease = orch.leases()[0].lease.clone();
    assert_eq!(
        lease.rule_id(RuleKind::SrcNat),
        router.our_srcnat()[0].id.as_ref()
    );
    orch.abandon();

    // Started without UDP_SRCNAT: the dst-nat rule is adopted, the src-nat rule removed.
    let orch = start_with(&router, &upstream, config()).await;
    assert_eq!(orch.lease_count(), 1);
    assert!(router.our_srcnat().is_empty(), "{:?}", router.rules());
    assert_eq!(router.our_rules().len(), 1);
    assert_eq!(orch.leases()[0].lease.rules.len(), 1);
    orch.abandon();

    // And started with it again: the missing src-nat rule is restored at start.
    let orch = start_with(&router, &upstream, srcnat_config()).await;
    assert_eq!(router.our_srcnat().len(), 1);
    assert_eq!(orch.leases()[0].lease.rules.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// MAP_BOTH_PROTOCOLS

#[tokio::test(start_paused = true)]
async fn a_tcp_mapping_gets_its_udp_twin_on_both_layers() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    upstream.state().honour_suggestion = true;
    let orch = start_with(&router, &upstream, both_config()).await;
    let mut events = orch.subscribe();
    let reply = ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    orch.settled().await;
    let leases = orch.leases();
    assert_eq!(leases.len(), 2, "{leases:?}");
    let tcp = leases
        .iter()
        .find(|l| l.key == key(Protocol::Tcp, 51413))
        .unwrap();
    let udp = leases
        .iter()
        .find(|l| l.key == key(Protocol::Udp, 51413))
        .unwrap();
    assert_eq!(udp.lease.origin, Origin::Twin(tcp.key));
    assert_eq!(
        udp.lease.router_port, tcp.lease.router_port,
        "the same router port when free"
    );
    assert_eq!(
        udp.lease.external_port, tcp.lease.external_port,
        "the same external port"
    );
    assert_eq!(reply.external_port, tcp.lease.external_port);
    assert_eq!(router.our_rules().len(), 2);
    assert!(router
        .our_rules()
        .iter()
        .any(|r| r.protocol.as_deref() == Some("udp") && comment_of(r).twin));
    let up = upstream.mapped();
    assert!(up.contains_key(&(Protocol::Tcp, tcp.lease.router_port)));
    assert!(up.contains_key(&(Protocol::Udp, udp.lease.router_port)));
    // The status API can tell: the twin's Created event names its origin.
    let mut twin_event = false;
    while let Ok(e) = events.try_recv() {
        if let double_natpmp::MappingEvent::Created { key: k, origin, .. } = e {
            twin_event |= k == udp.key && origin == Origin::Twin(tcp.key);
        }
    }
    assert!(twin_event);
}

#[tokio::test(start_paused = true)]
async fn a_twin_with_another_external_port_keeps_the_tcp_one_in_the_reply() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let orch = start_with(&router, &upstream, both_config()).await;
    // A ProtonVPN-like gateway: every mapping gets a port of its own choosing.
    let reply = ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    orch.settled().await;
    let udp = orch
        .table()
        .get(&key(Protocol::Udp, 51413))
        .expect("the twin");
    assert_ne!(udp.external_port, reply.external_port);
    let tcp = orch.table().get(&key(Protocol::Tcp, 51413)).unwrap();
    assert_eq!(reply.external_port, tcp.external_port);
    // A retransmission or renewal still answers the TCP mapping's port.
    let again = ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    assert_eq!(again.external_port, tcp.external_port);
}

#[tokio::test(start_paused = true)]
async fn the_twin_is_kept_by_the_keeper_and_ends_with_its_tcp_mapping() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let orch = start_with(&router, &upstream, both_config()).await;
    ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    ask_ok(&orch, Protocol::Tcp, 6881, 40).await;
    orch.settled().await;
    assert_eq!(orch.lease_count(), 4);
    // The client renews only its TCP mappings; the keeper keeps every upstream mapping
    // (the gateway forgets one in 60 s).
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(25)).await;
        ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    }
    let twin = orch
        .table()
        .get(&key(Protocol::Udp, 51413))
        .expect("the twin lives on");
    assert!(
        upstream
            .mapped()
            .contains_key(&(Protocol::Udp, twin.router_port)),
        "kept upstream"
    );
    // 6881 was not renewed: it expired, and its twin with it (both layers).
    assert!(orch.table().get(&key(Protocol::Tcp, 6881)).is_none());
    assert!(orch.table().get(&key(Protocol::Udp, 6881)).is_none());
    assert_eq!(router.our_rules().len(), 2, "{:?}", router.rules());
    assert_eq!(upstream.mapped().len(), 2);
    // A delete of the TCP mapping removes all four: two rules, two upstream mappings.
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Tcp, 51413)).await,
        deleted()
    );
    assert!(router.our_rules().is_empty(), "{:?}", router.rules());
    assert!(upstream.mapped().is_empty());
    assert_eq!(orch.lease_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_udp_delete_or_delete_all_leaves_the_twin_and_a_tcp_delete_all_ends_it() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let orch = start_with(&router, &upstream, both_config()).await;
    ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    orch.settled().await;
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Udp, 51413)).await,
        deleted()
    );
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Udp, 0)).await,
        deleted()
    );
    assert_eq!(orch.lease_count(), 2, "the client never asked for the twin");
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Tcp, 0)).await,
        deleted()
    );
    assert_eq!(orch.lease_count(), 0);
    assert!(router.our_rules().is_empty());
    assert!(upstream.mapped().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_clients_own_udp_request_takes_the_twin_over() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let orch = start_with(&router, &upstream, both_config()).await;
    ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    orch.settled().await;
    let twin = orch.table().get(&key(Protocol::Udp, 51413)).unwrap();
    let commands = router.commands();
    let exchanges = upstream.exchanges();
    let reply = ask_ok(&orch, Protocol::Udp, 51413, 60).await;
    assert_eq!(
        reply.external_port, twin.external_port,
        "answered from the twin"
    );
    assert_eq!(upstream.exchanges(), exchanges, "no upstream exchange");
    let own = orch.table().get(&key(Protocol::Udp, 51413)).unwrap();
    assert_eq!(own.origin, Origin::NatPmp);
    orch.settled().await;
    assert!(router.commands() > commands, "its comment was rewritten");
    assert!(
        router.our_rules().iter().all(|r| !comment_of(r).twin),
        "no rule says twin any more: {:?}",
        router.rules()
    );
    // It is the client's own now: it outlives the TCP mapping.
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Tcp, 51413)).await,
        deleted()
    );
    assert!(orch.table().get(&key(Protocol::Udp, 51413)).is_some());
    assert_eq!(router.our_rules().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_twin_never_counts_against_the_clients_own_mappings() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let mut cfg = both_config();
    cfg.limits.max_per_client = 2;
    let orch = start_with(&router, &upstream, cfg).await;
    ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    orch.settled().await;
    assert_eq!(orch.lease_count(), 2);
    ask_ok(&orch, Protocol::Udp, 7000, 60).await;
    let third = orch
        .handle_map(lan(10), map(Protocol::Udp, 7001, 0, 60))
        .await;
    assert_eq!(
        third,
        MapReply::failure(ResultCode::OutOfResources),
        "two of its own"
    );
}

#[tokio::test(start_paused = true)]
async fn a_udp_mapping_the_client_has_is_never_replaced_by_a_twin() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let orch = start_with(&router, &upstream, both_config()).await;
    let udp = ask_ok(&orch, Protocol::Udp, 51413, 60).await;
    ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    orch.settled().await;
    let own = orch.table().get(&key(Protocol::Udp, 51413)).unwrap();
    assert_eq!(
        (own.origin, own.external_port),
        (Origin::NatPmp, udp.external_port)
    );
    assert_eq!(router.our_rules().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_twin_the_gateway_refuses_leaves_the_tcp_mapping_and_nothing_half_made() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let orch = start_with(&router, &upstream, both_config()).await;
    upstream.state().quota_for = Some(Protocol::Udp);
    let reply = ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    orch.settled().await;
    let leases = orch.leases();
    assert_eq!(leases.len(), 1, "kept without the twin: {leases:?}");
    assert_eq!(leases[0].lease.external_port, reply.external_port);
    assert_eq!(
        router.our_rules().len(),
        1,
        "the twin's rule was rolled back: {:?}",
        router.rules()
    );
    assert_eq!(router.our_rules()[0].protocol.as_deref(), Some("tcp"));
    assert_eq!(upstream.mapped().len(), 1);

    // The client's next renewal of its TCP mapping tries the twin again, in the background.
    upstream.state().quota_for = None;
    let again = ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    assert_eq!(again.external_port, reply.external_port);
    orch.settled().await;
    let twin = orch
        .table()
        .get(&key(Protocol::Udp, 51413))
        .expect("made at the renewal");
    assert_eq!(twin.origin, Origin::Twin(key(Protocol::Tcp, 51413)));
    assert_eq!(upstream.mapped().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_twin_whose_src_nat_rule_fails_is_rolled_back_whole_and_the_tcp_mapping_stays() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    router.seed_masquerade(IFACE);
    let cfg = MappingConfig {
        udp_srcnat: true,
        ..both_config()
    };
    let orch = start_with(&router, &upstream, cfg).await;
    router.state().srcnat_add_fails = true;
    ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    orch.settled().await;
    assert_eq!(orch.lease_count(), 1);
    assert_eq!(router.our_rules().len(), 1, "{:?}", router.rules());
    assert_eq!(
        upstream.mapped().len(),
        1,
        "the twin's upstream mapping was deleted"
    );

    // With the router working, a new TCP mapping's twin gets both its rules.
    router.state().srcnat_add_fails = false;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    orch.settled().await;
    let twin = orch
        .table()
        .get(&key(Protocol::Udp, 6881))
        .expect("the twin");
    assert_eq!(twin.rules.len(), 2, "dst-nat and src-nat");
}

#[tokio::test(start_paused = true)]
async fn a_restart_adopts_the_twin_as_the_twin_of_its_tcp_mapping() {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let orch = start_with(&router, &upstream, both_config()).await;
    ask_ok(&orch, Protocol::Tcp, 51413, 60).await;
    orch.settled().await;
    orch.abandon();
    let orch = start_with(&router, &upstream, both_config()).await;
    let twin = orch
        .table()
        .get(&key(Protocol::Udp, 51413))
        .expect("adopted");
    assert_eq!(twin.origin, Origin::Twin(key(Protocol::Tcp, 51413)));
    assert_eq!(
        orch.handle_map(lan(10), delete(Protocol::Tcp, 51413)).await,
        deleted()
    );
    assert!(router.our_rules().is_empty());
    orch.abandon();

    // A twin whose TCP mapping's rule is gone is not adopted; its rule is an orphan.
    let orch = start_with(&router, &upstream, both_config()).await;
    ask_ok(&orch, Protocol::Tcp, 6881, 60).await;
    orch.settled().await;
    orch.abandon();
    let tcp_rule = router
        .our_rules()
        .into_iter()
        .find(|r| r.protocol.as_deref() == Some("tcp"))
        .and_then(|r| r.id)
        .unwrap();
    router.delete_by_hand(&tcp_rule);
    let orch = start_with(&router, &upstream, both_config()).await;
    assert_eq!(orch.lease_count(), 0);
    assert!(router.our_rules().is_empty(), "{:?}", router.rules());
}
