//! The check's task: it runs the check at start and every REACHABILITY_INTERVAL when
//! REACHABILITY_CHECK is on, after each heal of the gateway's mappings, and whenever someone
//! asks (`POST /api/v1/reachability`, `double-natpmp check --from-internet`), one at a time.
//! While the gateway's port quota is full it tries again each minute instead of waiting a
//! whole interval. Each result is logged (a failure with its cause and fix) and published to
//! whoever watches ([`ReachabilityHandle`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tracing::{info, warn};

use crate::mapping::events::MappingEvent;
use crate::reachability::check::{self, Context};
use crate::reachability::outcome::{Blocked, Outcome};
use crate::shutdown::Shutdown;

/// How soon a check blocked by a full quota runs again.
const QUOTA_RETRY: Duration = Duration::from_secs(60);

/// When the checks run on their own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    /// REACHABILITY_CHECK: at start, every `interval` and after each heal.
    pub(crate) periodic: bool,
    /// REACHABILITY_INTERVAL.
    pub(crate) interval: Duration,
}

/// The check as the status server sees it: the last result, a way to run one now.
#[derive(Clone, Debug)]
pub(crate) struct ReachabilityHandle {
    latest: watch::Receiver<Option<Arc<Outcome>>>,
    ask: mpsc::Sender<oneshot::Sender<Arc<Outcome>>>,
    periodic: bool,
}

impl ReachabilityHandle {
    /// The last result, if a check ran.
    pub(crate) fn latest(&self) -> Option<Arc<Outcome>> {
        self.latest.borrow().clone()
    }

    /// A receiver that sees each new result.
    pub(crate) fn watch(&self) -> watch::Receiver<Option<Arc<Outcome>>> {
        self.latest.clone()
    }

    /// Whether the checks run on their own (REACHABILITY_CHECK).
    pub(crate) fn periodic(&self) -> bool {
        self.periodic
    }

    /// Runs a check now (after the one under way, if any) and returns its result; `None` when
    /// the daemon is stopping.
    pub(crate) async fn check_now(&self) -> Option<Arc<Outcome>> {
        let (tx, rx) = oneshot::channel();
        self.ask.send(tx).await.ok()?;
        rx.await.ok()
    }
}

/// Starts the task; see the module docs. `events` are the mapping core's (a heal triggers a
/// check).
pub(crate) fn spawn(
    ctx: Context,
    schedule: Schedule,
    mut events: broadcast::Receiver<MappingEvent>,
    mut stop: Shutdown,
) -> ReachabilityHandle {
    let (publish, latest) = watch::channel(None);
    let (ask, mut asked) = mpsc::channel::<oneshot::Sender<Arc<Outcome>>>(8);
    let handle = ReachabilityHandle {
        latest,
        ask,
        periodic: schedule.periodic,
    };
    tokio::spawn(async move {
        let mut next = schedule.periodic.then(Instant::now);
        loop {
            let waiting = next.unwrap_or_else(Instant::now);
            let reply = tokio::select! {
                _ = sleep_until(waiting), if next.is_some() => None,
                asked = asked.recv() => match asked {
                    Some(reply) => Some(reply),
                    None => return,
                },
                event = events.recv() => {
                    if schedule.periodic
                        && matches!(event, Ok(MappingEvent::UpstreamHealed { .. }))
                    {
                        info!("the gateway's mappings were made again: checking reachability");
                        next = Some(Instant::now());
                    }
                    if matches!(event, Err(broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    continue;
                }
                _ = stop.recv() => return,
            };
            let outcome = Arc::new(check::run(&ctx).await);
            report(&outcome);
            publish.send_replace(Some(Arc::clone(&outcome)));
            if let Some(reply) = reply {
                let _ = reply.send(Arc::clone(&outcome));
            }
            if schedule.periodic {
                let quota = matches!(outcome.blocked, Some(Blocked::QuotaFull));
                let after = if quota {
                    QUOTA_RETRY
                } else {
                    schedule.interval
                };
                next = Some(Instant::now() + after);
            }
        }
    });
    handle
}

/// The log line of a result: a failure names its cause and its fix.
fn report(outcome: &Outcome) {
    let now = std::time::SystemTime::now();
    match outcome.problem() {
        Some((cause, fix)) => warn!(
            server = outcome.server.as_deref().unwrap_or("none"),
            "reachability check: {cause}. Fix: {fix}"
        ),
        None => info!("{}", outcome.line(now)),
    }
}
