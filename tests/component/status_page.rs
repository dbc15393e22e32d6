//! The status page in headless Chromium, driven over the DevTools protocol (a WebSocket,
//! `tungstenite`): it loads from the daemon's status server, shows a mapping the test made,
//! updates by itself after the client deletes it, and logs no console error or exception. The
//! screenshots stay in `target/tmp/` (`status-page.png`, `status-page-after-delete.png`).
//!
//! Network safety: Chromium and the daemon talk on loopback only; Chromium's own background
//! traffic is switched off.

use crate::common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64_decode::decode;
use common::daemon::{gateway_config, get_json, map, start, Client};
use double_natpmp_codec::natpmp::wire::{Protocol, ResultCode};
use hyper::StatusCode;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// A tiny base64 decoder for the screenshot (the test has no base64 crate; std has none).
mod base64_decode {
    pub fn decode(text: &str) -> Vec<u8> {
        let value = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            } as u32)
        };
        let mut out = Vec::with_capacity(text.len() * 3 / 4);
        let (mut acc, mut bits) = (0u32, 0);
        for v in text.bytes().filter_map(value) {
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}

/// Headless Chromium with the DevTools protocol on a port of its choosing; killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Browser {
    fn start(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(binary)
            .args(common::chromium::QUIET)
            .args([
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=900,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose into the profile once DevTools listens.
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium's DevTools did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Browser {
            child,
            _profile: profile,
            port,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools session with one page; console errors and exceptions are collected as they come.
struct Page {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
    errors: Vec<String>,
}

impl Page {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let text = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws
            .send(Message::Text(text.into()))
            .expect("send to DevTools");
        loop {
            let msg = self.ws.read().expect("read from DevTools");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.note(&v);
        }
    }

    fn note(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(v["params"].to_string()),
            Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                self.errors.push(v["params"].to_string())
            }
            Some("Log.entryAdded") if v["params"]["entry"]["level"] == "error" => {
                self.errors.push(v["params"].to_string())
            }
            _ => {}
        }
    }

    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    /// Waits (bounded) until `expression` is true in the page.
    fn until(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.eval(expression) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "the page never showed: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

/// Starts Chromium and opens the status page at `status` in it, with the runtime, the log and
/// the page events on (console errors are collected).
async fn open(binary: PathBuf, status: std::net::SocketAddr) -> (Browser, Page) {
    let browser = tokio::task::spawn_blocking(move || Browser::start(&binary))
        .await
        .expect("join");
    let targets = get_json(
        ([127, 0, 0, 1], browser.port).into(),
        "/json/list",
        StatusCode::OK,
    )
    .await;
    let ws_url = targets
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "page"))
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_owned();
    let url = format!("http://{status}/");
    let page = tokio::task::spawn_blocking(move || {
        let (ws, _) = tungstenite::connect(ws_url.as_str()).expect("connect to DevTools");
        let mut page = Page {
            ws,
            next: 0,
            errors: Vec::new(),
        };
        page.call("Runtime.enable", json!({}));
        page.call("Log.enable", json!({}));
        page.call("Page.enable", json!({}));
        page.call("Page.navigate", json!({ "url": url }));
        page
    })
    .await
    .expect("join");
    (browser, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_new_mapping_and_updates_after_a_delete_without_console_errors() {
    let Some(binary) = common::chromium::find(
        "the_page_shows_a_new_mapping_and_updates_after_a_delete_without_console_errors",
    ) else {
        return;
    };
    let mut lab = start(gateway_config(), &[]).await;
    let status = lab.status();
    let client = Client::on(60, lab.daemon.listen).await;
    let reply = client.ask(map(Protocol::Tcp, 6881, 3600)).await;
    assert_eq!(reply.result, ResultCode::Success);
    let external = reply.external_port;

    let (browser, page) = open(binary, status).await;
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let page = tokio::task::spawn_blocking(move || {
        let mut page = page;
        let row = "document.querySelector('tr[data-key=\"tcp/127.0.0.60/6881\"]')";
        page.until(&format!("{row} !== null"), "the mapping's row");
        let text = page
            .eval(&format!("{row}.innerText"))
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            text.contains(&format!("198.51.100.7:{external}")),
            "row: {text}"
        );
        assert!(text.contains("127.0.0.60:6881"), "row: {text}");
        page.until(
            "document.getElementById('ready').textContent === 'ready'",
            "ready",
        );
        page.screenshot(&artifacts.join("status-page.png"));
        page
    })
    .await
    .expect("join");

    // The client deletes its mapping; the page, left alone, shows it gone.
    let reply = client.ask(map(Protocol::Tcp, 6881, 0)).await;
    assert_eq!(reply.result, ResultCode::Success);
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let page = tokio::task::spawn_blocking(move || {
        let mut page = page;
        page.until(
            "document.querySelectorAll('#mappings tr').length === 0",
            "the mapping gone",
        );
        page.until(
            "document.getElementById('events').innerText.includes('removed (deleted)')",
            "the removal in the last events",
        );
        page.screenshot(&artifacts.join("status-page-after-delete.png"));
        page
    })
    .await
    .expect("join");
    assert!(page.errors.is_empty(), "console errors: {:#?}", page.errors);
    drop(browser);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_reachability_line_after_a_check() {
    let Some(binary) = common::chromium::find("the_page_shows_the_reachability_line_after_a_check")
    else {
        return;
    };
    let (mut lab, _stun) = crate::reachability::lab(
        gateway_config(),
        double_natpmp_emulators::stun::StunConfig::default(),
        crate::reachability::EXIT,
        &[],
    )
    .await;
    let view = crate::reachability::check_now(&lab).await;
    assert_eq!(view["last"]["inbound"]["result"], "reached", "{view}");
    let status = lab.status();
    let (browser, page) = open(binary, status).await;
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let page = tokio::task::spawn_blocking(move || {
        let mut page = page;
        let line = "document.getElementById('reachability')";
        page.until(
            &format!("{line}.innerText.startsWith('reachable from the internet: yes, UDP, checked')"),
            "the reachability line",
        );
        assert_eq!(page.eval(&format!("{line}.className")), json!("ok"));
        assert_eq!(page.eval(&format!("{line}.hidden")), json!(false));
        page.until(
            "document.getElementById('events').innerText.includes('reachable from the internet: yes')",
            "the verdict in the last events",
        );
        page.screenshot(&artifacts.join("status-page-reachability.png"));
        page
    })
    .await
    .expect("join");
    assert!(page.errors.is_empty(), "console errors: {:#?}", page.errors);
    drop(browser);
    lab.stop().await;
}
