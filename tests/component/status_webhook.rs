//! WEBHOOK_URL against the whole daemon and both emulators, with local receivers on loopback: one
//! (a real HTTP server, hyper) that refuses the first two deliveries and accepts the third, and
//! one that accepts connections and never answers, which must not delay a single transaction.
//!
//! Network safety: everything is bound to and sent to loopback only.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::daemon::{gateway_config, http, map, start, within, Client};
use double_natpmp_codec::natpmp::wire::{Protocol, ResultCode};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A receiver that answers 500 to its first `failures` requests and 200 after; every body
/// arrives on the channel with the status it got.
async fn flaky_receiver(
    failures: usize,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<(StatusCode, serde_json::Value)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        let seen = Arc::clone(&seen);
                        async move {
                            assert_eq!(req.method(), Method::POST);
                            assert_eq!(req.uri().path(), "/hook");
                            assert_eq!(req.headers()["content-type"], "application/json");
                            let body = req.into_body().collect().await.expect("body").to_bytes();
                            let n = seen.fetch_add(1, Ordering::SeqCst);
                            let status = if n < failures {
                                StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                StatusCode::OK
                            };
                            let json =
                                serde_json::from_slice(&body).expect("the webhook sends JSON");
                            let _ = tx.send((status, json));
                            let mut r = Response::new(Full::new(Bytes::from_static(b"")));
                            *r.status_mut() = status;
                            Ok::<_, Infallible>(r)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn the_webhook_retries_a_receiver_that_fails_twice_and_then_accepts() {
    let (receiver, mut posts) = flaky_receiver(2).await;
    let mut lab = start(
        gateway_config(),
        &[
            ("webhook-url", format!("http://{receiver}/hook")),
            ("webhook-backoff", "20ms".into()),
            ("webhook-retries", "3".into()),
        ],
    )
    .await;
    let client = Client::on(40, lab.daemon.listen).await;
    let reply = client.ask(map(Protocol::Tcp, 6881, 60)).await;
    assert_eq!(reply.result, ResultCode::Success);

    let (s1, first) = next(&mut posts).await;
    let (s2, second) = next(&mut posts).await;
    let (s3, third) = next(&mut posts).await;
    assert_eq!(
        (s1, s2, s3),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::OK
        )
    );
    assert_eq!(first, second, "a retry sends the same event");
    assert_eq!(first, third, "a retry sends the same event");
    assert_eq!(first["event"], "created", "{first}");
    assert_eq!(first["client"], "127.0.0.40");
    assert_eq!(first["protocol"], "tcp");
    assert_eq!(first["internal_port"], 6881);
    assert_eq!(first["external_port"], reply.external_port);
    assert_eq!(first["external_address"], "198.51.100.7");
    assert_eq!(first["origin"], "natpmp");
    assert!(first["time"].as_u64().is_some(), "{first}");

    let reply = client.ask(map(Protocol::Tcp, 6881, 0)).await;
    assert_eq!(reply.result, ResultCode::Success);
    let (status, removed) = next(&mut posts).await;
    assert_eq!(status, StatusCode::OK, "accepted at once now");
    assert_eq!(removed["event"], "removed", "{removed}");
    assert_eq!(removed["reason"], "deleted", "{removed}");

    let (_, _, metrics) = http(lab.status(), Method::GET, "/metrics", &[], None).await;
    assert!(
        metrics.contains("double_natpmp_webhook_deliveries_total{result=\"ok\"} 2"),
        "{metrics}"
    );
    lab.stop().await;
}

/// Accepts connections and holds them, never reading or answering.
async fn silent_receiver() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// The median time of `n` create+delete transactions made by a NAT-PMP client.
async fn median_transaction(lab: &common::daemon::Lab, host: u8, n: u16) -> Duration {
    let client = Client::on(host, lab.daemon.listen).await;
    let mut took = Vec::new();
    for i in 0..n {
        for lifetime in [60, 0] {
            let started = Instant::now();
            let reply = client.ask(map(Protocol::Udp, 7000 + i, lifetime)).await;
            took.push(started.elapsed());
            assert_eq!(reply.result, ResultCode::Success);
        }
    }
    took.sort();
    took[took.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_delay_transactions() {
    let mut control = start(gateway_config(), &[]).await;
    let baseline = median_transaction(&control, 50, 10).await;
    control.stop().await;

    let receiver = silent_receiver().await;
    let mut lab = start(
        gateway_config(),
        &[
            ("webhook-url", format!("http://{receiver}/hook")),
            ("webhook-timeout", "30s".into()),
            ("webhook-retries", "0".into()),
            ("webhook-queue", "2".into()),
        ],
    )
    .await;
    let slow = median_transaction(&lab, 51, 10).await;
    // Loopback transactions take milliseconds; a delivery waits 30 s for the silent receiver.
    assert!(
        slow <= baseline * 3 + Duration::from_millis(50),
        "median transaction {slow:?} with a silent webhook receiver, {baseline:?} without"
    );
    let (_, _, metrics) = http(lab.status(), Method::GET, "/metrics", &[], None).await;
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("double_natpmp_webhook_dropped_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // 20 events, one in delivery, two queued: the rest overflowed and were counted.
    assert!(dropped >= 15, "dropped {dropped}:\n{metrics}");
    // The stop is not held up by the receiver either (the webhook gets at most 2 s at the end).
    let started = Instant::now();
    lab.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
}

/// The next `reachability` event posted; no post on the way is the test mapping's own.
async fn next_verdict(
    posts: &mut mpsc::UnboundedReceiver<(StatusCode, serde_json::Value)>,
) -> serde_json::Value {
    loop {
        let (_, body) = next(posts).await;
        assert_ne!(
            body["origin"], "selftest",
            "the test mapping is not posted: {body}"
        );
        if body["event"] == "reachability" {
            return body;
        }
    }
}

async fn next(
    posts: &mut mpsc::UnboundedReceiver<(StatusCode, serde_json::Value)>,
) -> (StatusCode, serde_json::Value) {
    within(Duration::from_secs(10), "a webhook POST", posts.recv())
        .await
        .expect("the receiver runs")
}

/// A new verdict of the reachability check reaches the webhook as a `reachability` event; a
/// check that says the same again sends none. `/readyz` keeps its meaning whatever the check
/// finds (here an exit mismatch).
#[tokio::test]
async fn a_new_reachability_verdict_is_posted_once_and_readyz_ignores_it() {
    let (receiver, mut posts) = flaky_receiver(0).await;
    let (lab, stun) = crate::reachability::lab(
        gateway_config(),
        double_natpmp_emulators::stun::StunConfig::default(),
        std::net::Ipv4Addr::new(198, 51, 100, 99),
        &[("webhook-url", format!("http://{receiver}/hook"))],
    )
    .await;
    let view = crate::reachability::check_now(&lab).await;
    assert_eq!(
        crate::reachability::text(&view, "/last/exit_address"),
        "differs"
    );
    // The test mapping's own created and removed events come too; the verdict is among them.
    let verdict = next_verdict(&mut posts).await;
    let message = verdict["message"].as_str().expect("message");
    assert!(message.contains("exit mismatch"), "{message}");
    assert!(
        message.contains("Fix: connect to another server"),
        "{message}"
    );
    assert_eq!(verdict["external_address"], "198.51.100.7");
    let (status, _, _) = http(lab.status(), Method::GET, "/readyz", &[], None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "readiness does not depend on the check"
    );
    // The same verdict again, then another (the STUN server gone): the next reachability event
    // is the third check's, so the second sent none (the webhook keeps the events' order).
    crate::reachability::check_now(&lab).await;
    stun.shutdown().await;
    let view = crate::reachability::check_now(&lab).await;
    assert_eq!(
        crate::reachability::text(&view, "/last/blocked/kind"),
        "no_server"
    );
    let next_verdict = next_verdict(&mut posts).await;
    let message = next_verdict["message"].as_str().expect("message");
    assert!(message.contains("no STUN server answered"), "{message}");
}
