//! The emulator over real loopback sockets, spoken to with raw sentences (rules from
//! docs/routeros-api.md §1, §2, §5).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use double_natpmp_codec::routeros::wire::{decode_sentence, encode_sentence};

const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A bare-bones API client: words in, sentences out.
struct Raw<S> {
    s: S,
    buf: Vec<u8>,
}

async fn connect(addr: SocketAddr) -> Raw<TcpStream> {
    Raw {
        s: TcpStream::connect(addr).await.unwrap(),
        buf: Vec::new(),
    }
}

async fn sim() -> RouterSim {
    sim_with(RouterSimConfig::default()).await
}

async fn sim_with(config: RouterSimConfig) -> RouterSim {
    RouterSim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn logged_in(sim: &RouterSim) -> Raw<TcpStream> {
    let mut c = connect(sim.local_addr()).await;
    c.login("admin", "admin").await;
    c
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    async fn send(&mut self, words: &[&str]) {
        let mut out = Vec::new();
        encode_sentence(words, &mut out);
        self.s.write_all(&out).await.unwrap();
    }

    /// The next sentence (an empty one comes back as an empty list); None at EOF.
    async fn read(&mut self) -> Option<Vec<String>> {
        loop {
            if let Some((words, used)) = decode_sentence(&self.buf).unwrap() {
                self.buf.drain(..used);
                return Some(
                    words
                        .iter()
                        .map(|w| String::from_utf8_lossy(w).into_owned())
                        .collect(),
                );
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(READ_TIMEOUT, self.s.read(&mut chunk))
                .await
                .expect("no reply from the emulator")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the peer closes without sending anything more.
    async fn closed(&mut self) -> bool {
        self.read().await.is_none()
    }

    /// Sends a command and reads up to its `!done` (or a `!fatal`).
    async fn cmd(&mut self, words: &[&str]) -> Vec<Vec<String>> {
        self.send(words).await;
        let mut out = Vec::new();
        loop {
            let s = self.read().await.expect("connection closed mid-reply");
            let last = s.first().is_some_and(|w| w == "!done" || w == "!fatal");
            out.push(s);
            if last {
                return out;
            }
        }
    }

    async fn login(&mut self, name: &str, password: &str) {
        let r = self
            .cmd(&[
                "/login",
                &format!("=name={name}"),
                &format!("=password={password}"),
            ])
            .await;
        assert_eq!(r, vec![vec!["!done".to_string()]]);
    }
}

fn words(s: &[&str]) -> Vec<String> {
    s.iter().map(|w| w.to_string()).collect()
}

fn trap(message: &str) -> Vec<Vec<String>> {
    vec![
        words(&["!trap", &format!("=message={message}")]),
        words(&["!done"]),
    ]
}

const ADD_WG: &[&str] = &[
    "/ip/firewall/nat/add",
    "=chain=dstnat",
    "=action=dst-nat",
    "=protocol=udp",
    "=in-interface=wg-proton",
    "=dst-port=40001",
    "=to-addresses=192.168.88.23",
    "=to-ports=6881",
    "=comment=natpmp:udp:192.168.88.23:6881",
];

#[tokio::test]
async fn add_returns_ret_id_and_print_shows_defaults_and_unset_fields_are_omitted() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    assert_eq!(c.cmd(ADD_WG).await, vec![words(&["!done", "=ret=*1"])]);
    let rows = c.cmd(&["/ip/firewall/nat/print"]).await;
    assert_eq!(rows.len(), 2);
    let row = &rows[0];
    assert_eq!(row[0], "!re");
    assert_eq!(row[1], "=.id=*1");
    for w in [
        "=bytes=0",
        "=packets=0",
        "=invalid=false",
        "=dynamic=false",
        "=disabled=false",
        "=log=false",
        "=log-prefix=",
    ] {
        assert!(row.contains(&w.to_string()), "{w} missing in {row:?}");
    }
    assert!(!row.iter().any(|w| w.starts_with("=src-address=")));
    assert_eq!(rows[1], words(&["!done"]));
}

#[tokio::test]
async fn bad_password_traps_then_done_and_allows_a_retry() {
    let sim = sim().await;
    let mut c = connect(sim.local_addr()).await;
    let r = c.cmd(&["/login", "=name=admin", "=password=nope"]).await;
    assert_eq!(r, trap("invalid user name or password (6)"));
    c.login("admin", "admin").await;
    assert_eq!(sim.login_count(), 1);
    assert_eq!(sim.login_attempt_count(), 2);
}

#[tokio::test]
async fn user_without_api_policy_cannot_log_in() {
    let mut config = RouterSimConfig::default();
    config
        .users
        .push(SimUser::new("web", "pw", &["read", "write"]));
    let sim = sim_with(config).await;
    let mut c = connect(sim.local_addr()).await;
    let r = c.cmd(&["/login", "=name=web", "=password=pw"]).await;
    assert_eq!(r, trap("invalid user name or password (6)"));
}

#[tokio::test]
async fn command_before_login_is_fatal_and_closes() {
    let sim = sim().await;
    let mut c = connect(sim.local_addr()).await;
    let r = c.cmd(&["/ip/firewall/nat/print"]).await;
    assert_eq!(r, vec![words(&["!fatal", "not logged in"])]);
    assert!(c.closed().await);
    assert_eq!(sim.command_count(), 0, "nothing counted before login");
}

#[tokio::test]
async fn quit_is_fatal_with_bare_reason_and_closes() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    let r = c.cmd(&["/quit", ".tag=q"]).await;
    assert_eq!(r, vec![words(&["!fatal", "session terminated on request"])]);
    assert!(c.closed().await);
}

#[tokio::test]
async fn control_byte_is_fatal_and_closes() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    c.s.write_all(&[0xF8]).await.unwrap();
    let r = c.read().await.unwrap();
    assert_eq!(r[0], "!fatal");
    assert_eq!(r.len(), 2, "one bare reason word: {r:?}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn sentences_split_across_writes_long_words_and_empty_sentences_work() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    let comment = format!("=comment={}", "x".repeat(300)); // a 2-byte length prefix 0x81..
    let mut out = vec![0u8]; // an empty sentence first: ignored
    encode_sentence(&["/ip/firewall/nat/add", comment.as_str()], &mut out);
    for b in &out {
        c.s.write_all(&[*b]).await.unwrap(); // one byte at a time
    }
    assert_eq!(c.read().await.unwrap(), words(&["!done", "=ret=*1"]));
    assert_eq!(sim.nat_rules()[0].fields["comment"].len(), 300);
}

#[tokio::test]
async fn tag_is_the_second_word_of_every_reply() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    c.cmd(ADD_WG).await;
    let r = c.cmd(&["/ip/firewall/nat/print", ".tag=t7"]).await;
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|s| s[1] == ".tag=t7"), "{r:?}");
    let r = c
        .cmd(&["/ip/firewall/nat/remove", "=.id=*9", ".tag=x"])
        .await;
    assert_eq!(
        r,
        vec![
            words(&["!trap", ".tag=x", "=message=no such item (4)"]),
            words(&["!done", ".tag=x"]),
        ]
    );
}

#[tokio::test]
async fn empty_print_sends_empty_only_from_7_18() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    let r = c.cmd(&["/ip/firewall/nat/print", ".tag=5"]).await;
    assert_eq!(
        r,
        vec![words(&["!empty", ".tag=5"]), words(&["!done", ".tag=5"])]
    );
    sim.set_version("7.17.2 (stable)");
    let r = c.cmd(&["/ip/firewall/nat/print"]).await;
    assert_eq!(r, vec![words(&["!done"])]);
}

#[tokio::test]
async fn remove_accepts_a_list_and_unknown_ids_are_no_such_item() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    for _ in 0..3 {
        c.cmd(ADD_WG).await; // duplicates are allowed
    }
    assert_eq!(sim.nat_rules().len(), 3);
    assert_eq!(
        c.cmd(&["/ip/firewall/nat/remove", "=.id=*1,*3"]).await,
        vec![words(&["!done"])]
    );
    let ids: Vec<_> = sim.nat_rules().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["*2"]);
    assert_eq!(
        c.cmd(&["/ip/firewall/nat/set", "=.id=*1", "=comment=x"])
            .await,
        trap("no such item (4)")
    );
    assert_eq!(
        c.cmd(&["/ip/firewall/nat/set", "=.id=*2", "=disabled=yes"])
            .await,
        vec![words(&["!done"])]
    );
    assert_eq!(sim.nat_rules()[0].fields["disabled"], "true");
}

#[tokio::test]
async fn validation_errors_use_router_texts() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    let r = c
        .cmd(&["/ip/firewall/nat/add", "=chain=dstnat", "=in-interface=wg0"])
        .await;
    assert_eq!(
        r[0],
        words(&[
            "!trap",
            "=category=1",
            "=message=input does not match any value of in-interface"
        ])
    );
    assert_eq!(
        c.cmd(&["/ip/firewall/nat/add", "=colour=red"]).await,
        trap("unknown parameter colour")
    );
    let r = c.cmd(&["/ip/firewall/nat/add", "=dst-port=70000"]).await;
    assert!(r[0][2].contains("dst-port"), "{r:?}");
    assert_eq!(
        c.cmd(&["/ip/firewall/nat/frobnicate"]).await,
        trap("no such command")
    );
    assert_eq!(
        c.cmd(&["/routing/bgp/print"]).await,
        trap("no such command prefix")
    );
    assert!(sim.nat_rules().is_empty());
}

#[tokio::test]
async fn missing_policies_give_not_enough_permissions() {
    let config = RouterSimConfig {
        users: vec![SimUser::new("ro", "pw", &["read", "api"])],
        ..RouterSimConfig::default()
    };
    let sim = sim_with(config).await;
    let mut c = connect(sim.local_addr()).await;
    c.login("ro", "pw").await;
    let denied = trap("not enough permissions (9)");
    assert_eq!(c.cmd(ADD_WG).await, denied);
    assert_eq!(
        c.cmd(&["/ip/route/check", "=dst-ip=10.2.0.1", "=once="])
            .await,
        denied
    );
    assert_eq!(
        c.cmd(&["/ip/firewall/nat/print"]).await.last().unwrap(),
        &words(&["!done"])
    );
}

#[tokio::test]
async fn address_print_gives_address_with_prefix_network_interface_and_flags() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    sim.add_address("192.168.50.7/24", "vlan50");
    let r = c.cmd(&["/ip/address/print"]).await;
    let row = |id: &str, address: &str, network: &str, interface: &str, invalid: &str| {
        words(&[
            "!re",
            &format!("=.id={id}"),
            &format!("=actual-interface={interface}"),
            &format!("=address={address}"),
            "=disabled=false",
            "=dynamic=false",
            &format!("=interface={interface}"),
            &format!("=invalid={invalid}"),
            &format!("=network={network}"),
        ])
    };
    assert_eq!(
        r,
        vec![
            // A /32's network is the address itself, as in the captured reply.
            row("*1", "10.2.0.2/32", "10.2.0.2", "wg-proton", "false"),
            row("*2", "192.168.88.1/24", "192.168.88.0", "bridge", "false"),
            // No interface vlan50 on this router: invalid.
            row("*3", "192.168.50.7/24", "192.168.50.0", "vlan50", "true"),
            words(&["!done"]),
        ]
    );
    let bridge = c
        .cmd(&[
            "/ip/address/print",
            "=.proplist=address",
            "?interface=bridge",
        ])
        .await;
    assert_eq!(
        bridge,
        vec![
            words(&["!re", "=address=192.168.88.1/24"]),
            words(&["!done"])
        ]
    );
}

#[tokio::test]
async fn route_check_picks_the_longest_prefix() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    let r = c
        .cmd(&["/ip/route/check", "=dst-ip=10.2.0.1", "=once="])
        .await;
    assert_eq!(
        r,
        vec![
            words(&[
                "!re",
                "=status=ok",
                "=interface=wg-proton",
                "=nexthop=10.2.0.1"
            ]),
            words(&["!done"]),
        ]
    );
    // ORIG's bare `=once` works too; the default route catches the rest.
    let r = c
        .cmd(&["/ip/route/check", "=dst-ip=1.1.1.1", "=once"])
        .await;
    assert_eq!(r[0][2], "=interface=ether1");
}

#[tokio::test]
async fn route_check_without_a_route_is_unreachable() {
    let mut config = RouterSimConfig::default();
    config.routes.retain(|r| r.prefix_len > 0);
    let sim = sim_with(config).await;
    let mut c = logged_in(&sim).await;
    let r = c
        .cmd(&["/ip/route/check", "=dst-ip=1.1.1.1", "=once="])
        .await;
    assert_eq!(r[0], words(&["!re", "=status=unreachable"]));
}

#[tokio::test]
async fn streaming_route_check_runs_until_cancel_in_documented_order() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    c.send(&["/ip/route/check", "=dst-ip=10.2.0.1", ".tag=r"])
        .await;
    let first = c.read().await.unwrap();
    assert_eq!(&first[..2], &words(&["!re", ".tag=r"])[..]);
    // Other commands still work while it streams.
    let id = c.cmd(&["/system/identity/print", ".tag=i"]).await;
    let name = id.iter().find(|s| s[1] == ".tag=i" && s[0] == "!re");
    assert_eq!(name.unwrap()[2], "=name=MikroTik");
    c.send(&["/cancel", "=tag=r", ".tag=c"]).await;
    let mut tail = Vec::new();
    loop {
        let s = c.read().await.unwrap();
        if s[0] == "!re" {
            continue; // a row that raced the cancel
        }
        let end = s == words(&["!done", ".tag=r"]);
        tail.push(s);
        if end {
            break;
        }
    }
    assert_eq!(
        tail,
        vec![
            words(&["!trap", ".tag=r", "=category=2", "=message=interrupted"]),
            words(&["!done", ".tag=c"]),
            words(&["!done", ".tag=r"]),
        ]
    );
}

#[tokio::test]
async fn print_supports_proplist_count_only_and_stack_queries() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    c.cmd(ADD_WG).await;
    c.cmd(&[
        "/ip/firewall/nat/add",
        "=chain=srcnat",
        "=action=masquerade",
    ])
    .await;
    sim.insert_nat_rule(&[("chain", "dstnat"), ("dynamic", "true")]);
    let r = c
        .cmd(&["/ip/firewall/nat/print", "=count-only=", "?chain=dstnat"])
        .await;
    assert_eq!(r, vec![words(&["!done", "=ret=2"])]);
    let r = c
        .cmd(&[
            "/ip/firewall/nat/print",
            "=.proplist=.id,comment",
            "?chain=dstnat",
            "?dynamic=true",
            "?#!&",
        ])
        .await;
    assert_eq!(
        r,
        vec![
            words(&["!re", "=.id=*1", "=comment=natpmp:udp:192.168.88.23:6881"]),
            words(&["!done"]),
        ]
    );
}

#[tokio::test]
async fn foreign_rules_take_ids_from_the_same_sequence_and_can_vanish() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    let foreign = sim.insert_nat_rule(&[("chain", "dstnat"), ("comment", "by admin")]);
    assert_eq!(foreign, "*1");
    assert_eq!(c.cmd(ADD_WG).await, vec![words(&["!done", "=ret=*2"])]);
    assert!(sim.delete_nat_rule("*2"));
    assert!(!sim.delete_nat_rule("*2"));
    assert_eq!(
        c.cmd(&["/ip/firewall/nat/remove", "=.id=*2"]).await,
        trap("no such item (4)")
    );
}

#[tokio::test]
async fn cut_after_execute_runs_the_command_but_sends_nothing() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    sim.cut_after_execute_next("/ip/firewall/nat/add");
    c.send(ADD_WG).await;
    assert!(c.closed().await);
    assert_eq!(sim.nat_rules().len(), 1, "the add ran");
    // Only the next one: a new connection works normally.
    let mut c = logged_in(&sim).await;
    assert_eq!(c.cmd(ADD_WG).await, vec![words(&["!done", "=ret=*2"])]);
}

#[tokio::test]
async fn close_mid_reply_sends_a_partial_sentence_then_closes() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    sim.close_mid_reply_next("/ip/firewall/nat/add");
    c.send(ADD_WG).await;
    let mut got = Vec::new();
    let n = tokio::time::timeout(READ_TIMEOUT, c.s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let mut full = Vec::new();
    encode_sentence(&["!done", "=ret=*1"], &mut full);
    assert!(n > 0 && n < full.len(), "{n} of {} bytes", full.len());
    assert_eq!(got[..], full[..n]);
    assert_eq!(sim.nat_rules().len(), 1);
}

#[tokio::test]
async fn trap_on_add_and_refused_logins() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    sim.set_trap_on_add(Some("failure: out of memory".into()));
    assert_eq!(c.cmd(ADD_WG).await, trap("failure: out of memory"));
    assert!(sim.nat_rules().is_empty());
    sim.set_trap_on_add(None);
    sim.set_refuse_logins(true);
    let mut c2 = connect(sim.local_addr()).await;
    assert_eq!(
        c2.cmd(&["/login", "=name=admin", "=password=admin"]).await,
        trap("invalid user name or password (6)")
    );
}

#[tokio::test]
async fn hang_reads_but_never_answers_and_latency_delays_replies() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    sim.set_hang(true);
    c.send(&["/system/identity/print"]).await;
    let mut b = [0u8; 1];
    let silent = tokio::time::timeout(Duration::from_millis(300), c.s.read(&mut b)).await;
    assert!(silent.is_err(), "a hung router answered");
    assert_eq!(sim.command_count_for("/system/identity/print"), 1);
    sim.set_hang(false);
    sim.set_latency(Duration::from_millis(200));
    let t = std::time::Instant::now();
    let r = c.cmd(&["/system/identity/print"]).await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(r[0], words(&["!re", "=name=MikroTik"]));
}

#[tokio::test]
async fn empty_sentence_fault_precedes_replies() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    sim.set_empty_sentence_before_reply(true);
    c.send(&["/system/identity/print"]).await;
    assert_eq!(c.read().await.unwrap(), Vec::<String>::new());
    assert_eq!(c.read().await.unwrap()[0], "!re");
}

#[tokio::test]
async fn go_down_refuses_connections_and_come_up_keeps_the_table() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    c.cmd(ADD_WG).await;
    assert_eq!(sim.open_sessions(), 1);
    sim.go_down().await;
    assert!(c.closed().await, "sessions are closed");
    assert_eq!(sim.open_sessions(), 0);
    assert!(TcpStream::connect(sim.local_addr()).await.is_err());
    sim.come_up().await.unwrap();
    let mut c = logged_in(&sim).await;
    let r = c.cmd(&["/ip/firewall/nat/print", "=count-only="]).await;
    assert_eq!(r, vec![words(&["!done", "=ret=1"])]);
}

#[tokio::test]
async fn counters_count_commands_after_login_and_reset() {
    let sim = sim().await;
    let mut c = logged_in(&sim).await;
    c.cmd(ADD_WG).await;
    c.cmd(&["/ip/firewall/nat/print"]).await;
    assert_eq!(sim.command_count(), 2);
    assert_eq!(sim.command_count_for("/ip/firewall/nat/add"), 1);
    assert_eq!(sim.login_count(), 1);
    sim.reset_counters();
    assert_eq!(sim.command_count(), 0);
    assert_eq!(sim.login_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_at_once() {
    let sim = sim().await;
    let addr = sim.local_addr();
    let mut clients = Vec::new();
    for _ in 0..200 {
        let mut c = connect(addr).await;
        c.send(&["/login", "=name=admin", "=password=admin"]).await;
        clients.push(c);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in clients {
        tasks.spawn(async move {
            assert_eq!(c.read().await.unwrap(), words(&["!done"]));
            let r = c.cmd(ADD_WG).await;
            (c, r)
        });
    }
    let mut open = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (c, r) = r.unwrap();
        assert_eq!(r[0][0], "!done");
        open.push(c); // keep every connection open until the count is checked
    }
    assert_eq!(sim.open_sessions(), 200);
    assert_eq!(sim.nat_rules().len(), 200);
    assert_eq!(sim.login_count(), 200);
}

#[tokio::test]
async fn api_ssl_serves_the_same_protocol_over_tls() {
    use tokio_rustls::rustls::{self, pki_types};
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let config = RouterSimConfig {
        tls: Some(Arc::new(server)),
        ..RouterSimConfig::default()
    };
    let sim = sim_with(config).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(sim.local_addr()).await.unwrap();
    let name = pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut c = Raw {
        s: tls,
        buf: Vec::new(),
    };
    c.login("admin", "admin").await;
    assert_eq!(c.cmd(ADD_WG).await, vec![words(&["!done", "=ret=*1"])]);
}

/// A network namespace this test created; deleted on drop, also when the test fails.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> Option<Netns> {
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Netns(name.to_owned()))
    }

    fn nft(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "nft {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[tokio::test]
async fn nft_mirror_follows_added_and_removed_dstnat_rules() {
    let name = format!("h4nft{}", std::process::id());
    let Some(ns) = Netns::create(&name) else {
        eprintln!("SKIPPED: nft_mirror test: cannot create a network namespace (not root?)");
        return;
    };
    ns.nft(&["add", "table", "ip", "mikrotik"]);
    ns.nft(&[
        "add",
        "chain",
        "ip",
        "mikrotik",
        "dstnat",
        "{ type nat hook prerouting priority -100 ; }",
    ]);
    let config = RouterSimConfig {
        nft_mirror: Some(NftMirror {
            netns: name.clone(),
            table: "mikrotik".into(),
            chain: "dstnat".into(),
            srcnat_chain: None,
            interface_map: vec![("wg-proton".into(), "veth-wg".into())],
        }),
        ..RouterSimConfig::default()
    };
    let sim = sim_with(config).await;
    let mut c = logged_in(&sim).await;
    c.cmd(ADD_WG).await;
    c.cmd(&[
        "/ip/firewall/nat/add",
        "=chain=srcnat",
        "=action=masquerade",
    ])
    .await;
    sim.nft_synced().await;
    let chain = ns.nft(&["list", "chain", "ip", "mikrotik", "dstnat"]);
    assert!(
        chain.contains("iifname \"veth-wg\" udp dport 40001 dnat to 192.168.88.23:6881"),
        "{chain}"
    );
    assert_eq!(chain.matches("dnat to").count(), 1, "{chain}");
    c.cmd(&["/ip/firewall/nat/set", "=.id=*1", "=to-ports=7000"])
        .await;
    sim.nft_synced().await;
    let chain = ns.nft(&["list", "chain", "ip", "mikrotik", "dstnat"]);
    assert!(chain.contains("dnat to 192.168.88.23:7000"), "{chain}");
    assert_eq!(chain.matches("dnat to").count(), 1, "{chain}");
    c.cmd(&["/ip/firewall/nat/remove", "=.id=*1"]).await;
    sim.nft_synced().await;
    let chain = ns.nft(&["list", "chain", "ip", "mikrotik", "dstnat"]);
    assert!(!chain.contains("dnat to"), "{chain}");
}

#[tokio::test]
async fn nft_mirror_puts_src_nat_rules_where_the_table_has_them() {
    let name = format!("h4snat{}", std::process::id());
    let Some(ns) = Netns::create(&name) else {
        eprintln!("SKIPPED: nft_mirror test: cannot create a network namespace (not root?)");
        return;
    };
    ns.nft(&["add", "table", "ip", "mikrotik"]);
    ns.nft(&[
        "add",
        "chain",
        "ip",
        "mikrotik",
        "srcnat",
        "{ type nat hook postrouting priority 100 ; }",
    ]);
    let config = RouterSimConfig {
        nft_mirror: Some(NftMirror {
            netns: name.clone(),
            table: "mikrotik".into(),
            chain: "dstnat".into(),
            srcnat_chain: Some("srcnat".into()),
            interface_map: vec![("wg-proton".into(), "veth-wg".into())],
        }),
        ..RouterSimConfig::default()
    };
    let sim = sim_with(config).await;
    let mut c = logged_in(&sim).await;
    // The masquerade of the tunnel, then ours placed before it.
    c.cmd(&[
        "/ip/firewall/nat/add",
        "=chain=srcnat",
        "=action=masquerade",
        "=out-interface=wg-proton",
    ])
    .await;
    let ours = [
        "/ip/firewall/nat/add",
        "=chain=srcnat",
        "=action=masquerade",
        "=protocol=udp",
        "=src-address=192.168.88.10",
        "=src-port=6881",
        "=out-interface=wg-proton",
        "=to-ports=40001",
        "=place-before=*1",
    ];
    assert_eq!(c.cmd(&ours).await, vec![words(&["!done", "=ret=*2"])]);
    sim.nft_synced().await;
    let chain = ns.nft(&["list", "chain", "ip", "mikrotik", "srcnat"]);
    let lines: Vec<&str> = chain
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("masquerade"))
        .collect();
    assert_eq!(
        lines,
        [
            "oifname \"veth-wg\" ip saddr 192.168.88.10 udp sport 6881 masquerade to :40001 comment \"*2\"",
            "oifname \"veth-wg\" masquerade comment \"*1\"",
        ],
        "{chain}"
    );
    assert_eq!(sim.nat_rules()[0].id, "*2", "the table has the same order");
    c.cmd(&["/ip/firewall/nat/remove", "=.id=*2"]).await;
    sim.nft_synced().await;
    let chain = ns.nft(&["list", "chain", "ip", "mikrotik", "srcnat"]);
    assert_eq!(chain.matches("masquerade").count(), 1, "{chain}");
}

/// Arguments checked against RouterOS's command tree of the emulated version (`schema.rs`).
mod command_tree {
    use super::*;

    #[tokio::test]
    async fn add_with_an_unknown_argument_gets_routeros_unknown_parameter_trap_and_adds_nothing() {
        let sim = sim().await;
        let mut c = logged_in(&sim).await;
        let mut add = ADD_WG.to_vec();
        add.push("=to-adresses=192.168.88.23"); // a typo RouterOS refuses
        add.push(".tag=t3");
        assert_eq!(
            c.cmd(&add).await,
            vec![
                words(&["!trap", ".tag=t3", "=message=unknown parameter to-adresses"]),
                words(&["!done", ".tag=t3"]),
            ]
        );
        assert!(sim.nat_rules().is_empty());
        // The daemon's own add (API words .id/.proplist/.tag are not arguments) still works.
        assert_eq!(c.cmd(ADD_WG).await, vec![words(&["!done", "=ret=*1"])]);
        let r = c
            .cmd(&[
                "/ip/firewall/nat/print",
                "=.proplist=.id,comment",
                "?chain=dstnat",
            ])
            .await;
        assert_eq!(r.len(), 2, "{r:?}");
    }

    #[tokio::test]
    async fn the_configured_tree_decides_and_none_checks_nothing() {
        // `detail` is no argument of /system/identity/print on any RouterOS in the data; the
        // emulator's own print code would take it.
        let print = ["/system/identity/print", "=detail="];
        let sim = sim().await;
        let mut c = logged_in(&sim).await;
        assert_eq!(c.cmd(&print).await, trap("unknown parameter detail"));

        let sim = sim_with(RouterSimConfig {
            command_tree: None,
            ..RouterSimConfig::default()
        })
        .await;
        let mut c = logged_in(&sim).await;
        let r = c.cmd(&print).await;
        assert_eq!(r[0][0], "!re", "{r:?}");

        // The oldest tree in the data serves the daemon's commands too.
        let sim = sim_with(RouterSimConfig {
            command_tree: Some("7.19.6".into()),
            ..RouterSimConfig::default()
        })
        .await;
        let mut c = logged_in(&sim).await;
        let r = c
            .cmd(&["/ip/route/check", "=dst-ip=10.2.0.1", "=once="])
            .await;
        assert_eq!(r[0][..2], words(&["!re", "=status=ok"]), "{r:?}");
        assert_eq!(c.cmd(ADD_WG).await, vec![words(&["!done", "=ret=*1"])]);
    }

    #[tokio::test]
    async fn a_tree_version_the_data_lacks_is_refused_at_start() {
        let err = RouterSim::start(
            RouterSimConfig {
                command_tree: Some("7.18.2".into()),
                ..RouterSimConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("7.18.2"), "{err}");
    }
}
