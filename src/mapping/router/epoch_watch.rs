//! Watching the upstream gateway's epoch (C-46, C-48): upstream state loss is our state loss.

use std::time::Duration;

use tokio::time::Instant;

/// Tracks the upstream's SSSoE and tells when it went backwards by the RFC 6886 §3.6 client rule:
/// the new value is more than 2 s below the last value plus 7/8 of the time elapsed since.
#[derive(Debug, Default)]
pub(crate) struct UpstreamEpochWatch {
    last: Option<(u32, Instant)>,
}

impl UpstreamEpochWatch {
    /// A watch that has seen nothing yet.
    pub(crate) fn new() -> UpstreamEpochWatch {
        UpstreamEpochWatch::default()
    }

    /// Records `sssoe` seen at `now`; `true` when it shows the gateway lost its mapping state.
    pub(crate) fn observe(&mut self, sssoe: u32, now: Instant) -> bool {
        let lost = match self.last {
            Some((prev, at)) => {
                let elapsed = now.saturating_duration_since(at);
                let expected_ms = u128::from(prev) * 1000 + elapsed.as_millis() * 7 / 8;
                u128::from(sssoe) * 1000 + SLACK.as_millis() < expected_ms
            }
            None => false,
        };
        self.last = Some((sssoe, now));
        lost
    }
}

/// How far below the conservative estimate the epoch may be before it counts as a reset
/// (RFC 6886 §3.6: 2 seconds).
pub(crate) const SLACK: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c48_detects_an_epoch_that_went_backwards() {
        let t0 = Instant::now();
        let mut w = UpstreamEpochWatch::new();
        assert!(!w.observe(1000, t0));
        // 40 s later the gateway says 1035: 7/8 of 40 is 35, fine.
        assert!(!w.observe(1035, t0 + Duration::from_secs(40)));
        // 40 s later again it says 1066: expected >= 1070, within 2 s slack? 1066 + 2 < 1070.
        assert!(w.observe(1066, t0 + Duration::from_secs(80)));
        // A restart: epoch near zero.
        assert!(w.observe(3, t0 + Duration::from_secs(90)));
        // Then normal again from the new base.
        assert!(!w.observe(13, t0 + Duration::from_secs(100)));
    }
}
