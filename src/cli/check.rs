//! `double-natpmp check`: diagnostics for a set-up that does not work.
//!
//! It reads the daemon's own configuration (the same environment variables) and checks, in
//! order: the configuration, that the RouterOS API answers, the login, the user's policies
//! (`read` by printing, `test` by `/ip/route/check`, `write` by adding and removing a test
//! rule), the VPN in-interface, that the upstream gateway answers NAT-PMP, the order of the
//! `srcnat` chain for UDP_SRCNAT (`check_srcnat.rs`: does a masquerade take a mapped client's
//! outbound UDP before our src-nat rule), and a test mapping made and removed on both layers.
//! Each step prints one line:
//!
//! ```text
//! OK   <what>
//! FAIL <what>: <error>. Fix: <what to do>
//! SKIP <what>: <why>
//! ```
//!
//! A step whose prerequisite failed is skipped. Exit 0 when every step is OK, 1 otherwise.
//! The test rule carries our comment marker (`mapping::router::rule`), so a daemon's reconciler removes
//! it if `check` dies before it does.

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::cli::bounded::bounded;
use crate::cli::check_internet;
use crate::cli::check_srcnat::{srcnat_order, Verdict};
use crate::cli::fixes::{router_fix, upstream_fix};
use crate::config::DaemonArgs;
use crate::daemon::{router_api, upstream_config, DaemonError};
use crate::mapping::router::rule::RuleComment;
use crate::mapping::store::key::MappingKey;
use crate::natpmp::upstream::{Upstream, UpstreamClient, UpstreamMap};
use crate::routeros::api::{DstNatRule, Router, RouterApi, RouterError};
use double_natpmp_codec::protocol::Protocol;
use double_natpmp_codec::routeros::wire::Command;

/// `double-natpmp check` options: the daemon's own settings.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The daemon's settings (the same environment variables).
    #[command(flatten)]
    pub daemon: DaemonArgs,

    /// Instead of the set-up steps: ask the running daemon (STATUS_ADDR, API_TOKEN) to prove
    /// its forwarded port from the internet now, with STUN, and explain the result.
    #[arg(long)]
    pub from_internet: bool,
}

/// The lifetime asked for the upstream test mapping; it is deleted at once anyway.
const TEST_LIFETIME: u32 = 60;

/// One line per step; remembers whether any failed.
#[derive(Debug, Default)]
struct Report {
    failed: bool,
}

impl Report {
    fn ok(&mut self, what: &str) {
        println!("OK   {what}");
    }

    fn fail(&mut self, what: &str, error: &str, fix: &str) {
        self.failed = true;
        println!(
            "FAIL {what}: {}. Fix: {fix}",
            error.trim_end().trim_end_matches('.')
        );
    }

    fn skip(&mut self, what: &str, why: &str) {
        self.failed = true;
        println!("SKIP {what}: {why}");
    }
}

/// Runs `check`.
pub(crate) async fn run(args: CheckArgs) -> ExitCode {
    if args.from_internet {
        return check_internet::run(&args.daemon).await;
    }
    let mut report = Report::default();
    run_steps(&args.daemon, &mut report).await;
    if report.failed {
        ExitCode::FAILURE
    } else {
        println!("all checks passed");
        ExitCode::SUCCESS
    }
}

async fn run_steps(args: &DaemonArgs, report: &mut Report) {
    // 1. Configuration.
    let router = match args
        .validate()
        .map_err(DaemonError::from)
        .and_then(|()| router_api(&args.router))
    {
        Ok(r) => {
            report.ok("configuration");
            r
        }
        Err(e) => {
            report.fail(
                "configuration",
                &e.to_string(),
                "correct the variable named above (double-natpmp --help lists them all)",
            );
            report.skip("everything else", "needs a usable configuration");
            return;
        }
    };
    let limit = args.router.mikrotik_api_timeout * 3;
    let address = router.address().to_owned();

    // 2. The API port answers TCP (no login yet), and our own address toward it.
    let what = format!("RouterOS API reachable at {address}");
    let local_ip = match tokio::time::timeout(
        args.router.mikrotik_api_timeout,
        tokio::net::TcpStream::connect(address.as_str()),
    )
    .await
    {
        Ok(Ok(stream)) => {
            report.ok(&what);
            stream.local_addr().ok().map(|a| a.ip())
        }
        Ok(Err(e)) => {
            let err = RouterError::Connection {
                address: address.clone(),
                message: e.to_string(),
            };
            report.fail(&what, &err.to_string(), &router_fix(&err));
            None
        }
        Err(_) => {
            let err = RouterError::Timeout {
                address: address.clone(),
                what: "TCP connect".into(),
                after: args.router.mikrotik_api_timeout,
            };
            report.fail(&what, &err.to_string(), &router_fix(&err));
            None
        }
    };
    let router_ok = match local_ip {
        Some(_) => router_steps(args, &router, limit, report).await,
        None => {
            report.skip(
                "login, policies, VPN interface",
                "needs the RouterOS API to be reachable",
            );
            None
        }
    };

    // 6. The upstream gateway (independent of the router API).
    let upstream = UpstreamClient::new(upstream_config(args));
    let gateway = args.vpn_gateway;
    let what = format!("VPN gateway {gateway} answers NAT-PMP");
    let upstream_ok = match upstream.external_address().await {
        Ok(reply) => {
            report.ok(&format!("{what} (public address {})", reply.address));
            true
        }
        Err(e) => {
            report.fail(&what, &e.to_string(), &upstream_fix(&e));
            false
        }
    };

    // 7. A test mapping on both layers.
    let Some(in_interface) = router_ok else {
        report.skip(
            "test mapping",
            "needs a working RouterOS login and VPN interface",
        );
        return;
    };
    match srcnat_order(&router, &in_interface, args.udp_srcnat, limit).await {
        Verdict::Ok(text) => report.ok(&text),
        Verdict::Fail { what, error, fix } => report.fail(&what, &error, &fix),
    }
    let target = match local_ip {
        Some(IpAddr::V4(ip)) => ip,
        // Reached over IPv6: the test rule only needs some address it can name.
        _ => Ipv4Addr::LOCALHOST,
    };
    test_mapping(
        args,
        &router,
        &upstream,
        upstream_ok,
        &in_interface,
        target,
        limit,
        report,
    )
    .await;
}

/// Login, `read` policy, the VPN in-interface and the route to the gateway. Returns the
/// in-interface when the router side is usable.
async fn router_steps(
    args: &DaemonArgs,
    router: &RouterApi,
    limit: Duration,
    report: &mut Report,
) -> Option<String> {
    let address = router.address().to_owned();
    let user = &args.router.mikrotik_api_user;

    // 3. Login and `read` (identity and resource are prints).
    let what = format!("login as '{user}' and read policy");
    match bounded(limit, &address, "login", router.info()).await {
        Ok(info) => report.ok(&format!(
            "{what} (router '{}', RouterOS {})",
            info.identity, info.version
        )),
        Err(e) => {
            report.fail(&what, &e.to_string(), &router_fix(&e));
            report.skip(
                "VPN interface, write policy",
                "needs a working RouterOS login",
            );
            return None;
        }
    }

    // 4. The VPN in-interface, and the route to the gateway (`test` policy).
    let gateway = *args.vpn_gateway.ip();
    let routed = bounded(
        limit,
        &address,
        "/ip/route/check",
        router.route_interface(gateway),
    )
    .await;
    match &args.mikrotik_in_interface {
        Some(name) => {
            let what = format!("VPN interface '{name}' (MIKROTIK_IN_INTERFACE) exists");
            let cmd = Command::new("/interface/print")
                .attr(".proplist", "name")
                .query(format!("name={name}"));
            match bounded(limit, &address, "/interface/print", router.run(cmd)).await {
                Ok(resp) if !resp.rows.is_empty() => report.ok(&what),
                Ok(_) => {
                    report.fail(
                        &what,
                        &format!("the router has no interface named '{name}'"),
                        "set MIKROTIK_IN_INTERFACE to the VPN interface's exact name (/interface print), or leave it unset to find it with /ip/route/check",
                    );
                    return None;
                }
                Err(e) => {
                    report.fail(&what, &e.to_string(), &router_fix(&e));
                    return None;
                }
            }
            let what = format!("route to {gateway} leaves through '{name}'");
            match routed {
                Ok(found) if &found == name => report.ok(&what),
                Ok(found) => report.fail(
                    &what,
                    &format!("the router sends traffic for {gateway} out '{found}'"),
                    &format!("route the gateway into the tunnel (/ip route add dst-address={gateway}/32 gateway={name}), or set MIKROTIK_IN_INTERFACE={found} if that is the VPN"),
                ),
                // Without `test` the route cannot be checked; the daemon does not need it
                // when MIKROTIK_IN_INTERFACE is set.
                Err(RouterError::PermissionDenied { .. }) => report.ok(&format!(
                    "{what}: not checked (no 'test' policy, not needed while MIKROTIK_IN_INTERFACE is set)"
                )),
                Err(e) => report.fail(
                    &what,
                    &e.to_string(),
                    &format!("route the gateway into the tunnel (/ip route add dst-address={gateway}/32 gateway={name})"),
                ),
            }
            Some(name.clone())
        }
        None => {
            let what = format!("VPN interface found with /ip/route/check toward {gateway}");
            match routed {
                Ok(found) => {
                    report.ok(&format!("{what}: '{found}'"));
                    Some(found)
                }
                Err(e @ RouterError::PermissionDenied { .. }) => {
                    report.fail(
                        &what,
                        &e.to_string(),
                        &format!("{}, or set MIKROTIK_IN_INTERFACE to the VPN interface (e.g. wg-proton)", router_fix(&e)),
                    );
                    None
                }
                Err(e) => {
                    report.fail(
                        &what,
                        &e.to_string(),
                        &format!("route the gateway into the tunnel (/ip route add dst-address={gateway}/32 gateway=<VPN interface>), or set MIKROTIK_IN_INTERFACE"),
                    );
                    None
                }
            }
        }
    }
}

/// Adds a test dst-nat rule (`write` policy), maps the same port upstream, then removes both.
#[allow(clippy::too_many_arguments)]
async fn test_mapping(
    args: &DaemonArgs,
    router: &RouterApi,
    upstream: &UpstreamClient,
    upstream_ok: bool,
    in_interface: &str,
    target: Ipv4Addr,
    limit: Duration,
    report: &mut Report,
) {
    let address = router.address().to_owned();
    // A router port no rule on the VPN interface uses, from the top of the range down (the
    // daemon allocates from the bottom), so a running daemon's mappings are not touched.
    let used: Vec<u16> = match bounded(
        limit,
        &address,
        "/ip/firewall/nat/print",
        router.list_dstnat(),
    )
    .await
    {
        Ok(rules) => rules
            .iter()
            .filter_map(|r| r.dst_port.as_deref()?.parse().ok())
            .collect(),
        Err(e) => {
            report.fail("list dst-nat rules", &e.to_string(), &router_fix(&e));
            return;
        }
    };
    let Some(port) = (args.router_port_min..=args.router_port_max)
        .rev()
        .find(|p| !used.contains(p))
    else {
        report.fail(
            "test mapping",
            "every port in ROUTER_PORT_MIN..ROUTER_PORT_MAX has a dst-nat rule",
            "remove stale rules or widen the range",
        );
        return;
    };
    let protocol = Protocol::Udp;
    let comment = RuleComment::new(
        MappingKey {
            client: target,
            protocol,
            internal_port: port,
        },
        port,
        TEST_LIFETIME,
    )
    .encode();
    let rule = DstNatRule {
        protocol,
        in_interface: in_interface.to_owned(),
        dst_port: port,
        to_address: target,
        to_port: port,
        comment,
    };
    let what = format!("write policy: add test dst-nat rule udp {in_interface}:{port}");
    let id = match bounded(
        limit,
        &address,
        "/ip/firewall/nat/add",
        router.add_dstnat(&rule),
    )
    .await
    {
        Ok(id) => {
            report.ok(&what);
            id
        }
        Err(e) => {
            report.fail(&what, &e.to_string(), &router_fix(&e));
            if upstream_ok {
                report.skip("upstream test mapping", "needs the router test rule");
            }
            return;
        }
    };

    if upstream_ok {
        let what = format!("upstream test mapping of port {port}");
        match upstream
            .map(UpstreamMap {
                protocol,
                internal_port: port,
                suggested_external_port: port,
                lifetime: TEST_LIFETIME,
            })
            .await
        {
            Ok(grant) => {
                report.ok(&format!(
                    "{what}: external port {} for {}s",
                    grant.external_port, grant.lifetime
                ));
                let what = format!("upstream test mapping of port {port} deleted");
                match upstream.map(UpstreamMap::delete(protocol, port)).await {
                    Ok(_) => report.ok(&what),
                    Err(e) => report.fail(
                        &what,
                        &e.to_string(),
                        "nothing to do: the gateway drops it when its lifetime ends",
                    ),
                }
            }
            Err(e) => report.fail(&what, &e.to_string(), &upstream_fix(&e)),
        }
    } else {
        report.skip(
            "upstream test mapping",
            "needs the VPN gateway to answer NAT-PMP",
        );
    }

    let what = format!("test dst-nat rule {id} removed");
    match bounded(
        limit,
        &address,
        "/ip/firewall/nat/remove",
        router.remove_rule(&id),
    )
    .await
    {
        Ok(()) => report.ok(&what),
        // A running daemon's reconciler may have removed it already: it carries our marker.
        Err(RouterError::NotFound { .. }) => report.ok(&format!("{what} (already gone)")),
        Err(e) => report.fail(
            &what,
            &e.to_string(),
            &format!("remove it by hand (/ip firewall nat remove [find comment~\"^double-natpmp:\" dst-port={port}]); a running daemon removes it too"),
        ),
    }
}
