//! The binary's configuration surface as a user meets it: exit codes, one-line errors, --help,
//! and the settings table of docs/configuration.md.

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
        // Values that parse but cannot work: zero timeouts and intervals, durations past their
        // documented maxima (or too large for time arithmetic at all), addresses no one can ask.
        ("UPSTREAM_RETRY", "0"),
        ("UPSTREAM_TIMEOUT", "0ms"),
        ("ADDRESS_REFRESH", "0"),
        ("RECONCILE_INTERVAL", "0"),
        ("SHUTDOWN_TIMEOUT", "0"),
        ("MIKROTIK_API_TIMEOUT", "0"),
        ("MIKROTIK_API_TIMEOUT", "25h"),
        ("EXPIRY_GRACE", "2d"),
        ("CREATE_PATIENCE", "2m"),
        ("CREATE_PATIENCE", "soon"),
        ("RECONCILE_INTERVAL", "8d"),
        ("UPSTREAM_TIMEOUT", "999999999999999999d"),
        ("MAX_LIFETIME", "604801"),
        ("VPN_GATEWAY", "0.0.0.0"),
        ("VPN_GATEWAY", "10.2.0.1:0"),
        ("MIKROTIK_API_ADDRESS", "172.30.254.1:0"),
        ("LISTEN_ADDR", "[::]:5351"),
        ("MIKROTIK_API_TLS_SERVER_NAME", "not a name!"),
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
fn retry_above_the_upstream_timeout_exits_2_naming_both() {
    let out = run(
        &[],
        &with(&[("UPSTREAM_RETRY", "3s"), ("UPSTREAM_TIMEOUT", "2s")]),
    );
    assert_eq!(out.status.code(), Some(2));
    let line = one_line_error(&out);
    assert!(
        line.contains("UPSTREAM_RETRY=3s is above UPSTREAM_TIMEOUT=2s"),
        "{line}"
    );
}

#[test]
fn tls_server_name_without_tls_exits_2_naming_it() {
    let out = run(
        &[],
        &with(&[("MIKROTIK_API_TLS_SERVER_NAME", "router.lan")]),
    );
    assert_eq!(out.status.code(), Some(2));
    let line = one_line_error(&out);
    assert!(
        line.contains("MIKROTIK_API_TLS_SERVER_NAME is set but MIKROTIK_API_TLS is false"),
        "{line}"
    );
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

/// The settings page, docs/configuration.md (the README links it), from its title on.
fn configuration_page() -> String {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("read docs/configuration.md");
    page.split("# Configuration\n")
        .nth(1)
        .expect("docs/configuration.md starts with `# Configuration`")
        .to_owned()
}

#[test]
fn configuration_table_matches_help() {
    let section = configuration_page();
    let table: BTreeSet<String> = section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    assert_eq!(
        table,
        help_env_names(),
        "docs/configuration.md table vs --help"
    );
}

/// `--help`'s text, one option per item: (env var, default if any, the whole option text).
fn help_options() -> Vec<(String, Option<String>, String)> {
    let out = run(&["--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    help.split("\n\n")
        .filter_map(|block| {
            let env = block
                .lines()
                .find_map(|l| l.trim().strip_prefix("[env: "))?
                .split(['=', ']'])
                .next()?
                .to_owned();
            let default = block
                .lines()
                .find_map(|l| l.trim().strip_prefix("[default: "))
                .map(|d| d.trim_end_matches(']').to_owned());
            Some((env, default, block.to_owned()))
        })
        .collect()
}

#[test]
fn configuration_defaults_and_bounds_match_help() {
    let section = configuration_page();
    let help = help_options();
    for row in section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
    {
        let cells: Vec<&str> = row
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let var = cells[0].trim_matches('`');
        let (_, default, text) = help
            .iter()
            .find(|(env, _, _)| env == var)
            .unwrap_or_else(|| panic!("{var} is not in --help"));
        // A default written as `value` in the table is the one --help shows.
        if let Some(readme_default) = cells[1].strip_prefix('`').and_then(|d| d.strip_suffix('`')) {
            assert_eq!(default.as_deref(), Some(readme_default), "default of {var}");
        }
        // A bound the table gives ("1ms to 1d") is written in --help too.
        if let Some(bound) = cells[2]
            .split("; ")
            .find(|part| part.contains(" to ") && part.starts_with(|c: char| c.is_ascii_digit()))
        {
            let bound = bound.split(" (").next().unwrap().replace('`', "");
            assert!(
                text.contains(&bound),
                "{var}: docs/configuration.md says {bound:?}, --help says:\n{text}"
            );
        }
    }
}

/// Every setting the code's messages tell a user to set exists: a name like
/// MIKROTIK_API_TLS_SERVER_NAME in an error text must be a variable --help lists.
#[test]
fn every_setting_named_in_the_code_exists() {
    let names = help_env_names();
    let mut files = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    let mut sources = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            sources.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
        }
    }
    let is_word = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
    let consts: BTreeSet<String> = sources
        .iter()
        .flat_map(|(_, text)| {
            text.split("const ")
                .skip(1)
                .map(|rest| rest.chars().take_while(|c| is_word(*c)).collect::<String>())
        })
        .collect();
    let prefixes = [
        "MIKROTIK_",
        "UPSTREAM_",
        "ROUTER_PORT_",
        "ADDRESS_",
        "RECONCILE_",
        "SHUTDOWN_",
        "EXPIRY_",
        "LISTEN_",
        "ALLOWED_",
        "VPN_",
    ];
    let mut unknown = BTreeSet::new();
    for (path, text) in &sources {
        for word in text.split(|c: char| !is_word(c)) {
            if prefixes.iter().any(|p| word.starts_with(p))
                && !word.ends_with('_')
                && !names.contains(word)
                && !consts.contains(word)
            {
                unknown.insert(format!("{word} ({})", path.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "settings named in src/ that --help does not list: {unknown:?}"
    );
}

/// The usual settings, with the router on a loopback port where nothing listens: should a
/// check below let the daemon start, it reaches nothing outside this host.
fn loopback(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = with(&[("MIKROTIK_API_ADDRESS", "127.0.0.1:1")]);
    env.retain(|(k, _)| !overrides.iter().any(|(o, _)| o == k));
    env.extend(overrides.iter().copied());
    env
}

#[test]
fn password_and_its_file_both_set_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "other-Pa55\n").unwrap();
    let file = file.to_str().unwrap().to_owned();
    let file: &'static str = Box::leak(file.into_boxed_str());
    let out = run(&[], &loopback(&[("MIKROTIK_API_PASSWORD_FILE", file)]));
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "MIKROTIK_API_PASSWORD and MIKROTIK_API_PASSWORD_FILE are both set: expected one or the other"
        ),
        "{err}"
    );
    assert!(
        !err.contains("s3cret-Pa55") && !err.contains("other-Pa55"),
        "{err}"
    );
}

#[test]
fn short_or_spaced_api_token_is_refused_by_name_never_showing_it() {
    for token in ["short-s3cret", "long-enough s3cret-with-space"] {
        let out = run(
            &[],
            &loopback(&[("STATUS_ADDR", "127.0.0.1:0"), ("API_TOKEN", token)]),
        );
        assert_eq!(out.status.code(), Some(2), "{token}");
        let line = one_line_error(&out);
        assert!(line.starts_with("error: API_TOKEN: "), "{line}");
        assert!(line.contains("at least 16 characters"), "{line}");
        assert!(!line.contains("s3cret"), "{line}");
    }
    // The same from a file: the file is named, its content is not shown.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "short-s3cret\n").unwrap();
    let file: &'static str = Box::leak(file.to_str().unwrap().to_owned().into_boxed_str());
    let out = run(
        &[],
        &loopback(&[("STATUS_ADDR", "127.0.0.1:0"), ("API_TOKEN_FILE", file)]),
    );
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("API_TOKEN_FILE") && err.contains("at least 16 characters"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}
