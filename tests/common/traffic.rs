//! Traffic through the namespace lab: listeners on the LAN host, senders on the internet host,
//! and what the two NAT layers hold (the router's and the gateway's nftables rules).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use super::lab::{self, Host, Lab, EXT_IP};

/// The router's dst-nat rules (the mirror of the emulator's table).
pub fn router_rules(lab: &Lab) -> Vec<String> {
    let out = lab.exec(
        Host::Router,
        &["nft", "list", "chain", "ip", "mikrotik", "dstnat"],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("dnat to"))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The gateway's port forwards (miniupnpd's nft rules).
pub fn gateway_rules(lab: &Lab) -> Vec<String> {
    let out = lab.exec(
        Host::Vpn,
        &[
            "nft",
            "list",
            "chain",
            "inet",
            "filter",
            "prerouting_miniupnpd",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("dnat"))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Waits (bounded) until `cond` holds on the lab's state.
pub fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A one-shot listener on the LAN host that prints what it receives.
pub fn lan_listener(lab: &mut Lab, proto: &str, port: u16) -> std::sync::mpsc::Receiver<String> {
    let script = match proto {
        "tcp" => format!(
            "import socket\n\
             s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0',{port})); s.listen(1); print('listening', flush=True)\n\
             c,a=s.accept(); print('got', c.recv(100).decode(), 'from', a[0], flush=True)\n"
        ),
        _ => format!(
            "import socket\n\
             s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('0.0.0.0',{port})); print('listening', flush=True)\n\
             d,a=s.recvfrom(100); print('got', d.decode(), 'from', a[0], flush=True)\n"
        ),
    };
    let rx = lab.spawn(Host::Lan, &["python3", "-c", &script], &[]);
    lab::wait_for_line(&rx, "listening", Duration::from_secs(10));
    rx
}

/// Sends one message from the internet host to the VPN's public address and `port`.
pub fn send_from_internet(lab: &Lab, proto: &str, port: u16, message: &str) {
    let script = match proto {
        "tcp" => format!(
            "import socket\n\
             s=socket.create_connection(('{EXT_IP}',{port}), timeout=5)\n\
             s.sendall(b'{message}'); s.close()\n"
        ),
        _ => format!(
            "import socket\n\
             s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.sendto(b'{message}', ('{EXT_IP}',{port}))\n"
        ),
    };
    let out = lab.exec(Host::Inet, &["python3", "-c", &script]);
    assert!(
        out.status.success(),
        "sending from the internet failed: {out:?}"
    );
}

pub fn map(lab: &Lab, args: &[&str]) -> (u16, u16, u32) {
    let out = lab.natpmpc(args);
    assert!(out.success, "natpmpc {args:?} failed: {out:?}");
    out.mapping()
        .unwrap_or_else(|| panic!("natpmpc printed no mapping: {out:?}"))
}
