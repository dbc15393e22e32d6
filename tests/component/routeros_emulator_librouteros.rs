//! The RouterOS API emulator checked by an independent client: the Python `librouteros`
//! package drives it (login, add, print with a query, print with no match, remove, a bad
//! password) and we assert on librouteros's results AND on the emulator's state.
//!
//! The venv is `/work/main/.venv` style: `<crate>/.venv/bin/python` with librouteros installed
//! (`python3 -m venv .venv && .venv/bin/pip install librouteros`). Without it the test fails
//! when `CI=true` and is skipped loudly otherwise.

use crate::common::skip;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use double_natpmp_emulators::routeros::{RouterSim, RouterSimConfig};

/// A parsed JSON value (just enough for the script's output; no serde in this crate).
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Str(String),
    List(Vec<Json>),
    Obj(BTreeMap<String, Json>),
    Other(String),
}

impl Json {
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m
                .get(key)
                .unwrap_or_else(|| panic!("no key {key} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }

    fn list(&self) -> &[Json] {
        match self {
            Json::List(l) => l,
            _ => panic!("not a list: {self:?}"),
        }
    }

    /// A row object as name -> value.
    fn row(&self) -> BTreeMap<String, String> {
        match self {
            Json::Obj(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.str().to_owned()))
                .collect(),
            _ => panic!("not a row: {self:?}"),
        }
    }
}

fn parse_json(s: &str) -> Json {
    let chars: Vec<char> = s.trim().chars().collect();
    let mut pos = 0;
    let v = parse_value(&chars, &mut pos);
    assert_eq!(pos, chars.len(), "trailing text in JSON {s:?}");
    v
}

fn skip_ws(c: &[char], pos: &mut usize) {
    while *pos < c.len() && c[*pos].is_whitespace() {
        *pos += 1;
    }
}

fn parse_value(c: &[char], pos: &mut usize) -> Json {
    skip_ws(c, pos);
    match c[*pos] {
        '"' => Json::Str(parse_string(c, pos)),
        '[' => {
            *pos += 1;
            let mut items = Vec::new();
            loop {
                skip_ws(c, pos);
                if c[*pos] == ']' {
                    *pos += 1;
                    return Json::List(items);
                }
                items.push(parse_value(c, pos));
                skip_ws(c, pos);
                if c[*pos] == ',' {
                    *pos += 1;
                }
            }
        }
        '{' => {
            *pos += 1;
            let mut m = BTreeMap::new();
            loop {
                skip_ws(c, pos);
                if c[*pos] == '}' {
                    *pos += 1;
                    return Json::Obj(m);
                }
                let k = parse_string(c, pos);
                skip_ws(c, pos);
                assert_eq!(c[*pos], ':');
                *pos += 1;
                let v = parse_value(c, pos);
                m.insert(k, v);
                skip_ws(c, pos);
                if c[*pos] == ',' {
                    *pos += 1;
                }
            }
        }
        _ => {
            let start = *pos;
            while *pos < c.len() && !",]} ".contains(c[*pos]) {
                *pos += 1;
            }
            Json::Other(c[start..*pos].iter().collect())
        }
    }
}

fn parse_string(c: &[char], pos: &mut usize) -> String {
    assert_eq!(c[*pos], '"');
    *pos += 1;
    let mut out = String::new();
    while c[*pos] != '"' {
        if c[*pos] == '\\' {
            *pos += 1;
            match c[*pos] {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = c[*pos + 1..*pos + 5].iter().collect();
                    let code = u32::from_str_radix(&hex, 16).expect("\\u escape");
                    out.push(char::from_u32(code).unwrap_or('?'));
                    *pos += 4;
                }
                other => out.push(other),
            }
        } else {
            out.push(c[*pos]);
        }
        *pos += 1;
    }
    *pos += 1;
    out
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, or None when the test should be skipped (panics under CI=true).
fn python() -> Option<PathBuf> {
    let py = crate_dir().join(".venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    let msg = format!(
        "{} is missing: create it with `python3 -m venv .venv && .venv/bin/pip install librouteros`",
        py.display()
    );
    skip::skip("routeros_emulator_librouteros", &msg);
    None
}

/// Runs one step of the script against the emulator on `port` and parses its JSON.
async fn step(py: &PathBuf, port: u16, args: &[&str]) -> Json {
    let script = crate_dir().join("tests/py/librouteros_check.py");
    let mut cmd = tokio::process::Command::new(py);
    cmd.arg(&script).arg(port.to_string()).args(args);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("librouteros script timed out")
        .expect("cannot run the venv python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "librouteros step {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_json(&stdout)
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librouteros_sees_the_emulator_as_a_router() {
    let Some(py) = python() else { return };
    let sim = RouterSim::start(RouterSimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = sim.local_addr().port();

    // add: librouteros sends disabled=no and numbers as text; ids come back as =ret=.
    let added = step(&py, port, &["add"]).await;
    let ids: Vec<String> = added
        .get("ids")
        .list()
        .iter()
        .map(|j| j.str().to_owned())
        .collect();
    assert_eq!(ids, ["*1", "*2"]);
    let rules = sim.nat_rules();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].id, ids[0]);
    let expected_first = fields(&[
        ("action", "dst-nat"),
        ("bytes", "0"),
        ("chain", "dstnat"),
        ("comment", "natpmp:udp:192.168.88.23:6881"),
        ("disabled", "false"),
        ("dst-port", "40001"),
        ("dynamic", "false"),
        ("in-interface", "wg-proton"),
        ("invalid", "false"),
        ("log", "false"),
        ("log-prefix", ""),
        ("packets", "0"),
        ("protocol", "udp"),
        ("to-addresses", "192.168.88.23"),
        ("to-ports", "6881"),
    ]);
    assert_eq!(rules[0].fields, expected_first);
    assert_eq!(rules[1].fields["in-interface"], "ether1");

    // print with a query: exactly the wg-proton row, and the id print shows is add's id.
    let q = step(&py, port, &["query"]).await;
    let wg: Vec<_> = q.get("wg").list().iter().map(Json::row).collect();
    assert_eq!(wg.len(), 1, "{wg:?}");
    assert_eq!(wg[0][".id"], ids[0]);
    assert_eq!(wg[0]["dst-port"], "40001");
    assert_eq!(wg[0]["disabled"], "false");
    // .proplist limited the properties: no bytes/packets came back.
    assert!(!wg[0].contains_key("bytes"), "{:?}", wg[0]);
    // No match: the emulator (7.18.2) answers !empty + !done, librouteros gives no rows.
    assert!(q.get("none").list().is_empty());
    let not_wg: Vec<_> = q.get("not_wg").list().iter().map(Json::row).collect();
    assert_eq!(not_wg.len(), 1);
    assert_eq!(not_wg[0][".id"], ids[1]);
    let all: Vec<_> = q.get("all").list().iter().map(Json::row).collect();
    assert_eq!(all.len(), 2);
    let mut first_row = expected_first.clone();
    first_row.insert(".id".into(), ids[0].clone());
    assert_eq!(
        all[0], first_row,
        "a full print shows every field of the rule"
    );

    // remove: gone from librouteros's next print and from the emulator.
    let removed = step(&py, port, &["remove", &ids[0]]).await;
    let left: Vec<_> = removed.get("all").list().iter().map(Json::row).collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0][".id"], ids[1]);
    assert!(sim.nat_rules().iter().all(|r| r.id != ids[0]));
    assert_eq!(sim.nat_rules().len(), 1);

    // removing it again: a trap librouteros raises, with the real text.
    let again = step(&py, port, &["remove_missing", &ids[0]]).await;
    assert_eq!(again.get("type").str(), "TrapError");
    assert!(again.get("error").str().starts_with("no such item"));

    // A bad password: librouteros raises with the router's text.
    let logins_before = sim.login_count();
    let bad = step(&py, port, &["badlogin"]).await;
    assert_eq!(bad.get("type").str(), "TrapError");
    assert!(
        bad.get("error")
            .str()
            .contains("invalid user name or password"),
        "{bad:?}"
    );
    assert_eq!(
        sim.login_count(),
        logins_before,
        "a bad password logs nobody in"
    );

    let ident = step(&py, port, &["identity"]).await;
    assert_eq!(ident.get("rows").list()[0].row()["name"], "MikroTik");

    // /ip/address/print: the fields the daemon reads to refuse the router's own addresses and
    // its subnets' edges as clients (docs/routeros-api.md §2.5), and a query by interface.
    let addresses = step(&py, port, &["addresses"]).await;
    let all: Vec<_> = addresses.get("rows").list().iter().map(Json::row).collect();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        all[1],
        fields(&[
            (".id", "*2"),
            ("actual-interface", "bridge"),
            ("address", "192.168.88.1/24"),
            ("disabled", "false"),
            ("dynamic", "false"),
            ("interface", "bridge"),
            ("invalid", "false"),
            ("network", "192.168.88.0"),
        ])
    );
    let bridge: Vec<_> = addresses
        .get("bridge")
        .list()
        .iter()
        .map(Json::row)
        .collect();
    assert_eq!(
        bridge,
        vec![fields(&[
            ("address", "192.168.88.1/24"),
            ("network", "192.168.88.0")
        ])]
    );

    assert_eq!(sim.command_count_for("/ip/firewall/nat/add"), 2);
    assert_eq!(sim.command_count_for("/ip/firewall/nat/remove"), 2);
    sim.shutdown().await;
}

/// Our client and librouteros against one emulator: each sees what the other did, with the
/// same ids, fields and error texts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_and_librouteros_see_the_same_router() {
    use double_natpmp::Router as _;
    use double_natpmp::{ApiConfig, Password};
    use double_natpmp::{DstNatRule, RouterApi, RouterError, RuleId};
    use double_natpmp_codec::natpmp::wire::Protocol;

    let Some(py) = python() else { return };
    let sim = RouterSim::start(RouterSimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = sim.local_addr().port();
    let ours = RouterApi::new(
        ApiConfig::new(
            sim.local_addr().to_string(),
            "admin",
            Password::new("admin"),
        ),
        2,
        Duration::from_secs(5),
    )
    .unwrap();

    // librouteros adds two rules; our listing shows both, and exactly its first on wg-proton.
    let added = step(&py, port, &["add"]).await;
    let ids: Vec<String> = added
        .get("ids")
        .list()
        .iter()
        .map(|j| j.str().to_owned())
        .collect();
    let all = ours.list_dstnat().await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let listed: Vec<_> = all
        .into_iter()
        .filter(|r| r.in_interface.as_deref() == Some("wg-proton"))
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let rule = &listed[0];
    assert_eq!(rule.id.as_ref().map(|i| i.as_str()), Some(ids[0].as_str()));
    let q = step(&py, port, &["query"]).await;
    let theirs = q.get("wg").list()[0].row();
    assert_eq!(rule.dst_port.as_deref(), Some(theirs["dst-port"].as_str()));
    assert_eq!(
        rule.to_addresses.as_deref(),
        Some(theirs["to-addresses"].as_str())
    );
    assert_eq!(rule.to_ports.as_deref(), Some(theirs["to-ports"].as_str()));
    assert_eq!(rule.comment.as_deref(), Some(theirs["comment"].as_str()));
    assert_eq!(rule.protocol.as_deref(), Some(theirs["protocol"].as_str()));

    // We add one; librouteros's full print shows it with the id our add returned.
    let id = ours
        .add_dstnat(&DstNatRule {
            protocol: Protocol::Tcp,
            in_interface: "wg-proton".into(),
            dst_port: 40002,
            to_address: "192.168.88.24".parse().unwrap(),
            to_port: 51413,
            comment: "double-natpmp:v1 tcp 192.168.88.24:51413 r=40002".into(),
        })
        .await
        .unwrap();
    let q = step(&py, port, &["query"]).await;
    let all: Vec<_> = q.get("all").list().iter().map(Json::row).collect();
    let mine = all
        .iter()
        .find(|r| r[".id"] == id.as_str())
        .unwrap_or_else(|| panic!("librouteros does not see {id}: {all:?}"));
    assert_eq!(mine["protocol"], "tcp");
    assert_eq!(mine["dst-port"], "40002");
    assert_eq!(mine["to-addresses"], "192.168.88.24");
    assert_eq!(mine["to-ports"], "51413");
    assert_eq!(mine["chain"], "dstnat");
    assert_eq!(mine["action"], "dst-nat");

    // We remove librouteros's rule; it is gone for librouteros, and removing it again is
    // "no such item" for both clients.
    ours.remove_rule(&RuleId::from(ids[0].clone()))
        .await
        .unwrap();
    let removed_again = step(&py, port, &["remove_missing", &ids[0]]).await;
    assert!(removed_again.get("error").str().starts_with("no such item"));
    match ours.remove_rule(&RuleId::from(ids[0].clone())).await {
        Err(RouterError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }

    // A bad password: the same router text reaches both.
    let bad = step(&py, port, &["badlogin"]).await;
    assert!(bad
        .get("error")
        .str()
        .contains("invalid user name or password"));
    let wrong = RouterApi::new(
        ApiConfig::new(
            sim.local_addr().to_string(),
            "admin",
            Password::new("wrong"),
        ),
        1,
        Duration::from_secs(5),
    )
    .unwrap();
    match wrong.info().await {
        Err(e @ RouterError::LoginRefused { .. }) => {
            assert!(
                e.to_string().contains("invalid user name or password"),
                "{e}"
            );
        }
        other => panic!("expected LoginRefused, got {other:?}"),
    }
    sim.shutdown().await;
}
