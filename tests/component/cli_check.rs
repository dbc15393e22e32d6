//! `double-natpmp check` against the RouterOS and NAT-PMP gateway emulators on loopback: every
//! step OK on a good set-up, and for each injected failure the FAIL line names the right fix.
//! In every case the test rule is gone from the router afterwards.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Output;
use std::time::Duration;

use double_natpmp_emulators::gateway::{Gateway, GatewayConfig, Mode};
use double_natpmp_emulators::routeros::{RouterSim, RouterSimConfig, SimRoute, SimUser};

const PASSWORD: &str = "s3cret";

struct Lab {
    router: RouterSim,
    gateway: Gateway,
}

async fn lab() -> Lab {
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = RouterSimConfig {
        users: vec![
            SimUser::new("natpmp", PASSWORD, &["read", "write", "api", "test"]),
            SimUser::new("nowrite", PASSWORD, &["read", "api", "test"]),
            SimUser::new("notest", PASSWORD, &["read", "write", "api"]),
        ],
        ..RouterSimConfig::default()
    };
    // The emulated gateway lives on loopback; the router routes it through the tunnel.
    config.routes.insert(
        0,
        SimRoute {
            dst: Ipv4Addr::new(127, 0, 0, 0),
            prefix_len: 8,
            interface: "wg-proton".into(),
            gateway: Ipv4Addr::new(10, 2, 0, 1),
        },
    );
    let router = RouterSim::start(config, bind)
        .await
        .expect("start router emulator");
    let gateway = Gateway::start(GatewayConfig::default(), bind)
        .await
        .expect("start gateway emulator");
    Lab { router, gateway }
}

impl Lab {
    /// Runs `check` with the daemon's environment pointing at the emulators, `overrides`
    /// replacing (or with an empty value removing) variables.
    async fn check(&self, overrides: &[(&str, &str)]) -> Output {
        let mut env: Vec<(String, String)> = vec![
            ("VPN_GATEWAY".into(), self.gateway.local_addr().to_string()),
            (
                "MIKROTIK_API_ADDRESS".into(),
                self.router.local_addr().to_string(),
            ),
            ("MIKROTIK_API_USER".into(), "natpmp".into()),
            ("MIKROTIK_API_PASSWORD".into(), PASSWORD.into()),
            ("MIKROTIK_IN_INTERFACE".into(), "wg-proton".into()),
            ("MIKROTIK_API_TIMEOUT".into(), "2s".into()),
            ("UPSTREAM_TIMEOUT".into(), "1s".into()),
        ];
        for (k, v) in overrides {
            env.retain(|(name, _)| name != k);
            if !v.is_empty() {
                env.push(((*k).into(), (*v).into()));
            }
        }
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_double-natpmp"));
        cmd.arg("check").env_clear().envs(env).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("check finished within 60 s")
            .expect("run the binary");
        println!("{}", String::from_utf8_lossy(&out.stdout));
        out
    }

    /// No rule is left on the router, and no mapping at the gateway.
    fn assert_clean(&self) {
        assert!(
            self.router.nat_rules().is_empty(),
            "test rule left behind: {:?}",
            self.router.nat_rules()
        );
        assert!(
            self.gateway.mappings().is_empty(),
            "upstream test mapping left behind: {:?}",
            self.gateway.mappings()
        );
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one FAIL line whose text contains `what`.
fn fail_line(out: &Output, what: &str) -> String {
    let text = stdout(out);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("FAIL ") && l.contains(what))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one FAIL line about {what:?}:\n{text}"
    );
    lines[0].to_owned()
}

#[tokio::test]
async fn good_setup_passes_every_step_and_leaves_nothing_behind() {
    let lab = lab().await;
    let out = lab.check(&[]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for line in text.lines().filter(|l| !l.is_empty()) {
        assert!(
            line.starts_with("OK   ") || line == "all checks passed",
            "not OK: {line}\n{text}"
        );
    }
    for step in [
        "RouterOS API reachable",
        "login as 'natpmp'",
        "VPN interface 'wg-proton'",
        "route to 127.0.0.1 leaves through 'wg-proton'",
        "answers NAT-PMP (public address 198.51.100.7)",
        "write policy: add test dst-nat rule udp wg-proton:65000",
        "upstream test mapping of port 65000: external port",
        "upstream test mapping of port 65000 deleted",
        "removed",
    ] {
        assert!(text.contains(step), "missing {step:?}:\n{text}");
    }
    // The rule really was made on the router and the mapping at the gateway.
    assert_eq!(lab.router.command_count_for("/ip/firewall/nat/add"), 1);
    assert_eq!(lab.router.command_count_for("/ip/firewall/nat/remove"), 1);
    assert!(lab.gateway.map_requests() >= 2);
    lab.assert_clean();
}

#[tokio::test]
async fn bad_password_names_the_login_fix() {
    let lab = lab().await;
    let out = lab.check(&[("MIKROTIK_API_PASSWORD", "wrong")]).await;
    assert_eq!(out.status.code(), Some(1));
    let line = fail_line(&out, "login as 'natpmp'");
    assert!(line.contains("invalid user name or password"), "{line}");
    assert!(
        line.contains("Fix: check MIKROTIK_API_USER and MIKROTIK_API_PASSWORD"),
        "{line}"
    );
    assert!(
        stdout(&out).contains("SKIP test mapping"),
        "{}",
        stdout(&out)
    );
    assert_eq!(lab.router.command_count_for("/ip/firewall/nat/add"), 0);
    lab.assert_clean();
}

#[tokio::test]
async fn user_without_write_policy_is_told_to_add_it() {
    let lab = lab().await;
    let out = lab.check(&[("MIKROTIK_API_USER", "nowrite")]).await;
    assert_eq!(out.status.code(), Some(1));
    let line = fail_line(&out, "write policy");
    assert!(line.contains("not enough permissions"), "{line}");
    assert!(
        line.contains("Fix: give the API user's group the 'write' policy"),
        "{line}"
    );
    lab.assert_clean();
}

#[tokio::test]
async fn user_without_test_policy_and_no_interface_is_told_either_fix() {
    let lab = lab().await;
    let out = lab
        .check(&[
            ("MIKROTIK_API_USER", "notest"),
            ("MIKROTIK_IN_INTERFACE", ""),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let line = fail_line(&out, "VPN interface found with /ip/route/check");
    assert!(line.contains("'test' policy"), "{line}");
    assert!(line.contains("or set MIKROTIK_IN_INTERFACE"), "{line}");
    lab.assert_clean();
}

#[tokio::test]
async fn interface_is_found_by_route_check_when_not_set() {
    let lab = lab().await;
    let out = lab.check(&[("MIKROTIK_IN_INTERFACE", "")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("/ip/route/check toward 127.0.0.1: 'wg-proton'"));
    lab.assert_clean();
}

#[tokio::test]
async fn unknown_interface_is_reported() {
    let lab = lab().await;
    let out = lab.check(&[("MIKROTIK_IN_INTERFACE", "wg-typo")]).await;
    assert_eq!(out.status.code(), Some(1));
    let line = fail_line(&out, "VPN interface 'wg-typo'");
    assert!(line.contains("no interface named 'wg-typo'"), "{line}");
    lab.assert_clean();
}

#[tokio::test]
async fn silent_upstream_points_at_route_and_masquerade() {
    let lab = lab().await;
    lab.gateway.set_mode(Mode::Silent).await.unwrap();
    let out = lab.check(&[]).await;
    assert_eq!(out.status.code(), Some(1));
    let line = fail_line(&out, "answers NAT-PMP");
    assert!(line.contains("did not answer"), "{line}");
    assert!(
        line.contains("Fix: no answer: check the route to the gateway"),
        "{line}"
    );
    assert!(line.contains("masquerade"), "{line}");
    // The router side was still tested, and its rule removed.
    assert!(
        stdout(&out).contains("OK   write policy"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("SKIP upstream test mapping"));
    lab.assert_clean();
}

#[tokio::test]
async fn refused_upstream_points_at_port_forwarding_at_the_provider() {
    let lab = lab().await;
    lab.gateway.set_mode(Mode::Unreachable).await.unwrap();
    let out = lab.check(&[]).await;
    assert_eq!(out.status.code(), Some(1));
    let line = fail_line(&out, "answers NAT-PMP");
    assert!(line.contains("refused NAT-PMP"), "{line}");
    assert!(
        line.contains("Fix: the gateway refuses NAT-PMP: enable port forwarding (NAT-PMP)"),
        "{line}"
    );
    lab.assert_clean();
}

#[tokio::test]
async fn unreachable_api_names_the_service_and_firewall_fix() {
    let lab = lab().await;
    // A loopback port nobody listens on: bind one, note it, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = lab
        .check(&[("MIKROTIK_API_ADDRESS", &closed.to_string())])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let line = fail_line(&out, "RouterOS API reachable");
    assert!(line.contains("Fix: check MIKROTIK_API_ADDRESS"), "{line}");
    assert!(line.contains("/ip service"), "{line}");
    let text = stdout(&out);
    assert!(text.contains("SKIP login"), "{text}");
    // The upstream is still checked on its own.
    assert!(text.contains("OK   VPN gateway"), "{text}");
    lab.assert_clean();
}

/// The one OK line whose text contains `what`.
fn ok_line(out: &Output, what: &str) -> String {
    let text = stdout(out);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("OK   ") && l.contains(what))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one OK line about {what:?}:\n{text}"
    );
    lines[0].to_owned()
}

const MASQUERADE: &[(&str, &str)] = &[
    ("chain", "srcnat"),
    ("action", "masquerade"),
    ("out-interface", "wg-proton"),
    ("comment", "masquerade the tunnel"),
];

fn our_srcnat(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("chain", "srcnat".into()),
        ("action", "masquerade".into()),
        ("protocol", "udp".into()),
        ("src-address", "192.168.88.10".into()),
        ("src-port", "6881".into()),
        ("out-interface", "wg-proton".into()),
        ("to-ports", port.to_string()),
        (
            "comment",
            format!("double-natpmp:v2 udp 192.168.88.10:6881 r={port} l=60 k=snat"),
        ),
    ]
}

fn insert(router: &RouterSim, fields: &[(&'static str, String)]) -> String {
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    router.insert_nat_rule(&pairs)
}

#[tokio::test]
async fn a_masquerade_above_our_src_nat_rule_fails_with_the_move_that_fixes_it() {
    let lab = lab().await;
    let masquerade = lab.router.insert_nat_rule(MASQUERADE);
    let ours = insert(&lab.router, &our_srcnat(40123));
    let out = lab.check(&[("UDP_SRCNAT", "true")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let line = fail_line(&out, "src-nat order");
    assert!(
        line.contains(&format!("rule {masquerade} action=masquerade")),
        "{line}"
    );
    assert!(line.contains("192.168.88.10:6881"), "{line}");
    assert!(
        line.contains(&format!(
            "/ip firewall nat move {ours} destination={masquerade}"
        )),
        "{line}"
    );
    // Every other step still passes: only the order is wrong.
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.starts_with("FAIL"))
            .count(),
        1
    );
}

#[tokio::test]
async fn our_src_nat_rule_before_the_masquerade_passes_and_names_where_new_ones_go() {
    let lab = lab().await;
    // Ours first, as the daemon places it, then the masquerade.
    insert(&lab.router, &our_srcnat(40123));
    let masquerade = lab.router.insert_nat_rule(MASQUERADE);
    let out = lab.check(&[("UDP_SRCNAT", "true")]).await;
    let line = ok_line(&out, "src-nat order");
    assert!(
        line.contains("1 src-nat rules of ours come first"),
        "{line}"
    );
    assert!(
        line.contains(&format!("new ones go before rule {masquerade}")),
        "{line}"
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[tokio::test]
async fn with_udp_srcnat_off_check_says_which_rule_picks_the_outbound_port() {
    let lab = lab().await;
    let masquerade = lab.router.insert_nat_rule(MASQUERADE);
    let out = lab.check(&[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let line = ok_line(&out, "src-nat order");
    assert!(line.contains("off"), "{line}");
    assert!(
        line.contains(&format!("rule {masquerade} action=masquerade")),
        "{line}"
    );
    assert!(line.contains("UDP_SRCNAT=true"), "{line}");
}
