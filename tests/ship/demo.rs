//! `double-natpmp demo` as a newcomer runs it: the daemon against the built-in emulators on
//! 127.0.0.1:5351, asked for a port by the real `natpmpc -g 127.0.0.1 -a 0 6881 tcp 60`.
//! It runs in a private network namespace so port 5351 is free whatever else this machine runs.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::lab::{self, Netns};

#[test]
fn demo_maps_a_port_for_natpmpc_and_cleans_up_on_sigterm() {
    if !lab::available("demo_maps_a_port_for_natpmpc_and_cleans_up_on_sigterm") {
        return;
    }
    let ns = Netns::new();
    let mut demo = ns
        .command(&[lab::daemon_bin(), "demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the demo");
    let (tx, lines) = mpsc::channel();
    let stdout = demo.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[demo] {line}");
            let _ = tx.send(line);
        }
    });
    lab::wait_for_line(
        &lines,
        "daemon (NAT-PMP)        127.0.0.1:5351",
        Duration::from_secs(30),
    );

    lab::assert_demo_maps_6881(&ns);

    // The demo shows both layers being made.
    lab::wait_for_line(&lines, "+ router   dst-nat rule", Duration::from_secs(5));
    lab::wait_for_line(&lines, "+ gateway  mapping", Duration::from_secs(5));

    // SIGTERM: the daemon removes its mapping from both layers and the demo exits 0.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let last = lab::wait_for_line(&lines, "demo stopped", Duration::from_secs(20));
    assert!(
        last.contains("0 router rule(s) and 0 gateway mapping(s) left"),
        "{last}"
    );
    let code = demo.wait().expect("wait").code();
    assert_eq!(code, Some(0));
}
