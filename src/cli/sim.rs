//! Hidden subcommands that run one emulator alone, so tests can put it in a network namespace.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::cli::args::{SimGatewayArgs, SimRouterArgs};
use crate::shutdown::Shutdown;
use double_natpmp_emulators::gateway::{Gateway, GatewayConfig, GatewayMapping};
use double_natpmp_emulators::routeros::{NftMirror, RouterSim, RouterSimConfig, SimRoute, SimUser};

/// Runs the gateway emulator until `stop` fires.
pub(crate) async fn gateway(args: SimGatewayArgs, mut stop: Shutdown) -> std::io::Result<()> {
    let config = GatewayConfig {
        external_address: args.external_address,
        max_lifetime: args.max_lifetime,
        quota_per_peer: args.quota,
        ..GatewayConfig::default()
    };
    let gw = Gateway::start(config, args.listen).await?;
    tracing::info!(listen = %gw.local_addr(), "NAT-PMP gateway emulator listening");
    tokio::select! {
        _ = stop.recv() => {}
        () = log_mapping_changes(&gw) => {}
    }
    gw.shutdown().await;
    Ok(())
}

/// Logs every mapping the gateway adds or removes (a renewal is neither), with the number left:
/// a test outside this process sees the gateway's table in these lines.
async fn log_mapping_changes(gw: &Gateway) {
    // (peer, protocol, internal port, external port): what makes a mapping news.
    let key = |m: &GatewayMapping| (m.peer, m.protocol, m.internal_port, m.external_port);
    let mut seen: Vec<GatewayMapping> = Vec::new();
    loop {
        let mut now = Vec::new();
        // Re-checked on every change of the table; the limit only bounds one wait.
        let changed = gw
            .wait_for_mappings(
                |m| {
                    now = m.to_vec();
                    !now.iter().map(key).eq(seen.iter().map(key))
                },
                Duration::from_secs(3600),
            )
            .await;
        if !changed {
            continue;
        }
        let added = now
            .iter()
            .filter(|m| !seen.iter().any(|s| key(s) == key(m)));
        let removed = seen
            .iter()
            .filter(|s| !now.iter().any(|m| key(m) == key(s)));
        for (change, m) in added
            .map(|m| ("added", m))
            .chain(removed.map(|m| ("removed", m)))
        {
            tracing::info!(peer = %m.peer, protocol = %m.protocol, internal_port = m.internal_port,
                external_port = m.external_port, mappings = now.len(),
                "gateway emulator: mapping {change}");
        }
        seen = now;
    }
}

/// Runs the RouterOS emulator until `stop` fires.
pub(crate) async fn router(args: SimRouterArgs, mut stop: Shutdown) -> std::io::Result<()> {
    let policies: Vec<&str> = args.policies.split(',').map(str::trim).collect();
    // `--interface name[:type]`: the type /interface/print reports (e.g. `rtr-v:wg`).
    let mut names = Vec::new();
    let mut types = Vec::new();
    for spec in &args.interfaces {
        match spec.split_once(':') {
            Some((name, kind)) => {
                names.push(name.to_owned());
                types.push((name.to_owned(), kind.to_owned()));
            }
            None => names.push(spec.clone()),
        }
    }
    let mut config = RouterSimConfig {
        users: vec![SimUser::new(&args.user, args.password.expose(), &policies)],
        interfaces: names.clone(),
        interface_types: types,
        ..RouterSimConfig::default()
    };
    if !args.routes.is_empty() {
        config.routes = args
            .routes
            .iter()
            .map(|r| parse_route(r))
            .collect::<Result<_, _>>()?;
    }
    for spec in &args.interface_lists {
        let (list, interface) = spec.split_once('=').ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("--interface-list {spec:?}: expected LIST=interface"),
            )
        })?;
        config
            .interface_lists
            .push((list.to_owned(), interface.to_owned()));
    }
    if !args.addresses.is_empty() {
        config.addresses = args
            .addresses
            .iter()
            .map(|spec| {
                spec.split_once(',')
                    .map(|(a, i)| (a.to_owned(), i.to_owned()))
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!("--address {spec:?}: expected address/len,interface"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(netns) = &args.nft_netns {
        config.nft_mirror = Some(NftMirror {
            netns: netns.clone(),
            table: args.nft_table.clone(),
            chain: args.nft_chain.clone(),
            srcnat_chain: Some(args.nft_srcnat_chain.clone()),
            interface_map: names.iter().map(|i| (i.clone(), i.clone())).collect(),
        });
    }
    let sim = RouterSim::start(config, args.listen).await?;
    for spec in &args.nat_rules {
        let fields: Vec<(&str, &str)> = spec
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let id = sim.insert_nat_rule(&fields);
        tracing::info!(%id, rule = %spec, "NAT rule added");
    }
    sim.nft_synced().await;
    tracing::info!(listen = %sim.local_addr(), "RouterOS API emulator listening");
    stop.recv().await;
    sim.shutdown().await;
    Ok(())
}

fn parse_route(text: &str) -> std::io::Result<SimRoute> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--route {text:?}: expected network/len,interface,gateway"),
        )
    };
    let mut parts = text.split(',');
    let (net, iface, gw) = (
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
    );
    let (dst, len) = net.split_once('/').ok_or_else(bad)?;
    Ok(SimRoute {
        dst: dst.parse::<Ipv4Addr>().map_err(|_| bad())?,
        prefix_len: len.parse().map_err(|_| bad())?,
        interface: iface.to_owned(),
        gateway: gw.parse().map_err(|_| bad())?,
    })
}
