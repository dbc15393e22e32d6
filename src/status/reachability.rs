//! The reachability self-test as the status server shows it: the page's line and the JSON
//! (`GET /api/v1/reachability`, and in `/api/v1/status`), a check run on request
//! (`POST /api/v1/reachability`, with the API token), and the event each change of the verdict
//! gives the page's list and the webhook.

use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::reachability::outcome::Outcome;
use crate::status::forwards;
use crate::status::history::{unix_seconds, EventRecord};
use crate::status::respond::{error, json, Body};
use crate::status::state::StatusState;
use crate::status::view::ReachabilityView;

/// `GET /api/v1/reachability`.
pub(crate) fn get(state: &StatusState) -> Response<Body> {
    match state.reachability_view() {
        Some(view) => json(StatusCode::OK, &view),
        None => error(
            StatusCode::NOT_FOUND,
            "the reachability check is not available",
        ),
    }
}

/// `POST /api/v1/reachability`: runs a check now (with the API token) and answers its view.
pub(crate) async fn post(state: &StatusState, req: Request<Incoming>) -> Response<Body> {
    if let Some(r) = forwards::refused(state, &req) {
        return r;
    }
    let Some(handle) = &state.reachability else {
        return error(
            StatusCode::NOT_FOUND,
            "the reachability check is not available",
        );
    };
    match handle.check_now().await {
        Some(outcome) => json(
            StatusCode::OK,
            &ReachabilityView::new(handle.periodic(), Some(outcome), SystemTime::now()),
        ),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping"),
    }
}

/// The event record of a new verdict (the page's list and the webhook).
pub(crate) fn record(outcome: &Outcome, at: SystemTime) -> EventRecord {
    let mut message = outcome.summary();
    if let Some((_, fix)) = outcome.problem() {
        message.push_str(". Fix: ");
        message.push_str(fix);
    }
    EventRecord {
        event: "reachability",
        time: unix_seconds(at),
        external_address: outcome.external.map(|e| *e.ip()),
        external_port: outcome.external.map(|e| e.port()),
        router_port: outcome.router_port,
        message,
        ..EventRecord::default()
    }
}
