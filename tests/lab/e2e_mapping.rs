//! The product, end to end, in network namespaces with real peers: `natpmpc` on the LAN host asks
//! the daemon for a port; the daemon adds a dst-nat rule through our RouterOS emulator (mirrored
//! into real nftables in the router namespace) and maps the port at a real `miniupnpd` gateway;
//! then traffic from the "internet" namespace to the gateway's public address and the returned
//! port really crosses both NAT layers and reaches a listener on the LAN host.

use crate::common;

use std::time::Duration;

use common::lab::{self, Host, Lab};
use common::traffic::{
    eventually, gateway_rules, lan_listener, map, router_rules, send_from_internet,
};

/// The lab with miniupnpd as the VPN gateway, the router emulator and the daemon.
fn lab_with_daemon(extra_env: &[(&str, &str)]) -> Lab {
    let mut lab = Lab::up();
    lab.start_miniupnpd("1024-65535 10.2.0.0/24 1024-65535");
    lab.start_router_emulator(&[]);
    lab.start_daemon(extra_env);
    lab
}

#[test]
fn tcp_from_the_internet_reaches_the_lan_client_through_both_nat_layers() {
    if !lab::available("tcp_from_the_internet_reaches_the_lan_client_through_both_nat_layers") {
        return;
    }
    let mut lab = lab_with_daemon(&[]);
    let listener = lan_listener(&mut lab, "tcp", 6881);
    let (public, local, lifetime) = map(&lab, &["-a", "0", "6881", "tcp", "3600"]);
    assert_eq!(local, 6881);
    assert_eq!(
        lifetime, 3600,
        "miniupnpd echoes the asked lifetime; we never grant more"
    );
    assert_eq!(
        router_rules(&lab).len(),
        1,
        "one dst-nat rule on the router"
    );
    assert_eq!(
        gateway_rules(&lab).len(),
        1,
        "one port forward at the gateway"
    );
    send_from_internet(&lab, "tcp", public, "hello-through-both-nats");
    let line = lab::wait_for_line(&listener, "got", Duration::from_secs(10));
    assert!(line.contains("hello-through-both-nats"), "{line}");
    assert!(
        line.contains("198.51.101.1"),
        "the client sees the real internet peer: {line}"
    );

    // C-29: a renewal gets the same port, and the router still has one rule.
    let (again, _, _) = map(&lab, &["-a", "0", "6881", "tcp", "3600"]);
    assert_eq!(again, public);
    assert_eq!(
        router_rules(&lab).len(),
        1,
        "renewal added no rule: {:?}",
        router_rules(&lab)
    );
    assert_eq!(gateway_rules(&lab).len(), 1);

    // C-33: delete removes both layers.
    let out = lab.natpmpc(&["-a", "0", "6881", "tcp", "0"]);
    assert!(out.success, "delete failed: {out:?}");
    // The reply came after both layers were gone (the emulator answers once its nftables
    // mirror applied the change, as a router's rule is in force at `!done`).
    assert!(router_rules(&lab).is_empty(), "{:?}", router_rules(&lab));
    assert!(gateway_rules(&lab).is_empty(), "{:?}", gateway_rules(&lab));
}

#[test]
fn udp_from_the_internet_reaches_the_lan_client_through_both_nat_layers() {
    if !lab::available("udp_from_the_internet_reaches_the_lan_client_through_both_nat_layers") {
        return;
    }
    let mut lab = lab_with_daemon(&[]);
    let listener = lan_listener(&mut lab, "udp", 6882);
    let (public, local, _) = map(&lab, &["-a", "0", "6882", "udp", "3600"]);
    assert_eq!(local, 6882);
    let rules = router_rules(&lab);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0].contains("udp"), "C-26: only a UDP rule: {rules:?}");
    send_from_internet(&lab, "udp", public, "udp-through-both-nats");
    let line = lab::wait_for_line(&listener, "got", Duration::from_secs(10));
    assert!(line.contains("udp-through-both-nats"), "{line}");
}

#[test]
fn unrenewed_mapping_expires_from_both_layers() {
    if !lab::available("unrenewed_mapping_expires_from_both_layers") {
        return;
    }
    let lab = lab_with_daemon(&[("EXPIRY_GRACE", "1s")]);
    let (_, _, lifetime) = map(&lab, &["-a", "0", "6883", "tcp", "2"]);
    assert_eq!(lifetime, 2);
    assert_eq!(router_rules(&lab).len(), 1);
    assert_eq!(gateway_rules(&lab).len(), 1);
    eventually(
        "both layers removed after expiry",
        Duration::from_secs(15),
        || router_rules(&lab).is_empty() && gateway_rules(&lab).is_empty(),
    );
}

#[test]
fn stopping_the_daemon_removes_every_mapping() {
    if !lab::available("stopping_the_daemon_removes_every_mapping") {
        return;
    }
    let mut lab = lab_with_daemon(&[]);
    map(&lab, &["-a", "0", "7000", "tcp", "3600"]);
    map(&lab, &["-a", "0", "7001", "udp", "3600"]);
    assert_eq!(router_rules(&lab).len(), 2);
    let code = lab.stop_daemon();
    assert_eq!(code, Some(0), "graceful stop exits 0");
    // The daemon removed both layers before it exited.
    assert!(router_rules(&lab).is_empty(), "{:?}", router_rules(&lab));
    assert!(gateway_rules(&lab).is_empty(), "{:?}", gateway_rules(&lab));
}

/// Sends one UDP datagram from the VPN gateway's host straight to the router's tunnel address,
/// as traffic the gateway forwards arrives there.
fn send_from_tunnel(lab: &Lab, port: u16, message: &str) {
    let script = format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.sendto(b'{message}', ('{}',{port}))\n",
        lab::TUNNEL_IP
    );
    let out = lab.exec(Host::Vpn, &["python3", "-c", &script]);
    assert!(
        out.status.success(),
        "sending from the tunnel failed: {out:?}"
    );
}

#[test]
fn a_foreign_rule_on_an_interface_list_holding_the_tunnel_keeps_its_port_and_its_traffic() {
    if !lab::available(
        "a_foreign_rule_on_an_interface_list_holding_the_tunnel_keeps_its_port_and_its_traffic",
    ) {
        return;
    }
    let mut lab = Lab::up();
    lab.start_miniupnpd("1024-65535 10.2.0.0/24 1024-65535");
    // The admin's game server: UDP 6881 from any WAN interface (the tunnel is in WAN) to
    // 192.168.88.10:9999.
    lab.start_router_emulator(&[
        "--interface-list",
        "WAN=rtr-v",
        "--nat-rule",
        "chain=dstnat,action=dst-nat,protocol=udp,in-interface-list=WAN,dst-port=6881,\
         to-addresses=192.168.88.10,to-ports=9999,comment=game server",
    ]);
    lab.start_daemon(&[]);
    let game = lan_listener(&mut lab, "udp", 9999);
    let torrent = lan_listener(&mut lab, "udp", 6881);

    let (public, local, _) = map(&lab, &["-a", "0", "6881", "udp", "60"]);
    assert_eq!(local, 6881);
    let rules = router_rules(&lab);
    assert_eq!(rules.len(), 2, "{rules:?}");
    let ours: Vec<&String> = rules
        .iter()
        .filter(|r| r.contains("192.168.88.10:6881"))
        .collect();
    assert_eq!(ours.len(), 1, "{rules:?}");
    assert!(
        !ours[0].contains("dport 6881 "),
        "our rule must not take the list rule's port: {}",
        ours[0]
    );

    // Traffic the tunnel brings to 6881 still reaches the admin's game server…
    send_from_tunnel(&lab, 6881, "for-the-game");
    let got = lab::wait_for_line(&game, "got", Duration::from_secs(10));
    assert!(got.contains("for-the-game"), "{got}");
    // …and the mapping works through both layers.
    send_from_internet(&lab, "udp", public, "for-the-torrent");
    let got = lab::wait_for_line(&torrent, "got", Duration::from_secs(10));
    assert!(got.contains("for-the-torrent"), "{got}");
}
