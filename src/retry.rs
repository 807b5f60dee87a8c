//! The one backoff: exponential, from a first delay doubling up to a ceiling. Callers decide
//! whether to retry (each client has its own classifier: SQLSTATE, HTTP status, AWS code); this
//! only says how long to wait before the next attempt.

use std::time::Duration;

/// Exponential backoff between `first` and `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, doubles after every delay, never above `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay before the next attempt, without moving on.
    pub fn peek(&self) -> Duration {
        self.next.min(self.max)
    }

    /// The delay before the next attempt; the one after it doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.peek();
        self.next = d.saturating_mul(2).min(self.max);
        d
    }

    /// Back to the first delay (an attempt got work done).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay before retry number `n` (0-based), without state: `first * 2^n`, at most `max`.
    pub fn nth(&self, n: u32) -> Duration {
        self.first
            .saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    #[test]
    fn doubles_up_to_the_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let got: Vec<u64> = (0..6).map(|_| ms(b.next_delay())).collect();
        assert_eq!(got, [200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(ms(b.peek()), 1000);
        b.reset();
        assert_eq!(ms(b.next_delay()), 200);
    }

    #[test]
    fn nth_matches_the_sequence_and_never_overflows() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        let seq: Vec<u64> = (0..7).map(|n| ms(b.nth(n))).collect();
        assert_eq!(seq, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(ms(b.nth(40)), 8000);
        assert_eq!(ms(b.nth(u32::MAX)), 8000);
    }

    #[test]
    fn a_ceiling_below_the_first_delay_wins() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(ms(b.next_delay()), 1000);
        assert_eq!(ms(b.nth(0)), 1000);
    }
}
