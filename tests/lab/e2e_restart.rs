//! Never losing a mapping, end to end in network namespaces with real peers (natpmpc on the LAN
//! host, miniupnpd as the gateway, the RouterOS emulator's nftables data plane): a SIGKILL and
//! restart of the daemon, a gateway restarted with every mapping lost, and a gateway that
//! drops NAT-PMP while a client renews.

use crate::common;

use std::time::{Duration, Instant};

use common::lab::{self, Lab};
use common::traffic::{gateway_rules, lan_listener, map, router_rules, send_from_internet};

const ALLOW: &str = "1024-65535 10.2.0.0/24 1024-65535";

fn lab_with_daemon(extra_env: &[(&str, &str)]) -> Lab {
    let mut lab = Lab::up();
    lab.start_miniupnpd(ALLOW);
    lab.start_router_emulator(&[]);
    lab.start_daemon(extra_env);
    lab
}

/// A TCP connection from the internet host to the gateway's public address and `public`
/// reaches a listener on the LAN host's `port`.
fn tcp_reaches_the_client(lab: &mut Lab, public: u16, port: u16, message: &str) {
    let listener = lan_listener(lab, "tcp", port);
    send_from_internet(lab, "tcp", public, message);
    let got = lab::wait_for_line(&listener, "got", Duration::from_secs(10));
    assert!(got.contains(message), "{got}");
}

#[test]
fn sigkill_and_restart_keep_the_data_plane_and_the_external_port() {
    if !lab::available("sigkill_and_restart_keep_the_data_plane_and_the_external_port") {
        return;
    }
    let mut lab = lab_with_daemon(&[]);
    let (public, local, _) = map(&lab, &["-a", "0", "6881", "tcp", "3600"]);
    assert_eq!(local, 6881);

    lab.kill_daemon();
    lab.start_daemon(&[]);
    let restarted = Instant::now();
    // No client request in between: the restart kept the rule and the gateway's mapping.
    let at = |s: u64| restarted + Duration::from_secs(s);
    std::thread::sleep(at(1).saturating_duration_since(Instant::now()));
    tcp_reaches_the_client(&mut lab, public, 6881, "one-second-after");
    std::thread::sleep(at(5).saturating_duration_since(Instant::now()));
    tcp_reaches_the_client(&mut lab, public, 6881, "five-seconds-after");

    let (again, _, _) = map(&lab, &["-a", "0", "6881", "tcp", "3600"]);
    assert_eq!(again, public, "the renewal keeps the external port");
    assert_eq!(router_rules(&lab).len(), 1, "still one rule");
    assert_eq!(gateway_rules(&lab).len(), 1, "still one gateway forward");
}

#[test]
fn a_gateway_that_lost_every_mapping_is_healed_within_the_address_refresh() {
    if !lab::available("a_gateway_that_lost_every_mapping_is_healed_within_the_address_refresh") {
        return;
    }
    let mut lab = lab_with_daemon(&[]);
    // miniupnpd grants 3600 s: the keeper would not renew for half an hour.
    let (first, _, _) = map(&lab, &["-a", "0", "6881", "tcp", "3600"]);
    let (second, _, _) = map(&lab, &["-a", "0", "6882", "tcp", "3600"]);
    // The RFC 6886 §3.6 check sees a reset only when the new epoch is more than 2 s below 7/8
    // of the time elapsed since the last one it saw: with a refresh every 60 s, the gateway must
    // have been up some 10 s before it restarts (a real one is up for days). Let it age.
    std::thread::sleep(Duration::from_secs(15));
    lab.restart_miniupnpd_losing_state(ALLOW);
    assert!(
        gateway_rules(&lab).is_empty(),
        "miniupnpd lost its mappings"
    );
    let restarted = Instant::now();

    // No client request: the daemon's next address refresh (ADDRESS_REFRESH, 60 s by
    // default) sees the gateway's epoch back at 0 and makes every mapping again.
    let limit = Duration::from_secs(60 + 5);
    while gateway_rules(&lab).len() < 2 {
        assert!(
            restarted.elapsed() < limit,
            "not healed within ADDRESS_REFRESH + 5 s: {:?}",
            gateway_rules(&lab)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let healed = restarted.elapsed();
    eprintln!("e2e_restart: healed {healed:?} after the gateway restart");
    // miniupnpd honours the suggested port: the same external ports come back.
    tcp_reaches_the_client(&mut lab, first, 6881, "first-after-heal");
    tcp_reaches_the_client(&mut lab, second, 6882, "second-after-heal");
}

#[test]
fn a_nat_pmp_outage_during_a_renewal_never_reaches_the_client() {
    if !lab::available("a_nat_pmp_outage_during_a_renewal_never_reaches_the_client") {
        return;
    }
    let mut lab = lab_with_daemon(&[]);
    let (public, _, _) = map(&lab, &["-a", "0", "6881", "tcp", "3600"]);

    lab.begin_natpmp_outage();
    let started = Instant::now();
    let (renewed, _, lifetime) = map(&lab, &["-a", "0", "6881", "tcp", "3600"]);
    assert_eq!(renewed, public, "result 0 and the same external port");
    assert!(lifetime > 0);
    // The outage lasts 4 s in all (the fault's duration, not a wait for anything).
    std::thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    lab.end_natpmp_outage();

    tcp_reaches_the_client(&mut lab, public, 6881, "after-the-outage");
    assert_eq!(router_rules(&lab).len(), 1);
}
