//! The pace of wait loops against the Heroku APIs: how long to sleep between two polls of the
//! dynos, a release or a backup.
//!
//! Every request draws on the account's rate-limit budget (4,500 tokens, refilled at about 75
//! a minute, shared with every other client of the account: CI deploys, autoscalers, the
//! dashboard), so a loop polls quickly only at first, when most waits end, then at the Heroku
//! CLI's own pace, and slows down further when the budget left (the last `RateLimit-Remaining`
//! the client saw) runs low:
//!
//! * the first polls come every 0.5 s for 3 s, then after 1 s, 2 s and 4 s (never above the
//!   steady pace): a stopped dyno or a config-var release is usually seen within seconds, and
//!   the cutover waits with writes frozen, so each half second counts; 9 requests for the
//!   first 10.5 s of a wait;
//! * then every 5 s for dynos and releases (12 requests a minute, a sixth of the refill; the
//!   CLI's `ps:wait` refuses less than 10 s, but the cutover waits with writes frozen, so
//!   seconds count), and every 3 s for backups (the CLI's `pg:backups:capture` pace);
//! * below [`LOW`] (600) tokens left, about 8 minutes of refill, someone is draining the budget:
//!   every delay doubles;
//! * below [`SCARCE`] (150) tokens left, 2 minutes of refill: at least 30 s between polls (2 a
//!   minute), so that the budget left goes to the steps that cannot wait (scaling, config vars,
//!   attachments) and to the app's own clients, and the bucket refills meanwhile.

use std::time::Duration;

use super::client::Client;

/// The first delays of a loop, before the steady pace (each capped at it).
pub const RAMP: [Duration; 9] = [
    Duration::from_millis(500),
    Duration::from_millis(500),
    Duration::from_millis(500),
    Duration::from_millis(500),
    Duration::from_millis(500),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// Steady pace of dyno waits.
pub const DYNOS: Duration = Duration::from_secs(5);
/// Steady pace of release waits.
pub const RELEASES: Duration = Duration::from_secs(5);
/// Steady pace of backup waits (the CLI polls every 3 s).
pub const BACKUPS: Duration = Duration::from_secs(3);
/// Below this many tokens left, delays double.
pub const LOW: i64 = 600;
/// Below this many tokens left, delays are at least [`SCARCE_DELAY`].
pub const SCARCE: i64 = 150;
/// The shortest delay when the budget is scarce.
pub const SCARCE_DELAY: Duration = Duration::from_secs(30);

/// The successive delays of one wait loop. Make one per loop; call [`Pace::next_delay`] before
/// each sleep.
#[derive(Debug, Clone)]
pub struct Pace<'a> {
    /// Reads the budget left; None: a fixed pace.
    client: Option<&'a Client>,
    /// Steady pace (after the ramp).
    steady: Duration,
    /// Whether the first delays ramp up.
    ramp: bool,
    /// Delays given so far.
    polls: usize,
}

impl<'a> Pace<'a> {
    /// A loop polling at `steady` after the ramp, stretched by `client`'s budget left.
    pub fn new(client: &'a Client, steady: Duration) -> Self {
        Pace {
            client: Some(client),
            steady,
            ramp: true,
            polls: 0,
        }
    }

    /// Waiting for dynos to stop or come up.
    pub fn dynos(client: &'a Client) -> Self {
        Self::new(client, DYNOS)
    }

    /// Waiting for a release to finish.
    pub fn releases(client: &'a Client) -> Self {
        Self::new(client, RELEASES)
    }

    /// Waiting for a backup (data API) to finish.
    pub fn backups(client: &'a Client) -> Self {
        Self::new(client, BACKUPS)
    }

    /// The same delay every time, regardless of the budget (tests, non-Heroku loops).
    pub fn fixed(every: Duration) -> Self {
        Pace {
            client: None,
            steady: every,
            ramp: false,
            polls: 0,
        }
    }

    /// The delay before the next poll.
    pub fn next_delay(&mut self) -> Duration {
        let poll = if self.ramp { Some(self.polls) } else { None };
        self.polls = self.polls.saturating_add(1);
        match self.client {
            Some(c) => delay(poll, self.steady, c.rate_limit_remaining()),
            None => self.steady,
        }
    }
}

impl From<Duration> for Pace<'_> {
    /// [`Pace::fixed`].
    fn from(every: Duration) -> Self {
        Pace::fixed(every)
    }
}

/// The delay before poll number `poll` (0-based; None: no ramp) of a loop whose steady pace is
/// `steady`, when the account has `remaining` tokens left (negative: not known yet, no
/// stretch). Pure, for tests.
pub fn delay(poll: Option<usize>, steady: Duration, remaining: i64) -> Duration {
    let base = poll
        .and_then(|n| RAMP.get(n))
        .map_or(steady, |r| (*r).min(steady));
    stretch(base, remaining)
}

/// `base` stretched by the budget left (see the module's documentation).
pub fn stretch(base: Duration, remaining: i64) -> Duration {
    match remaining {
        r if r < 0 => base,
        r if r < SCARCE => base.saturating_mul(2).max(SCARCE_DELAY),
        r if r < LOW => base.saturating_mul(2),
        _ => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    #[test]
    fn ramps_up_then_keeps_the_steady_pace() {
        // (steady, remaining, delays of the first 11 polls in ms)
        let table: &[(Duration, i64, [u64; 11])] = &[
            // Dynos and releases: 0.5 s for 3 s, then 1, 2, 4, then 5 s.
            (
                DYNOS,
                4500,
                [500, 500, 500, 500, 500, 500, 1000, 2000, 4000, 5000, 5000],
            ),
            // Backups: the ramp never exceeds the CLI's 3 s.
            (
                BACKUPS,
                4500,
                [500, 500, 500, 500, 500, 500, 1000, 2000, 3000, 3000, 3000],
            ),
            // Budget unknown (no response yet): no stretch.
            (
                DYNOS,
                -1,
                [500, 500, 500, 500, 500, 500, 1000, 2000, 4000, 5000, 5000],
            ),
            // Exactly at the thresholds: not below them.
            (
                DYNOS,
                LOW,
                [500, 500, 500, 500, 500, 500, 1000, 2000, 4000, 5000, 5000],
            ),
            // Low: everything doubles.
            (
                DYNOS,
                599,
                [
                    1000, 1000, 1000, 1000, 1000, 1000, 2000, 4000, 8000, 10000, 10000,
                ],
            ),
            (
                BACKUPS,
                SCARCE,
                [
                    1000, 1000, 1000, 1000, 1000, 1000, 2000, 4000, 6000, 6000, 6000,
                ],
            ),
            // Scarce: at least 30 s.
            (DYNOS, 149, [30000; 11]),
            (BACKUPS, 0, [30000; 11]),
            // A slow steady pace is stretched too, beyond 30 s.
            (
                Duration::from_secs(20),
                10,
                [
                    30000, 30000, 30000, 30000, 30000, 30000, 30000, 30000, 30000, 40000, 40000,
                ],
            ),
        ];
        for (steady, remaining, want) in table {
            let got: Vec<u64> = (0..11)
                .map(|n| ms(delay(Some(n), *steady, *remaining)))
                .collect();
            assert_eq!(got, want, "steady {steady:?}, remaining {remaining}");
        }
    }

    #[test]
    fn fixed_paces_never_ramp_or_stretch() {
        let mut p = Pace::fixed(Duration::from_millis(200));
        let got: Vec<u64> = (0..5).map(|_| ms(p.next_delay())).collect();
        assert_eq!(got, [200; 5]);
        let mut p: Pace<'_> = Duration::from_secs(1).into();
        assert_eq!(ms(p.next_delay()), 1000);
        // Without the ramp the steady pace applies from the first poll, stretched by the budget.
        assert_eq!(ms(delay(None, DYNOS, 4500)), 5000);
        assert_eq!(ms(delay(None, DYNOS, 100)), 30000);
    }

    #[test]
    fn a_client_pace_follows_its_ramp() {
        let cfg = crate::heroku::client::Config::new(
            None,
            None,
            crate::heroku::client::Secret::new("t"),
            crate::heroku::client::TokenSource::Env,
        )
        .expect("config");
        let c = Client::new(cfg).expect("client");
        // No response seen yet: the budget is unknown, the ramp applies as is.
        let mut p = Pace::backups(&c);
        let got: Vec<u64> = (0..11).map(|_| ms(p.next_delay())).collect();
        assert_eq!(
            got,
            [500, 500, 500, 500, 500, 500, 1000, 2000, 3000, 3000, 3000]
        );
        let mut p = Pace::releases(&c);
        let got: Vec<u64> = (0..11).map(|_| ms(p.next_delay())).collect();
        assert_eq!(
            got,
            [500, 500, 500, 500, 500, 500, 1000, 2000, 4000, 5000, 5000]
        );
    }
}
