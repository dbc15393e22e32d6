use super::*;
use crate::mapping::router::seam::{NatRule, RuleId};
use crate::mapping::store::lease::{Origin, OwnedRule, RuleKind};

fn key(port: u16) -> MappingKey {
    MappingKey {
        client: Ipv4Addr::new(192, 168, 88, 10),
        protocol: Protocol::Udp,
        internal_port: port,
    }
}

fn lease(router_port: u16) -> Lease {
    let now = Instant::now();
    Lease {
        router_port,
        rules: [OwnedRule {
            kind: RuleKind::DstNat,
            id: RuleId::new("*1"),
        }]
        .into_iter()
        .collect(),
        comment: crate::mapping::router::rule::RuleComment::new(key(1), router_port, 60),
        external_port: 50000,
        lifetime: 60,
        deadline: now,
        upstream_deadline: now,
        upstream_lifetime: 60,
        renew_at: now,
        keep_failures: 0,
        origin: Origin::NatPmp,
        serial: 0,
    }
}

#[test]
fn a_committed_reservation_is_a_lease_holding_its_port() {
    let t = Arc::new(LeaseTable::new(40000..=40010));
    let r = t.reserve(key(6881), &[6881]);
    let Some(r) = r else { panic!("no port") };
    assert_eq!(r.port(), 6881);
    assert_eq!(t.hold(Protocol::Udp, 6881), Some(Hold::InFlight(key(6881))));
    assert!(t.get(&key(6881)).is_none(), "not live before commit");
    let serial = r.commit(lease(6881));
    assert_eq!(t.hold(Protocol::Udp, 6881), Some(Hold::Leased(key(6881))));
    assert_eq!(t.get(&key(6881)).map(|l| l.serial), Some(serial));
    assert_eq!(t.snapshot().len(), 1);
    assert_eq!(t.remove(&key(6881)).map(|l| l.router_port), Some(6881));
    assert!(!t.is_used(Protocol::Udp, 6881), "free after remove");
    assert!(t.is_empty());
}

#[test]
fn release_frees_but_drop_leaves_a_suspect_until_refresh() {
    let t = Arc::new(LeaseTable::new(40000..=40000));
    let r = t.reserve(key(1), &[]);
    assert!(r.is_some());
    drop(r);
    assert!(t.is_used(Protocol::Udp, 40000), "suspect after drop");
    assert!(
        t.reserve(key(2), &[]).is_none(),
        "the only port is a suspect"
    );
    let g = t.begin_refresh();
    t.apply_refresh(g, RouterView::new());
    assert!(!t.is_used(Protocol::Udp, 40000));
    let r = t.reserve(key(1), &[]);
    assert!(r.is_some());
    if let Some(r) = r {
        r.release();
    }
    assert!(!t.is_used(Protocol::Udp, 40000));
}

#[test]
fn suspects_marked_during_a_refresh_survive_it() {
    let t = LeaseTable::new(40000..=40010);
    let g = t.begin_refresh();
    t.mark_suspect(Protocol::Tcp, 40001);
    t.apply_refresh(g, RouterView::new());
    assert!(t.is_used(Protocol::Tcp, 40001));
}

#[test]
fn a_draining_port_stays_used_until_drained() {
    let t = Arc::new(LeaseTable::new(40000..=40010));
    let Some(r) = t.reserve(key(7000), &[7000]) else {
        panic!("no port")
    };
    r.commit(lease(7000));
    assert!(t.remove_draining(&key(7000)).is_some());
    assert!(t.get(&key(7000)).is_none(), "the lease is gone");
    assert_eq!(t.hold(Protocol::Udp, 7000), Some(Hold::Draining(key(7000))));
    let g = t.begin_refresh();
    t.apply_refresh(g, RouterView::new());
    assert!(t.is_used(Protocol::Udp, 7000), "a refresh does not free it");
    let other = MappingKey {
        client: Ipv4Addr::new(192, 168, 88, 11),
        ..key(7000)
    };
    assert_ne!(t.reserve(other, &[7000]).map(|r| r.port()), Some(7000));
    t.drained(Protocol::Udp, 7000, false);
    assert!(!t.is_used(Protocol::Udp, 7000));
}

#[test]
fn ports_are_per_protocol_and_skip_the_router_view() {
    let t = Arc::new(LeaseTable::new(40000..=40001));
    let mut view = RouterView::new();
    view.add_foreign_rule(&NatRule {
        protocol: Some("udp".into()),
        dst_port: Some("40000".into()),
        ..NatRule::default()
    });
    let g = t.begin_refresh();
    t.apply_refresh(g, view);
    let udp = t.reserve(key(1), &[]);
    let tcp = t.reserve(
        MappingKey {
            protocol: Protocol::Tcp,
            ..key(1)
        },
        &[],
    );
    assert_eq!(udp.as_ref().map(Reservation::port), Some(40001));
    assert_eq!(tcp.as_ref().map(Reservation::port), Some(40000));
}

#[test]
fn adopt_refuses_a_taken_key_or_port() {
    let t = Arc::new(LeaseTable::new(40000..=40010));
    assert!(t.adopt(key(1), lease(40005)).is_ok());
    assert_eq!(t.adopt(key(1), lease(40006)), Err(AdoptError::KeyTaken));
    assert_eq!(t.adopt(key(2), lease(40005)), Err(AdoptError::PortTaken));
    assert!(t.is_used(Protocol::Udp, 40005));
}

#[test]
fn removing_a_lease_moves_the_last_into_its_place_and_every_key_still_finds_its_own() {
    let mut leases = crate::mapping::store::slab::Leases::default();
    for port in 1..=5u16 {
        leases.insert(key(port), lease(40000 + port));
    }
    // The first, a middle one and the last go; the last-but-one moves twice.
    for gone in [1u16, 3, 5] {
        assert_eq!(
            leases.remove(&key(gone)).map(|l| l.router_port),
            Some(40000 + gone)
        );
        assert!(leases.remove(&key(gone)).is_none(), "gone once");
    }
    assert_eq!(leases.len(), 2);
    for port in [2u16, 4] {
        assert_eq!(
            leases.get(&key(port)).map(|l| l.router_port),
            Some(40000 + port)
        );
    }
    // A second insert for a key replaces its lease; iteration sees each key once.
    leases.insert(key(4), lease(41004));
    let mut seen: Vec<(u16, u16)> = leases
        .iter()
        .map(|(k, l)| (k.internal_port, l.router_port))
        .collect();
    seen.sort();
    assert_eq!(seen, vec![(2, 40002), (4, 41004)]);
    if let Some(l) = leases.get_mut(&key(2)) {
        l.external_port = 1;
    }
    assert_eq!(leases.get(&key(2)).map(|l| l.external_port), Some(1));
}

#[test]
fn caps_count_reservations_in_flight_until_they_finish_whatever_the_outcome() {
    let t = Arc::new(LeaseTable::new(40000..=40999));
    let caps = Caps {
        total: 3,
        per_client: Some(2),
        own: true,
    };
    let reserve = |port: u16, caps: Caps| t.reserve_within(key(port), &[], caps);
    let (Ok(a), Ok(b)) = (reserve(1, caps), reserve(2, caps)) else {
        panic!("room for two")
    };
    assert_eq!(
        t.count_of(key(1).client),
        2,
        "in flight counts as the client's"
    );
    assert_eq!(reserve(3, caps).err(), Some(Refusal::Client));
    // A twin is not the client's own and is not held to its cap, but counts toward the total.
    let twin = Caps {
        per_client: None,
        own: false,
        ..caps
    };
    let Ok(c) = reserve(3, twin) else {
        panic!("a twin passes the client's cap")
    };
    assert_eq!(t.count_of(key(1).client), 2);
    assert_eq!(reserve(4, twin).err(), Some(Refusal::Total));
    // Committed, released or dropped: each gives its place in flight back.
    a.commit(lease(40000));
    b.release();
    drop(c);
    assert_eq!(t.count_of(key(1).client), 1, "the lease only");
    assert!(reserve(5, caps).is_ok());
}
