//! Forwards for programs that cannot speak NAT-PMP: `POST /api/v1/forwards` and
//! `DELETE /api/v1/forwards/{protocol}/{client}/{internal_port}`, which run the same transaction
//! as a NAT-PMP request: the core's own [`Command`] with [`Origin::Api`], through
//! [`MappingHandle::request`](crate::mapping::MappingHandle::request).
//!
//! Both need `Authorization: Bearer <API_TOKEN>` (401 without, 403 with a wrong one, see
//! `auth.rs`); the client must be inside ALLOWED_CLIENTS (else 403) and a real client (not the
//! router's or the daemon's own address, a subnet's network or broadcast address, or the VPN
//! gateway, C-39a: else 403 naming which), and NAT-PMP's limits hold:
//! internal port 1 to 65535, a lifetime of at least 1 s, capped at MAX_LIFETIME and at what the
//! gateway grants. A forward expires like a NAT-PMP mapping: POST again before its lifetime ends.
//! Like a NAT-PMP request, a POST that meets a router or gateway that does not answer waits up to
//! CREATE_PATIENCE for both layers before it is answered 502.

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::mapping::events::Origin;
use crate::mapping::request::{Command, MappingRequest};
use crate::mapping::store::lease::MappingKey;
use crate::status::auth::Verdict;
use crate::status::respond::{error, json, Body};
use crate::status::state::StatusState;
use crate::status::view::MappingView;
use double_natpmp_codec::natpmp::result::ResultCode;
use double_natpmp_codec::protocol::Protocol;

/// The largest request body accepted.
const MAX_BODY: usize = 4096;
/// How long a client may take to send the body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of `POST /api/v1/forwards`.
#[derive(Debug)]
struct ForwardRequest {
    client: Ipv4Addr,
    protocol: Protocol,
    internal_port: u16,
    lifetime: u32,
    external_port: u16,
}

/// The fields a forward may have.
const FIELDS: [&str; 5] = [
    "client",
    "protocol",
    "internal_port",
    "lifetime",
    "external_port",
];

impl ForwardRequest {
    /// Reads the JSON body; the error names the field that is wrong.
    fn parse(bytes: &[u8]) -> Result<ForwardRequest, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let Some(object) = value.as_object() else {
            return Err("expected a JSON object".into());
        };
        if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!("unknown field '{unknown}'"));
        }
        let number = |name: &str, max: u64| -> Result<Option<u64>, String> {
            match object.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n <= max)
                    .map(Some)
                    .ok_or_else(|| format!("{name}: expected a whole number from 0 to {max}")),
            }
        };
        let client = object
            .get("client")
            .and_then(Value::as_str)
            .and_then(|c| Ipv4Addr::from_str(c).ok())
            .ok_or("client: expected an IPv4 address such as \"192.168.88.20\"")?;
        let protocol = object
            .get("protocol")
            .and_then(Value::as_str)
            .and_then(Protocol::parse)
            .ok_or("protocol: expected \"tcp\" or \"udp\"")?;
        let port = |name: &str| -> Result<Option<u16>, String> {
            Ok(number(name, u64::from(u16::MAX))?.and_then(|n| u16::try_from(n).ok()))
        };
        let internal_port = port("internal_port")?
            .filter(|p| *p != 0)
            .ok_or("internal_port: expected 1 to 65535")?;
        let lifetime = number("lifetime", u64::from(u32::MAX))?
            .and_then(|n| u32::try_from(n).ok())
            .filter(|l| *l != 0)
            .ok_or("lifetime: expected at least 1 second (use DELETE to remove a forward)")?;
        Ok(ForwardRequest {
            client,
            protocol,
            internal_port,
            lifetime,
            external_port: port("external_port")?.unwrap_or(0),
        })
    }
}

/// A NAT-PMP failure, as the API answers it.
#[derive(Serialize)]
struct Failure {
    error: &'static str,
    result: u16,
}

/// The answer to a DELETE.
#[derive(Serialize)]
struct Deleted {
    deleted: MappingView,
}

/// Checks the token; `Some(response)` when the request is refused.
pub(crate) fn refused(state: &StatusState, req: &Request<Incoming>) -> Option<Response<Body>> {
    let token = state.token.as_ref()?;
    match token.check(req.headers()) {
        Verdict::Allowed => None,
        Verdict::Missing => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs Authorization: Bearer <API_TOKEN>",
            );
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(r)
        }
        Verdict::Wrong => Some(error(StatusCode::FORBIDDEN, "wrong API token")),
    }
}

fn client_refused(state: &StatusState, client: Ipv4Addr) -> Option<Response<Body>> {
    (!state.allowed.contains(client)).then(|| {
        error(
            StatusCode::FORBIDDEN,
            &format!(
                "client {client} is outside ALLOWED_CLIENTS={}",
                state.allowed
            ),
        )
    })
}

/// The HTTP answer to a NAT-PMP result code other than success.
fn failure(result: ResultCode) -> Response<Body> {
    let (status, text) = match result {
        ResultCode::NotAuthorized => (
            StatusCode::CONFLICT,
            "refused: the router port is taken by a rule that is not ours, or the request is not allowed",
        ),
        ResultCode::NetworkFailure => (
            StatusCode::BAD_GATEWAY,
            "the router or the VPN gateway cannot be reached, or the VPN interface is not usable",
        ),
        ResultCode::OutOfResources => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no resources: the router port range or the VPN gateway's port quota is exhausted",
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "the request failed"),
    };
    json(
        status,
        &Failure {
            error: text,
            result: result as u16,
        },
    )
}

/// `POST /api/v1/forwards`: creates or renews a forward; answers the lease.
pub(crate) async fn create(state: &StatusState, req: Request<Incoming>) -> Response<Body> {
    if let Some(r) = refused(state, &req) {
        return r;
    }
    let body = Limited::new(req.into_body(), MAX_BODY);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is too large or was cut",
            )
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            )
        }
    };
    let ask = match ForwardRequest::parse(&bytes) {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("{e}; expected {{\"client\": \"192.168.88.20\", \"protocol\": \"tcp\", \"internal_port\": 32400, \"lifetime\": 3600}}"),
            )
        }
    };
    let protocol = ask.protocol;
    if let Some(r) = client_refused(state, ask.client) {
        return r;
    }
    // C-39a: checked against the list the last reconcile pass refreshed (no router command).
    if let Some(why) = state.mapping.refused().check(ask.client) {
        return error(
            StatusCode::FORBIDDEN,
            &format!(
                "client {} is not a client: {why}; no forward is made for it",
                ask.client
            ),
        );
    }
    let request = MappingRequest {
        client: ask.client,
        protocol,
        internal_port: ask.internal_port,
        suggested_external_port: ask.external_port,
        lifetime: ask.lifetime,
        origin: Origin::Api,
    };
    let reply = state.mapping.request(Command::Map(request)).await;
    if reply.result != ResultCode::Success {
        return failure(reply.result);
    }
    match state.mapping(&request.key()) {
        Some(view) => json(StatusCode::OK, &view),
        // Deleted again between the reply and now (it had a lifetime of a moment).
        None => error(StatusCode::GONE, "the forward was made, but is gone again"),
    }
}

/// `DELETE /api/v1/forwards/{protocol}/{client}/{internal_port}`: removes a mapping from both
/// layers; answers what was removed, 404 when there is none.
pub(crate) async fn delete(state: &StatusState, req: Request<Incoming>) -> Response<Body> {
    if let Some(r) = refused(state, &req) {
        return r;
    }
    let path = req.uri().path();
    let rest = path.strip_prefix("/api/v1/forwards/").unwrap_or_default();
    let mut parts = rest.split('/');
    let parsed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(p), Some(c), Some(i), None) => Protocol::parse(p)
            .zip(Ipv4Addr::from_str(c).ok())
            .zip(i.parse::<u16>().ok().filter(|i| *i != 0)),
        _ => None,
    };
    let Some(((protocol, client), internal_port)) = parsed else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected /api/v1/forwards/{tcp|udp}/{client}/{internal_port}",
        );
    };
    if let Some(r) = client_refused(state, client) {
        return r;
    }
    let key = MappingKey {
        client,
        protocol,
        internal_port,
    };
    let Some(view) = state.mapping(&key) else {
        return error(StatusCode::NOT_FOUND, &format!("no mapping {key}"));
    };
    let reply = state
        .mapping
        .request(Command::Delete {
            key,
            origin: Origin::Api,
        })
        .await;
    if reply.result != ResultCode::Success {
        return failure(reply.result);
    }
    json(StatusCode::OK, &Deleted { deleted: view })
}
