//! libtorrent itself (Debian's python3-libtorrent, the library inside qBittorrent and Deluge)
//! as the LAN client in the namespace lab, started while one layer is unreachable: the daemon's
//! CREATE_PATIENCE must turn a hiccup of a few seconds into a mapping, not into the error that
//! makes libtorrent wait two hours (docs/conformance.md, C-17b).
//!
//! libtorrent sends a mapping request up to 9 times, 250 ms × n apart, and gives up about
//! 11.25 s after the first send; any non-zero result is final for two hours. The fault here
//! lasts 6 s: an nft rule that a timer removes (the fault injected, not a wait for anything).
//! The driver, `tests/py/libtorrent_natpmp.py`, enables NAT-PMP only and reports libtorrent's
//! own portmap and portmap-error alerts.

use crate::common;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::lab::{self, Host, Lab, CLIENT_IP, INET_IP};
use common::traffic::{gateway_rules, router_rules, send_from_internet};

const ALLOW: &str = "1024-65535 10.2.0.0/24 1024-65535";
/// libtorrent's fixed listen port.
const PORT: u16 = 6881;
/// How long the fault lasts.
const OUTAGE: Duration = Duration::from_secs(6);
/// The driver's own limit for both mappings (libtorrent gives up on a silent gateway after
/// ~11.25 s per mapping; two mappings, one after the other).
const MAPPING_LIMIT: Duration = Duration::from_secs(40);

/// Whether libtorrent's Python binding is there (the test command installs it).
fn libtorrent_available(test: &str) -> bool {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok || common::skip::skip(
        test,
        "needs python3-libtorrent (the test command installs it)",
    )
}

fn lab_with_daemon() -> Lab {
    let mut lab = Lab::up();
    lab.start_miniupnpd(ALLOW);
    lab.start_router_emulator(&[]);
    lab.start_daemon(&[]);
    lab
}

/// Removes the nft table `table` of host `h` once OUTAGE has passed, from a process in that
/// namespace (the lab kills it if the test ends first).
fn end_after_outage(lab: &mut Lab, h: Host, table: &str) {
    let script = format!(
        "sleep {}; nft delete table inet {table}; echo outage over",
        OUTAGE.as_secs()
    );
    lab.spawn(h, &["sh", "-c", &script], &[]);
}

/// Starts libtorrent on the LAN host.
fn start_libtorrent(lab: &mut Lab) -> Receiver<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/libtorrent_natpmp.py");
    let port = PORT.to_string();
    let limit = MAPPING_LIMIT.as_secs().to_string();
    let save = lab.dir.path().join("libtorrent");
    std::fs::create_dir_all(&save).expect("libtorrent's scratch folder");
    let save = save.to_str().expect("a UTF-8 temporary path").to_owned();
    lab.spawn(
        Host::Lan,
        &[
            "/usr/bin/python3",
            "-u",
            script,
            "--address",
            CLIENT_IP,
            "--port",
            &port,
            "--timeout",
            &limit,
            "--save-path",
            &save,
        ],
        &[],
    )
}

/// libtorrent's external ports once it reports both mappings; panics on an error alert.
fn wait_until_mapped(logs: &Receiver<String>) -> (u16, u16) {
    let deadline = Instant::now() + MAPPING_LIMIT + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = logs.recv_timeout(left).unwrap_or_else(|_| {
            panic!("libtorrent reported nothing conclusive within {MAPPING_LIMIT:?}")
        });
        assert!(
            !line.starts_with("ERROR") && !line.starts_with("TIMEOUT"),
            "libtorrent: {line}"
        );
        if let Some(rest) = line.strip_prefix("READY ") {
            let port = |proto: &str| -> u16 {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(proto))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("no {proto} port in {line:?}"))
            };
            return (port("tcp="), port("udp="));
        }
    }
}

/// TCP from the internet host reaches libtorrent's listen socket through both NAT layers.
fn tcp_from_the_internet_reaches_libtorrent(lab: &Lab, logs: &Receiver<String>, public: u16) {
    send_from_internet(lab, "tcp", public, "hello");
    let line = lab::wait_for_line(logs, "INCOMING", Duration::from_secs(10));
    assert!(line.contains(INET_IP), "{line}");
}

fn check_mapped_through_the_outage(lab: &mut Lab, logs: &Receiver<String>, started: Instant) {
    let (tcp, udp) = wait_until_mapped(logs);
    // The fault was real: nothing could be made before it ended.
    assert!(
        started.elapsed() >= OUTAGE - Duration::from_millis(500),
        "mapped after {:?}, before the outage ended",
        started.elapsed()
    );
    assert!(tcp != 0 && udp != 0);
    assert_eq!(router_rules(lab).len(), 2, "{:?}", router_rules(lab));
    assert_eq!(gateway_rules(lab).len(), 2, "{:?}", gateway_rules(lab));
    tcp_from_the_internet_reaches_libtorrent(lab, logs, tcp);
}

#[test]
fn c17b_libtorrent_started_while_the_gateway_drops_nat_pmp_for_6s_gets_both_mappings_with_no_error()
{
    let name =
        "c17b_libtorrent_started_while_the_gateway_drops_nat_pmp_for_6s_gets_both_mappings_with_no_error";
    if !lab::available(name) || !libtorrent_available(name) {
        return;
    }
    let mut lab = lab_with_daemon();
    lab.begin_natpmp_outage();
    let started = Instant::now();
    end_after_outage(&mut lab, Host::Vpn, "outage");
    let logs = start_libtorrent(&mut lab);
    check_mapped_through_the_outage(&mut lab, &logs, started);
}

#[test]
fn c17b_libtorrent_started_while_the_router_api_is_unreachable_for_6s_gets_both_mappings_with_no_error(
) {
    let name = "c17b_libtorrent_started_while_the_router_api_is_unreachable_for_6s_gets_both_mappings_with_no_error";
    if !lab::available(name) || !libtorrent_available(name) {
        return;
    }
    let mut lab = lab_with_daemon();
    // Every packet toward the RouterOS API (the emulator on the router host's loopback) is
    // dropped: pooled connections hang, new ones cannot connect.
    lab.nft(
        Host::Router,
        "table inet apioutage {
           chain output {
             type filter hook output priority -10; policy accept;
             tcp dport 8728 drop
           }
         }",
    );
    let started = Instant::now();
    end_after_outage(&mut lab, Host::Router, "apioutage");
    let logs = start_libtorrent(&mut lab);
    check_mapped_through_the_outage(&mut lab, &logs, started);
}
