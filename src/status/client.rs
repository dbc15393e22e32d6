//! One HTTP/1.1 request with hyper's client, over a fresh TCP connection, under one time limit:
//! the webhook's POSTs and `double-natpmp status`'s GETs. No TLS, no pool, no redirects.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;

/// The largest answer body read.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Why a request got no answer.
#[derive(Debug, Error)]
pub(crate) enum ClientError {
    /// The URL has no host.
    #[error("{uri}: expected an http:// URL with a host")]
    NoHost {
        /// The URL.
        uri: Uri,
    },
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection closed, bad answer).
    #[error("HTTP exchange with {addr} failed: {source}")]
    Http {
        /// host:port.
        addr: String,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
    /// The request could not be built (a bad header value).
    #[error("cannot build the request to {addr}: {source}")]
    Request {
        /// host:port.
        addr: String,
        /// What was wrong.
        #[source]
        source: hyper::http::Error,
    },
    /// The answer's body was too large or cut.
    #[error("the answer from {addr} was too large or cut")]
    Body {
        /// host:port.
        addr: String,
    },
    /// No answer in time.
    #[error("no answer from {addr} within {after:?}")]
    Timeout {
        /// host:port.
        addr: String,
        /// The limit.
        after: Duration,
    },
}

/// A request body: its content type and bytes.
pub(crate) type Payload = (&'static str, Vec<u8>);

/// Sends one request to `uri` and reads the whole answer, within `limit`.
pub(crate) async fn send(
    uri: &Uri,
    method: Method,
    body: Option<Payload>,
    bearer: Option<&str>,
    limit: Duration,
) -> Result<(StatusCode, Bytes), ClientError> {
    let Some(host) = uri.host() else {
        return Err(ClientError::NoHost { uri: uri.clone() });
    };
    let addr = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    match tokio::time::timeout(limit, exchange(uri, &addr, method, body, bearer)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout { addr, after: limit }),
    }
}

async fn exchange(
    uri: &Uri,
    addr: &str,
    method: Method,
    body: Option<Payload>,
    bearer: Option<&str>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let http = |source| ClientError::Http {
        addr: addr.to_owned(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr)
        .header(
            USER_AGENT,
            concat!("double-natpmp/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = bearer {
        builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let (content_type, bytes) = body.unwrap_or(("", Vec::new()));
    if !content_type.is_empty() {
        builder = builder.header(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    let request = builder
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|source| ClientError::Request {
            addr: addr.to_owned(),
            source,
        })?;
    let answer = sender.send_request(request).await.map_err(http)?;
    let status = answer.status();
    let body = Limited::new(answer.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|_| ClientError::Body {
            addr: addr.to_owned(),
        })?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}
