//! One way for a test to skip, seen by whoever runs the suite.
//!
//! A test that cannot run here (no root for namespaces, a missing tool or file) calls
//! [`skip`]. Under `CI=true` that fails the test: in CI everything must run. Otherwise the test
//! returns early, and the skip is seen twice: a notice written straight to the process's stderr
//! (past the test harness's capture, so `cargo test` shows it even though the test passes), and
//! a line appended to `target/tmp/skipped-tests.txt`, which the test command counts and prints
//! at the end of the run.

use std::io::Write;

/// The file the skips of this run are recorded in (the test command empties it first).
pub fn record() -> std::path::PathBuf {
    crate::target_tmp().join("skipped-tests.txt")
}

/// Skips `test` because of `why`: panics under `CI=true`, else records and announces the skip.
/// Always returns `false`, so `if !available() { return; }` reads naturally.
pub fn skip(test: &str, why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}; under CI=true this test must run");
    }
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {why} ***\n");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(record())
    {
        let _ = writeln!(f, "{test}: {why}");
    }
    false
}
