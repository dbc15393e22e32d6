//! Test support shared by the daemon's integration tests (`tests/{component,lab,ship,repo}`):
//! the daemon started in process or as a process, the namespace lab with
//! real peers, coturn as a real STUN server (`stun_lab`), podman, qemu, fakes, and one way to
//! skip. A crate of its own (`publish = false`)
//! so that the four test binaries share one compiled copy.

// Fixtures are made with `new()` and started on purpose; a `Default` would hide that.
#![allow(clippy::new_without_default)]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

pub mod arm;
pub mod chromium;
pub mod container;
pub mod daemon;
pub mod fakes;
pub mod lab;
pub mod skip;
pub mod stun_lab;
pub mod traffic;

/// Whether this process runs as root (namespaces, chroot, podman's own storage need it).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The repository's root: the daemon's package, two levels above this crate.
pub fn repo_root() -> &'static Path {
    static ROOT: LazyLock<PathBuf> = LazyLock::new(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        here.ancestors().nth(2).unwrap_or(here).to_path_buf()
    });
    &ROOT
}

/// The cargo profile directory the running test binary was built into (`target/debug`):
/// test binaries live in its `deps/`.
fn profile_dir() -> &'static Path {
    static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
        let exe = std::env::current_exe().expect("the test binary's own path");
        let deps = exe.parent().expect("the test binary's directory");
        deps.parent().unwrap_or(deps).to_path_buf()
    });
    &DIR
}

/// The daemon binary cargo built for this test run (beside the test binaries' `deps/`;
/// `cargo test` builds a package's binaries before its integration tests).
pub fn daemon_bin() -> &'static str {
    static BIN: LazyLock<String> = LazyLock::new(|| {
        let bin = profile_dir().join(format!("double-natpmp{}", std::env::consts::EXE_SUFFIX));
        bin.to_str().expect("a UTF-8 target path").to_owned()
    });
    &BIN
}

/// cargo's scratch directory for tests (`target/tmp`, what `CARGO_TARGET_TMPDIR` names for
/// integration tests), made if missing.
pub fn target_tmp() -> &'static Path {
    static TMP: LazyLock<PathBuf> = LazyLock::new(|| {
        let target = profile_dir().parent().unwrap_or(profile_dir());
        let tmp = target.join("tmp");
        let _ = std::fs::create_dir_all(&tmp);
        tmp
    });
    &TMP
}
