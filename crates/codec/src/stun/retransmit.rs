//! When to send a request again over UDP, and when to give up (RFC 8489 §6.2.1), as pure
//! arithmetic: the caller sleeps, this only says how long.

use std::time::Duration;

/// RFC 8489 §6.2.1's retransmission rule: send, wait RTO; send again, wait 2×RTO; … up to
/// `requests` sends (Rc); after the last one wait `last_wait_factor`×RTO (Rm×RTO) for an
/// answer before giving up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Retransmission {
    /// The initial retransmission timeout (RTO, 500 ms by default).
    pub rto: Duration,
    /// How many times the request is sent (Rc, 7 by default).
    pub requests: u32,
    /// The wait after the last send, in RTOs (Rm, 16 by default).
    pub last_wait_factor: u32,
}

impl Default for Retransmission {
    /// The RFC's defaults: RTO 500 ms, Rc 7, Rm 16: sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and
    /// 31.5 s, failure at 39.5 s.
    fn default() -> Self {
        Retransmission {
            rto: Duration::from_millis(500),
            requests: 7,
            last_wait_factor: 16,
        }
    }
}

impl Retransmission {
    /// The RFC's schedule cut to `requests` sends (a daemon's probe may use fewer).
    pub fn with_requests(requests: u32) -> Retransmission {
        Retransmission {
            requests,
            ..Retransmission::default()
        }
    }

    /// The wait after each send, one per send: send, then listen for that long before the
    /// next send (or, after the last, before giving up).
    pub fn waits(&self) -> Waits {
        Waits {
            rule: *self,
            sent: 0,
        }
    }

    /// From the first send until the transaction fails.
    pub fn total(&self) -> Duration {
        self.waits()
            .fold(Duration::ZERO, |sum, w| sum.saturating_add(w))
    }
}

/// The waits of a [`Retransmission`], in order.
#[derive(Clone, Debug)]
pub struct Waits {
    rule: Retransmission,
    sent: u32,
}

impl Iterator for Waits {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let rule = &self.rule;
        if self.sent >= rule.requests {
            return None;
        }
        self.sent += 1;
        let wait = if self.sent == rule.requests {
            rule.rto.saturating_mul(rule.last_wait_factor)
        } else {
            // The interval doubles after every send: RTO, 2 RTO, 4 RTO, ...
            rule.rto.saturating_mul(2u32.saturating_pow(self.sent - 1))
        };
        Some(wait)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.rule.requests - self.sent).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Waits {}
