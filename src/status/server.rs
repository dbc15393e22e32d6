//! The HTTP status server (hyper, HTTP/1.1): accepts connections on STATUS_ADDR, bounded in
//! number ([`MAX_CONNECTIONS`]), in how long a request's head may take, and in how long a
//! connection stays open at all (STATUS_CONNECTION_TIMEOUT: a client that never reads or never
//! finishes a request cannot keep a connection slot); answers only the `Host` values of
//! [`HostRule`] (421 and no data for the rest, against DNS rebinding); routes each request;
//! and stops when the daemon's [`Shutdown`] fires (open connections are asked to close, then
//! dropped).
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the status page (one HTML file, no outside assets) |
//! | `GET /healthz` | 200 while the process runs (for any `Host`) |
//! | `GET /readyz` | the checks (router, gateway, interface) as JSON; 503 when one fails (also for a `Host` of any IP address) |
//! | `GET /metrics` | OpenMetrics text |
//! | `GET /api/v1/mappings` | every lease as JSON |
//! | `GET /api/v1/status` | external address, health, last events |
//! | `POST /api/v1/forwards`, `DELETE /api/v1/forwards/{protocol}/{client}/{port}` | only with API_TOKEN (see `forwards.rs`) |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::shutdown::Shutdown;
use crate::status::forwards;
use crate::status::host::{HostRule, Reach};
use crate::status::metrics::CONTENT_TYPE as METRICS_TYPE;
use crate::status::reachability;
use crate::status::respond::{error, json, respond, Body};
use crate::status::state::StatusState;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("page.html");
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's head (or less: the connection's own limit).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish at shutdown, or once they reached their limit.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How the server treats its clients.
#[derive(Clone, Debug)]
pub(crate) struct ServeConfig {
    /// The `Host` values answered (STATUS_HOSTNAMES and the server's own address).
    pub hosts: HostRule,
    /// How long one connection may stay open (STATUS_CONNECTION_TIMEOUT).
    pub connection_timeout: Duration,
}

/// Serves `listener` until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<StatusState>,
    config: ServeConfig,
    mut shutdown: Shutdown,
) {
    let config = Arc::new(config);
    let addr = listener.local_addr().ok();
    info!(listen = ?addr, forwards = state.token.is_some(), "status server listening");
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.recv() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    warn!(error = %e, "status server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let state = Arc::clone(&state);
        let config = Arc::clone(&config);
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let limit = config.connection_timeout;
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                let reach = config.hosts.reach(&req, local);
                async move { Ok::<_, Infallible>(route(&state, req, peer, reach).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT.min(limit))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "status connection ended");
                    }
                }
                () = tokio::time::sleep(limit) => {
                    debug!(%peer, "status connection closed: open for STATUS_CONNECTION_TIMEOUT");
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                }
                _ = stop.recv() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(CLOSE_GRACE * 2, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    info!("status server stopped");
}

/// Answers one request.
async fn route(
    state: &StatusState,
    req: Request<Incoming>,
    peer: SocketAddr,
    reach: Reach,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    debug!(%peer, %method, %path, ?reach, "status request");
    let allowed = match path.as_str() {
        "/healthz" => true,
        "/readyz" => reach != Reach::Health,
        _ => reach == Reach::All,
    };
    if !allowed {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "this server answers only its own IP address and the names in STATUS_HOSTNAMES",
        );
    }
    let get = method == Method::GET || method == Method::HEAD;
    let forwards_on = state.token.is_some();
    match path.as_str() {
        "/" | "/index.html" if get => {
            let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", PAGE);
            r.headers_mut().insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                ),
            );
            r
        }
        "/healthz" if get => respond(StatusCode::OK, "application/json", r#"{"status":"ok"}"#),
        "/readyz" if get => {
            let readiness = state.readiness();
            let status = if readiness.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &readiness)
        }
        "/metrics" if get => match state.metrics_text() {
            Ok(text) => respond(StatusCode::OK, METRICS_TYPE, text),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the metrics: {e}"),
            ),
        },
        "/api/v1/mappings" if get => json(StatusCode::OK, &state.mappings()),
        "/api/v1/status" if get => json(StatusCode::OK, &state.status()),
        "/api/v1/reachability" if get => reachability::get(state),
        "/api/v1/reachability" if forwards_on && method == Method::POST => {
            reachability::post(state, req).await
        }
        "/api/v1/forwards" if forwards_on && method == Method::POST => {
            forwards::create(state, req).await
        }
        p if forwards_on && method == Method::DELETE && p.starts_with("/api/v1/forwards/") => {
            forwards::delete(state, req).await
        }
        "/" | "/index.html" | "/healthz" | "/readyz" | "/metrics" | "/api/v1/mappings"
        | "/api/v1/status" => not_allowed("GET, HEAD"),
        "/api/v1/reachability" if forwards_on => not_allowed("GET, HEAD, POST"),
        "/api/v1/reachability" => not_allowed("GET, HEAD"),
        "/api/v1/forwards" if forwards_on => not_allowed("POST"),
        p if forwards_on && p.starts_with("/api/v1/forwards/") => not_allowed("DELETE"),
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}
