//! The background loops of the mapping core: expiry (one task sleeping until the earliest
//! deadline, woken when a new lease appears) and the periodic reconciler (every
//! `reconcile_interval`; after a failed pass it retries sooner, with back-off).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::mapping::core::Core;
use crate::mapping::error::MappingError;
use crate::mapping::events::MappingEvent;
use crate::mapping::loops::reconcile;
use crate::mapping::router::seam::Router;
use crate::mapping::txn::teardown::expire;
use crate::natpmp::upstream::Upstream;
use crate::shutdown::Shutdown;

/// The first retry after a failed reconcile pass (doubling, at most the interval).
const RECONCILE_RETRY: Duration = Duration::from_secs(5);

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Removes every lease whose deadline has passed.
pub(crate) async fn expire_due<R: Router, U: Upstream>(core: &Arc<Core<R, U>>) {
    let due = core.table.due(Instant::now());
    let mut set = JoinSet::new();
    for key in due {
        let core = Arc::clone(core);
        set.spawn(async move { expire(&core, key).await });
    }
    while set.join_next().await.is_some() {}
}

/// Sleeps until the earliest deadline and expires what is due, until `shutdown`.
pub(crate) async fn expiry_loop<R: Router, U: Upstream>(
    core: Arc<Core<R, U>>,
    mut shutdown: Shutdown,
) {
    while !shutdown.is_shutdown() {
        let next = core.table.next_deadline();
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = core.expiry_wake.notified() => {}
            _ = sleep_until_opt(next) => expire_due(&core).await,
        }
    }
}

/// Runs a reconcile pass every interval (sooner after a failure), until `shutdown`.
pub(crate) async fn reconcile_loop<R: Router, U: Upstream>(
    core: Arc<Core<R, U>>,
    mut shutdown: Shutdown,
) {
    let period = core.config.reconcile_interval;
    let mut wait = period;
    let mut retry = RECONCILE_RETRY.min(period);
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        match reconcile::pass(&core).await {
            Ok(report) => {
                debug!(?report, "reconciled");
                wait = period;
                retry = RECONCILE_RETRY.min(period);
            }
            Err(MappingError::ShuttingDown) => break,
            Err(e) => {
                core.events.emit(MappingEvent::ReconcileFailed);
                warn!("reconcile failed, retrying in {retry:?}: {e}");
                wait = retry;
                retry = (retry * 2).min(period);
            }
        }
    }
}
