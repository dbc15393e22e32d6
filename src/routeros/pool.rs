//! The pool of RouterOS API connections (deadpool).
//!
//! One command runs on a connection at a time; the pool gives concurrency. A connection that
//! broke (protocol error, timeout, `!fatal`, closed by the router while idle) is never handed
//! out again: it is dropped at once and a new one is made on demand. While the router is down,
//! new connections are not attempted more often than a backoff window allows (100 ms doubling
//! to 5 s): within the window a caller gets the last error at once instead of another attempt.
//! The first success resets the window, so the pool recovers by itself when the router returns.

use std::sync::Mutex;
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult, Timeouts};
use deadpool::Runtime;
use tokio::time::Instant;

use super::conn::{ApiConfig, Connection, Connector, Response};
use super::error::RouterError;
use double_natpmp_codec::routeros::wire::{Command, Reply};

/// First backoff window after a failed connect.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest backoff window.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Backoff {
    /// No new attempt before this instant.
    until: Option<Instant>,
    /// The window after the next failure.
    next: Option<Duration>,
    /// The error of the last failed attempt, repeated while the window lasts.
    last_error: Option<RouterError>,
}

/// deadpool manager: makes logged-in connections and rejects broken ones on recycle.
#[derive(Debug)]
pub struct ApiManager {
    connector: Connector,
    backoff: Mutex<Backoff>,
}

impl ApiManager {
    /// A manager for the connector's router.
    pub fn new(connector: Connector) -> ApiManager {
        ApiManager {
            connector,
            backoff: Mutex::new(Backoff::default()),
        }
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        // A poisoned lock only means a panic elsewhere while holding it; the state is still a
        // plain value, so keep using it.
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl managed::Manager for ApiManager {
    type Type = Connection;
    type Error = RouterError;

    async fn create(&self) -> Result<Connection, RouterError> {
        {
            let b = self.backoff();
            if let (Some(until), Some(err)) = (b.until, &b.last_error) {
                if Instant::now() < until {
                    return Err(err.clone());
                }
            }
        }
        // Boxed: a connect (TCP, TLS, login) is a large future, and deadpool keeps the
        // create future inside every `get`, also the many that find an idle connection.
        match Box::pin(self.connector.connect()).await {
            Ok(conn) => {
                let mut b = self.backoff();
                if b.last_error.is_some() {
                    tracing::info!(address = %self.connector.config().address, "RouterOS API reachable again");
                }
                *b = Backoff::default();
                Ok(conn)
            }
            Err(e) => {
                let mut b = self.backoff();
                let window = b.next.unwrap_or(BACKOFF_MIN);
                b.until = Some(Instant::now() + window);
                b.next = Some((window * 2).min(BACKOFF_MAX));
                b.last_error = Some(e.clone());
                tracing::debug!(error = %e, retry_after = ?window, "RouterOS API connect failed");
                Err(e)
            }
        }
    }

    async fn recycle(&self, conn: &mut Connection, _: &Metrics) -> RecycleResult<RouterError> {
        if Box::pin(conn.check_idle()).await {
            Ok(())
        } else {
            Err(RecycleError::message("RouterOS API connection is broken"))
        }
    }
}

/// A pool of API connections to one router.
#[derive(Clone, Debug)]
pub struct ApiPool {
    pool: managed::Pool<ApiManager>,
    address: String,
    wait_timeout: Duration,
}

impl ApiPool {
    /// A pool of up to `size` connections (at least 1); a caller waits at most `wait_timeout`
    /// for a free connection. No connection is made until the first command.
    pub fn new(
        cfg: ApiConfig,
        size: usize,
        wait_timeout: Duration,
    ) -> Result<ApiPool, RouterError> {
        let address = cfg.address.clone();
        let connector = Connector::new(cfg)?;
        let pool = managed::Pool::builder(ApiManager::new(connector))
            .max_size(size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(wait_timeout))
            .build()
            .map_err(|e| RouterError::Connection {
                address: address.clone(),
                message: format!("cannot build the connection pool: {e}"),
            })?;
        Ok(ApiPool {
            pool,
            address,
            wait_timeout,
        })
    }

    /// A logged-in connection: an idle one, or a new one (bounded by the connect and command
    /// timeouts).
    pub async fn get(&self) -> Result<Object<ApiManager>, RouterError> {
        let timeouts = Timeouts {
            wait: Some(self.wait_timeout),
            create: None,
            recycle: Some(Duration::from_secs(1)),
        };
        self.pool.timeout_get(&timeouts).await.map_err(|e| match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(_) => RouterError::Timeout {
                address: self.address.clone(),
                what: "a free API connection (all are busy)".into(),
                after: self.wait_timeout,
            },
            other => RouterError::Connection {
                address: self.address.clone(),
                message: other.to_string(),
            },
        })
    }

    /// Runs one command on a pooled connection, each `!re` row handed to `each` as it arrives
    /// ([`Connection::run_each`]). A connection that broke is dropped from the pool at once.
    pub async fn run_each(
        &self,
        cmd: Command,
        each: &mut (dyn FnMut(Reply) + Send),
    ) -> Result<Response, RouterError> {
        let mut conn = self.get().await?;
        let result = conn.run_each(cmd, each).await;
        if conn.is_broken() {
            drop(Object::take(conn));
        }
        result
    }

    /// How many connections exist and how many are idle.
    pub fn status(&self) -> deadpool::Status {
        self.pool.status()
    }
}
