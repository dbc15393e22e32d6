//! `double-natpmp health` (the container HEALTHCHECK) as the container runs it: the binary
//! against a running daemon, against one whose VPN gateway is dark (still healthy: the daemon
//! serves, the gateway is a VPN problem), and against nothing.
//!
//! Network safety: everything is bound to and sent to loopback only.

use crate::common;

use std::process::Output;
use std::time::Duration;

use common::daemon::{gateway_config, start, within};
use double_natpmp_codec::natpmp::wire::ResultCode;
use double_natpmp_emulators::gateway::Mode;
use tokio::net::UdpSocket;

async fn health(listen: &str) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_double-natpmp"));
    cmd.args(["health", "--timeout", "1s"])
        .env_clear()
        .env("LISTEN_ADDR", listen)
        .kill_on_drop(true);
    within(Duration::from_secs(30), "health", cmd.output())
        .await
        .expect("run the binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback UDP port that was free a moment ago.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn health_passes_against_a_running_daemon() {
    // The real daemon, against its built-in emulators (`demo`), on a loopback port.
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_double-natpmp"));
    demo.args(["demo", "--listen", &listen, "--duration", "60s"])
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut demo = demo.spawn().expect("start the demo daemon");
    // The daemon needs a moment to log in and open its socket; each probe itself waits up to
    // 1 s for an answer, so this polls the event "the socket answers", bounded by 20 probes.
    let mut last = None;
    for _ in 0..20 {
        let out = health(&listen).await;
        if out.status.success() {
            last = Some(out);
            break;
        }
        last = Some(out);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = last.unwrap();
    let _ = demo.kill().await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(&format!("healthy: double-natpmp at {listen} answers")),
        "{text}"
    );
}

#[tokio::test]
async fn health_passes_while_the_vpn_gateway_is_dark() {
    // Loopback is outside ALLOWED_CLIENTS here: the probe is answered as the host's own.
    let mut lab = start(
        gateway_config(),
        &[
            ("allowed-clients", "192.168.0.0/16".into()),
            ("address-refresh", "1s".into()),
        ],
    )
    .await;
    lab.gateway.set_mode(Mode::Silent).await.expect("silence");
    let listen = lab.daemon.listen;
    // Wait until the daemon itself finds the gateway dark: its address answer is result 3 (the
    // old probe, an address request, failed exactly here).
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.connect(listen).await.expect("connect");
    within(Duration::from_secs(20), "an address answer of 3", async {
        let mut buf = [0u8; 16];
        loop {
            sock.send(&[0, 0]).await.expect("send");
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf)).await
            {
                if n == 12 && buf[2..4] == ResultCode::NetworkFailure.to_u16().to_be_bytes() {
                    return;
                }
            }
        }
    })
    .await;
    let out = health(&listen.to_string()).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("healthy: double-natpmp at"), "{text}");
    lab.stop().await;
}

#[tokio::test]
async fn health_fails_in_one_line_when_nothing_listens() {
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let out = health(&listen).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("unhealthy: nothing listens for NAT-PMP"),
        "{text}"
    );
}
