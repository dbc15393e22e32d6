//! Our RouterOS API client (`routeros::{conn, tls, pool, api}`) against the RouterOS emulator
//! (`emulators::routeros`) over loopback: every typed operation and error kind, api-ssl with a
//! self-signed CA, and the faults (latency, trap, mid-reply close, hang, router down and back).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use double_natpmp::cli::args::daemon_args_from;
use double_natpmp::daemon::{self, DaemonError};
use double_natpmp::fingerprint_of;
use double_natpmp::DaemonArgs;
use double_natpmp::TlsMode;
use double_natpmp::TlsProblem;
use double_natpmp::{ApiConfig, Password};
use double_natpmp::{DstNatRule, Router, RouterApi, RouterError, RuleId};
use double_natpmp::{Shutdown, ShutdownTrigger};
use double_natpmp_codec::natpmp::wire::Protocol;
use double_natpmp_codec::routeros::wire::Command;
use double_natpmp_emulators::routeros::{RouterSim, RouterSimConfig, SimUser};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const ADD: &str = "/ip/firewall/nat/add";

async fn sim(config: RouterSimConfig) -> RouterSim {
    RouterSim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn config(sim: &RouterSim, user: &str, password: &str) -> ApiConfig {
    let mut cfg = ApiConfig::new(sim.local_addr().to_string(), user, Password::new(password));
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.command_timeout = Duration::from_secs(1);
    cfg
}

fn api(cfg: ApiConfig) -> RouterApi {
    RouterApi::new(cfg, 4, Duration::from_secs(2)).unwrap()
}

fn admin(sim: &RouterSim) -> RouterApi {
    api(config(sim, "admin", "admin"))
}

fn rule(port: u16) -> DstNatRule {
    DstNatRule {
        protocol: Protocol::Udp,
        in_interface: "wg-proton".into(),
        dst_port: port,
        to_address: Ipv4Addr::new(192, 168, 88, 23),
        to_port: 6881,
        comment: format!("natpmp:udp:192.168.88.23:6881:{port}"),
    }
}

fn field<'a>(r: &'a double_natpmp_emulators::routeros::SimNatRule, name: &str) -> Option<&'a str> {
    r.fields.get(name).map(String::as_str)
}

// ---------------------------------------------------------------- typed operations

#[tokio::test]
async fn add_dstnat_creates_the_rule_and_returns_its_id_in_one_command() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    // Warm the pool so the login is out of the way; the counter counts commands after login.
    api.info().await.unwrap();
    sim.reset_counters();

    let id = api.add_dstnat(&rule(40001)).await.unwrap();

    assert_eq!(
        sim.command_count(),
        1,
        "adding a rule costs exactly one API command"
    );
    assert_eq!(sim.command_count_for(ADD), 1);
    let rules = sim.nat_rules();
    assert_eq!(rules.len(), 1);
    let r = &rules[0];
    assert_eq!(RuleId::from(r.id.clone()), id);
    assert_eq!(field(r, "chain"), Some("dstnat"));
    assert_eq!(field(r, "action"), Some("dst-nat"));
    assert_eq!(field(r, "protocol"), Some("udp"));
    assert_eq!(field(r, "in-interface"), Some("wg-proton"));
    assert_eq!(field(r, "dst-port"), Some("40001"));
    assert_eq!(field(r, "to-addresses"), Some("192.168.88.23"));
    assert_eq!(field(r, "to-ports"), Some("6881"));
    assert_eq!(
        field(r, "comment"),
        Some("natpmp:udp:192.168.88.23:6881:40001")
    );
}

#[tokio::test]
async fn list_dstnat_returns_every_dstnat_rule_whatever_its_interface_with_flags() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    let ours = api.add_dstnat(&rule(40001)).await.unwrap();
    sim.insert_nat_rule(&[
        ("chain", "dstnat"),
        ("action", "dst-nat"),
        ("protocol", "tcp"),
        ("in-interface", "ether1"),
        ("dst-port", "80"),
        ("to-addresses", "192.168.88.2"),
    ]);
    sim.insert_nat_rule(&[
        ("chain", "srcnat"),
        ("action", "masquerade"),
        ("out-interface", "wg-proton"),
    ]);
    let dynamic = sim.insert_nat_rule(&[
        ("chain", "dstnat"),
        ("action", "dst-nat"),
        ("protocol", "udp"),
        ("in-interface", "wg-proton"),
        ("dst-port", "5000"),
        ("to-addresses", "192.168.88.9"),
        ("dynamic", "true"),
    ]);

    let rows = api.list_dstnat().await.unwrap();

    // Every dst-nat rule, whatever its in-interface (the ether1 one too); no src-nat rule.
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.chain.as_deref() == Some("dstnat")));
    assert!(rows
        .iter()
        .any(|r| r.in_interface.as_deref() == Some("ether1")));
    let mine = rows.iter().find(|r| r.id.as_ref() == Some(&ours)).unwrap();
    assert_eq!(mine.dst_port.as_deref(), Some("40001"));
    assert_eq!(mine.to_addresses.as_deref(), Some("192.168.88.23"));
    assert_eq!(mine.to_ports.as_deref(), Some("6881"));
    assert_eq!(mine.protocol.as_deref(), Some("udp"));
    assert_eq!(
        mine.comment.as_deref(),
        Some("natpmp:udp:192.168.88.23:6881:40001")
    );
    assert!(!mine.dynamic && !mine.disabled);
    let dyn_row = rows
        .iter()
        .find(|r| r.id.as_ref() == Some(&RuleId::from(dynamic.clone())))
        .unwrap();
    assert!(dyn_row.dynamic);
}

#[tokio::test]
async fn list_dstnat_with_no_rules_is_empty_on_7_18_and_7_17() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    // 7.18+: `!empty` then `!done`.
    assert!(api.list_dstnat().await.unwrap().is_empty());
    sim.set_version("7.17.2 (stable)");
    assert!(api.list_dstnat().await.unwrap().is_empty());
    // The connection stayed in step: a later add still works.
    api.add_dstnat(&rule(40002)).await.unwrap();
}

#[tokio::test]
async fn remove_rule_deletes_it_and_a_second_remove_is_not_found() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    let id = api.add_dstnat(&rule(40001)).await.unwrap();

    api.remove_rule(&id).await.unwrap();
    assert!(sim.nat_rules().is_empty());

    let err = api.remove_rule(&id).await.unwrap_err();
    assert!(matches!(err, RouterError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(id.as_str()), "{err}");
}

#[tokio::test]
async fn route_interface_finds_the_vpn_interface() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    assert_eq!(
        api.route_interface(Ipv4Addr::new(10, 2, 0, 1))
            .await
            .unwrap(),
        "wg-proton"
    );
    assert_eq!(
        api.route_interface(Ipv4Addr::new(1, 1, 1, 1))
            .await
            .unwrap(),
        "ether1"
    );
}

#[tokio::test]
async fn info_reports_identity_version_and_board() {
    let sim = sim(RouterSimConfig {
        identity: "gw-home".into(),
        ..RouterSimConfig::default()
    })
    .await;
    let info = admin(&sim).info().await.unwrap();
    assert_eq!(info.identity, "gw-home");
    assert_eq!(info.version, "7.18.2 (stable)");
    assert_eq!(info.board.as_deref(), Some("hAP ax2"));
}

// ---------------------------------------------------------------- typed errors

#[tokio::test]
async fn unknown_interface_is_an_invalid_value_with_the_routers_text() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    let mut r = rule(40001);
    r.in_interface = "wg-nope".into();
    let err = api.add_dstnat(&r).await.unwrap_err();
    match &err {
        RouterError::InvalidValue { command, message } => {
            assert_eq!(command, ADD);
            assert!(message.contains("in-interface"), "{message}");
        }
        other => panic!("expected InvalidValue, got {other}"),
    }
    assert!(sim.nat_rules().is_empty());
}

#[tokio::test]
async fn missing_policies_are_permission_denied_naming_the_policy() {
    let sim = sim(RouterSimConfig {
        users: vec![
            SimUser::new("ro", "pw", &["read", "api"]),
            SimUser::new("wo", "pw", &["write", "api"]),
        ],
        ..RouterSimConfig::default()
    })
    .await;
    let ro = api(config(&sim, "ro", "pw"));
    let wo = api(config(&sim, "wo", "pw"));

    let err = ro.add_dstnat(&rule(40001)).await.unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::PermissionDenied {
                policy: Some("write"),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("'write' policy"), "{err}");

    let err = ro
        .route_interface(Ipv4Addr::new(10, 2, 0, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::PermissionDenied {
                policy: Some("test"),
                ..
            }
        ),
        "{err}"
    );

    let err = wo.list_dstnat().await.unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::PermissionDenied {
                policy: Some("read"),
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_password_is_login_refused_with_user_and_without_password() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = api(config(&sim, "admin", "hunter2-wrong"));
    let err = api.list_dstnat().await.unwrap_err();
    assert!(matches!(err, RouterError::LoginRefused { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("'admin'"), "{text}");
    assert!(text.contains("invalid user name or password"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn refused_logins_are_login_refused() {
    let sim = sim(RouterSimConfig::default()).await;
    sim.set_refuse_logins(true);
    let err = admin(&sim).info().await.unwrap_err();
    assert!(matches!(err, RouterError::LoginRefused { .. }), "{err}");
}

#[tokio::test]
async fn nothing_listening_is_a_connection_error() {
    let sim = sim(RouterSimConfig::default()).await;
    let cfg = config(&sim, "admin", "admin");
    sim.shutdown().await;
    let err = api(cfg).info().await.unwrap_err();
    assert!(matches!(err, RouterError::Connection { .. }), "{err}");
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn trap_on_add_is_reported_with_the_routers_message() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    sim.set_trap_on_add(Some("failure: out of memory".into()));
    let err = api.add_dstnat(&rule(40001)).await.unwrap_err();
    match &err {
        RouterError::Trap { message, .. } => assert_eq!(message, "failure: out of memory"),
        other => panic!("expected Trap, got {other}"),
    }
    sim.set_trap_on_add(None);
    // The trap was followed by !done and read to the end: the connection is still in step.
    api.add_dstnat(&rule(40001)).await.unwrap();
    assert_eq!(sim.nat_rules().len(), 1);
}

#[tokio::test]
async fn latency_below_the_timeout_is_tolerated() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    sim.set_latency(Duration::from_millis(300));
    api.add_dstnat(&rule(40001)).await.unwrap();
    assert_eq!(api.list_dstnat().await.unwrap().len(), 1);
}

#[tokio::test]
async fn latency_beyond_the_timeout_is_a_timeout() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    api.info().await.unwrap();
    sim.set_latency(Duration::from_secs(3));
    let started = Instant::now();
    let err = api.list_dstnat().await.unwrap_err();
    assert!(matches!(err, RouterError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_millis(1800));
}

#[tokio::test]
async fn reply_cut_mid_sentence_is_a_connection_error_and_the_next_call_works() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    api.add_dstnat(&rule(40001)).await.unwrap();
    sim.close_mid_reply_next("/ip/firewall/nat/print");
    let err = api.list_dstnat().await.unwrap_err();
    assert!(matches!(err, RouterError::Connection { .. }), "{err}");
    // The broken connection is not reused; a fresh one answers.
    assert_eq!(api.list_dstnat().await.unwrap().len(), 1);
}

#[tokio::test]
async fn connection_cut_after_add_runs_is_an_error_but_the_rule_exists() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    sim.cut_after_execute_next(ADD);
    let err = api.add_dstnat(&rule(40001)).await.unwrap_err();
    assert!(matches!(err, RouterError::Connection { .. }), "{err}");
    // At-least-once: the router did add it, the reconciler finds it by comment.
    let rows = api.list_dstnat().await.unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn hanging_router_gives_a_timeout_within_the_command_timeout() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    api.info().await.unwrap();
    sim.set_hang(true);
    let started = Instant::now();
    let err = api.add_dstnat(&rule(40001)).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, RouterError::Timeout { .. }), "{err}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_millis(1800), "{took:?}");
    sim.set_hang(false);
    // The hung connection is discarded; a new one works.
    api.list_dstnat().await.unwrap();
}

#[tokio::test]
async fn empty_sentences_before_replies_are_skipped() {
    let sim = sim(RouterSimConfig::default()).await;
    sim.set_empty_sentence_before_reply(true);
    let api = admin(&sim);
    let id = api.add_dstnat(&rule(40001)).await.unwrap();
    assert_eq!(api.list_dstnat().await.unwrap()[0].id, Some(id));
}

#[tokio::test]
async fn caller_waiting_for_a_busy_pool_times_out() {
    let sim = sim(RouterSimConfig::default()).await;
    let mut cfg = config(&sim, "admin", "admin");
    cfg.command_timeout = Duration::from_secs(3);
    let api = RouterApi::new(cfg, 1, Duration::from_millis(300)).unwrap();
    api.info().await.unwrap();
    sim.set_hang(true);
    let holder = {
        let api = api.clone();
        tokio::spawn(async move { api.list_dstnat().await })
    };
    // Wait until the holder's command reached the router, so the only connection is taken.
    let deadline = Instant::now() + Duration::from_secs(2);
    while sim.command_count_for("/ip/firewall/nat/print") == 0 {
        assert!(Instant::now() < deadline, "holder never sent its command");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let err = api.add_dstnat(&rule(40001)).await.unwrap_err();
    assert!(
        matches!(&err, RouterError::Timeout { what, .. } if what.contains("free API connection")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    sim.set_hang(false);
    holder.abort();
}

#[tokio::test]
async fn pool_serves_again_after_the_router_was_down_for_5_seconds() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    api.add_dstnat(&rule(40001)).await.unwrap();

    sim.go_down().await;
    let down_at = Instant::now();
    // While down, calls fail fast (refused or within the backoff window), never hang.
    while down_at.elapsed() < Duration::from_secs(1) {
        let started = Instant::now();
        let err = api.list_dstnat().await.unwrap_err();
        assert!(
            matches!(err, RouterError::Connection { .. }),
            "while down: {err}"
        );
        assert!(started.elapsed() < Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The scenario: the router stays down for 5 s.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down_at.elapsed())).await;
    sim.come_up().await.unwrap();

    let up_at = Instant::now();
    let rows = loop {
        match api.list_dstnat().await {
            Ok(rows) => break rows,
            Err(e) => {
                assert!(
                    up_at.elapsed() < Duration::from_secs(6),
                    "pool did not recover: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(rows.len(), 1, "the table survived the outage");
    api.add_dstnat(&rule(40002)).await.unwrap();
}

#[tokio::test]
async fn failed_connects_back_off_instead_of_hammering_the_router() {
    let sim = sim(RouterSimConfig::default()).await;
    sim.set_refuse_logins(true);
    let api = admin(&sim);
    // Ten calls in quick succession: one login attempt, the rest get the same error at once
    // inside the 100 ms backoff window.
    let started = Instant::now();
    for _ in 0..10 {
        let err = api.info().await.unwrap_err();
        assert!(matches!(err, RouterError::LoginRefused { .. }), "{err}");
    }
    // Normally exactly 1; a stalled machine may let a 100 ms window pass between calls.
    let windows_passed = started.elapsed().as_millis() as u64 / 100;
    assert!(
        sim.login_attempt_count() <= 1 + windows_passed,
        "{} login attempts in {:?}",
        sim.login_attempt_count(),
        started.elapsed()
    );
    // Once the cause is gone, the next attempt after the window succeeds and resets it.
    sim.set_refuse_logins(false);
    tokio::time::sleep(Duration::from_millis(150)).await;
    api.info().await.unwrap();
}

// ---------------------------------------------------------------- api-ssl

struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
    leaf_der: Vec<u8>,
}

/// A CA and a leaf for 127.0.0.1 (IP SAN) signed by it, as a RouterOS admin would make.
fn pki() -> Pki {
    pki_named("router CA")
}

fn pki_named(ca_name: &str) -> Pki {
    pki_with(ca_name, |_| {})
}

/// A CA named `ca_name` and a leaf for 127.0.0.1, with `leaf` applied to the leaf's parameters.
fn pki_with(ca_name: &str, leaf: impl FnOnce(&mut rcgen::CertificateParams)) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "MikroTik");
    leaf(&mut leaf_params);
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(leaf.der().to_vec())],
        PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
        leaf_der: leaf.der().to_vec(),
    }
}

async fn tls_sim(pki: &Pki) -> RouterSim {
    sim(RouterSimConfig {
        tls: Some(pki.server.clone()),
        ..RouterSimConfig::default()
    })
    .await
}

fn ca_file(pem: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), pem).unwrap();
    f
}

/// The client's settings for `sim` over api-ssl, verified against the CA in `ca` (and
/// `server_name`, when given, instead of the address).
fn verified_by(sim: &RouterSim, ca: &std::path::Path, server_name: Option<&str>) -> ApiConfig {
    let mut cfg = config(sim, "admin", "admin");
    cfg.tls = TlsMode::Verify {
        ca_file: Some(ca.to_owned()),
        fingerprint_sha256: None,
        server_name: server_name.map(Into::into),
    };
    cfg
}

/// `err` is a TLS error of the kind `want`.
#[track_caller]
fn assert_tls(err: &RouterError, want: TlsProblem) {
    assert!(
        matches!(err, RouterError::Tls { kind, .. } if *kind == want),
        "{err:?}"
    );
}

#[tokio::test]
async fn api_ssl_with_the_right_ca_works() {
    let pki = pki();
    let sim = tls_sim(&pki).await;
    let ca = ca_file(&pki.ca_pem);
    let cfg = verified_by(&sim, ca.path(), None);
    let api = api(cfg);
    api.add_dstnat(&rule(40001)).await.unwrap();
    assert_eq!(api.list_dstnat().await.unwrap().len(), 1);
}

#[tokio::test]
async fn api_ssl_with_a_wrong_ca_fails_with_a_clear_message() {
    let pki = pki();
    let sim = tls_sim(&pki).await;
    // An unrelated CA, and one with the same name but another key (two routers' default CAs).
    for other in [pki_named("another CA"), pki_named("router CA")] {
        let ca = ca_file(&other.ca_pem);
        let cfg = verified_by(&sim, ca.path(), None);
        let err = api(cfg).info().await.unwrap_err();
        assert_tls(&err, TlsProblem::UnknownIssuer);
        let text = err.to_string();
        assert!(text.contains("TLS handshake failed"), "{text}");
        assert!(text.contains("not signed by the CA"), "{text}");
    }
    assert_eq!(sim.login_attempt_count(), 0, "no password was sent");
}

#[tokio::test]
async fn api_ssl_with_the_ca_but_another_name_fails_on_the_name() {
    let pki = pki();
    let sim = tls_sim(&pki).await;
    let ca = ca_file(&pki.ca_pem);
    let cfg = verified_by(&sim, ca.path(), Some("router.example"));
    let err = api(cfg).info().await.unwrap_err();
    assert_tls(&err, TlsProblem::NameMismatch);
    let text = err.to_string();
    assert!(text.contains("does not name \"router.example\""), "{text}");
    // The advice names a setting that exists.
    assert!(text.contains("MIKROTIK_API_TLS_SERVER_NAME"), "{text}");
    assert_eq!(sim.login_attempt_count(), 0, "no password was sent");
}

#[tokio::test]
async fn api_ssl_with_a_pinned_fingerprint_matches_the_leaf_only() {
    let pki = pki();
    let sim = tls_sim(&pki).await;
    let mut cfg = config(&sim, "admin", "admin");
    cfg.tls = TlsMode::Verify {
        ca_file: None,
        fingerprint_sha256: Some(fingerprint_of(&pki.leaf_der)),
        // A name the certificate does not carry: the pin alone decides.
        server_name: Some("router.example".into()),
    };
    api(cfg).info().await.unwrap();

    let mut cfg = config(&sim, "admin", "admin");
    cfg.tls = TlsMode::Verify {
        ca_file: None,
        fingerprint_sha256: Some([0xAB; 32]),
        server_name: None,
    };
    let err = api(cfg).info().await.unwrap_err();
    assert_tls(&err, TlsProblem::FingerprintMismatch);
    assert!(err.to_string().contains("fingerprint"), "{err}");
    assert!(err.to_string().contains("AB:AB"), "{err}");
}

#[tokio::test]
async fn api_ssl_with_an_expired_certificate_is_a_tls_expired_error() {
    let pki = pki_with("router CA", |leaf| {
        leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let sim = tls_sim(&pki).await;
    let ca = ca_file(&pki.ca_pem);
    let cfg = verified_by(&sim, ca.path(), None);
    let err = api(cfg).info().await.unwrap_err();
    assert_tls(&err, TlsProblem::Expired);
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn api_ssl_insecure_connects_without_any_trust_anchor() {
    let pki = pki();
    let sim = tls_sim(&pki).await;
    let mut cfg = config(&sim, "admin", "admin");
    cfg.tls = TlsMode::Insecure;
    api(cfg).info().await.unwrap();
}

#[tokio::test]
async fn plain_client_against_api_ssl_fails_instead_of_hanging_forever() {
    let pki = pki();
    let sim = tls_sim(&pki).await;
    let started = Instant::now();
    let err = admin(&sim).info().await.unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::Connection { .. } | RouterError::Timeout { .. }
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn find_dstnat_finds_the_rule_whatever_its_id_after_a_renumber() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    let foreign = sim.insert_nat_rule(&[
        ("chain", "dstnat"),
        ("action", "dst-nat"),
        ("protocol", "tcp"),
        ("dst-port", "22"),
        ("to-addresses", "192.168.88.2"),
    ]);
    let ours = api.add_dstnat(&rule(40001)).await.unwrap();
    assert!(sim.delete_nat_rule(&foreign));
    sim.renumber_ids();
    let found = api.find_dstnat(40001).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].id, Some(RuleId::new("*1")), "renumbered");
    assert_ne!(found[0].id, Some(ours));
    assert_eq!(
        found[0].comment.as_deref(),
        Some("natpmp:udp:192.168.88.23:6881:40001")
    );
    assert!(api.find_dstnat(40002).await.unwrap().is_empty());
}

#[tokio::test]
async fn interface_lists_services_interfaces_and_addresses_are_read() {
    let sim = sim(RouterSimConfig {
        interface_lists: vec![
            ("WAN".into(), "ether1".into()),
            ("WAN".into(), "wg-proton".into()),
        ],
        interface_types: vec![("ether1".into(), "ether".into())],
        ..RouterSimConfig::default()
    })
    .await;
    let api = admin(&sim);
    let members = api.list_members().await.unwrap();
    assert_eq!(members.len(), 2);
    assert!(members
        .iter()
        .any(|m| m.list == "WAN" && m.interface == "wg-proton"));
    let services = api.services().await.unwrap();
    let api_svc = services.iter().find(|s| s.name == "api").unwrap();
    assert_eq!((api_svc.port, api_svc.disabled), (8728, false));
    assert!(services.iter().any(|s| s.name == "www-ssl" && s.disabled));
    let wg = api.interface("wg-proton").await.unwrap().unwrap();
    assert_eq!((wg.kind.as_str(), wg.running), ("wg", true));
    sim.set_interface_running("wg-proton", false);
    assert!(!api.interface("wg-proton").await.unwrap().unwrap().running);
    assert_eq!(api.interface("nope").await.unwrap(), None);
    assert_eq!(
        api.interface_addresses("wg-proton").await.unwrap(),
        vec![Ipv4Addr::new(10, 2, 0, 2)]
    );
    assert_eq!(
        api.route_interface(Ipv4Addr::new(10, 2, 0, 1))
            .await
            .unwrap(),
        "wg-proton"
    );
}

/// The router's own addresses, with their subnets, as the reconcile reads them to refuse them
/// as clients (C-39a): every row, one added at run time included.
#[tokio::test]
async fn the_routers_addresses_are_read_with_prefix_interface_and_flags() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    sim.add_address("192.168.50.7/24", "vlan50");
    let rows = api.addresses().await.unwrap();
    let seen: Vec<(String, u8, &str, bool, bool)> = rows
        .iter()
        .map(|a| {
            (
                a.address.to_string(),
                a.prefix,
                a.interface.as_str(),
                a.disabled,
                a.invalid,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("10.2.0.2".into(), 32, "wg-proton", false, false),
            ("192.168.88.1".into(), 24, "bridge", false, false),
            // The emulator has no interface vlan50: RouterOS marks such an address invalid.
            ("192.168.50.7".into(), 24, "vlan50", false, true),
        ]
    );
    assert_eq!(
        rows[1].network_and_broadcast(),
        Some((
            Ipv4Addr::new(192, 168, 88, 0),
            Ipv4Addr::new(192, 168, 88, 255)
        ))
    );
}

#[tokio::test]
async fn quit_answered_with_fatal_is_a_fatal_error_and_the_next_call_gets_a_fresh_connection() {
    let sim = sim(RouterSimConfig::default()).await;
    let api = admin(&sim);
    api.info().await.unwrap();
    let err = api.run(Command::new("/quit")).await.unwrap_err();
    assert!(
        matches!(&err, RouterError::Fatal { reason, .. } if reason == "session terminated on request"),
        "{err:?}"
    );
    // The connection the router closed is not reused.
    api.info().await.unwrap();
}

// ---------------------------------------------------------------- daemon start-up

/// The daemon's settings from flags, with the router at `router` and api-ssl trusting `ca`.
fn tls_daemon_args(router: &RouterSim, ca: &std::path::Path) -> DaemonArgs {
    let argv = [
        "double-natpmp".to_owned(),
        // Never contacted: start-up stops at the router.
        "--vpn-gateway=127.0.0.1:9".to_owned(),
        format!("--mikrotik-api-address={}", router.local_addr()),
        "--mikrotik-api-password=admin".to_owned(),
        "--mikrotik-api-timeout=1s".to_owned(),
        "--mikrotik-api-tls=true".to_owned(),
        format!("--mikrotik-api-tls-ca-file={}", ca.display()),
    ];
    daemon_args_from(argv).unwrap()
}

#[tokio::test]
async fn daemon_start_stops_at_once_when_the_ca_did_not_sign_the_routers_certificate() {
    let pki = pki();
    let sim = tls_sim(&pki).await;
    let other = pki_named("another CA");
    let ca = ca_file(&other.ca_pem);
    let started = daemon::start(tls_daemon_args(&sim, ca.path()), Shutdown::never());
    let outcome = tokio::time::timeout(Duration::from_secs(5), started)
        .await
        .expect("start-up kept retrying a certificate no retry can fix");
    match outcome {
        Err(DaemonError::Router(RouterError::Tls {
            kind: TlsProblem::UnknownIssuer,
            ..
        })) => {}
        Err(other) => panic!("expected a TLS error, got {other:?}"),
        Ok(_) => panic!("the daemon started with an untrusted certificate"),
    }
}

#[tokio::test]
async fn daemon_start_keeps_waiting_for_a_router_that_does_not_answer_until_stopped() {
    let pki = pki();
    let sim = tls_sim(&pki).await;
    let ca = ca_file(&pki.ca_pem);
    let args = tls_daemon_args(&sim, ca.path());
    sim.shutdown().await;
    let (stop, stopped) = ShutdownTrigger::new();
    let start = tokio::spawn(daemon::start(args, stopped));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !start.is_finished(),
        "start-up gave up on a router that is only down"
    );
    stop.trigger();
    let outcome = tokio::time::timeout(Duration::from_secs(5), start)
        .await
        .expect("start-up did not honour the stop signal")
        .unwrap();
    assert!(
        matches!(outcome, Err(DaemonError::Interrupted)),
        "{:?}",
        outcome.err()
    );
}

#[tokio::test]
async fn tls_server_name_setting_verifies_a_certificate_made_for_another_name() {
    let pki = pki_with("router CA", |leaf| {
        leaf.subject_alt_names = vec![rcgen::SanType::DnsName("router.lan".try_into().unwrap())];
    });
    let sim = tls_sim(&pki).await;
    let ca = ca_file(&pki.ca_pem);
    let router_api = |extra: &[&str]| {
        let mut argv = vec![
            "double-natpmp".to_owned(),
            "--vpn-gateway=127.0.0.1:9".to_owned(),
            format!("--mikrotik-api-address={}", sim.local_addr()),
            "--mikrotik-api-password=admin".to_owned(),
            "--mikrotik-api-tls=true".to_owned(),
            format!("--mikrotik-api-tls-ca-file={}", ca.path().display()),
        ];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        let args = daemon_args_from(argv).unwrap();
        args.validate().unwrap();
        daemon::router_api(&args.router).unwrap()
    };
    // The certificate names router.lan, the daemon connects to 127.0.0.1.
    let err = router_api(&[]).info().await.unwrap_err();
    assert_tls(&err, TlsProblem::NameMismatch);
    assert!(
        err.to_string().contains("MIKROTIK_API_TLS_SERVER_NAME"),
        "{err}"
    );
    router_api(&["--mikrotik-api-tls-server-name=router.lan"])
        .info()
        .await
        .unwrap();
}
