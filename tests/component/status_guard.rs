//! The status server against hostile web pages and clients, over raw HTTP/1.1 against the whole
//! daemon and both emulators: a `Host` the server does not answer to gets 421 and no data (DNS
//! rebinding), its own address and STATUS_HOSTNAMES do; clients that never finish a request or
//! never read cannot keep the connection slots past STATUS_CONNECTION_TIMEOUT.
//!
//! Network safety: everything is bound to and sent to loopback only.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::daemon::{gateway_config, map, start, within, Client};
use double_natpmp::MAX_STATUS_CONNECTIONS;
use double_natpmp_codec::natpmp::wire::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One request as written (`head` without its closing blank line), on a fresh connection the
/// server closes after answering: (status, body).
async fn raw(addr: SocketAddr, head: &str) -> (u16, String) {
    within(Duration::from_secs(10), head, async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.expect("read");
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {text}"));
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
        (status, body.unwrap_or_default())
    })
    .await
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}")
}

#[tokio::test]
async fn a_foreign_host_gets_421_and_no_mapping_data_while_the_own_address_and_listed_names_do() {
    let mut lab = start(
        gateway_config(),
        &[("status-hostnames", "natpmp.lan".into())],
    )
    .await;
    let addr = lab.status();
    let port = addr.port();
    let client = Client::on(21, lab.daemon.listen).await;
    let reply = client.ask(map(Protocol::Tcp, 6021, 60)).await;
    let secrets = [
        "127.0.0.21".to_owned(),
        "198.51.100.7".to_owned(),
        reply.external_port.to_string(),
    ];

    let foreign = [
        "attacker.example".to_owned(),
        format!("attacker.example:{port}"),
        "natpmp.lan.attacker.example".to_owned(),
        "localhost.".to_owned() + "attacker.example",
    ];
    for host in &foreign {
        for path in [
            "/",
            "/api/v1/mappings",
            "/metrics",
            "/api/v1/status",
            "/readyz",
        ] {
            let (status, body) = raw(addr, &get(path, host)).await;
            assert_eq!(status, 421, "Host {host} {path}: {body}");
            for s in &secrets {
                assert!(
                    !body.contains(s.as_str()),
                    "Host {host} {path} leaks {s}: {body}"
                );
            }
        }
        // The liveness answer carries nothing and serves any probe.
        let (status, body) = raw(addr, &get("/healthz", host)).await;
        assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    }
    // No Host at all (HTTP/1.0): no data either.
    let (status, _) = raw(addr, "GET /api/v1/mappings HTTP/1.0").await;
    assert_eq!(status, 421);

    // The listener's own address, with and without the port, and a listed name (any case,
    // any port) see everything.
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
        "natpmp.lan".to_owned(),
        "NatPmp.LAN:8080".to_owned(),
    ] {
        let (status, body) = raw(addr, &get("/api/v1/mappings", &host)).await;
        assert_eq!(status, 200, "Host {host}: {body}");
        assert!(body.contains("127.0.0.21"), "Host {host}: {body}");
        assert!(
            body.contains(&format!("\"external_port\":{}", reply.external_port)),
            "{body}"
        );
        let (status, body) = raw(addr, &get("/metrics", &host)).await;
        assert_eq!(status, 200, "Host {host}");
        assert!(body.contains("double_natpmp_"), "{body}");
        let (status, body) = raw(addr, &get("/", &host)).await;
        assert_eq!(status, 200, "Host {host}");
        assert!(body.contains("<html"), "Host {host}");
    }
    // A probe that sends another IP address (a published container port) reads /readyz.
    let (status, body) = raw(addr, &get("/readyz", "192.0.2.10:18080")).await;
    assert_ne!(status, 421, "{body}");
    assert!(body.contains("\"checks\""), "{body}");
    let (status, _) = raw(addr, &get("/api/v1/mappings", "192.0.2.10:18080")).await;
    assert_eq!(status, 421);
    lab.stop().await;
}

/// Reads from `s` until `want` has arrived.
async fn read_until(s: &mut TcpStream, want: &str) {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(want) {
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before {want:?}");
        seen.extend_from_slice(&chunk[..n]);
    }
}

/// A connection the server has accepted and answered once (so it holds a connection slot).
async fn served_connection(addr: SocketAddr, receive_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let mut s = socket.connect(addr).await.expect("connect");
    s.write_all(get("/healthz", "127.0.0.1").as_bytes())
        .await
        .expect("send");
    s.write_all(b"\r\n\r\n").await.expect("send");
    read_until(&mut s, r#"{"status":"ok"}"#).await;
    s
}

#[tokio::test]
async fn clients_that_never_finish_a_request_or_never_read_free_their_slots_after_the_timeout() {
    let limit = Duration::from_secs(2);
    let mut lab = start(
        gateway_config(),
        &[("status-connection-timeout", "2s".into())],
    )
    .await;
    let addr = lab.status();
    let started = Instant::now();
    let mut stalled = Vec::new();
    let never_read = 8;
    for i in 0..MAX_STATUS_CONNECTIONS {
        if i < never_read {
            // Asks for the page a thousand times in one go and reads none of it: the server's
            // writes stop once the socket buffers are full.
            let mut s = served_connection(addr, Some(4096)).await;
            let many = format!("{}\r\n\r\n", get("/", "127.0.0.1")).repeat(1000);
            s.write_all(many.as_bytes()).await.expect("send");
            stalled.push(s);
        } else {
            // Starts a request and never finishes it.
            let mut s = served_connection(addr, None).await;
            s.write_all(b"GET /api/v1/mappings HTTP/1.1\r\nHost: 127.")
                .await
                .expect("send");
            stalled.push(s);
        }
    }
    // Every slot is taken; a new client waits in the backlog until one is freed.
    // Within the limit, one second of grace for a response in progress, and slack; well below
    // the 10 s a request's head may take, so that bound cannot be what frees the slots.
    let (status, body) = within(
        limit + Duration::from_secs(5),
        "a new client served once stalled connections time out",
        raw(addr, &get("/api/v1/mappings", "127.0.0.1")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= limit,
        "served after {:?}: the stalled connections did not hold the slots",
        started.elapsed()
    );
    drop(stalled);
    lab.stop().await;
}
