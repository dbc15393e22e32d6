//! The daemon: wires the configuration to the server, the upstream client, the router pool and
//! the mapping orchestrator, and stops them in order on SIGTERM/SIGINT.
//!
//! Start-up order: connect to the router (retrying while it is unreachable, stopping at once on
//! a refused login or a missing policy, which no retry fixes), find the VPN in-interface, run
//! the start reconcile, then open the NAT-PMP socket. Shutdown order: stop reading requests,
//! finish the ones in flight, then remove every mapping from both layers within
//! SHUTDOWN_TIMEOUT.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use crate::config::{ConfigError, DaemonArgs, RouterArgs};
use crate::mapping::store::limits::LimitsConfig;
use crate::mapping::{MappingConfig, MappingError, MappingEvent, MappingHandle, Orchestrator};
use crate::natpmp::server::{Server, ServerConfig, ServerError, ServerStats};
use crate::natpmp::upstream::{UpstreamClient, UpstreamConfig};
use crate::reachability;
use crate::refused::{address_toward, daemon_addresses};
use crate::routeros::api::{Router, RouterApi, RouterError};
use crate::routeros::conn::ApiConfig;
use crate::routeros::error::TlsProblem;
use crate::routeros::tls::TlsMode;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::static_keeper::{self, StaticRefused};
use crate::status::{CountingHandler, Metrics, Services, Setup, StatusError};
use double_natpmp_codec::natpmp::epoch::Epoch;

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// The configuration does not hold together.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The NAT-PMP front end failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The router refused us in a way no retry fixes.
    #[error("{0}")]
    Router(RouterError),
    /// The VPN in-interface could not be found.
    #[error("cannot find the router's VPN interface toward {gateway}: {source}. Set MIKROTIK_IN_INTERFACE to the VPN interface (e.g. wg-proton), or give the API user's group the 'test' policy so /ip/route/check can find it")]
    InInterface {
        /// The VPN gateway.
        gateway: Ipv4Addr,
        /// What the router said.
        #[source]
        source: RouterError,
    },
    /// The status server could not start.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The orchestrator could not start.
    #[error("cannot start the mapping orchestrator: {0}")]
    Mapping(#[from] MappingError),
    /// A STATIC_MAPPINGS entry names a source that is not a client (C-39a).
    #[error(transparent)]
    StaticMapping(#[from] StaticRefused),
    /// Stopped before start-up finished.
    #[error("stopped while waiting for the router")]
    Interrupted,
}

/// A [`Shutdown`] that fires at the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> Shutdown {
    let (trigger, shutdown) = ShutdownTrigger::new();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("stop signal received: finishing requests in flight and removing mappings (a second signal exits at once)");
        trigger.trigger();
        wait_for_signal().await;
        warn!("second stop signal: exiting now; the next start adopts or removes what is left");
        std::process::exit(130);
    });
    shutdown
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

/// The RouterOS API settings from the configuration (reads the password file if one is given).
pub fn api_config(router: &RouterArgs) -> Result<ApiConfig, ConfigError> {
    let tls = if !router.mikrotik_api_tls {
        TlsMode::Plain
    } else if router.mikrotik_api_tls_insecure {
        TlsMode::Insecure
    } else {
        TlsMode::Verify {
            ca_file: router.mikrotik_api_tls_ca_file.clone(),
            fingerprint_sha256: router.mikrotik_api_tls_fingerprint.map(|f| f.0),
            server_name: router.mikrotik_api_tls_server_name.clone(),
        }
    };
    Ok(ApiConfig {
        address: router
            .mikrotik_api_address
            .with_default_port(router.mikrotik_api_tls),
        user: router.mikrotik_api_user.clone(),
        password: router.password()?,
        tls,
        connect_timeout: router.mikrotik_api_timeout,
        command_timeout: router.mikrotik_api_timeout,
    })
}

/// The router client from the configuration (connects lazily).
pub fn router_api(router: &RouterArgs) -> Result<RouterApi, DaemonError> {
    let cfg = api_config(router)?;
    RouterApi::new(
        cfg,
        usize::from(router.mikrotik_pool_size),
        router.mikrotik_api_timeout,
    )
    .map_err(DaemonError::Router)
}

/// The orchestrator settings from the configuration and the resolved in-interface.
pub fn mapping_config(args: &DaemonArgs, in_interface: String) -> MappingConfig {
    MappingConfig {
        in_interface,
        in_interface_found: args.mikrotik_in_interface.is_none(),
        vpn_gateway: Some(*args.vpn_gateway.ip()),
        router_ports: args.router_port_min..=args.router_port_max,
        max_lifetime: args.max_lifetime,
        reconcile_interval: args.reconcile_interval,
        expiry_grace: args.expiry_grace,
        // Bounds on top of the clients' own timeouts: a little more than their budgets.
        router_timeout: args.router.mikrotik_api_timeout * 2,
        upstream_timeout: args.upstream_timeout + Duration::from_secs(1),
        create_patience: args.create_patience,
        shutdown_timeout: args.shutdown_timeout,
        keep_on_stop: args.keep_mappings_on_stop,
        udp_srcnat: args.udp_srcnat,
        map_both_protocols: args.map_both_protocols,
        limits: LimitsConfig {
            max_mappings: args.max_mappings as usize,
            max_per_client: args.max_mappings_per_client as usize,
            requests_per_second: args.client_rate_limit,
        },
    }
}

/// Errors no retry can fix: wrong password, missing policy, bad TLS settings or certificate.
fn is_permanent(e: &RouterError) -> bool {
    match e {
        RouterError::LoginRefused { .. } | RouterError::PermissionDenied { .. } => true,
        // A certificate that does not verify stays wrong; a handshake the router ended with an
        // alert, or one cut short by a rebooting router (a `Connection` error), is worth
        // another try.
        RouterError::Tls {
            kind: TlsProblem::Handshake,
            ..
        } => false,
        RouterError::Tls { .. } => true,
        RouterError::NotFound { .. }
        | RouterError::InvalidValue { .. }
        | RouterError::Trap { .. }
        | RouterError::Connection { .. }
        | RouterError::Fatal { .. }
        | RouterError::IncompleteReply { .. }
        | RouterError::Timeout { .. } => false,
    }
}

/// Waits until the router answers (logging identity and version), retrying with back-off while
/// it is unreachable.
async fn wait_for_router(router: &RouterApi, shutdown: &mut Shutdown) -> Result<(), DaemonError> {
    let mut delay = Duration::from_secs(1);
    loop {
        match router.info().await {
            Ok(info) => {
                info!(
                    address = router.address(),
                    identity = %info.identity,
                    version = %info.version,
                    board = info.board.as_deref().unwrap_or("-"),
                    "connected to RouterOS"
                );
                return Ok(());
            }
            Err(e) if is_permanent(&e) => return Err(DaemonError::Router(e)),
            Err(e) => {
                warn!(error = %e, retry_in = ?delay, "RouterOS API not reachable yet");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.recv() => return Err(DaemonError::Interrupted),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// What a running daemon exposes to the code that started it (tests, the demo).
pub struct Running {
    /// The NAT-PMP socket's address.
    pub listen: std::net::SocketAddr,
    /// The server's counters.
    pub stats: Arc<ServerStats>,
    /// The orchestrator (lease table, reconcile on demand).
    pub orchestrator: Orchestrator<RouterApi, UpstreamClient>,
    /// Where the status server listens (STATUS_ADDR), when it runs.
    pub status: Option<std::net::SocketAddr>,
    /// Resolves when the daemon has stopped.
    pub done: tokio::task::JoinHandle<Result<(), DaemonError>>,
}

/// Starts the daemon and returns once it serves requests; it stops when `shutdown` fires
/// (await [`Running::done`]).
pub async fn start(args: DaemonArgs, mut shutdown: Shutdown) -> Result<Running, DaemonError> {
    args.validate()?;
    let token = args.status.token()?;
    let router = router_api(&args.router)?;
    let router_address = router.address().to_owned();
    if args.router.mikrotik_api_tls && args.router.mikrotik_api_tls_insecure {
        warn!("MIKROTIK_API_TLS_INSECURE=true: the router's certificate is not verified; anyone on the path can read the API password");
    }
    wait_for_router(&router, &mut shutdown).await?;
    let gateway_ip = *args.vpn_gateway.ip();
    let in_interface = match &args.mikrotik_in_interface {
        Some(name) => name.clone(),
        None => {
            let found = router.route_interface(gateway_ip).await.map_err(|source| {
                DaemonError::InInterface {
                    gateway: gateway_ip,
                    source,
                }
            })?;
            info!(in_interface = %found, gateway = %gateway_ip, "VPN interface found with /ip/route/check");
            found
        }
    };
    let epoch = Arc::new(Epoch::new());
    let upstream = UpstreamClient::new(upstream_config(&args));
    let orchestrator = start_orchestrator(
        router,
        upstream.clone(),
        epoch.clone(),
        mapping_config(&args, in_interface),
        &mut shutdown,
    )
    .await?;
    // C-39a: the router's addresses came with the start reconcile; the daemon's own are read
    // once, here (the way to the router also names the reachability check's client). A static
    // mapping for a source that is not a client stops the start.
    let toward_router = address_toward(&router_address).await;
    orchestrator
        .refused()
        .set_daemon_addresses(daemon_addresses(args.listen_addr, toward_router));
    if let Err(e) = static_keeper::check_clients(
        &MappingHandle::from(orchestrator.clone()),
        &args.status.static_mappings.0,
    ) {
        orchestrator.shutdown(args.shutdown_timeout).await;
        return Err(e.into());
    }
    let metrics = Arc::new(Metrics::new());
    let server = Server::bind(
        ServerConfig {
            listen: args.listen_addr,
            allowed_clients: args.allowed_clients.clone(),
            blocked_sources: Arc::clone(orchestrator.refused()),
            max_inflight: args.max_inflight as usize,
            client_rate_limit: args.client_rate_limit,
            address_refresh: args.address_refresh,
        },
        epoch,
        Arc::new(upstream),
        Arc::new(CountingHandler::new(
            orchestrator.clone(),
            Arc::clone(&metrics),
        )),
    )
    .await?;
    // C-48: a gateway whose epoch goes backwards in an address reply lost its mappings too;
    // so did one whose external address changed. Either way every mapping is made again.
    let addresses = server.addresses();
    let watcher = orchestrator.clone();
    addresses.set_epoch_observer(Arc::new(move |sssoe| {
        watcher.observe_upstream_epoch(sssoe);
    }));
    let healer = orchestrator.clone();
    addresses.set_change_observer(Arc::new(move |old, new| {
        healer.heal(&format!("the VPN exit address changed from {old} to {new}"));
    }));
    // A loss seen on a mapping reply may come with a new address: ask for it at once.
    let mut events = orchestrator.subscribe();
    let refresh = Arc::clone(&addresses);
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(MappingEvent::UpstreamLost { .. }) => refresh.refresh_soon(),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let listen = server.local_addr();
    let stats = server.stats();
    let bound = args.shutdown_timeout;
    let cache = server.addresses();
    let reachability = reachability::start(
        &args,
        toward_router,
        MappingHandle::from(orchestrator.clone()),
        Arc::new(move || cache.cached()),
        shutdown.clone(),
    );
    let addresses = server.addresses();
    let services = Services::start(
        Setup {
            args: args.status.clone(),
            token,
            allowed: args.allowed_clients.clone(),
            max_lifetime: args.max_lifetime,
            mapping: MappingHandle::from(orchestrator.clone()),
            external: Arc::new(move || addresses.cached()),
            server_stats: Some(Arc::clone(&stats)),
            metrics,
            reachability: Some(reachability),
        },
        shutdown.clone(),
    )
    .await;
    let services = match services {
        Ok(s) => s,
        Err(e) => {
            orchestrator.shutdown(bound).await;
            return Err(e.into());
        }
    };
    let status = services.addr;
    let stopping = orchestrator.clone();
    let done = tokio::spawn(async move {
        // The server keeps answering while the orchestrator stops: requests that arrive
        // during the stop get result 3, never silence.
        let (server_stop, server_shutdown) = ShutdownTrigger::new();
        let mut serving = tokio::spawn(server.run(server_shutdown));
        let early = tokio::select! {
            _ = shutdown.recv() => None,
            r = &mut serving => Some(r),
        };
        let report = stopping.shutdown(bound).await;
        // The webhook and the status file see the removals of the shutdown.
        services.finish().await;
        if report.kept > 0 {
            info!(
                kept = report.kept,
                "stopped; mappings kept for the next start"
            );
        } else if report.failed > 0 || report.remaining > 0 {
            error!(
                removed = report.removed,
                failed = report.failed,
                remaining = report.remaining,
                "some mappings could not be removed at shutdown; the next start adopts or removes their rules"
            );
        } else {
            info!(removed = report.removed, "all mappings removed; stopped");
        }
        server_stop.trigger();
        let served = match early {
            Some(r) => r,
            None => serving.await,
        };
        match served {
            Ok(r) => r.map_err(DaemonError::from),
            Err(join) => {
                error!(error = %join, "the NAT-PMP server task failed");
                Ok(())
            }
        }
    });
    Ok(Running {
        listen,
        stats,
        orchestrator,
        status,
        done,
    })
}

/// Starts the orchestrator (adoption, the first reconcile), retrying with back-off while the
/// router cannot be listed; a refusal no retry fixes (a missing policy) ends the start.
async fn start_orchestrator(
    router: RouterApi,
    upstream: UpstreamClient,
    epoch: Arc<Epoch>,
    config: MappingConfig,
    shutdown: &mut Shutdown,
) -> Result<Orchestrator<RouterApi, UpstreamClient>, DaemonError> {
    let mut delay = Duration::from_secs(1);
    loop {
        match Orchestrator::start(
            router.clone(),
            upstream.clone(),
            epoch.clone(),
            config.clone(),
        )
        .await
        {
            Ok(o) => return Ok(o),
            Err(MappingError::Router { source, .. }) if is_permanent(&source) => {
                return Err(DaemonError::Router(source))
            }
            Err(e @ MappingError::InvalidConfig(_)) => return Err(DaemonError::Mapping(e)),
            Err(e) => warn!(error = %e, retry_in = ?delay, "the first reconcile failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.recv() => return Err(DaemonError::Interrupted),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Runs the daemon until `shutdown` fires and every mapping is removed.
pub async fn run(args: DaemonArgs, shutdown: Shutdown) -> Result<(), DaemonError> {
    let running = match start(args, shutdown).await {
        Ok(r) => r,
        // Asked to stop before the router ever answered: nothing was made, a clean stop.
        Err(DaemonError::Interrupted) => return Ok(()),
        Err(e) => return Err(e),
    };
    match running.done.await {
        Ok(result) => result,
        Err(join) => {
            error!(error = %join, "the server task failed");
            Ok(())
        }
    }
}
