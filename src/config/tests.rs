use std::time::Duration;

use clap::Parser;

use super::value::*;
use super::*;

#[derive(Debug, Parser)]
struct Flags {
    #[command(flatten)]
    args: DaemonArgs,
}

const SECRET: &str = "s3cret-Pa55";

/// The daemon's settings from the usual required flags plus `extra`.
fn daemon(extra: &[&str]) -> Result<DaemonArgs, clap::Error> {
    let mut argv = vec![
        "double-natpmp".to_owned(),
        "--vpn-gateway=10.2.0.1".to_owned(),
        "--mikrotik-api-address=172.30.254.1".to_owned(),
        format!("--mikrotik-api-password={SECRET}"),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    Flags::try_parse_from(argv).map(|f| f.args)
}

fn refused(extra: &[&str]) -> String {
    let args = daemon(extra).unwrap();
    let err = args.validate().unwrap_err().to_string();
    assert!(!err.contains('\n'), "not one line: {err}");
    err
}

#[test]
fn gateway_takes_ip_or_ip_port() {
    assert_eq!(
        parse_gateway("10.2.0.1"),
        Ok("10.2.0.1:5351".parse().unwrap())
    );
    assert_eq!(
        parse_gateway("127.0.0.1:15351"),
        Ok("127.0.0.1:15351".parse().unwrap())
    );
    assert!(parse_gateway("notanip").is_err());
    assert!(parse_gateway("::1").is_err());
}

#[test]
fn gateway_that_cannot_be_asked_is_refused() {
    for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "10.2.0.1:0"] {
        assert!(parse_gateway(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn listen_addr_accepts_the_original_colon_port_form() {
    assert_eq!(
        parse_listen_addr(":5351"),
        Ok("0.0.0.0:5351".parse().unwrap())
    );
    assert_eq!(
        parse_listen_addr("192.168.88.250:5351"),
        Ok("192.168.88.250:5351".parse().unwrap())
    );
    assert_eq!(
        parse_listen_addr("192.168.88.250"),
        Ok("192.168.88.250:5351".parse().unwrap())
    );
    assert!(parse_listen_addr("x:1").is_err());
}

#[test]
fn daemon_listen_addr_must_be_ipv4() {
    assert_eq!(
        parse_natpmp_listen_addr(":5351"),
        Ok("0.0.0.0:5351".parse().unwrap())
    );
    let err = parse_natpmp_listen_addr("[::]:5351").unwrap_err();
    assert!(err.0.contains("IPv4"), "{err}");
}

#[test]
fn api_address_default_port_depends_on_tls() {
    let hp = parse_host_port("172.30.254.1").unwrap();
    assert_eq!(hp.with_default_port(false), "172.30.254.1:8728");
    assert_eq!(hp.with_default_port(true), "172.30.254.1:8729");
    let hp = parse_host_port("router.lan:18728").unwrap();
    assert_eq!(hp.with_default_port(true), "router.lan:18728");
    assert!(parse_host_port("bad host:1").is_err());
    assert!(parse_host_port("r:99999").is_err());
    assert!(parse_host_port("172.30.254.1:0").is_err());
    assert!(parse_host_port("router.lan:0").is_err());
}

#[test]
fn log_level_any_case() {
    assert_eq!(parse_log_level("debug"), Ok(LogLevel::Debug));
    assert_eq!(parse_log_level("Warn"), Ok(LogLevel::Warn));
    assert_eq!(parse_log_level("ERROR"), Ok(LogLevel::Error));
    assert!(parse_log_level("loud").is_err());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
    assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("1.5s").is_err());
}

#[test]
fn a_duration_too_large_to_represent_is_refused_not_saturated() {
    // u64::MAX / 86400 days still fit; one more does not.
    assert!(parse_duration("213503982334601d").is_ok());
    assert!(parse_duration("213503982334602d").is_err());
    assert!(parse_duration("18446744073709551615m").is_err());
    assert!(parse_duration("99999999999999999999").is_err());
}

#[test]
fn timeouts_are_1ms_to_1d_intervals_1s_to_7d_grace_0_to_1d() {
    assert!(parse_timeout("0").is_err());
    assert!(parse_timeout("0ms").is_err());
    assert_eq!(parse_timeout("1ms"), Ok(Duration::from_millis(1)));
    assert_eq!(parse_timeout("1d"), Ok(MAX_TIMEOUT));
    assert!(parse_timeout("25h").is_err());
    assert!(parse_interval("0").is_err());
    assert!(parse_interval("999ms").is_err());
    assert_eq!(parse_interval("7d"), Ok(MAX_INTERVAL));
    assert!(parse_interval("8d").is_err());
    assert_eq!(parse_grace("0"), Ok(Duration::ZERO));
    assert!(parse_grace("2d").is_err());
    let err = parse_timeout("0").unwrap_err();
    assert!(err.0.contains("from 1ms to 1d"), "{err}");
}

#[test]
fn durations_are_shown_in_their_largest_exact_unit() {
    assert_eq!(show_duration(Duration::ZERO), "0s");
    assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(show_duration(Duration::from_secs(120)), "2m");
    assert_eq!(show_duration(MAX_TIMEOUT), "1d");
    assert_eq!(show_duration(MAX_INTERVAL), "7d");
}

#[test]
fn fingerprint_parses_with_and_without_colons_in_either_case() {
    // Moved from routeros/tls.rs, whose copy of this parser nothing used.
    let plain = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    let colons = plain
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let a = parse_fingerprint(plain).unwrap();
    assert_eq!(a, parse_fingerprint(&colons).unwrap());
    assert_eq!(a.0[0], 0x00);
    assert_eq!(a.0[31], 0xFF);
    assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
}

#[test]
fn fingerprint_with_colons() {
    let hex = "AB:".repeat(31) + "AB";
    assert_eq!(parse_fingerprint(&hex), Ok(Fingerprint([0xAB; 32])));
    assert!(parse_fingerprint("abcd").is_err());
}

#[test]
fn server_name_is_a_dns_name_or_an_ip_address() {
    assert_eq!(parse_server_name("router.lan"), Ok("router.lan".to_owned()));
    assert_eq!(
        parse_server_name("192.168.88.1"),
        Ok("192.168.88.1".to_owned())
    );
    assert!(parse_server_name("not a name!").is_err());
    assert!(parse_server_name("").is_err());
}

#[test]
fn zero_and_out_of_range_settings_are_refused_while_parsing() {
    for flag in [
        "--upstream-retry=0",
        "--upstream-timeout=0",
        "--address-refresh=0",
        "--reconcile-interval=0",
        "--shutdown-timeout=0",
        "--mikrotik-api-timeout=0",
        "--mikrotik-api-timeout=2d",
        "--expiry-grace=9999999d",
        "--reconcile-interval=30d",
        "--max-lifetime=0",
        "--max-lifetime=604801",
        "--mikrotik-api-user=",
        "--mikrotik-in-interface= ",
        "--listen-addr=[::1]:5351",
    ] {
        assert!(daemon(&[flag]).is_err(), "{flag} was accepted");
    }
    let ok = daemon(&["--max-lifetime=604800", "--reconcile-interval=7d"]).unwrap();
    ok.validate().unwrap();
}

#[test]
fn retry_above_the_upstream_timeout_is_refused_naming_both() {
    let err = refused(&["--upstream-retry=3s", "--upstream-timeout=2s"]);
    assert!(err.contains("UPSTREAM_RETRY=3s"), "{err}");
    assert!(err.contains("UPSTREAM_TIMEOUT=2s"), "{err}");
    daemon(&["--upstream-retry=2s", "--upstream-timeout=2s"])
        .unwrap()
        .validate()
        .unwrap();
}

#[test]
fn inverted_router_port_range_is_refused() {
    let err = refused(&["--router-port-min=50000", "--router-port-max=40000"]);
    assert!(err.contains("ROUTER_PORT_MIN=50000"), "{err}");
}

#[test]
fn listening_on_the_gateways_own_address_is_refused() {
    let err = refused(&["--listen-addr=10.2.0.1:5351"]);
    assert!(err.contains("LISTEN_ADDR=10.2.0.1:5351"), "{err}");
}

#[test]
fn tls_settings_that_contradict_each_other_are_refused_by_name() {
    let fp = format!("--mikrotik-api-tls-fingerprint={}", "ab".repeat(32));
    let cases: &[(&[&str], &str)] = &[
        (
            &["--mikrotik-api-tls-server-name=router.lan"],
            "MIKROTIK_API_TLS_SERVER_NAME is set but MIKROTIK_API_TLS is false",
        ),
        (
            &["--mikrotik-api-tls-insecure=true"],
            "MIKROTIK_API_TLS_INSECURE is set but MIKROTIK_API_TLS is false",
        ),
        (
            &["--mikrotik-api-tls=true"],
            "MIKROTIK_API_TLS=true: set MIKROTIK_API_TLS_CA_FILE",
        ),
        (
            &[
                "--mikrotik-api-tls=true",
                "--mikrotik-api-tls-insecure=true",
                "--mikrotik-api-tls-ca-file=/ca.pem",
            ],
            "MIKROTIK_API_TLS_INSECURE=true turns off the certificate check that MIKROTIK_API_TLS_CA_FILE",
        ),
        (
            &[
                "--mikrotik-api-tls=true",
                &fp,
                "--mikrotik-api-tls-server-name=router.lan",
            ],
            "MIKROTIK_API_TLS_SERVER_NAME='router.lan' is checked against the chain of MIKROTIK_API_TLS_CA_FILE",
        ),
    ];
    for (flags, want) in cases {
        let err = refused(flags);
        assert!(err.contains(want), "{flags:?}: {err}");
    }
    for good in [
        &[
            "--mikrotik-api-tls=true",
            "--mikrotik-api-tls-ca-file=/ca.pem",
            "--mikrotik-api-tls-server-name=router.lan",
        ][..],
        &["--mikrotik-api-tls=true", &fp],
        &[
            "--mikrotik-api-tls=true",
            "--mikrotik-api-tls-insecure=true",
        ],
    ] {
        daemon(good).unwrap().validate().unwrap();
    }
}

#[test]
fn no_debug_of_the_settings_shows_the_password() {
    let args = daemon(&[]).unwrap();
    for shown in [
        format!("{args:?}"),
        format!("{:?}", args.router),
        format!("{:#?}", args),
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
    assert_eq!(args.router.password().unwrap().expose(), SECRET);
}

#[test]
fn password_file_is_read_without_its_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, format!("{SECRET}\r\n")).unwrap();
    let args = Flags::try_parse_from([
        "double-natpmp",
        "--vpn-gateway=10.2.0.1",
        "--mikrotik-api-address=172.30.254.1",
        &format!("--mikrotik-api-password-file={}", path.display()),
    ])
    .unwrap()
    .args;
    assert_eq!(args.router.password().unwrap().expose(), SECRET);
    std::fs::write(&path, "\n").unwrap();
    let err = args.router.password().unwrap_err().to_string();
    assert!(err.contains("MIKROTIK_API_PASSWORD_FILE"), "{err}");
}

#[test]
fn webhook_url_shows_its_host_but_never_its_path_or_query() {
    let url = crate::config::status::parse_webhook_url(
        "http://user:pw@192.168.88.5:8123/api/webhook/s3cret-id?x=s3cret",
    )
    .unwrap();
    for shown in [format!("{url}"), format!("{url:?}")] {
        assert!(shown.contains("http://192.168.88.5:8123/***"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw"),
            "{shown}"
        );
    }
    // The request still goes to the whole URL.
    assert_eq!(url.0.path(), "/api/webhook/s3cret-id");
}

#[test]
fn password_and_its_file_both_set_is_an_error_naming_both() {
    let args = daemon(&["--mikrotik-api-password-file=/nonexistent"]).unwrap();
    let err = args.router.password().unwrap_err().to_string();
    assert_eq!(
        err,
        "MIKROTIK_API_PASSWORD and MIKROTIK_API_PASSWORD_FILE are both set: expected one or the other"
    );
}

#[test]
fn status_hostnames_are_kept_in_lower_case_without_dot_and_addresses_canonical() {
    let names = crate::config::status::parse_hostnames(
        " NatPMP.lan. , 192.168.88.250,[::FFFF:10.0.0.1],natpmp.lan,,",
    )
    .unwrap();
    assert_eq!(names.0, ["natpmp.lan", "192.168.88.250", "10.0.0.1"]);
    assert!(crate::config::status::parse_hostnames("")
        .unwrap()
        .0
        .is_empty());
    for bad in ["natpmp.lan:8080", "-x.lan", "a b", "http://natpmp.lan"] {
        let err = crate::config::status::parse_hostnames(bad).unwrap_err();
        assert!(err.0.contains(&format!("'{bad}' is not")), "{bad}: {err}");
    }
}
