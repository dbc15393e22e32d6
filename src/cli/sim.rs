//! Hidden subcommands that run one emulator alone, so tests can put it in a network namespace.

use std::net::Ipv4Addr;

use crate::cli::args::{SimGatewayArgs, SimRouterArgs};
use crate::shutdown::Shutdown;
use crate::sim::gateway::{Gateway, GatewayConfig};
use crate::sim::routeros::{NftMirror, RouterSim, RouterSimConfig, SimRoute, SimUser};

/// Runs the gateway emulator until `stop` fires.
pub async fn gateway(args: SimGatewayArgs, mut stop: Shutdown) -> std::io::Result<()> {
    let config = GatewayConfig {
        external_address: args.external_address,
        max_lifetime: args.max_lifetime,
        quota_per_peer: args.quota,
        ..GatewayConfig::default()
    };
    let gw = Gateway::start(config, args.listen).await?;
    tracing::info!(listen = %gw.local_addr(), "NAT-PMP gateway emulator listening");
    stop.recv().await;
    gw.shutdown().await;
    Ok(())
}

/// Runs the RouterOS emulator until `stop` fires.
pub async fn router(args: SimRouterArgs, mut stop: Shutdown) -> std::io::Result<()> {
    let policies: Vec<&str> = args.policies.split(',').map(str::trim).collect();
    let mut config = RouterSimConfig {
        users: vec![SimUser::new(&args.user, args.password.expose(), &policies)],
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
