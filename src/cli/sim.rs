//! Hidden subcommands that run one emulator alone, so tests can put it in a network namespace.

use tokio::sync::watch;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::config::{SimGatewayArgs, SimRouterArgs};
use crate::sim::gateway::{Gateway, GatewayConfig, GatewayMapping};
use crate::sim::routeros::{NftMirror, RouterSim, RouterSimConfig, SimRoute, SimUser};

/// Runs the gateway emulator until `stop` turns true.
pub async fn gateway(args: SimGatewayArgs, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    let config = GatewayConfig {
        external_address: args.external_address,
        max_lifetime: args.max_lifetime,
        quota_per_peer: args.quota,
        ..GatewayConfig::default()
    };
    let gw = Gateway::start(config, args.listen).await?;
    tracing::info!(listen = %gw.local_addr(), "NAT-PMP gateway emulator listening");
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        () = log_mapping_changes(&gw) => {}
    }
    gw.shutdown().await;
    Ok(())
}

/// Logs every mapping the gateway adds or removes (a renewal is neither), with the number left:
/// a test outside this process sees the gateway's table in these lines.
async fn log_mapping_changes(gw: &Gateway) {
    type Seen = BTreeSet<(IpAddr, String, u16, u16)>;
    let table = |m: &[GatewayMapping]| -> Seen {
        m.iter()
            .map(|m| {
                let proto = m.protocol.to_string();
                (m.peer, proto, m.internal_port, m.external_port)
            })
            .collect()
    };
    let mut seen = Seen::new();
    loop {
        let mut now = Seen::new();
        // Re-checked on every change of the table; the limit only bounds one wait.
        let changed = gw
            .wait_for_mappings(
                |m| {
                    now = table(m);
                    now != seen
                },
                Duration::from_secs(3600),
            )
            .await;
        if !changed {
            continue;
        }
        let left = now.len();
        for (peer, protocol, internal_port, external_port) in now.difference(&seen) {
            tracing::info!(%peer, %protocol, internal_port, external_port, mappings = left,
                "gateway emulator: mapping added");
        }
        for (peer, protocol, internal_port, external_port) in seen.difference(&now) {
            tracing::info!(%peer, %protocol, internal_port, external_port, mappings = left,
                "gateway emulator: mapping removed");
        }
        seen = now;
    }
}

/// Runs the RouterOS emulator until `stop` turns true.
pub async fn router(args: SimRouterArgs, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    let policies: Vec<&str> = args.policies.split(',').map(str::trim).collect();
    let mut config = RouterSimConfig {
        users: vec![SimUser::new(&args.user, &args.password, &policies)],
        interfaces: args.interfaces.clone(),
        ..RouterSimConfig::default()
    };
    if !args.routes.is_empty() {
        config.routes = args
            .routes
            .iter()
            .map(|r| parse_route(r))
            .collect::<Result<_, _>>()?;
    }
    if let Some(netns) = &args.nft_netns {
        config.nft_mirror = Some(NftMirror {
            netns: netns.clone(),
            table: args.nft_table.clone(),
            chain: args.nft_chain.clone(),
            interface_map: args
                .interfaces
                .iter()
                .map(|i| (i.clone(), i.clone()))
                .collect(),
        });
    }
    let sim = RouterSim::start(config, args.listen).await?;
    tracing::info!(listen = %sim.local_addr(), "RouterOS API emulator listening");
    let _ = stop.wait_for(|s| *s).await;
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
