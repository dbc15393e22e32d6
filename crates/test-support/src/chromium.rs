//! Headless Chromium for the tests that look at a page (the status page, the flow diagram):
//! where it is, and the flags that keep it quiet (no background traffic, no GPU, no sandbox
//! under root).

use std::path::PathBuf;

/// The flags every headless run takes: no sandbox (the tests run as root), no GPU, and none of
/// Chromium's own network traffic (the tests talk to loopback only).
pub const QUIET: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

/// The Chromium binary on PATH; `None` after a loud skip of `test` when there is none (a
/// failure under CI=true).
pub fn find(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::split_paths(&path)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        crate::skip::skip(test, "chromium not found: apt-get install -y chromium");
    }
    found
}
