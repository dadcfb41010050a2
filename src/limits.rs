//! Rate limiting and global connection admission.
//!
//! Owns: the sliding-window counter (O(1) memory per user), the server-wide connection count and
//! the per-address socket count. Does not touch: clocks (callers pass milliseconds), users or
//! connections themselves.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Sliding-window counter: the previous fixed window's count weighted by how much of it still
/// overlaps the sliding window, plus the current window's count. Twelve bytes per user instead of
/// a deque of timestamps, and never more permissive than `limit` per any window.
#[derive(Debug, Default, Clone, Copy)]
pub struct SlidingWindow {
    /// Windows since the clock's origin (u32: 136 years of one-second windows).
    window_index: u32,
    previous: u32,
    current: u32,
}

/// A refused message: when the caller may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// Milliseconds until a message would be accepted.
    pub retry_after_ms: u64,
}

impl SlidingWindow {
    /// Counts one message at `now_ms` if it fits `limit` per `window_ms`; otherwise refuses it.
    pub fn try_acquire(&mut self, now_ms: u64, limit: u32, window_ms: u64) -> Result<(), RateLimited> {
        let window_ms = window_ms.max(1);
        let index = (now_ms / window_ms) as u32;
        if index == self.window_index.wrapping_add(1) {
            self.previous = self.current;
            self.current = 0;
        } else if index != self.window_index {
            self.previous = 0;
            self.current = 0;
        }
        self.window_index = index;
        let elapsed = now_ms % window_ms;
        let remaining = window_ms - elapsed;
        // estimate = previous * remaining / window + current, kept in integers (scaled by window).
        let scaled = self.previous as u128 * remaining as u128 + self.current as u128 * window_ms as u128;
        if scaled < limit as u128 * window_ms as u128 {
            self.current += 1;
            return Ok(());
        }
        Err(RateLimited {
            retry_after_ms: self.wait_ms(limit, window_ms, elapsed),
        })
    }

    /// True once nothing counted so far can limit a message at `now_ms` (both the current and
    /// the previous fixed window are over), so the state may be forgotten.
    pub fn is_cold(&self, now_ms: u64, window_ms: u64) -> bool {
        let index = (now_ms / window_ms.max(1)) as u32;
        (self.previous == 0 && self.current == 0) || index > self.window_index.wrapping_add(1)
    }

    /// Time until `previous * (window - e) / window + current < limit` holds again.
    fn wait_ms(&self, limit: u32, window_ms: u64, elapsed: u64) -> u64 {
        let (limit, w) = (limit as u128, window_ms as u128);
        if (self.current as u128) < limit && self.previous > 0 {
            // Within this window: need previous * (w - e') < (limit - current) * w.
            let room = (limit - self.current as u128) * w;
            let e_needed = w - room.div_ceil(self.previous as u128).min(w) + 1;
            return (e_needed as u64).saturating_sub(elapsed).max(1);
        }
        // Next window: current becomes previous; need current * (w - e'') < limit * w.
        let cur = (self.current as u128).max(1);
        let e_needed = (w - (limit * w).div_ceil(cur).min(w) + 1).min(w);
        (window_ms - elapsed) + e_needed as u64
    }
}

/// Server-wide count of open WebSockets, shared by every reactor. Touched once per upgrade and
/// once per close, never per message.
#[derive(Debug, Default)]
pub struct Admission {
    open: AtomicUsize,
}

impl Admission {
    /// Reserves a place if fewer than `max` are open.
    pub fn try_admit(&self, max: usize) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    pub fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// Sockets held per peer address, server-wide: every TCP connection counts from accept to close
/// (upgrading, open, closing), so one address cannot hold the descriptors, handshake slots or
/// close waits everyone else needs. Addresses hash into a fixed table of counters (256 KiB, no
/// allocation per address); a collision can only make two addresses share one budget.
/// IPv6 addresses count per /64, the block one subscriber usually gets.
pub struct PerIpAdmission {
    buckets: Box<[AtomicU32]>,
    key: std::hash::RandomState,
}

const IP_BUCKETS: usize = 1 << 16;

impl Default for PerIpAdmission {
    fn default() -> Self {
        PerIpAdmission {
            buckets: (0..IP_BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            key: std::hash::RandomState::new(),
        }
    }
}

impl PerIpAdmission {
    /// The counter for `ip`.
    pub fn bucket(&self, ip: IpAddr) -> u16 {
        let h = match ip {
            IpAddr::V4(v4) => self.key.hash_one(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.key.hash_one(v4.octets()),
                None => self.key.hash_one(&v6.octets()[..8]),
            },
        };
        (h as usize % IP_BUCKETS) as u16
    }

    /// Counts one more socket in `bucket` if it holds fewer than `max` (0: no limit).
    pub fn try_admit(&self, bucket: u16, max: u32) -> bool {
        let b = &self.buckets[bucket as usize];
        if max == 0 {
            b.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    pub fn release(&self, bucket: u16) {
        let _ = self.buckets[bucket as usize].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_limit_then_refuses() {
        let mut w = SlidingWindow::default();
        for i in 0..100 {
            assert_eq!(w.try_acquire(1_000 + i, 100, 60_000), Ok(()), "message {i}");
        }
        let err = w.try_acquire(1_200, 100, 60_000).unwrap_err();
        assert!(err.retry_after_ms > 0 && err.retry_after_ms <= 120_000, "{err:?}");
    }

    #[test]
    fn refused_messages_are_not_counted_and_window_slides() {
        let mut w = SlidingWindow::default();
        for _ in 0..10 {
            w.try_acquire(0, 10, 1_000).unwrap();
        }
        for _ in 0..50 {
            assert!(w.try_acquire(500, 10, 1_000).is_err());
        }
        // Half-way into the next window the previous window weighs half: 5 more fit.
        let mut ok = 0;
        for _ in 0..20 {
            if w.try_acquire(1_500, 10, 1_000).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 5);
        // Two windows later everything is forgotten.
        assert!(w.try_acquire(3_000, 10, 1_000).is_ok());
    }

    #[test]
    fn retry_after_is_honest() {
        // Waiting retry_after must make the next message pass; waiting less must not (unless it
        // rounds within a millisecond).
        let mut rng = 12345u64;
        for _ in 0..200 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let limit = 1 + (rng >> 40) as u32 % 20;
            let window = 100 + (rng >> 20) % 5_000;
            let mut w = SlidingWindow::default();
            let mut now = (rng >> 8) % 10_000;
            loop {
                match w.try_acquire(now, limit, window) {
                    Ok(()) => now += (rng >> 50) % 3,
                    Err(e) => {
                        let mut probe = w;
                        if e.retry_after_ms > 1 {
                            assert!(probe.try_acquire(now + e.retry_after_ms - 2, limit, window).is_err());
                        }
                        let mut probe = w;
                        assert!(probe.try_acquire(now + e.retry_after_ms, limit, window).is_ok());
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn cold_after_two_windows() {
        let mut w = SlidingWindow::default();
        assert!(w.is_cold(0, 1000));
        w.try_acquire(500, 10, 1000).unwrap();
        assert!(!w.is_cold(1500, 1000), "still weighs on the next window");
        assert!(w.is_cold(2000, 1000));
    }

    #[test]
    fn admission_caps() {
        let a = Admission::default();
        assert!(a.try_admit(2));
        assert!(a.try_admit(2));
        assert!(!a.try_admit(2));
        a.release();
        assert!(a.try_admit(2));
        assert_eq!(a.open(), 2);
    }

    #[test]
    fn per_ip_caps_each_address_and_v6_by_prefix() {
        let t = PerIpAdmission::default();
        let a = t.bucket("10.0.0.1".parse().unwrap());
        assert!(t.try_admit(a, 2) && t.try_admit(a, 2));
        assert!(!t.try_admit(a, 2));
        t.release(a);
        assert!(t.try_admit(a, 2));
        let v6a = t.bucket("2001:db8::1".parse().unwrap());
        let v6b = t.bucket("2001:db8::ffff:2".parse().unwrap());
        assert_eq!(v6a, v6b, "one /64 shares a budget");
        let mapped = t.bucket("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped, a, "a v4-mapped address is the v4 address");
        assert!(t.try_admit(a, 0), "0 means no limit");
    }
}
