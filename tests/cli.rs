//! The binary's configuration surface as a user meets it: exit codes, one-line errors, --help,
//! and the README's configuration table.

use std::collections::BTreeSet;
use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_double-natpmp"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run the binary")
}

const GOOD: [(&str, &str); 3] = [
    ("VPN_GATEWAY", "10.2.0.1"),
    ("MIKROTIK_API_ADDRESS", "172.30.254.1"),
    ("MIKROTIK_API_PASSWORD", "s3cret-Pa55"),
];

fn with(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env: Vec<_> = GOOD
        .iter()
        .copied()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .collect();
    env.extend(overrides.iter().copied().filter(|(_, v)| !v.is_empty()));
    env
}

fn one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr:?}"
    );
    stderr
}

#[test]
fn bad_vpn_gateway_exits_2_naming_variable_and_value() {
    let out = run(&[], &with(&[("VPN_GATEWAY", "notanip")]));
    assert_eq!(out.status.code(), Some(2));
    let line = one_line_error(&out);
    assert!(line.contains("VPN_GATEWAY"), "{line}");
    assert!(line.contains("notanip"), "{line}");
    assert!(line.contains("IPv4"), "{line}");
}

#[test]
fn missing_password_names_the_variable() {
    let out = run(&[], &with(&[("MIKROTIK_API_PASSWORD", "")]));
    assert_eq!(out.status.code(), Some(2));
    let line = one_line_error(&out);
    assert!(line.contains("MIKROTIK_API_PASSWORD"), "{line}");
}

#[test]
fn each_bad_value_names_its_variable() {
    let cases: &[(&str, &str)] = &[
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
        ("LISTEN_ADDR", "nowhere"),
        ("MIKROTIK_API_TLS", "maybe"),
        ("MIKROTIK_API_ADDRESS", "bad host:1"),
        ("ALLOWED_CLIENTS", "10.0.0.0/40"),
        ("MAX_LIFETIME", "-5"),
        ("UPSTREAM_TIMEOUT", "soon"),
        ("MIKROTIK_POOL_SIZE", "0"),
    ];
    for (var, value) in cases {
        let out = run(&[], &with(&[(var, value)]));
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let line = one_line_error(&out);
        assert!(line.contains(var), "{var}: {line}");
        assert!(line.contains(value), "{var}: {line}");
    }
}

#[test]
fn port_range_inverted_is_refused() {
    let out = run(
        &[],
        &with(&[("ROUTER_PORT_MIN", "50000"), ("ROUTER_PORT_MAX", "40000")]),
    );
    assert_eq!(out.status.code(), Some(2));
    let line = one_line_error(&out);
    assert!(line.contains("ROUTER_PORT_MIN=50000"), "{line}");
}

#[test]
fn password_never_appears_in_errors_or_help() {
    let out = run(&[], &with(&[("VPN_GATEWAY", "x")]));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret-Pa55"));
    let out = run(&["--help"], &GOOD);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret-Pa55"));
}

fn help_env_names() -> BTreeSet<String> {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    help.lines()
        .filter_map(|l| l.trim().strip_prefix("[env: "))
        .map(|rest| rest.split(['=', ']']).next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn help_lists_every_variable_of_the_original_tool() {
    let names = help_env_names();
    for var in [
        "VPN_GATEWAY",
        "MIKROTIK_API_ADDRESS",
        "MIKROTIK_API_USER",
        "MIKROTIK_API_PASSWORD",
        "MIKROTIK_API_TLS",
        "MIKROTIK_IN_INTERFACE",
        "LISTEN_ADDR",
        "LOG_LEVEL",
    ] {
        assert!(names.contains(var), "--help does not show {var}: {names:?}");
    }
}

#[test]
fn readme_configuration_table_matches_help() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .expect("README has a Configuration section");
    let table: BTreeSet<String> = section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    assert_eq!(table, help_env_names(), "README table vs --help");
}
