//! The container image as people run it: the file `scripts/image.sh` wrote
//! (`target/image/double-natpmp-amd64.tar`, a docker-archive), loaded into a real engine (podman
//! with runc) and run with `--read-only --cap-drop=all`:
//!
//! - its configuration as `podman image inspect` and `skopeo inspect` show it, and its one layer;
//! - `demo` in a private network namespace, serving the real `natpmpc`, and `podman stop`;
//! - the README's `docker run` example, run as written (only the addresses changed), against
//!   the RouterOS and VPN gateway emulators running outside the container in the namespace lab;
//! - `podman healthcheck run` while the daemon answers and while it does not;
//! - the process's user, capabilities and root file system.
//!
//! Needs root, the namespace tools, podman, skopeo and the image file (see
//! common/container.rs); the test command installs and builds them all.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::container::{self, Podman, LOCKED_DOWN};
use common::lab::{self, Host, Lab, Netns, CLIENT_IP, GW_IP, ROUTER_LAN_IP, TUNNEL_IP};

fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `podman image inspect --format FORMAT` of the image.
fn image_field(podman: &Podman, format: &str) -> String {
    podman.ok(&["image", "inspect", "--format", format, &container::image()])
}

#[test]
fn image_is_user_65532_the_entrypoint_the_healthcheck_and_one_layer_holding_only_the_binary() {
    if !container::available(
        "image_is_user_65532_the_entrypoint_the_healthcheck_and_one_layer_holding_only_the_binary",
    ) {
        return;
    }
    let podman = Podman::new();
    let archive = container::archive();
    let archive_ref = format!("docker-archive:{}", archive.display());

    // What `docker image inspect` / `podman image inspect` show a user.
    for (format, expected) in [
        ("{{.Os}}/{{.Architecture}}", "linux/amd64"),
        ("{{.Config.User}}", "65532:65532"),
        ("{{json .Config.Entrypoint}}", r#"["/double-natpmp"]"#),
        (
            "{{json .Config.Env}}",
            r#"["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","LISTEN_ADDR=:5351"]"#,
        ),
        ("{{json .Config.ExposedPorts}}", r#"{"5351/udp":{}}"#),
        (
            "{{json .Config.Healthcheck.Test}}",
            r#"["CMD","/double-natpmp","health","--timeout","3s"]"#,
        ),
        (
            "{{.Config.Healthcheck.Interval}} {{.Config.Healthcheck.Timeout}} \
             {{.Config.Healthcheck.StartPeriod}} {{.Config.Healthcheck.Retries}}",
            "30s 5s 30s 3",
        ),
        (
            r#"{{index .Config.Labels "org.opencontainers.image.title"}}"#,
            "double-natpmp",
        ),
        (
            r#"{{index .Config.Labels "org.opencontainers.image.licenses"}}"#,
            "MIT OR Apache-2.0",
        ),
        ("{{len .RootFS.Layers}}", "1"),
    ] {
        assert_eq!(image_field(&podman, format), expected, "image {format}");
    }
    let cmd = image_field(&podman, "{{json .Config.Cmd}}");
    assert!(
        cmd == "null" || cmd == "[]",
        "the image has a default command {cmd}: arguments go to the daemon"
    );

    // The file itself, as RouterOS reads it: one architecture, one layer.
    let inspect = |format: &str| {
        run_ok(
            std::process::Command::new("skopeo")
                .args(["inspect", "--format", format])
                .arg(&archive_ref),
        )
    };
    assert_eq!(inspect("{{.Os}}/{{.Architecture}}"), "linux/amd64");
    assert_eq!(inspect("{{len .Layers}}"), "1");
    let layer = inspect("{{index .Layers 0}}");
    let layer = layer
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("layer digest {layer}"));

    // The layer holds the binary and nothing else: root-owned, executable by everyone, and
    // byte for byte the static binary the image was built from.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("image");
    run_ok(
        std::process::Command::new("skopeo")
            .arg("copy")
            .arg(&archive_ref)
            .arg(format!("dir:{}", copy.display())),
    );
    let layer_tar = copy.join(layer);
    let listing = run_ok(
        std::process::Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&layer_tar),
    );
    let entries: Vec<&str> = listing.lines().collect();
    assert_eq!(
        entries.len(),
        1,
        "the layer holds more than the binary:\n{listing}"
    );
    let words: Vec<&str> = entries[0].split_whitespace().collect();
    assert_eq!(
        (words[0], words[1], words[words.len() - 1]),
        ("-rwxr-xr-x", "0/0", "double-natpmp"),
        "{listing}"
    );
    let out = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&layer_tar)
        .arg("double-natpmp")
        .output()
        .expect("run tar");
    let binary =
        std::fs::read(container::static_binary()).expect("read target/static/double-natpmp");
    assert!(
        out.stdout == binary,
        "the image's binary ({} bytes) is not target/static/double-natpmp ({} bytes): run scripts/image.sh again",
        out.stdout.len(),
        binary.len()
    );

    // The entry point really runs, read-only and without capabilities.
    let version = podman.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        LOCKED_DOWN[0],
        LOCKED_DOWN[1],
        &container::image(),
        "--version",
    ]);
    assert_eq!(
        version,
        format!("double-natpmp {}", env!("CARGO_PKG_VERSION"))
    );

    let file_size = std::fs::metadata(&archive)
        .expect("stat the image file")
        .len();
    let image_size = image_field(&podman, "{{.Size}}");
    // Straight to stderr, past the test harness's output capture: the test command shows it.
    let _ = writeln!(
        std::io::stderr(),
        "container: image file {} is {file_size} bytes ({} KiB); podman reports the image as {image_size} bytes; the binary is {} bytes",
        archive.display(),
        file_size / 1024,
        binary.len()
    );
    // The file is the binary plus a few KiB of metadata and tar headers.
    assert!(
        file_size < binary.len() as u64 + 64 * 1024,
        "the image file is {file_size} bytes for a {}-byte binary",
        binary.len()
    );
}

#[test]
fn demo_in_the_container_maps_a_port_for_natpmpc_and_podman_stop_leaves_nothing() {
    if !container::available(
        "demo_in_the_container_maps_a_port_for_natpmpc_and_podman_stop_leaves_nothing",
    ) {
        return;
    }
    let ns = Netns::new();
    let mut podman = Podman::new();
    let lines = podman.start_demo(&ns, "demo", &[]);

    lab::assert_demo_maps_6881(&ns);
    // Both layers were made (the demo prints each change of the emulated router and gateway).
    podman.wait_for_line(&lines, "+ router   dst-nat rule", Duration::from_secs(5));
    podman.wait_for_line(&lines, "+ gateway  mapping", Duration::from_secs(5));

    // `podman stop` sends SIGTERM; the daemon removes the mapping from both layers first.
    podman.ok(&["stop", "-t", "20", "demo"]);
    podman.wait_for_line(&lines, "- router   dst-nat rule", Duration::from_secs(5));
    podman.wait_for_line(&lines, "- gateway  mapping", Duration::from_secs(5));
    let last = podman.wait_for_line(&lines, "demo stopped", Duration::from_secs(5));
    assert!(
        last.contains("0 router rule(s) and 0 gateway mapping(s) left"),
        "{last}"
    );
    assert_eq!(podman.wait_last(Duration::from_secs(20)), Some(0));
    assert_eq!(podman.inspect("demo", "{{.State.ExitCode}}"), "0");
}

#[test]
fn container_runs_as_65532_with_no_capability_on_a_read_only_root() {
    if !container::available("container_runs_as_65532_with_no_capability_on_a_read_only_root") {
        return;
    }
    let ns = Netns::new();
    let mut podman = Podman::new();
    let _lines = podman.start_demo(&ns, "locked", &[]);
    let pid = podman.pid("locked");

    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
    assert_eq!(
        cmdline, b"/double-natpmp\0demo\0",
        "PID {pid} is not the daemon"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    assert_eq!(field("Uid"), "65532 65532 65532 65532", "user");
    assert_eq!(field("Gid"), "65532 65532 65532 65532", "group");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(caps), "0000000000000000", "{caps}");
    }
    // The container's root file system, as its process sees it: mount point "/", read-only.
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no root mount in:\n{mounts}"));
    let options = root.split_whitespace().nth(5).unwrap_or_default();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "root is not read-only: {root}"
    );
    // And it serves like that: the health check asks the daemon itself.
    let check = podman.output(&["healthcheck", "run", "locked"]);
    assert!(
        check.status.success(),
        "unhealthy: {check:?}\n{}",
        podman.health_log("locked")
    );
}

#[test]
fn healthcheck_reports_healthy_while_the_daemon_answers_and_unhealthy_when_it_does_not() {
    if !container::available(
        "healthcheck_reports_healthy_while_the_daemon_answers_and_unhealthy_when_it_does_not",
    ) {
        return;
    }
    let ns = Netns::new();
    let mut podman = Podman::new();
    let _lines = podman.start_demo(&ns, "health", &[]);

    let check = podman.output(&["healthcheck", "run", "health"]);
    assert!(
        check.status.success(),
        "unhealthy while the daemon answers: {check:?}\n{}",
        podman.health_log("health")
    );
    let log = podman.health_log("health");
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.starts_with("0 healthy: double-natpmp at 127.0.0.1:5351 answers")),
        "{log}"
    );

    // A stopped (SIGSTOP) daemon still holds its socket but answers nothing.
    podman.ok(&["kill", "--signal", "STOP", "health"]);
    let check = podman.output(&["healthcheck", "run", "health"]);
    assert!(
        !check.status.success(),
        "healthy while the daemon is stopped: {check:?}"
    );
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "unhealthy");
    let log = podman.health_log("health");
    assert!(
        log.lines().last().is_some_and(|l| l
            .starts_with("1 unhealthy: double-natpmp at 127.0.0.1:5351 did not answer within 3s")),
        "{log}"
    );

    podman.ok(&["kill", "--signal", "CONT", "health"]);
    let check = podman.output(&["healthcheck", "run", "health"]);
    assert!(
        check.status.success(),
        "still unhealthy after SIGCONT: {check:?}\n{}",
        podman.health_log("health")
    );
}

// ---------------------------------------------------------------------------------------------
// The README's `docker run` example

/// The `docker run` example of README.md's "Run with Docker on a LAN host", as shell words.
fn readme_docker_run() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## Run with Docker on a LAN host")
        .nth(1)
        .expect("README.md has a section \"Run with Docker on a LAN host\"");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section has a ```sh block");
    let words = shell_words(block);
    assert_eq!(
        words.get(..2),
        Some(&["docker".to_owned(), "run".to_owned()][..]),
        "the block is one `docker run` command: {block}"
    );
    words
}

/// Splits a POSIX shell command into words: blanks separate, backslash-newline continues,
/// single quotes are literal, double quotes and backslashes quote. Enough for a README example.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(next) => word.get_or_insert_with(String::new).push(next),
            },
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    w.push(q);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        _ => w.push(q),
                    }
                }
            }
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word.take());
    words
}

/// The README's example with the lab's addresses: the environment variables that hold an
/// address, and the image. Returns the `run` arguments and the example's settings by name.
fn readme_example_in_the_lab() -> (Vec<String>, Vec<(String, String)>) {
    let words = readme_docker_run();
    let lab_value = |name: &str| match name {
        "VPN_GATEWAY" => Some(GW_IP.to_owned()),
        // The RouterOS API emulator runs next to the container, on the router's loopback.
        "MIKROTIK_API_ADDRESS" => Some("127.0.0.1".to_owned()),
        "LISTEN_ADDR" => Some(format!("{ROUTER_LAN_IP}:5351")),
        "ALLOWED_CLIENTS" => Some("192.168.88.0/24".to_owned()),
        _ => None,
    };
    let mut args = Vec::new();
    let mut env = Vec::new();
    let mut replaced = Vec::new();
    let mut it = words[1..words.len() - 1].iter();
    while let Some(w) = it.next() {
        args.push(w.clone());
        if w == "-e" || w == "--env" {
            let setting = it.next().expect("-e NAME=VALUE");
            let (name, value) = setting
                .split_once('=')
                .unwrap_or_else(|| panic!("README example: -e {setting} is not NAME=VALUE"));
            let value = match lab_value(name) {
                Some(v) => {
                    replaced.push(name.to_owned());
                    v
                }
                None => value.to_owned(),
            };
            env.push((name.to_owned(), value.clone()));
            args.push(format!("{name}={value}"));
        }
    }
    replaced.sort();
    assert_eq!(
        replaced,
        [
            "ALLOWED_CLIENTS",
            "LISTEN_ADDR",
            "MIKROTIK_API_ADDRESS",
            "VPN_GATEWAY"
        ],
        "the README example no longer sets each address the test replaces: {words:?}"
    );
    let image = &words[words.len() - 1];
    assert!(
        image.contains("double-natpmp"),
        "the example's last word is not the image: {image}"
    );
    args.push(container::image());
    (args, env)
}

#[test]
fn readme_docker_run_example_configures_the_daemon_with_environment_variables_only() {
    // Runs everywhere (no root needed): the example's shape the lab test below relies on.
    let (args, env) = readme_example_in_the_lab();
    assert_eq!(args[0], "run");
    assert_eq!(
        args.last().map(String::as_str),
        Some(container::image().as_str()),
        "no command or flag after the image: the daemon is configured by -e alone"
    );
    for name in ["MIKROTIK_API_USER", "MIKROTIK_API_PASSWORD"] {
        assert!(
            env.iter().any(|(n, _)| n == name),
            "the example sets {name}"
        );
    }
    assert!(args.windows(2).any(|w| w == ["--network", "host"]));
    for flag in LOCKED_DOWN {
        assert!(
            args.iter().any(|a| a == flag),
            "the example runs with {flag}"
        );
    }
}

#[test]
fn readme_docker_run_example_serves_natpmpc_against_the_emulators_outside_the_container() {
    if !container::available(
        "readme_docker_run_example_serves_natpmpc_against_the_emulators_outside_the_container",
    ) {
        return;
    }
    let (args, env) = readme_example_in_the_lab();
    let setting = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the README example does not set {name}"))
    };
    let name = args
        .windows(2)
        .find(|w| w[0] == "--name")
        .map(|w| w[1].clone())
        .expect("the README example names its container");

    let mut lab = Lab::up();
    // The emulators outside the container: the router's API with the example's user, password
    // and VPN interface, and the VPN gateway (logging each mapping it adds and removes).
    let mut router_args = vec![
        "--user",
        setting("MIKROTIK_API_USER"),
        "--password",
        setting("MIKROTIK_API_PASSWORD"),
    ];
    // The example's VPN interface is a WireGuard tunnel through which the router reaches the
    // gateway, as on the router the README describes (the daemon checks both before it adds
    // a rule).
    let tunnel: Vec<String> = env
        .iter()
        .find(|(n, _)| n == "MIKROTIK_IN_INTERFACE")
        .map(|(_, interface)| {
            vec![
                "--interface".to_owned(),
                format!("{interface}:wg"),
                "--route".to_owned(),
                format!("{}/32,{interface},{}", lab::GW_IP, lab::GW_IP),
            ]
        })
        .unwrap_or_default();
    router_args.extend(tunnel.iter().map(String::as_str));
    lab.start_router_emulator(&router_args);
    let gateway = lab.start_gateway_emulator(&[]);

    // Declared after the lab, so it is dropped first: containers go before their namespaces.
    let mut podman = Podman::new();
    let router_ns = lab.ns(Host::Router);
    let id = run_ok(podman.command_in(&router_ns).args(&args));
    assert!(!id.is_empty(), "podman run -d printed no container id");
    let logs = podman.follow_logs(&name);
    podman.wait_for_line(&logs, "NAT-PMP server listening", Duration::from_secs(30));
    lab.wait_udp_listener(Host::Router, &format!("{ROUTER_LAN_IP}:5351"));

    // A LAN client asks its default gateway (the router), as a real one would.
    let out = lab.natpmpc(&["-a", "0", "6881", "tcp", "60"]);
    assert!(out.success, "natpmpc failed: {out:?}");
    let (public, local, _) = out
        .mapping()
        .unwrap_or_else(|| panic!("natpmpc printed no mapping: {out:?}"));
    assert_eq!(local, 6881, "{out:?}");

    // Layer 1: the router's dst-nat rule (the emulator mirrors it into the router's nftables).
    let rules = router_rules(&lab);
    assert_eq!(rules.len(), 1, "router rules: {rules:?}");
    let interface = setting("MIKROTIK_IN_INTERFACE");
    assert!(
        rules[0].contains(&format!("iifname \"{interface}\""))
            && rules[0].contains(&format!("dnat to {CLIENT_IP}:6881")),
        "{rules:?}"
    );
    // Layer 2: the gateway's mapping, asked by the router (its tunnel address).
    let added = lab::wait_for_line(
        &gateway,
        "gateway emulator: mapping added",
        Duration::from_secs(5),
    );
    assert!(
        added.contains(&format!("peer={TUNNEL_IP}"))
            && added.contains(&format!("external_port={public}")),
        "{added}"
    );

    // With --network host, `podman exec` and so the health check run in the network namespace
    // of the podman that runs them: here the router's, as on a real host it is the host's.
    let check = podman
        .command_in(&router_ns)
        .args(["healthcheck", "run", &name])
        .output()
        .expect("podman healthcheck run");
    assert!(
        check.status.success(),
        "unhealthy: {check:?}\n{}",
        podman.health_log(&name)
    );

    // `docker stop`: the daemon removes both layers before it exits.
    podman.ok(&["stop", &name]);
    let removed = lab::wait_for_line(
        &gateway,
        "gateway emulator: mapping removed",
        Duration::from_secs(5),
    );
    assert!(
        removed.contains(&format!("external_port={public}")) && removed.contains("mappings=0"),
        "{removed}"
    );
    assert_eq!(
        router_rules(&lab),
        Vec::<String>::new(),
        "router rules left"
    );
    assert_eq!(podman.inspect(&name, "{{.State.ExitCode}}"), "0");
}

/// The router's dst-nat rules (the emulator's mirror in `table ip mikrotik`).
fn router_rules(lab: &Lab) -> Vec<String> {
    let out = lab.exec(
        Host::Router,
        &["nft", "list", "chain", "ip", "mikrotik", "dstnat"],
    );
    assert!(out.status.success(), "nft list: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("dnat to"))
        .map(|l| l.trim().to_owned())
        .collect()
}
