//! When to reconnect: exponential backoff with full jitter, and the close codes that mean
//! "do not come back".
//!
//! Owns: the attempt counter, the random source for the delays, and when a connection counts
//! as stable. Does not touch: sockets or clocks (the caller says when it connected and when
//! the connection ended; tests give it a seed and times of their choosing).

use std::time::{Duration, Instant};

/// How reconnection backs off.
#[derive(Debug, Clone)]
pub struct BackoffPolicy {
    /// The first delay's ceiling (`WS_RECONNECT_BACKOFF_BASE`, default 0.5 s).
    pub base: Duration,
    /// No delay is longer (`WS_RECONNECT_BACKOFF_MAX`, default 20 s).
    pub cap: Duration,
    /// Attempts in a row before giving up; 0 = forever (`WS_RECONNECT_MAX_ATTEMPTS`, default 0).
    pub max_attempts: u32,
    /// A connection that lasted this long resets the attempt counter (default 10 s): a
    /// server that accepts and at once drops does not reset it.
    pub stable_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(20),
            max_attempts: 0,
            stable_after: Duration::from_secs(10),
        }
    }
}

/// The reconnection state of one client: `rand(0, min(cap, base * 2^n))` for attempt `n`.
/// Full jitter is what keeps a fleet of clients from reconnecting in step after a restart:
/// every delay is drawn from the whole window, so the second wave is as spread as the first.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
    rng: u64,
    connected_at: Option<Instant>,
}

impl Backoff {
    /// `seed`: any number; two clients with different seeds draw different delays.
    pub fn new(policy: BackoffPolicy, seed: u64) -> Self {
        Backoff {
            policy,
            attempt: 0,
            // splitmix64 of the seed: zero and small seeds give well-spread states.
            rng: splitmix(seed),
            connected_at: None,
        }
    }

    /// A seed from the clock and the process: what a client uses when none is given.
    pub fn random_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let here = &nanos as *const u64 as u64;
        splitmix(nanos ^ u64::from(std::process::id()).rotate_left(32) ^ here)
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The window the next delay is drawn from: `min(cap, base * 2^attempt)`.
    pub fn window(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.policy.base.saturating_mul(factor).min(self.policy.cap)
    }

    /// The delay before the next attempt, or `None` once `max_attempts` have failed in a row.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.policy.max_attempts != 0 && self.attempt >= self.policy.max_attempts {
            return None;
        }
        let window = self.window();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = window.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.rng = splitmix(self.rng);
        Some(Duration::from_nanos(if nanos == 0 {
            0
        } else {
            self.rng % (nanos + 1)
        }))
    }

    /// A connection is open.
    pub fn connected(&mut self, at: Instant) {
        self.connected_at = Some(at);
    }

    /// The connection ended: if it had been stable, backing off starts again from the base.
    pub fn disconnected(&mut self, at: Instant) {
        if let Some(since) = self.connected_at.take()
            && at.saturating_duration_since(since) >= self.policy.stable_after
        {
            self.attempt = 0;
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether a close from the server invites a reconnect. Not after: 1002 and 1003 (the client
/// spoke wrongly), 1007 (invalid data), 1009 (its message was too large), 1010 (a required
/// extension), and 1008 (policy: bad token, connection limit, slow consumer) except `token
/// expired` when the client can get a fresh token. Every other code (1000 timeouts, 1001
/// server shutting down, 1006 abnormal, 1011, 1012 restart or missed messages, 1013, and
/// application codes) reconnects with backoff.
pub fn should_reconnect(code: u16, reason: &str, has_token_source: bool) -> bool {
    match code {
        1002 | 1003 | 1007 | 1009 | 1010 => false,
        1008 => has_token_source && reason == "token expired",
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(20),
            max_attempts: 0,
            stable_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn delays_fill_their_whole_window_and_the_window_doubles_to_the_cap() {
        // 2,000 clients at each attempt: every delay inside [0, window], and the delays spread
        // over the window (each tenth gets a share; the mean is near half the window).
        for attempt in 0..9u32 {
            let mut tenths = [0u32; 10];
            let mut sum = 0f64;
            let mut window = Duration::ZERO;
            for seed in 0..2000u64 {
                let mut b = Backoff::new(policy(), seed);
                for _ in 0..attempt {
                    b.next_delay();
                }
                window = b.window();
                let d = b.next_delay().unwrap();
                assert!(d <= window, "attempt {attempt}: {d:?} > {window:?}");
                let f = d.as_secs_f64() / window.as_secs_f64();
                tenths[((f * 10.0) as usize).min(9)] += 1;
                sum += f;
            }
            let expected = (Duration::from_millis(500) * 2u32.pow(attempt)).min(Duration::from_secs(20));
            assert_eq!(window, expected);
            for (i, n) in tenths.iter().enumerate() {
                assert!((140..=260).contains(n), "attempt {attempt}, tenth {i}: {n} of 2000");
            }
            let mean = sum / 2000.0;
            assert!((0.45..0.55).contains(&mean), "attempt {attempt}: mean {mean}");
        }
    }

    #[test]
    fn seeds_differ_and_the_same_seed_repeats() {
        let draw = |seed| {
            let mut b = Backoff::new(policy(), seed);
            (0..6).map(|_| b.next_delay().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn attempts_stop_at_the_maximum_and_only_a_stable_connection_resets_them() {
        let mut b = Backoff::new(
            BackoffPolicy {
                max_attempts: 3,
                ..policy()
            },
            1,
        );
        let t0 = Instant::now();
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        // Accepted, then dropped at once: still attempt 2.
        b.connected(t0);
        b.disconnected(t0 + Duration::from_secs(1));
        assert_eq!(b.attempt(), 2);
        assert!(b.next_delay().is_some());
        assert_eq!(b.next_delay(), None, "three attempts in a row, then give up");
        b.connected(t0);
        b.disconnected(t0 + Duration::from_secs(10));
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.window(), Duration::from_millis(500));
    }

    #[test]
    fn close_codes_that_mean_do_not_come_back() {
        for code in [1002, 1003, 1007, 1009, 1010] {
            assert!(!should_reconnect(code, "", true), "{code}");
        }
        assert!(!should_reconnect(1008, "authentication failed: expired", true));
        assert!(!should_reconnect(1008, "token expired", false));
        assert!(should_reconnect(1008, "token expired", true));
        for code in [1000, 1001, 1006, 1011, 1012, 1013, 4000] {
            assert!(should_reconnect(code, "", false), "{code}");
        }
    }
}
