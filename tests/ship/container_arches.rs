//! The image files for the three architectures, as `scripts/image.sh --arch all` writes them:
//!
//! - each docker-archive (`target/image/double-natpmp-{amd64,arm64,armv7}.tar`, what RouterOS's
//!   `/container add file=…` loads) carries its architecture (arm/v7 with its `variant`, which
//!   RouterOS's 32-bit ARM devices need), user 65532, the entry point and the health check in
//!   its config, as `skopeo inspect --config` reads it, and stays within 4 MiB;
//! - the OCI archive for registries holds a manifest list of the three, health checks included;
//! - each ARM image runs under podman (through qemu-user, `scripts/qemu-binfmt.sh`) and its
//!   `demo` serves the real `natpmpc`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::arm::Arch;
use common::container::{self, Podman};
use common::lab::{self, Netns};
use common::skip;

const MADE_BY: &str = "scripts/static-build.sh --arch all and scripts/image.sh --arch all";

/// The three image files with the architecture and variant each config must carry.
fn archives() -> [(PathBuf, &'static str, Option<&'static str>); 3] {
    [
        (container::archive(), "amd64", None),
        (Arch::Arm64.archive(), "arm64", None),
        (Arch::Armv7.archive(), "arm", Some("v7")),
    ]
}

/// Whether skopeo and every file in `files` are here (a loud skip, a failure under CI=true).
fn skopeo_and(test: &str, files: &[&Path]) -> bool {
    if lab::which("skopeo").is_none() {
        return skip::skip(test, "needs skopeo (the test command installs it)");
    }
    match files.iter().find(|f| !f.is_file()) {
        Some(f) => skip::skip(test, &format!("needs {}: run {MADE_BY}", f.display())),
        None => true,
    }
}

/// `skopeo inspect ARGS`, parsed; fails the test with skopeo's words unless it succeeds.
fn skopeo_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("skopeo")
        .arg("inspect")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("skopeo prints JSON")
}

#[test]
fn each_image_file_names_its_architecture_user_65532_the_entrypoint_and_the_healthcheck() {
    let test =
        "each_image_file_names_its_architecture_user_65532_the_entrypoint_and_the_healthcheck";
    let archives = archives();
    let files: Vec<&Path> = archives.iter().map(|(f, _, _)| f.as_path()).collect();
    if !skopeo_and(test, &files) {
        return;
    }
    for (file, arch, variant) in &archives {
        let reference = format!("docker-archive:{}", file.display());
        // --raw: the config as stored; without it skopeo shows an OCI rendering, which has no
        // health check.
        let config = skopeo_json(&["--config", "--raw", &reference]);
        let name = file.display();
        assert_eq!(config["os"], "linux", "{name}");
        assert_eq!(config["architecture"], *arch, "{name}");
        assert_eq!(config["variant"].as_str(), *variant, "{name}");
        let c = &config["config"];
        assert_eq!(c["User"], "65532:65532", "{name}");
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!(["/double-natpmp"]),
            "{name}"
        );
        assert_eq!(
            c["Healthcheck"]["Test"],
            serde_json::json!(["CMD", "/double-natpmp", "health", "--timeout", "3s"]),
            "{name}"
        );
        let size = std::fs::metadata(file).expect("stat the image file").len();
        eprintln!(
            "container_arches: {name} is {size} bytes ({} KiB)",
            size / 1024
        );
        assert!(
            size <= 4 * 1024 * 1024,
            "{name} is {size} bytes, more than 4 MiB"
        );
    }
}

#[test]
fn oci_archive_lists_the_amd64_arm64_and_arm_v7_images_with_their_healthcheck() {
    let test = "oci_archive_lists_the_amd64_arm64_and_arm_v7_images_with_their_healthcheck";
    let oci = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image/double-natpmp-oci.tar");
    if !skopeo_and(test, &[&oci]) {
        return;
    }
    let reference = format!("oci-archive:{}", oci.display());
    let index = skopeo_json(&["--raw", &reference]);
    let mut platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not an index: {index}"))
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap_or("?"),
                p["architecture"].as_str().unwrap_or("?")
            );
            if let Some(v) = p["variant"].as_str() {
                s = format!("{s}/{v}");
            }
            s
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm/v7", "linux/arm64"]);
    // Each entry is the image the tests run: the same user and health check (what a registry
    // serves to `docker pull` on that platform).
    for (arch, variant) in [("amd64", None), ("arm64", None), ("arm", Some("v7"))] {
        let mut args = vec!["--override-arch", arch];
        if let Some(v) = variant {
            args.extend(["--override-variant", v]);
        }
        args.extend(["--config", "--raw", reference.as_str()]);
        let config = skopeo_json(&args);
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["variant"].as_str(), variant, "{arch}");
        assert_eq!(config["config"]["User"], "65532:65532", "{arch}");
        assert_eq!(
            config["config"]["Healthcheck"]["Test"],
            serde_json::json!(["CMD", "/double-natpmp", "health", "--timeout", "3s"]),
            "{arch}"
        );
    }
}

fn arm_image_serves_natpmpc_through_demo_under_podman(arch: Arch, test: &str) {
    if !container::available_with(test, &arch.archive(), MADE_BY)
        || !arch.available(test, &arch.archive(), MADE_BY)
    {
        return;
    }
    let ns = Netns::new();
    let mut podman = Podman::loading(&arch.archive());
    let lines = podman.start_demo(&ns, "demo", &["--platform", arch.platform()]);
    lab::assert_demo_maps_6881(&ns);
    // Both layers were made (the demo prints each change of the emulated router and gateway).
    podman.wait_for_line(
        &lines,
        "+ router   dst-nat rule",
        std::time::Duration::from_secs(10),
    );
    podman.wait_for_line(
        &lines,
        "+ gateway  mapping",
        std::time::Duration::from_secs(10),
    );
    // The container's process is the ARM build, run by the kernel through qemu-user.
    let exe = std::fs::read_link(format!("/proc/{}/exe", podman.pid("demo")))
        .expect("read the container process's executable");
    assert!(
        exe.to_string_lossy().contains("qemu"),
        "the container's process runs {} natively, not under qemu-user",
        exe.display()
    );
}

#[test]
fn arm64_image_serves_natpmpc_through_demo_under_podman() {
    arm_image_serves_natpmpc_through_demo_under_podman(
        Arch::Arm64,
        "arm64_image_serves_natpmpc_through_demo_under_podman",
    );
}

#[test]
fn armv7_image_serves_natpmpc_through_demo_under_podman() {
    arm_image_serves_natpmpc_through_demo_under_podman(
        Arch::Armv7,
        "armv7_image_serves_natpmpc_through_demo_under_podman",
    );
}
