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
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn c44_counts_whole_seconds_since_origin() {
        let start = Instant::now();
        let e = Epoch::starting_at(start);
        assert_eq!(e.sssoe_at(start), 0);
        assert_eq!(e.sssoe_at(start + Duration::from_millis(2_999)), 2);
        assert_eq!(e.sssoe_at(start + Duration::from_secs(86_400)), 86_400);
    }

    #[test]
    fn c44_instants_before_origin_read_as_zero_and_far_future_saturates() {
        let start = Instant::now() + Duration::from_secs(10);
        let e = Epoch::starting_at(start);
        assert_eq!(e.sssoe_at(start - Duration::from_secs(5)), 0);
        let far = start + Duration::from_secs(u64::from(u32::MAX) + 10);
        assert_eq!(e.sssoe_at(far), u32::MAX);
    }

    #[test]
    fn c45_reset_starts_from_zero() {
        let e = Epoch::starting_at(Instant::now() - Duration::from_secs(1_000));
        assert!(e.sssoe() >= 1_000);
        e.reset();
        assert!(e.sssoe() <= 1);
        assert!(e.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn c46a_sssoe_never_decreases_across_threads() {
        // Start 0.95 s before a second boundary, so the value ticks over while the threads read.
        const BASE: u32 = 5_000;
        let origin = Instant::now() - Duration::from_millis(u64::from(BASE) * 1_000 + 950);
        let epoch = Arc::new(Epoch::starting_at(origin));
        // The largest value any thread has published so far.
        let seen = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let epoch = Arc::clone(&epoch);
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    let mut reads = 0u64;
                    loop {
                        // Anything published before this read was measured earlier, so the
                        // value we read next must not be smaller.
                        let before = seen.load(Ordering::SeqCst);
                        let now = epoch.sssoe();
                        assert!(now >= before, "SSSoE went back from {before} to {now}");
                        seen.fetch_max(now, Ordering::SeqCst);
                        reads += 1;
                        if now > BASE || Instant::now() > deadline {
                            return (now, reads);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            let (last, reads) = t.join().expect("reader thread panicked");
            assert!(reads > 0);
            assert!(last > BASE, "the clock crossed the second boundary");
        }
    }

    #[test]
    fn c46b_sssoe_advances_at_least_seven_eighths_of_real_time() {
        let start = Instant::now();
        let e = Epoch::starting_at(start);
        for secs in [1u64, 8, 60, 3_600, 1_000_000] {
            let real = Duration::from_secs(secs);
            let reported = u64::from(e.sssoe_at(start + real));
            // The client's conservative estimate is 7/8 of elapsed time (C-46).
            assert!(reported * 8 >= secs * 7, "{reported} s after {secs} s");
            assert!(reported <= secs, "never faster than real time");
        }
        // And on the real clock, a 10 s old epoch reads at least 10.
        let e = Epoch::starting_at(Instant::now() - Duration::from_secs(10));
        assert!(e.sssoe() >= 10);
    }

    #[test]
    fn c46c_reset_is_seen_by_every_clone_of_the_shared_clock() {
        let e = Arc::new(Epoch::starting_at(
            Instant::now() - Duration::from_secs(500),
        ));
        let other = Arc::clone(&e);
        let handle = std::thread::spawn(move || {
            other.reset();
        });
        handle.join().expect("reset thread panicked");
        assert!(e.sssoe() <= 1);
    }
}
