//! [`QuotaHint`]: whether the VPN gateway's port quota was found used up a moment ago, so the
//! next new mappings ask the gateway before the router (see `create.rs`).
//!
//! A new mapping asks the router and the gateway at once. When the gateway answers 4 (its
//! per-tunnel quota, about 5 ports at ProtonVPN), the rule added meanwhile must be removed
//! again: two router commands for nothing, and a rule that existed for nothing. While the quota
//! is known to be used up, asking the gateway first costs one round trip more for the request
//! that succeeds, and saves both commands for every request that does not; so for
//! [`QUOTA_HOLD`] after a 4, creates are sequential (gateway first). Any sign that the quota
//! has room again (a grant, or one of our mappings deleted at the gateway) ends it at once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long creates stay sequential after the gateway answered 4: the longest lifetime
/// ProtonVPN grants, after which mappings nobody renews have lapsed.
pub(crate) const QUOTA_HOLD: Duration = Duration::from_secs(60);

/// Whether to ask the gateway before the router (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct QuotaHint {
    until: Mutex<Option<Instant>>,
}

impl QuotaHint {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a create at `now` should ask the gateway first.
    pub(crate) fn sequential(&self, now: Instant) -> bool {
        self.slot().is_some_and(|until| now < until)
    }

    /// The gateway answered 4 at `now`.
    pub(crate) fn exhausted(&self, now: Instant) {
        *self.slot() = Some(now + QUOTA_HOLD);
    }

    /// The gateway has room again (it granted a mapping, or one of ours was deleted there).
    pub(crate) fn room(&self) {
        *self.slot() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_quota_refusal_makes_creates_sequential_until_room_or_the_hold_ends() {
        let hint = QuotaHint::default();
        let now = Instant::now();
        assert!(!hint.sequential(now));
        hint.exhausted(now);
        assert!(hint.sequential(now + Duration::from_secs(59)));
        assert!(!hint.sequential(now + QUOTA_HOLD));
        hint.exhausted(now);
        hint.room();
        assert!(!hint.sequential(now));
    }
}
