//! The event listener: one task reads the mapping core's events and hands each to the
//! [`History`](crate::status::history::History), the [`Metrics`](crate::status::metrics::Metrics),
//! the webhook's queue and the status file's writer. Nothing it does waits on the network, so it
//! keeps up with the core; if it ever falls behind, the lost events are counted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::mapping::events::MappingEvent;
use crate::reachability::outcome::Outcome;
use crate::shutdown::Shutdown;
use crate::status::reachability;
use crate::status::state::StatusState;
use crate::status::webhook::Webhook;

/// Where the listener sends what it learns besides the history and the metrics.
pub(crate) struct Sinks {
    /// The webhook's queue.
    pub webhook: Option<Webhook>,
    /// Bumped when the mappings changed (the status file's writer waits on it).
    pub file: Option<watch::Sender<u64>>,
    /// The reachability check's results: a new verdict is an event for the page's list and the
    /// webhook.
    pub reachability: Option<watch::Receiver<Option<Arc<Outcome>>>>,
}

/// Starts the listener; it stops when `stop` fires, after taking the events already sent (so
/// the removals of a shutdown still reach the webhook and the file), and then drops the sinks.
pub(crate) fn spawn(
    state: Arc<StatusState>,
    mut events: broadcast::Receiver<MappingEvent>,
    mut sinks: Sinks,
    mut stop: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut verdicts = sinks.reachability.take();
        let mut shown: Option<Arc<Outcome>> = None;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(e) => handle(&state, &sinks, &e),
                    Err(RecvError::Lagged(n)) => lagged(&state, &sinks, n),
                    Err(RecvError::Closed) => return,
                },
                changed = changed(&mut verdicts) => match changed {
                    Some(outcome) => verdict(&state, &sinks, &mut shown, outcome),
                    None => verdicts = None,
                },
                _ = stop.recv() => break,
            }
        }
        loop {
            match events.try_recv() {
                Ok(e) => handle(&state, &sinks, &e),
                Err(TryRecvError::Lagged(n)) => lagged(&state, &sinks, n),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    })
}

/// The next result of the reachability check; `None` when its task is gone. Pends forever
/// when there is no check.
async fn changed(
    verdicts: &mut Option<watch::Receiver<Option<Arc<Outcome>>>>,
) -> Option<Option<Arc<Outcome>>> {
    match verdicts {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// A new result: an event when it says something new (the first one, a new verdict, exit or
/// pairing), for the page's list and the webhook.
fn verdict(
    state: &StatusState,
    sinks: &Sinks,
    shown: &mut Option<Arc<Outcome>>,
    outcome: Option<Arc<Outcome>>,
) {
    let Some(outcome) = outcome else { return };
    let new = shown.as_ref().is_none_or(|s| outcome.differs_from(s));
    *shown = Some(Arc::clone(&outcome));
    if !new {
        return;
    }
    let record = reachability::record(&outcome, SystemTime::now());
    state.history.note(record.clone());
    if let Some(webhook) = &sinks.webhook {
        webhook.offer(record);
    }
}

fn lagged(state: &StatusState, sinks: &Sinks, n: u64) {
    state.metrics.events_missed(n);
    let live: HashSet<_> = state.mapping.leases().iter().map(|l| l.key).collect();
    state.history.retain(|k| live.contains(k));
    bump(sinks);
}

fn bump(sinks: &Sinks) {
    if let Some(file) = &sinks.file {
        file.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn handle(state: &StatusState, sinks: &Sinks, event: &MappingEvent) {
    state.metrics.record(event);
    let record = state
        .history
        .observe(event, SystemTime::now(), (state.external)());
    if matches!(
        event,
        MappingEvent::Created { .. }
            | MappingEvent::Renewed { .. }
            | MappingEvent::ExternalPortChanged { .. }
            | MappingEvent::Removed { .. }
    ) {
        bump(sinks);
    }
    if let (Some(webhook), Some(record)) = (&sinks.webhook, record) {
        if record.for_webhook() {
            webhook.offer(record);
        }
    }
}
