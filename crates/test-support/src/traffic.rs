//! Traffic through the namespace lab: listeners on the LAN host, senders on the internet host,
//! and what the two NAT layers hold (the router's and the gateway's nftables rules).

use std::time::{Duration, Instant};

use crate::lab::{self, Host, Lab, EXT_IP};

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

/// Counts, in the VPN host, the source ports of UDP that arrives from the router's tunnel
/// interface for `dst:dport` (a dynamic nft set filled before connection tracking and NAT, so
/// it holds the ports as they left the router). Read with [`tunnel_source_ports`].
pub fn watch_tunnel_sources(lab: &Lab, dst: &str, dport: u16) {
    lab.nft(
        Host::Vpn,
        &format!(
            "table ip observe {{
               set sports {{ type inet_service; flags dynamic; }}
               chain pre {{
                 type filter hook prerouting priority -300; policy accept;
                 iifname \"vpn-r\" ip daddr {dst} udp dport {dport} add @sports {{ udp sport }}
               }}
             }}"
        ),
    );
}

/// The source ports [`watch_tunnel_sources`] has seen so far.
pub fn tunnel_source_ports(lab: &Lab) -> Vec<u16> {
    let out = lab.exec(
        Host::Vpn,
        &["nft", "list", "set", "ip", "observe", "sports"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(elements) = text.split("elements = {").nth(1) else {
        return Vec::new();
    };
    elements
        .split('}')
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// An internet host that answers one UDP datagram on `port`: it prints `from <ip>:<port>` (the
/// source it saw) and sends `reply:<what it got>` back to that source.
pub fn internet_udp_echo(lab: &mut Lab, port: u16) -> std::sync::mpsc::Receiver<String> {
    let script = format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0',{port})); print('listening', flush=True)\n\
         d,a=s.recvfrom(100); print('from %s:%d' % a, flush=True)\n\
         s.sendto(b'reply:'+d, a)\n"
    );
    let rx = lab.spawn(Host::Inet, &["python3", "-c", &script], &[]);
    lab::wait_for_line(&rx, "listening", Duration::from_secs(10));
    rx
}

/// The LAN client sends one UDP datagram from its port `from` to `to` and waits (bounded) for
/// the answer; returns what came back and from where, or `None`.
pub fn client_udp_exchange(lab: &Lab, from: u16, to: (&str, u16), message: &str) -> Option<String> {
    let script = format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0',{from})); s.settimeout(5)\n\
         s.sendto(b'{message}', ('{}',{}))\n\
         d,a=s.recvfrom(100); print(d.decode(), 'from %s:%d' % a, flush=True)\n",
        to.0, to.1
    );
    let out = lab.exec(Host::Lan, &["python3", "-c", &script]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The router's src-nat rules (the mirror of the emulator's srcnat chain), in order.
pub fn router_srcnat(lab: &Lab) -> Vec<String> {
    let out = lab.exec(
        Host::Router,
        &["nft", "list", "chain", "ip", "mikrotik", "srcnat"],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("masquerade") || l.contains("snat"))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// miniupnpd's postrouting rules (what it does with traffic the mapped host sends).
pub fn gateway_postrouting(lab: &Lab) -> Vec<String> {
    let out = lab.exec(
        Host::Vpn,
        &[
            "nft",
            "list",
            "chain",
            "inet",
            "filter",
            "postrouting_miniupnpd",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("snat") || l.contains("masquerade"))
        .map(|l| l.trim().to_owned())
        .collect()
}
