//! Real client, real gateway: `natpmpc` on a LAN host asks the daemon (in the router namespace)
//! for the external address, and gets what the upstream VPN gateway reported; once with our
//! gateway emulator and once with miniupnpd. Needs root (network namespaces); see common/lab.rs.

use crate::common;

use common::lab::{self, Host, Lab, EXT_IP, GW_IP, ROUTER_LAN_IP};

fn start_daemon(lab: &mut Lab) {
    lab.start_router_emulator(&[]);
    lab.start_daemon(&[]);
}

#[test]
fn natpmpc_gets_the_upstream_address_through_the_daemon_with_the_gateway_emulator() {
    if !lab::available(
        "natpmpc_gets_the_upstream_address_through_the_daemon_with_the_gateway_emulator",
    ) {
        return;
    }
    let mut lab = Lab::up();
    lab.start_gateway_emulator(&["--external-address", "198.51.101.77"]);
    start_daemon(&mut lab);
    let out = lab.natpmpc(&[]);
    assert!(out.success, "natpmpc failed: {out:?}");
    assert_eq!(
        out.public_address().as_deref(),
        Some("198.51.101.77"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains(&format!("using gateway : {ROUTER_LAN_IP}")),
        "{out:?}"
    );
}

#[test]
fn natpmpc_gets_the_upstream_address_through_the_daemon_with_miniupnpd() {
    if !lab::available("natpmpc_gets_the_upstream_address_through_the_daemon_with_miniupnpd") {
        return;
    }
    let mut lab = Lab::up();
    lab.start_miniupnpd("1024-65535 10.2.0.0/24 1024-65535");
    // The real gateway answers the router directly...
    let direct = lab.exec(Host::Router, &["timeout", "10", "natpmpc", "-g", GW_IP]);
    assert!(
        String::from_utf8_lossy(&direct.stdout).contains(&format!("Public IP address : {EXT_IP}")),
        "miniupnpd does not answer in the lab: {direct:?}"
    );
    // ...and the LAN client gets the same address from the daemon.
    start_daemon(&mut lab);
    let out = lab.natpmpc(&[]);
    assert!(out.success, "natpmpc failed: {out:?}");
    assert_eq!(out.public_address().as_deref(), Some(EXT_IP), "{out:?}");
}

#[test]
fn pcp_probe_from_the_lan_gets_the_8_byte_unsupported_version_reply() {
    if !lab::available("pcp_probe_from_the_lan_gets_the_8_byte_unsupported_version_reply") {
        return;
    }
    let mut lab = Lab::up();
    lab.start_gateway_emulator(&[]);
    start_daemon(&mut lab);
    // A 60-byte PCP v2 MAP probe from the LAN host; print the reply as hex.
    let script = "import socket,sys\n\
        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
        s.settimeout(5)\n\
        s.connect(('192.168.88.250',5351))\n\
        s.send(bytes([2,1])+bytes(58))\n\
        print(s.recv(100).hex())\n";
    let out = lab.exec(Host::Lan, &["python3", "-c", script]);
    assert!(out.status.success(), "{out:?}");
    let hex = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(hex.len(), 16, "reply is not 8 bytes: {hex}");
    assert!(hex.starts_with("00800001"), "not [0][128][0,1]: {hex}");
}
