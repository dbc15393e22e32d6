//! The keeper: the daemon keeps every live lease's upstream mapping alive itself, so a client's
//! renewal never waits for (or fails with) the gateway while the mapping is known to be valid.
//!
//! * One task sleeps until the earliest `renew_at` of any lease (so it wakes only when a lease
//!   needs it) and renews what is due, a bounded number at once, each under its key's lock.
//! * After a grant of lifetime L the next renewal is at about L/2 (with ±10 % jitter, so many
//!   leases made at once do not renew at once); after a failure it retries with back-off (1 s,
//!   doubling, at most 30 s), well before the mapping lapses when the gateway comes back.
//! * A renewal that finds a new external port logs old → new, records it (the client's next
//!   reply carries it; the rule's comment gets the new `e=` for a restart) and tells listeners.
//! * **Healing.** When the gateway lost its state (its epoch failed the RFC 6886 §3.6 check on
//!   any reply, C-48), when its external address changed, or when renewals failed and then
//!   succeeded again, every live lease's upstream mapping is made again at once, without
//!   waiting for clients ([`heal`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::mapping::core::Core;
use crate::mapping::events::MappingEvent;
use crate::mapping::router::rule::{RuleComment, RuleKind};
use crate::mapping::router::seam::Router;
use crate::mapping::store::key::MappingKey;
use crate::mapping::store::lease::reply_lifetime;
use crate::natpmp::upstream::{Upstream, UpstreamMap};
use crate::shutdown::Shutdown;

/// Renewals running at once.
const PARALLEL: usize = 32;
/// The first retry after a failed renewal (doubling).
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest pause between retries.
const RETRY_MAX: Duration = Duration::from_secs(30);

fn retry_pause(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(5);
    (RETRY_FIRST * 2u32.pow(exp)).min(RETRY_MAX)
}

/// Renews what is due until `shutdown`.
pub(crate) async fn keeper_loop<R: Router, U: Upstream>(
    core: Arc<Core<R, U>>,
    mut shutdown: Shutdown,
) {
    loop {
        let next = core.table.next_renewal();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = core.keeper_wake.notified() => {}
            _ = core.layers.heal_needed.notified() => {
                heal(&core, "the VPN gateway lost its mappings");
            }
            _ = sleep => renew_due(&core).await,
        }
    }
}

/// Makes every live lease's upstream mapping again at once (the gateway lost its state).
pub(crate) fn heal<R: Router, U: Upstream>(core: &Core<R, U>, why: &str) {
    let n = core.table.renew_all_now(Instant::now());
    if n > 0 {
        warn!(
            mappings = n,
            "{why}: making every mapping again at the VPN gateway now"
        );
    }
    core.healing
        .store(n > 0, std::sync::atomic::Ordering::SeqCst);
    core.keeper_wake.notify_one();
}

/// Renews every lease whose renewal is due, [`PARALLEL`] at a time.
pub(crate) async fn renew_due<R: Router, U: Upstream>(core: &Arc<Core<R, U>>) {
    let due = core.table.renewals_due(Instant::now());
    if due.is_empty() {
        return;
    }
    let healing = core
        .healing
        .swap(false, std::sync::atomic::Ordering::SeqCst);
    let mut set = JoinSet::new();
    let mut renewed = 0;
    let mut recovered = false;
    for key in due {
        while set.len() >= PARALLEL {
            if let Some(Ok(outcome)) = set.join_next().await {
                tally(outcome, &mut renewed, &mut recovered);
            }
        }
        let core = Arc::clone(core);
        set.spawn(async move { renew_one(&core, key).await });
    }
    while let Some(r) = set.join_next().await {
        if let Ok(outcome) = r {
            tally(outcome, &mut renewed, &mut recovered);
        }
    }
    if healing && renewed > 0 {
        info!(
            mappings = renewed,
            "every mapping is made again at the VPN gateway"
        );
        core.events
            .emit(MappingEvent::UpstreamHealed { mappings: renewed });
    } else if recovered {
        // Renewals failed and now succeed: the gateway may have lost state meanwhile.
        heal(core, "renewals at the VPN gateway work again after failing");
    }
}

/// How one renewal went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Renewal {
    /// Renewed; `true` when earlier renewals of this lease had failed.
    Done(bool),
    /// Failed; retried later.
    Failed,
    /// Nothing to do (the lease went, or was renewed meanwhile).
    Skipped,
}

fn tally(outcome: Renewal, renewed: &mut usize, recovered: &mut bool) {
    if let Renewal::Done(after_failures) = outcome {
        *renewed += 1;
        *recovered |= after_failures;
    }
}

async fn renew_one<R: Router, U: Upstream>(core: &Arc<Core<R, U>>, key: MappingKey) -> Renewal {
    let Some(_gate) = core.enter().await else {
        return Renewal::Skipped;
    };
    let _lock = core.locks.lock(key).await;
    let Some(lease) = core.table.get(&key) else {
        return Renewal::Skipped;
    };
    let now = Instant::now();
    if lease.renew_at > now {
        return Renewal::Skipped;
    }
    let asked = lease.comment.lifetime.unwrap_or(lease.lifetime);
    match core
        .layers
        .upstream_map(
            "keep the mapping",
            UpstreamMap {
                protocol: key.protocol,
                internal_port: lease.router_port,
                suggested_external_port: lease.external_port,
                lifetime: asked,
            },
        )
        .await
    {
        Ok(grant) => {
            let now = Instant::now();
            let moved = grant.external_port != lease.external_port;
            core.table.update(&key, |l| {
                l.take_grant(grant.external_port, grant.lifetime, now);
                // The client's lifetime stays what it was granted; a shorter upstream grant
                // shortens what the next reply grants (C-30).
                l.lifetime = reply_lifetime(l.lifetime, grant.lifetime, core.config.max_lifetime);
            });
            debug!(mapping = %key, router_port = lease.router_port, external_port = grant.external_port, lifetime = grant.lifetime, "upstream mapping kept alive");
            if moved {
                info!(mapping = %key, router_port = lease.router_port, old_external_port = lease.external_port, external_port = grant.external_port, "the VPN gateway moved the mapping: the client's next renewal gets the new port");
                core.events.emit(MappingEvent::ExternalPortChanged {
                    key,
                    old: lease.external_port,
                    new: grant.external_port,
                });
                record_external_port(
                    core,
                    key,
                    &lease.comment,
                    lease.rule_id(RuleKind::DstNat),
                    grant.external_port,
                )
                .await;
            }
            Renewal::Done(lease.keep_failures > 0)
        }
        Err(e) => {
            let failures = lease.keep_failures + 1;
            let pause = retry_pause(failures);
            core.table.update(&key, |l| {
                l.keep_failures = failures;
                l.renew_at = Instant::now() + pause;
            });
            if now >= lease.upstream_deadline {
                warn!(mapping = %key, router_port = lease.router_port, retry_in = ?pause, "the upstream mapping has lapsed and cannot be renewed; a client renewal now asks the gateway itself: {e}");
            } else {
                debug!(client = %key.client, proto = %key.protocol, router_port = lease.router_port, retry_in = ?pause, "upstream renewal failed; the mapping is still valid: {e}");
            }
            Renewal::Failed
        }
    }
}

/// Writes the new external port into the rule's comment (`e=`), so a restart suggests it.
async fn record_external_port<R: Router, U: Upstream>(
    core: &Core<R, U>,
    key: MappingKey,
    comment: &RuleComment,
    id: Option<&crate::mapping::router::seam::RuleId>,
    external_port: u16,
) {
    let Some(id) = id else { return };
    let updated = RuleComment {
        external_port: Some(external_port),
        ..*comment
    };
    match core
        .layers
        .router_call(
            "record the new external port in the rule's comment",
            core.layers.router.set_comment(id, &updated.encode()),
        )
        .await
    {
        Ok(()) => {
            core.table.update(&key, |l| l.comment = updated);
        }
        Err(e) => {
            debug!(rule = %id, "could not update the rule's comment (a restart suggests the old port): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::store::lease::next_renewal;

    #[test]
    fn renewals_come_at_about_half_the_lifetime_and_retries_back_off() {
        let now = Instant::now();
        for _ in 0..100 {
            let at = next_renewal(now, 60) - now;
            assert!(
                at >= Duration::from_secs(27) && at <= Duration::from_secs(33),
                "{at:?}"
            );
        }
        assert_eq!(next_renewal(now, 1) - now, Duration::from_secs(1));
        assert_eq!(retry_pause(1), Duration::from_secs(1));
        assert_eq!(retry_pause(2), Duration::from_secs(2));
        assert_eq!(retry_pause(4), Duration::from_secs(8));
        assert_eq!(retry_pause(99), RETRY_MAX);
    }
}
