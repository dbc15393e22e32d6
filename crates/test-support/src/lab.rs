//! A network-namespace lab with real peers, after docs/lab.md §1:
//!
//! ```text
//!  inet ns                 vpn ns (gateway)                 router ns (MikroTik + daemon)      lan ns
//!  inet0 198.51.101.1 <--> vpn-wan 198.51.101.7
//!                          vpn-r   10.2.0.1:5351 <------->  rtr-v 10.2.0.2 (default via .1)
//!                                                           rtr-l 192.168.88.250 <---------> lan0 192.168.88.10
//! ```
//!
//! Every namespace name carries a per-lab prefix, so tests run in parallel. Dropping the [`Lab`]
//! kills every process it started and every process left in its namespaces, then deletes the
//! namespaces (their veths and nft tables go with them), also when a test panics.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The four hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// An "internet" peer.
    Inet,
    /// The VPN gateway (miniupnpd or our gateway emulator).
    Vpn,
    /// The MikroTik stand-in, where the daemon runs.
    Router,
    /// The LAN client.
    Lan,
}

impl Host {
    fn suffix(self) -> &'static str {
        match self {
            Host::Inet => "inet",
            Host::Vpn => "vpn",
            Host::Router => "rtr",
            Host::Lan => "lan",
        }
    }
}

/// Addresses of the lab.
pub const INET_IP: &str = "198.51.101.1";
/// The VPN's public address (miniupnpd refuses reserved ranges, docs/lab.md pitfall 1).
pub const EXT_IP: &str = "198.51.101.7";
/// The VPN gateway's tunnel-side address.
pub const GW_IP: &str = "10.2.0.1";
/// The router's tunnel address.
pub const TUNNEL_IP: &str = "10.2.0.2";
/// The router's LAN address, where the daemon listens.
pub const ROUTER_LAN_IP: &str = "192.168.88.250";
/// The LAN client.
pub const CLIENT_IP: &str = "192.168.88.10";
/// The router emulator's first NAT rule (`*1`): the masquerade of the tunnel interface.
pub const MASQUERADE_RULE: &str =
    "chain=srcnat,action=masquerade,out-interface=rtr-v,comment=masquerade the tunnel";

/// Whether this process may build namespaces. Under CI=true a lab test must run: a missing
/// capability fails the test. Locally it prints a loud notice and the caller returns early.
pub fn available(test: &str) -> bool {
    let root = crate::is_root();
    let tools = ["ip", "nft", "natpmpc"].iter().all(|t| which(t).is_some());
    if root && tools {
        return true;
    }
    let why = if !root {
        "needs root for network namespaces"
    } else {
        "needs ip, nft and natpmpc (see README: the test command installs them)"
    };
    crate::skip::skip(test, why)
}

/// The path of a program on PATH or in /usr/sbin.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file());
    found
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running lab; see the module docs.
pub struct Lab {
    prefix: String,
    children: Vec<Child>,
    daemon_pid: Option<u32>,
    /// The daemon binary [`Lab::start_daemon`] runs: cargo's build unless [`Lab::up_with`]
    /// names another (an ARM build run through qemu-user).
    daemon: PathBuf,
    /// Scratch folder for configs, pid files and logs.
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// Builds the four namespaces, their links, addresses, routes and nft skeletons.
    pub fn up() -> Lab {
        Lab::up_with(Path::new(daemon_bin()))
    }

    /// [`Lab::up`], with `daemon` as the binary [`Lab::start_daemon`] runs. The emulators stay
    /// cargo's build: only the daemon is under test.
    pub fn up_with(daemon: &Path) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("dnp{}x{}", std::process::id() % 100_000, n);
        let lab = Lab {
            prefix,
            children: Vec::new(),
            daemon_pid: None,
            daemon: daemon.to_path_buf(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for h in [Host::Inet, Host::Vpn, Host::Router, Host::Lan] {
            // Leftovers of a crashed run with the same name are removed first.
            let _ = Command::new("ip")
                .args(["netns", "del", &lab.ns(h)])
                .output();
            run("ip", &["netns", "add", &lab.ns(h)]);
            lab.sh(h, "ip link set lo up");
        }
        let veth = |a: &str, ha: Host, b: &str, hb: Host| {
            run(
                "ip",
                &[
                    "link",
                    "add",
                    a,
                    "netns",
                    &lab.ns(ha),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    b,
                    "netns",
                    &lab.ns(hb),
                ],
            );
        };
        veth("inet0", Host::Inet, "vpn-wan", Host::Vpn);
        veth("vpn-r", Host::Vpn, "rtr-v", Host::Router);
        veth("rtr-l", Host::Router, "lan0", Host::Lan);
        lab.sh(
            Host::Inet,
            &format!("ip addr add {INET_IP}/24 dev inet0 && ip link set inet0 up"),
        );
        lab.sh(
            Host::Vpn,
            &format!(
                "ip addr add {EXT_IP}/24 dev vpn-wan && ip link set vpn-wan up && \
                 ip addr add {GW_IP}/24 dev vpn-r && ip link set vpn-r up && \
                 sysctl -qw net.ipv4.ip_forward=1"
            ),
        );
        lab.sh(
            Host::Router,
            &format!(
                "ip addr add {TUNNEL_IP}/24 dev rtr-v && ip link set rtr-v up && \
                 ip addr add {ROUTER_LAN_IP}/24 dev rtr-l && ip link set rtr-l up && \
                 ip route add default via {GW_IP} && sysctl -qw net.ipv4.ip_forward=1"
            ),
        );
        lab.sh(
            Host::Lan,
            &format!(
                "ip addr add {CLIENT_IP}/24 dev lan0 && ip link set lan0 up && \
                 ip route add default via {ROUTER_LAN_IP}"
            ),
        );
        // The gateway's skeleton that miniupnpd fills (docs/lab.md §2), and the router's NAT table whose
        // dstnat and srcnat chains stand for the MikroTik's /ip/firewall/nat chains: the
        // router emulator mirrors its rules into them in table order, the tunnel's masquerade
        // included (see start_router_emulator).
        lab.nft(
            Host::Vpn,
            "table inet filter {
               chain forward {
                 type filter hook forward priority 0; policy drop;
                 ct state established,related accept
                 jump miniupnpd
               }
               chain miniupnpd {
               }
               chain prerouting {
                 type nat hook prerouting priority -100; policy accept;
                 jump prerouting_miniupnpd
               }
               chain postrouting {
                 type nat hook postrouting priority 100; policy accept;
                 jump postrouting_miniupnpd
               }
               chain prerouting_miniupnpd {
               }
               chain postrouting_miniupnpd {
               }
             }",
        );
        lab.nft(
            Host::Router,
            "table ip mikrotik {
               chain dstnat {
                 type nat hook prerouting priority -100; policy accept;
               }
               chain srcnat {
                 type nat hook postrouting priority 100; policy accept;
               }
             }",
        );
        lab
    }

    /// The namespace name of a host.
    pub fn ns(&self, h: Host) -> String {
        format!("{}-{}", self.prefix, h.suffix())
    }

    /// Runs a shell command in a host and panics with its output if it fails.
    pub fn sh(&self, h: Host, script: &str) -> Output {
        let out = self.exec(h, &["sh", "-c", script]);
        assert!(
            out.status.success(),
            "in {}: {script}\n{}{}",
            self.ns(h),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs a program in a host and returns its output, whatever its status.
    pub fn exec(&self, h: Host, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(h)])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec")
    }

    /// Runs curl in `h` with `args` (the URL among them), waiting at most `max_seconds`;
    /// returns (HTTP status, body).
    pub fn curl(&self, h: Host, args: &[&str], max_seconds: u32) -> (u16, String) {
        let max = max_seconds.to_string();
        let mut argv = vec!["curl", "-sS", "--max-time", &max, "-w", "\n%{http_code}"];
        argv.extend_from_slice(args);
        let out = self.exec(h, &argv);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {args:?} printed no status: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, body.to_owned())
    }

    /// Loads an nft ruleset into a host.
    pub fn nft(&self, h: Host, ruleset: &str) {
        let path = self.dir.path().join(format!("{}.nft", h.suffix()));
        std::fs::write(&path, ruleset).expect("write nft file");
        self.sh(h, &format!("nft -f {}", path.display()));
    }

    /// Starts a long-running program in a host; it is killed when the lab drops. Its standard
    /// error (and output) lines arrive on the returned channel.
    pub fn spawn(
        &mut self,
        h: Host,
        argv: &[&str],
        envs: &[(&str, &str)],
    ) -> mpsc::Receiver<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(h)])
            .args(argv)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        let (tx, rx) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            let tag = format!("[{}]", argv[0].rsplit('/').next().unwrap_or(argv[0]));
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("{tag} {line}");
                    if tx.send(line).is_err() {
                        // Nobody listens any more; keep draining so the child never blocks.
                    }
                }
            });
        }
        self.children.push(child);
        rx
    }

    /// Starts miniupnpd as the VPN gateway (docs/lab.md §2) and waits until it answers NAT-PMP.
    pub fn start_miniupnpd(&mut self, allow: &str) {
        let dir = self.dir.path();
        let conf = dir.join("miniupnpd.conf");
        let leases = dir.join("upnp.leases");
        let pid = dir.join("miniupnpd.pid");
        std::fs::write(
            &conf,
            format!(
                "ext_ifname=vpn-wan\nlistening_ip=vpn-r\nenable_natpmp=yes\nenable_upnp=no\n\
                 ipv6_disable=yes\nsecure_mode=yes\nsystem_uptime=no\nmin_lifetime=120\n\
                 max_lifetime=86400\nlease_file={}\nuuid=6c61622d-6e61-4470-8d70-000000000001\n\
                 allow {allow}\ndeny 0-65535 0.0.0.0/0 0-65535\n",
                leases.display()
            ),
        )
        .expect("write miniupnpd.conf");
        let miniupnpd = which("miniupnpd").expect("miniupnpd is not installed");
        let out = self.exec(
            Host::Vpn,
            &[
                miniupnpd.to_str().unwrap_or("miniupnpd"),
                "-f",
                conf.to_str().unwrap_or_default(),
                "-P",
                pid.to_str().unwrap_or_default(),
            ],
        );
        assert!(out.status.success(), "miniupnpd did not start: {out:?}");
        self.wait_udp_listener(Host::Vpn, &format!("{GW_IP}:5351"));
    }

    /// Waits (bounded) until a UDP socket is bound at `addr` in host `h`.
    pub fn wait_udp_listener(&self, h: Host, addr: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.exec(h, &["ss", "-Hlun"]);
            if String::from_utf8_lossy(&out.stdout).contains(addr) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on udp {addr} in {}",
                self.ns(h)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs natpmpc in the LAN host (line-buffered, docs/lab.md pitfall 7) with a time limit.
    pub fn natpmpc(&self, args: &[&str]) -> NatpmpcOutput {
        let mut argv = vec!["timeout", "20", "stdbuf", "-oL", "natpmpc"];
        argv.extend_from_slice(args);
        let out = self.exec(Host::Lan, &argv);
        NatpmpcOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Lab {
    /// Starts our RouterOS API emulator in the router namespace on 127.0.0.1:8728 (user admin,
    /// password admin), mirroring its dst-nat rules into the router's `table ip mikrotik` chain
    /// `dstnat` and its src-nat rules into `srcnat`, in table order. Its interface `rtr-v` is
    /// the VPN interface; `/ip/route/check` finds it toward the gateway. Its NAT table starts
    /// with the tunnel's masquerade ([`MASQUERADE_RULE`]), as a MikroTik behind a VPN has it.
    pub fn start_router_emulator(&mut self, extra: &[&str]) -> mpsc::Receiver<String> {
        let ns = self.ns(Host::Router);
        let mut argv = vec![
            daemon_bin(),
            "sim-router",
            "--listen",
            "127.0.0.1:8728",
            "--interface",
            "rtr-v:wg",
            "--interface",
            "rtr-l",
            "--route",
            "10.2.0.0/24,rtr-v,10.2.0.1",
            "--route",
            "192.168.88.0/24,rtr-l,192.168.88.250",
            "--nft-netns",
            &ns,
            "--nat-rule",
            MASQUERADE_RULE,
        ];
        argv.extend_from_slice(extra);
        let logs = self.spawn(Host::Router, &argv, &[]);
        wait_for_line(
            &logs,
            "RouterOS API emulator listening",
            Duration::from_secs(10),
        );
        logs
    }

    /// Starts the daemon in the router namespace (listening on the router's LAN address, the
    /// gateway at 10.2.0.1, the router emulator at 127.0.0.1:8728) and waits until it serves.
    pub fn start_daemon(&mut self, extra: &[(&str, &str)]) -> mpsc::Receiver<String> {
        let mut env = vec![
            ("VPN_GATEWAY", GW_IP),
            ("MIKROTIK_API_ADDRESS", "127.0.0.1:8728"),
            ("MIKROTIK_API_USER", "admin"),
            ("MIKROTIK_API_PASSWORD", "admin"),
            ("LISTEN_ADDR", "192.168.88.250:5351"),
            ("ALLOWED_CLIENTS", "192.168.88.0/24"),
            ("LOG_LEVEL", "debug"),
        ];
        env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        env.extend_from_slice(extra);
        let daemon = self.daemon.to_string_lossy().into_owned();
        let logs = self.spawn(Host::Router, &[&daemon], &env);
        // `ip netns exec` execs the program, so the child is the daemon itself.
        self.daemon_pid = self.children.last().map(Child::id);
        wait_for_line(&logs, "NAT-PMP server listening", Duration::from_secs(20));
        self.wait_udp_listener(Host::Router, &format!("{ROUTER_LAN_IP}:5351"));
        logs
    }

    /// The PID of the daemon [`Lab::start_daemon`] started, while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon_pid
    }

    /// Sends SIGTERM to the daemon this lab started (and no other process) and waits, bounded,
    /// until it exits; returns its exit code.
    pub fn stop_daemon(&mut self) -> Option<i32> {
        let pid = self.daemon_pid.take().expect("no daemon started");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "cannot signal the daemon {pid}");
        let child = self
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("the daemon is our child");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the daemon") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon this lab started with SIGKILL (no cleanup at all, as a crash or an OOM
    /// kill would) and waits until it is gone.
    pub fn kill_daemon(&mut self) {
        let pid = self.daemon_pid.take().expect("no daemon started");
        let child = self
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("the daemon is our child");
        child.kill().expect("SIGKILL the daemon");
        child.wait().expect("reap the daemon");
    }

    /// Restarts miniupnpd so that it has lost every mapping: stops the one this lab started
    /// (by its pid file), removes its lease file and its rules, and starts it again; its epoch
    /// starts again at 0.
    pub fn restart_miniupnpd_losing_state(&mut self, allow: &str) {
        let dir = self.dir.path().to_owned();
        let pid = std::fs::read_to_string(dir.join("miniupnpd.pid"))
            .expect("miniupnpd's pid file")
            .trim()
            .to_owned();
        let status = Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "cannot stop miniupnpd {pid}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "miniupnpd {pid} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(dir.join("upnp.leases"));
        let _ = std::fs::remove_file(dir.join("miniupnpd.pid"));
        for chain in ["prerouting_miniupnpd", "postrouting_miniupnpd", "miniupnpd"] {
            self.exec(
                Host::Vpn,
                &["nft", "flush", "chain", "inet", "filter", chain],
            );
        }
        self.start_miniupnpd(allow);
    }

    /// Drops every NAT-PMP datagram to the gateway (an outage that says nothing) until
    /// [`Lab::end_natpmp_outage`].
    pub fn begin_natpmp_outage(&self) {
        self.nft(
            Host::Vpn,
            "table inet outage {
               chain input {
                 type filter hook input priority -10; policy accept;
                 udp dport 5351 drop
               }
             }",
        );
    }

    /// Ends [`Lab::begin_natpmp_outage`].
    pub fn end_natpmp_outage(&self) {
        let out = self.exec(Host::Vpn, &["nft", "delete", "table", "inet", "outage"]);
        assert!(out.status.success(), "cannot end the outage: {out:?}");
    }

    /// Lets the VPN gateway carry the tunnel's own outbound traffic to the internet, as a VPN
    /// exit does: forwarded from `vpn-r` to `vpn-wan` and masqueraded behind the exit address
    /// (after miniupnpd's own postrouting rules, which come first).
    pub fn allow_tunnel_egress(&self) {
        self.sh(
            Host::Vpn,
            "nft insert rule inet filter forward iifname vpn-r oifname vpn-wan accept && \
             nft add rule inet filter postrouting oifname vpn-wan ip saddr 10.2.0.0/24 masquerade",
        );
    }

    /// [`Lab::allow_tunnel_egress`], but the tunnel's traffic leaves from `exit` (added to
    /// `vpn-wan`) instead of [`EXT_IP`], which the gateway keeps reporting: a VPN whose exit
    /// address is not the one its NAT-PMP reports. Answers to `exit` come back (the internet
    /// host's ARP for it is answered on `vpn-wan`).
    pub fn allow_tunnel_egress_from(&self, exit: &str) {
        self.sh(
            Host::Vpn,
            &format!(
                "ip addr add {exit}/24 dev vpn-wan && \
                 nft insert rule inet filter forward iifname vpn-r oifname vpn-wan accept && \
                 nft add rule inet filter postrouting oifname vpn-wan ip saddr 10.2.0.0/24 snat ip to {exit}"
            ),
        );
    }

    /// Starts our NAT-PMP gateway emulator at 10.2.0.1:5351 in the VPN namespace.
    pub fn start_gateway_emulator(&mut self, extra: &[&str]) -> mpsc::Receiver<String> {
        let mut argv = vec![daemon_bin(), "sim-gateway", "--listen", "10.2.0.1:5351"];
        argv.extend_from_slice(extra);
        let logs = self.spawn(Host::Vpn, &argv, &[]);
        wait_for_line(&logs, "gateway emulator listening", Duration::from_secs(10));
        logs
    }
}

/// What natpmpc printed.
#[derive(Debug)]
pub struct NatpmpcOutput {
    /// Exit status 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl NatpmpcOutput {
    /// "Public IP address : a.b.c.d".
    pub fn public_address(&self) -> Option<String> {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("Public IP address : "))
            .map(|s| s.trim().to_owned())
    }

    /// "Mapped public port P protocol X to local port L liftime T" -> (P, L, T).
    pub fn mapping(&self) -> Option<(u16, u16, u32)> {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with("Mapped public port"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let public = words.get(3)?.parse().ok()?;
        let local = words.get(9)?.parse().ok()?;
        let lifetime = words.get(11)?.parse().ok()?;
        Some((public, local, lifetime))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in [Host::Lan, Host::Router, Host::Vpn, Host::Inet] {
            let ns = self.ns(h);
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

fn run(prog: &str, args: &[&str]) {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for a line containing `needle` on `rx`, up to `limit`.
pub fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(_) => panic!("no line containing {needle:?} within {limit:?}"),
        }
    }
}

pub use crate::daemon_bin;

/// One empty network namespace with only loopback up, deleted (with every process in it) on
/// drop: a private 127.0.0.1 where fixed ports such as 5351 are free.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
}

impl Netns {
    /// Creates it.
    pub fn new() -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("dnp{}x{}-solo", std::process::id() % 100_000, n);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        run(
            "ip",
            &["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"],
        );
        ns
    }

    /// A command that runs `argv` inside the namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// Runs natpmpc inside the namespace (line-buffered, docs/lab.md pitfall 7) with a time limit.
    pub fn natpmpc(&self, args: &[&str]) -> NatpmpcOutput {
        let mut argv = vec!["timeout", "20", "stdbuf", "-oL", "natpmpc"];
        argv.extend_from_slice(args);
        let out = self.command(&argv).output().expect("natpmpc");
        NatpmpcOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `natpmpc -g 127.0.0.1 -a 0 6881 tcp 60` in `ns` gets a mapping from the demo (the daemon
/// against the built-in emulators on 127.0.0.1:5351).
#[track_caller]
pub fn assert_demo_maps_6881(ns: &Netns) {
    let out = ns.natpmpc(&["-g", "127.0.0.1", "-a", "0", "6881", "tcp", "60"]);
    let text = &out.stdout;
    assert!(out.success, "natpmpc failed: {text}{}", out.stderr);
    assert!(text.contains("Public IP address : 198.51.100.7"), "{text}");
    let mapped = text
        .lines()
        .find(|l| l.starts_with("Mapped public port"))
        .unwrap_or_else(|| panic!("no mapping printed: {text}"));
    assert!(mapped.contains("to local port 6881 liftime 60"), "{mapped}");
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
