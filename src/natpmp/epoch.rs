//! Seconds Since Start of Epoch (SSSoE), RFC 6886 §3.6 (C-44..C-46).
//!
//! One monotonic clock for the whole process, shared by every socket and task, so the value
//! never goes backwards while state is kept (C-46a) and advances in real time (C-46b).
//! [`Epoch::reset`] starts counting from zero again when our mapping state is lost (C-45, C-48).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The epoch clock. Cheap to read; share it behind an `Arc`.
#[derive(Debug)]
pub struct Epoch {
    origin: Mutex<Instant>,
}

impl Default for Epoch {
    fn default() -> Self {
        Self::new()
    }
}

impl Epoch {
    /// An epoch that starts now.
    pub fn new() -> Epoch {
        Epoch::starting_at(Instant::now())
    }

    /// An epoch that started at `origin` (tests use this to look back in time).
    pub fn starting_at(origin: Instant) -> Epoch {
        Epoch {
            origin: Mutex::new(origin),
        }
    }

    fn origin(&self) -> Instant {
        // A poisoned lock still holds a valid Instant: a panic elsewhere cannot corrupt it.
        match self.origin.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    /// SSSoE now.
    pub fn sssoe(&self) -> u32 {
        self.sssoe_at(Instant::now())
    }

    /// SSSoE at `now`; saturates at `u32::MAX` (136 years) and at 0 for instants before the
    /// origin.
    pub fn sssoe_at(&self, now: Instant) -> u32 {
        let secs = now.saturating_duration_since(self.origin()).as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// How long since the epoch started.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin())
    }

    /// Starts counting from zero again (C-45: mapping state was lost or reset).
    pub fn reset(&self) {
        let now = Instant::now();
        match self.origin.lock() {
            Ok(mut g) => *g = now,
            Err(p) => *p.into_inner() = now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c44_counts_whole_seconds_since_origin() {
        let start = Instant::now();
        let e = Epoch::starting_at(start);
        assert_eq!(e.sssoe_at(start), 0);
        assert_eq!(e.sssoe_at(start + Duration::from_millis(2_999)), 2);
        assert_eq!(e.sssoe_at(start + Duration::from_secs(86_400)), 86_400);
    }

    #[test]
    fn c45_reset_starts_from_zero() {
        let e = Epoch::starting_at(Instant::now() - Duration::from_secs(1_000));
        assert!(e.sssoe() >= 1_000);
        e.reset();
        assert!(e.sssoe() <= 1);
    }
}
