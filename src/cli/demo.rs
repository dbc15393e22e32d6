//! `double-natpmp demo`: the real daemon against the built-in emulators on loopback.
//!
//! A RouterOS API emulator and a ProtonVPN-like NAT-PMP gateway emulator start on 127.0.0.1
//! (random ports); the daemon connects to them exactly as it would to a MikroTik and a VPN
//! gateway (API login, in-interface discovery with `/ip/route/check`, start reconcile), and
//! listens for NAT-PMP on `--listen`. Every change of the emulated router's dst-nat rules and of
//! the gateway's mappings is printed, so a newcomer sees both NAT layers being made and removed.
//! The status page, the API and `/metrics` are served on `--status-addr` (STATUS_ADDR,
//! 127.0.0.1:8080 by default), so the mapping also appears in a browser.
//!
//! A STUN server emulator with a second address (127.0.0.2) stands in for the internet, and
//! the reachability check is on: at start the daemon proves a test mapping of its own through
//! both emulated NAT layers (`double_natpmp_emulators::path`), so the page says "reachable from the internet:
//! yes".

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::cli::args::{daemon_args_from, DemoArgs};
use crate::config::value::loopback_if_unspecified;
use crate::config::DaemonArgs;
use crate::daemon::{self, DaemonError};
use crate::shutdown::ShutdownTrigger;
use double_natpmp_emulators::gateway::{Gateway, GatewayConfig};
use double_natpmp_emulators::path::EmulatedPath;
use double_natpmp_emulators::routeros::{RouterSim, RouterSimConfig, SimRoute};
use double_natpmp_emulators::stun::{StunConfig, StunServer};

/// The VPN interface name the emulated router has.
const VPN_INTERFACE: &str = "wg-proton";
/// The emulated VPN exit address (TEST-NET-2, RFC 5737: documentation only, never contacted).
const EXIT_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// Why the demo could not run.
#[derive(Debug, Error)]
pub(crate) enum DemoError {
    /// An emulator could not start.
    #[error("cannot start the {what} emulator: {source}")]
    Emulator {
        /// Which one.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The daemon could not start (for example, the NAT-PMP port is taken).
    #[error("{0}")]
    Daemon(#[from] DaemonError),
    /// The daemon's settings could not be built.
    #[error("demo settings: {0}")]
    Settings(String),
}

/// The daemon's settings for the demo: everything on loopback, short timeouts.
fn daemon_args(
    listen: SocketAddr,
    status: SocketAddr,
    router: SocketAddr,
    gateway: SocketAddr,
    stun: SocketAddr,
) -> Result<DaemonArgs, DemoError> {
    let flags = [
        "double-natpmp".to_owned(),
        format!("--vpn-gateway={gateway}"),
        format!("--mikrotik-api-address={router}"),
        "--mikrotik-api-user=admin".to_owned(),
        "--mikrotik-api-password=admin".to_owned(),
        format!("--listen-addr={listen}"),
        "--allowed-clients=127.0.0.0/8".to_owned(),
        "--upstream-timeout=1s".to_owned(),
        "--shutdown-timeout=5s".to_owned(),
        format!("--status-addr={status}"),
        "--reachability-check=true".to_owned(),
        format!("--stun-servers={stun}"),
    ];
    daemon_args_from(flags).map_err(|e| DemoError::Settings(e.to_string()))
}

fn describe_rule(fields: &BTreeMap<String, String>) -> String {
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("-");
    format!(
        "{} in-interface={} dst-port={} -> {}:{}  comment=\"{}\"",
        get("protocol"),
        get("in-interface"),
        get("dst-port"),
        get("to-addresses"),
        get("to-ports"),
        get("comment")
    )
}

/// Runs the demo until Ctrl-C (or `--duration`).
pub(crate) async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let loopback: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut router_config = RouterSimConfig::default();
    // The route /ip/route/check finds toward the emulated gateway on 127.0.0.1.
    router_config.routes.insert(
        0,
        SimRoute {
            dst: Ipv4Addr::new(127, 0, 0, 0),
            prefix_len: 8,
            interface: VPN_INTERFACE.to_owned(),
            gateway: Ipv4Addr::LOCALHOST,
        },
    );
    let router = Arc::new(
        RouterSim::start(router_config, loopback)
            .await
            .map_err(|source| DemoError::Emulator {
                what: "RouterOS API",
                source,
            })?,
    );
    let gateway = Gateway::start(
        GatewayConfig {
            external_address: EXIT_ADDRESS,
            ..GatewayConfig::default()
        },
        loopback,
    )
    .await
    .map_err(|source| DemoError::Emulator {
        what: "NAT-PMP gateway",
        source,
    })?;
    let gateway = Arc::new(gateway);
    let stun = StunServer::start_behind(
        StunConfig::default(),
        EmulatedPath::new(Arc::clone(&router), Arc::clone(&gateway), EXIT_ADDRESS),
    )
    .await
    .map_err(|source| DemoError::Emulator {
        what: "STUN server",
        source,
    })?;

    let (stop, stopped) = ShutdownTrigger::new();
    let daemon_args = daemon_args(
        args.listen,
        args.status_addr,
        router.local_addr(),
        gateway.local_addr(),
        stun.primary(),
    )?;
    let running = daemon::start(daemon_args, stopped).await?;
    let listen = running.listen;
    println!();
    println!("double-natpmp demo");
    println!(
        "  RouterOS API emulator   {} (user admin, password admin; VPN interface {VPN_INTERFACE})",
        router.local_addr()
    );
    println!("  VPN gateway emulator    {} (ProtonVPN-like: exit {EXIT_ADDRESS}, lifetime <= 60 s, random ports)", gateway.local_addr());
    println!(
        "  STUN server emulator    {} (RFC 5780: other address {}; the \"internet\" of the reachability check)",
        stun.primary(),
        stun.other()
    );
    println!("  daemon (NAT-PMP)        {listen}");
    if let Some(status) = running.status {
        let page = loopback_if_unspecified(status);
        println!("  status page             http://{page}/  (API http://{page}/api/v1/mappings, metrics http://{page}/metrics)");
    }
    println!();
    println!("Ask it for a port from another terminal, for example:");
    println!("  natpmpc -g {} -a 0 6881 tcp 60", listen.ip());
    println!("  double-natpmp client --gateway {listen} map tcp 6881 --lifetime 60");
    println!("Changes of the router's dst-nat rules and the gateway's mappings show up below.");
    println!("Ctrl-C stops the demo (the daemon removes its mappings first).");
    println!();

    let mut signal = daemon::shutdown_on_signals();
    let until = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    let mut rules: BTreeMap<String, String> = BTreeMap::new();
    let mut mappings: BTreeMap<String, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut until => break,
            _ = signal.recv() => break,
        }
        show_changes(&router, &gateway, &mut rules, &mut mappings);
    }
    stop.trigger();
    match running.done.await {
        Ok(result) => result?,
        Err(e) => return Err(DemoError::Settings(format!("the daemon task failed: {e}"))),
    }
    show_changes(&router, &gateway, &mut rules, &mut mappings);
    println!(
        "demo stopped: {} router rule(s) and {} gateway mapping(s) left",
        router.nat_rules().len(),
        gateway.mappings().len()
    );
    Ok(())
}

/// Prints what was added to or removed from either layer since the last call.
fn show_changes(
    router: &RouterSim,
    gateway: &Gateway,
    rules: &mut BTreeMap<String, String>,
    mappings: &mut BTreeMap<String, String>,
) {
    let now_rules: BTreeMap<String, String> = router
        .nat_rules()
        .into_iter()
        .map(|r| (r.id.clone(), describe_rule(&r.fields)))
        .collect();
    diff("router   dst-nat rule", rules, now_rules);
    let now_maps: BTreeMap<String, String> = gateway
        .mappings()
        .into_iter()
        .map(|m| {
            (
                format!("{} {}", m.protocol, m.internal_port),
                format!(
                    "{} {EXIT_ADDRESS}:{} -> router port {} (for {} s)",
                    m.protocol,
                    m.external_port,
                    m.internal_port,
                    m.expires_in.as_secs()
                ),
            )
        })
        .collect();
    // Only additions and removals: a renewal changes "for N s" but is not news.
    let added: Vec<_> = now_maps
        .keys()
        .filter(|k| !mappings.contains_key(*k))
        .cloned()
        .collect();
    let removed: Vec<_> = mappings
        .keys()
        .filter(|k| !now_maps.contains_key(*k))
        .cloned()
        .collect();
    for k in added {
        println!("+ gateway  mapping       {}", now_maps[&k]);
    }
    for k in removed {
        println!("- gateway  mapping       {}", mappings[&k]);
    }
    *mappings = now_maps;
}

fn diff(label: &str, old: &mut BTreeMap<String, String>, now: BTreeMap<String, String>) {
    for (id, text) in &now {
        if old.get(id) != Some(text) {
            println!("+ {label} {id}: {text}");
        }
    }
    for (id, text) in old.iter() {
        if !now.contains_key(id) {
            println!("- {label} {id}: {text}");
        }
    }
    *old = now;
}
