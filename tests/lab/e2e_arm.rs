//! The ARM binaries that ship (`target/static/double-natpmp-{arm64,armv7}`, from
//! `scripts/static-build.sh --arch all`), end to end in the namespace lab with real peers, run
//! through qemu-user (`scripts/qemu-binfmt.sh`): `natpmpc` on the LAN host asks the ARM daemon
//! for TCP and UDP ports, it adds the dst-nat rules through the RouterOS emulator (mirrored into
//! real nftables) and maps the ports at a real `miniupnpd`; packets from the "internet" host
//! cross both NAT layers to the LAN host; a delete removes both layers; and after a SIGKILL and
//! a restart of the ARM daemon the data plane still carries traffic and the port is kept.
//!
//! Only the daemon is the ARM build; the emulators are cargo's build for this machine.

use crate::common;

use std::time::{Duration, Instant};

use common::arm::Arch;
use common::lab::{self, Lab};
use common::traffic::{gateway_rules, lan_listener, map, router_rules, send_from_internet};

const ALLOW: &str = "1024-65535 10.2.0.0/24 1024-65535";

/// The lab with miniupnpd, the router emulator and the ARM daemon, or `None` when the test
/// cannot run here (a loud skip, a failure under CI=true).
fn lab_with_arm_daemon(arch: Arch, test: &str) -> Option<Lab> {
    if !lab::available(test)
        || !arch.available(test, &arch.binary(), "scripts/static-build.sh --arch all")
    {
        return None;
    }
    let mut lab = Lab::up_with(&arch.binary());
    lab.start_miniupnpd(ALLOW);
    lab.start_router_emulator(&[]);
    lab.start_daemon(&[]);
    // The daemon's process is the ARM build, run by the kernel through qemu-user.
    let pid = lab.daemon_pid().expect("the daemon runs");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("read the daemon's executable");
    assert!(
        exe.to_string_lossy().contains("qemu"),
        "the {} daemon runs {} natively, not under qemu-user",
        arch.name(),
        exe.display()
    );
    Some(lab)
}

/// A message sent from the internet host to the gateway's public address and `public` arrives
/// at a listener on the LAN host's `port`.
fn reaches_the_client(lab: &mut Lab, proto: &str, public: u16, port: u16, message: &str) {
    let listener = lan_listener(lab, proto, port);
    send_from_internet(lab, proto, public, message);
    let got = lab::wait_for_line(&listener, "got", Duration::from_secs(10));
    assert!(got.contains(message), "{proto}: {got}");
}

fn maps_tcp_and_udp_across_both_nat_layers_and_deletes_both(arch: Arch, test: &str) {
    let Some(mut lab) = lab_with_arm_daemon(arch, test) else {
        return;
    };
    let (tcp, local, lifetime) = map(&lab, &["-a", "0", "6881", "tcp", "3600"]);
    assert_eq!((local, lifetime), (6881, 3600));
    reaches_the_client(&mut lab, "tcp", tcp, 6881, "tcp-through-both-nats");

    let (udp, local, _) = map(&lab, &["-a", "0", "6882", "udp", "3600"]);
    assert_eq!(local, 6882);
    reaches_the_client(&mut lab, "udp", udp, 6882, "udp-through-both-nats");
    assert_eq!(router_rules(&lab).len(), 2, "{:?}", router_rules(&lab));
    assert_eq!(gateway_rules(&lab).len(), 2, "{:?}", gateway_rules(&lab));

    // C-33: a delete removes the mapping from both layers before the reply.
    let out = lab.natpmpc(&["-a", "0", "6881", "tcp", "0"]);
    assert!(out.success, "delete failed: {out:?}");
    let rules = router_rules(&lab);
    assert_eq!(rules.len(), 1, "only the UDP rule is left: {rules:?}");
    assert!(rules[0].contains("udp"), "{rules:?}");
    assert_eq!(gateway_rules(&lab).len(), 1, "{:?}", gateway_rules(&lab));
}

fn keeps_the_data_plane_and_the_port_across_sigkill_and_restart(arch: Arch, test: &str) {
    let Some(mut lab) = lab_with_arm_daemon(arch, test) else {
        return;
    };
    let (public, local, _) = map(&lab, &["-a", "0", "6881", "tcp", "3600"]);
    assert_eq!(local, 6881);

    lab.kill_daemon();
    lab.start_daemon(&[]);
    let restarted = Instant::now();
    // No client request in between: the restart kept the rule and the gateway's mapping, also
    // once the restarted daemon has reconciled (a few seconds).
    reaches_the_client(&mut lab, "tcp", public, 6881, "right-after-the-restart");
    std::thread::sleep(
        (restarted + Duration::from_secs(5)).saturating_duration_since(Instant::now()),
    );
    reaches_the_client(&mut lab, "tcp", public, 6881, "five-seconds-after");

    let (again, _, _) = map(&lab, &["-a", "0", "6881", "tcp", "3600"]);
    assert_eq!(again, public, "the renewal keeps the external port");
    assert_eq!(router_rules(&lab).len(), 1, "still one rule");
    assert_eq!(gateway_rules(&lab).len(), 1, "still one gateway forward");
}

#[test]
fn arm64_binary_maps_tcp_and_udp_across_both_nat_layers_and_deletes_both() {
    maps_tcp_and_udp_across_both_nat_layers_and_deletes_both(
        Arch::Arm64,
        "arm64_binary_maps_tcp_and_udp_across_both_nat_layers_and_deletes_both",
    );
}

#[test]
fn armv7_binary_maps_tcp_and_udp_across_both_nat_layers_and_deletes_both() {
    maps_tcp_and_udp_across_both_nat_layers_and_deletes_both(
        Arch::Armv7,
        "armv7_binary_maps_tcp_and_udp_across_both_nat_layers_and_deletes_both",
    );
}

#[test]
fn arm64_binary_keeps_the_data_plane_and_the_port_across_sigkill_and_restart() {
    keeps_the_data_plane_and_the_port_across_sigkill_and_restart(
        Arch::Arm64,
        "arm64_binary_keeps_the_data_plane_and_the_port_across_sigkill_and_restart",
    );
}

#[test]
fn armv7_binary_keeps_the_data_plane_and_the_port_across_sigkill_and_restart() {
    keeps_the_data_plane_and_the_port_across_sigkill_and_restart(
        Arch::Armv7,
        "armv7_binary_keeps_the_data_plane_and_the_port_across_sigkill_and_restart",
    );
}
