//! The daemon: wires the configuration to the server, the upstream client, the router pool and
//! the mapping orchestrator, and stops them in order on SIGTERM/SIGINT.

use std::sync::Arc;

use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::DaemonArgs;
use crate::natpmp::epoch::Epoch;
use crate::natpmp::server::{NoMappings, Server, ServerConfig, ServerError};
use crate::natpmp::upstream::{UpstreamClient, UpstreamConfig};

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// The NAT-PMP front end failed.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// A receiver that turns true at the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("stop signal received: finishing requests in flight and removing mappings");
        let _ = tx.send(true);
    });
    rx
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            warn!("cannot install signal handlers; only Ctrl-C will stop the daemon");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// The upstream client settings from the configuration.
pub fn upstream_config(args: &DaemonArgs) -> UpstreamConfig {
    UpstreamConfig {
        gateway: args.vpn_gateway,
        initial_timeout: args.upstream_retry,
        budget: args.upstream_timeout,
    }
}

/// Runs the daemon until `shutdown` turns true.
pub async fn run(args: DaemonArgs, shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
    let epoch = Arc::new(Epoch::new());
    let upstream = Arc::new(UpstreamClient::new(upstream_config(&args)));
    let server = Server::bind(
        ServerConfig {
            listen: args.listen_addr,
            allowed_clients: args.allowed_clients.clone(),
            max_inflight: args.max_inflight as usize,
            address_refresh: args.address_refresh,
        },
        epoch,
        upstream,
        Arc::new(NoMappings),
    )
    .await?;
    server.run(shutdown).await?;
    Ok(())
}
