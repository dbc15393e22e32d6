//! `double-natpmp demo` as a newcomer runs it: the daemon against the built-in emulators on
//! 127.0.0.1:5351, asked for a port by the real `natpmpc -g 127.0.0.1 -a 0 6881 tcp 60`.
//! It runs in a private network namespace so port 5351 is free whatever else this machine runs.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::lab::{self, Netns};

/// The demo status page's reachability line, once its first check has a result (10 s at most).
fn reachability_line(ns: &Netns) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = ns
            .command(&[
                "curl",
                "-sS",
                "--max-time",
                "2",
                "http://127.0.0.1:8080/api/v1/reachability",
            ])
            .output()
            .expect("curl");
        let view: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if view.get("last").is_some() {
            return view["line"].as_str().unwrap_or_default().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reachability result: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

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

    // Its reachability check proved a test mapping through both emulated layers.
    let line = reachability_line(&ns);
    assert!(
        line.starts_with("reachable from the internet: yes, UDP"),
        "{line}"
    );

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
