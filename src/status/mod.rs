//! What shows the daemon to people and scripts: the HTTP status server (STATUS_ADDR) with the
//! page, `/healthz`, `/readyz`, `/metrics` and the JSON API; the forwards API for programs that
//! cannot speak NAT-PMP (API_TOKEN); the webhook (WEBHOOK_URL); the status file (STATUS_FILE);
//! and, started alongside, the static keeper (STATIC_MAPPINGS, `static_keeper.rs`).
//!
//! It reads the mapping core only through a [`MappingHandle`] (the facade, not generic over
//! the router and the gateway): the lease table's snapshot, the events, and `request` (the
//! core's own `Command`) for forwards and static mappings.
//!
//! * [`server`]: the HTTP server and its routes; [`host`]: the `Host` values it answers;
//!   [`respond`]: building answers;
//!   [`forwards`]: POST/DELETE forwards;
//!   [`auth`]: the token check (constant time).
//! * [`state`]: what the handlers share; [`view`]: the JSON answers.
//! * [`history`]: created/renewed times, the last events, the far sides' last answers.
//! * [`metrics`]: the OpenMetrics exposition and the request-counting handler.
//! * [`listener`]: the task that feeds the history, metrics, webhook and file from the events.
//! * [`webhook`]: the bounded queue and its delivery with retries; [`client`]: one HTTP request.
//! * [`file`]: STATUS_FILE, written atomically, never through a link, at most once a second.
//!
//! [`Services::start`] starts what the settings ask for; the HTTP server and the keeper stop with
//! the daemon's [`Shutdown`]; [`Services::finish`] (after the mapping core removed its
//! mappings) lets the webhook and the file see those last removals, within a bound.

pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod file;
pub(crate) mod forwards;
pub(crate) mod history;
pub(crate) mod host;
pub(crate) mod listener;
pub(crate) mod metrics;
pub(crate) mod reachability;
pub(crate) mod respond;
pub(crate) mod server;
pub(crate) mod state;
pub(crate) mod view;
pub(crate) mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::cidr::CidrList;
use crate::config::status::StatusArgs;
use crate::mapping::MappingHandle;
use crate::natpmp::server::ServerStats;
use crate::reachability::service::ReachabilityHandle;
use crate::routeros::conn::Password;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::static_keeper::{self, KeeperStats};

pub(crate) use self::metrics::{CountingHandler, Metrics};
pub(crate) use self::state::{ExternalAddress, StatusState};

/// How long the webhook and the status file get at the end of a shutdown, after the mappings
/// were removed: short, since a container runtime kills a daemon that takes long to stop.
pub(crate) const FINISH_BOUND: Duration = Duration::from_secs(2);

/// Why the status services could not start.
#[derive(Debug, Error)]
pub enum StatusError {
    /// STATUS_ADDR could not be bound.
    #[error("cannot listen on {addr} (STATUS_ADDR): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What [`Services::start`] needs.
pub(crate) struct Setup {
    /// The settings.
    pub args: StatusArgs,
    /// The API token, read from API_TOKEN or API_TOKEN_FILE ([`StatusArgs::token`]).
    pub token: Option<Password>,
    /// ALLOWED_CLIENTS.
    pub allowed: CidrList,
    /// MAX_LIFETIME: what the static keeper asks for.
    pub max_lifetime: u32,
    /// The mapping core.
    pub mapping: MappingHandle,
    /// The gateway's external address as known now.
    pub external: ExternalAddress,
    /// The NAT-PMP server's counters.
    pub server_stats: Option<Arc<ServerStats>>,
    /// The metrics (shared with the [`CountingHandler`] in front of the orchestrator).
    pub metrics: Arc<Metrics>,
    /// The reachability check, when the daemon runs one.
    pub reachability: Option<ReachabilityHandle>,
}

/// The running status services.
pub(crate) struct Services {
    /// Where the HTTP server listens, when it runs.
    pub addr: Option<SocketAddr>,
    stop_listener: ShutdownTrigger,
    listener: JoinHandle<()>,
    sinks: Vec<JoinHandle<()>>,
    stopping: Vec<JoinHandle<()>>,
}

impl Services {
    /// Starts the event listener, and what the settings turn on: the HTTP server, the webhook,
    /// the status file, the static keeper. The server and the keeper stop when `shutdown` fires.
    pub(crate) async fn start(setup: Setup, shutdown: Shutdown) -> Result<Services, StatusError> {
        let args = setup.args;
        // Subscribed first: nothing that happens from here on is missed.
        let events = setup.mapping.subscribe();
        let token = setup.token.as_ref().map(auth::Token::new);
        let keeper_stats = Arc::new(KeeperStats::default());
        let state = Arc::new(StatusState {
            mapping: setup.mapping.clone(),
            history: Arc::new(history::History::new(SystemTime::now())),
            metrics: Arc::clone(&setup.metrics),
            server_stats: setup.server_stats,
            keeper: Arc::clone(&keeper_stats),
            external: setup.external,
            token,
            allowed: setup.allowed,
            reachability: setup.reachability.clone(),
        });
        let mut stopping = Vec::new();
        let mut addr = None;
        if let Some(want) = args.status_addr {
            let listener = TcpListener::bind(want)
                .await
                .map_err(|source| StatusError::Bind { addr: want, source })?;
            addr = listener.local_addr().ok();
            let config = server::ServeConfig {
                hosts: host::HostRule::new(&args.status_hostnames),
                connection_timeout: args.status_connection_timeout,
            };
            stopping.push(tokio::spawn(server::serve(
                listener,
                Arc::clone(&state),
                config,
                shutdown.clone(),
            )));
        }
        let mut sinks = Vec::new();
        let webhook = args.webhook_url.as_ref().map(|url| {
            let (hook, task) = webhook::Webhook::start(
                webhook::WebhookConfig {
                    url: url.0.clone(),
                    timeout: args.webhook_timeout,
                    retries: args.webhook_retries,
                    backoff: args.webhook_backoff,
                    queue: args.webhook_queue as usize,
                },
                Arc::clone(&state.metrics),
            );
            sinks.push(task);
            info!(url = %url, "webhook on");
            hook
        });
        let file = args.status_file.as_ref().map(|path| {
            let (tx, rx) = watch::channel(0u64);
            sinks.push(file::spawn(path.clone(), Arc::clone(&state), rx));
            info!(path = %path.display(), "status file on");
            tx
        });
        let (stop_listener, stop_rx) = ShutdownTrigger::new();
        let listener = listener::spawn(
            Arc::clone(&state),
            events,
            listener::Sinks {
                webhook,
                file,
                reachability: setup.reachability.as_ref().map(ReachabilityHandle::watch),
            },
            stop_rx,
        );
        if !args.static_mappings.0.is_empty() {
            info!(
                count = args.static_mappings.0.len(),
                "static mappings kept by the daemon"
            );
            stopping.push(static_keeper::spawn(
                setup.mapping,
                args.static_mappings.0.clone(),
                setup.max_lifetime,
                keeper_stats,
                shutdown,
            ));
        }
        Ok(Services {
            addr,
            stop_listener,
            listener,
            sinks,
            stopping,
        })
    }

    /// Stops the listener once it has taken the events sent so far, then gives the webhook and
    /// the status file up to [`FINISH_BOUND`] to finish; waits for the server and the keeper
    /// (which the daemon's shutdown already stopped).
    pub(crate) async fn finish(self) {
        let bound = FINISH_BOUND;
        self.stop_listener.trigger();
        let _ = self.listener.await;
        let mut rest = self.sinks;
        rest.extend(self.stopping);
        let aborts: Vec<_> = rest.iter().map(JoinHandle::abort_handle).collect();
        let all = async {
            for task in rest {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(bound, all).await.is_err() {
            for a in aborts {
                a.abort();
            }
        }
    }
}
