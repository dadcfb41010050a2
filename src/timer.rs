//! Hashed timing wheel with lazy re-arm.
//!
//! Owns: slots of opaque `u64` keys and the wheel's notion of the current tick. Does not touch:
//! clocks (the caller passes `now` in ticks), connections, or what a key means. A key is fired at
//! (or, when its deadline lies beyond the wheel's span, before) its deadline; the caller checks
//! the real deadline of whatever the key names and schedules it again if it is not yet due. That
//! way activity on a connection only stores a tick, and the wheel holds one entry per connection.

/// Capacity a slot may keep after firing.
const SLOT_KEEP: usize = 16;

/// A hashed timing wheel. `slots` is a power of two; the span is `slots - 1` ticks.
pub struct TimerWheel {
    slots: Vec<Vec<u64>>,
    mask: u64,
    /// The next tick whose slot has not fired yet.
    next_tick: u64,
    len: usize,
}

impl TimerWheel {
    /// A wheel with `slots` slots (rounded up to a power of two, at least 2), starting at `now`.
    pub fn new(slots: usize, now: u64) -> Self {
        let n = slots.max(2).next_power_of_two();
        TimerWheel {
            slots: (0..n).map(|_| Vec::new()).collect(),
            mask: n as u64 - 1,
            next_tick: now,
            len: 0,
        }
    }

    /// Number of scheduled keys.
    #[cfg(any(test, feature = "testing"))]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `key` to fire at `deadline` (a tick). Past deadlines fire on the next advance;
    /// deadlines beyond the span fire at the span's end, for the caller to re-arm.
    pub fn schedule(&mut self, key: u64, deadline: u64) {
        let tick = deadline.clamp(self.next_tick, self.next_tick + self.mask);
        self.slots[(tick & self.mask) as usize].push(key);
        self.len += 1;
    }

    /// Fires every slot up to and including `now`, appending their keys to `fired`.
    pub fn advance(&mut self, now: u64, fired: &mut Vec<u64>) {
        if now < self.next_tick {
            return;
        }
        // After a long stall every slot is due once; no need to walk the same slot twice.
        let steps = (now - self.next_tick + 1).min(self.mask + 1);
        for i in 0..steps {
            let slot = &mut self.slots[((self.next_tick + i) & self.mask) as usize];
            self.len -= slot.len();
            fired.append(slot);
            // A burst of connections moves around the wheel in lockstep; a slot that keeps its
            // peak capacity after firing would, one lap later, leave every slot that large.
            if slot.capacity() > SLOT_KEEP {
                *slot = Vec::new();
            }
        }
        self.next_tick = now + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = TimerWheel::new(8, 0);
        w.schedule(1, 3);
        w.schedule(2, 5);
        let mut out = vec![];
        w.advance(2, &mut out);
        assert!(out.is_empty());
        w.advance(3, &mut out);
        assert_eq!(out, vec![1]);
        out.clear();
        w.advance(10, &mut out);
        assert_eq!(out, vec![2]);
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadline_fires_on_next_advance() {
        let mut w = TimerWheel::new(8, 100);
        w.schedule(7, 5);
        let mut out = vec![];
        w.advance(100, &mut out);
        assert_eq!(out, vec![7]);
    }

    #[test]
    fn far_deadline_fires_early_for_rearm() {
        let mut w = TimerWheel::new(8, 0);
        w.schedule(9, 1000);
        let mut out = vec![];
        w.advance(6, &mut out);
        assert!(out.is_empty());
        w.advance(7, &mut out);
        assert_eq!(out, vec![9], "fires at the end of the span");
    }

    #[test]
    fn long_stall_fires_everything_once() {
        let mut w = TimerWheel::new(4, 0);
        for k in 0..4 {
            w.schedule(k, k);
        }
        let mut out = vec![];
        w.advance(1_000_000, &mut out);
        out.sort();
        assert_eq!(out, vec![0, 1, 2, 3]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn memory_follows_entries_not_history() {
        // 10,000 keys re-armed every 30 ticks for several laps of a 64-slot wheel.
        let mut w = TimerWheel::new(64, 0);
        for k in 0..10_000u64 {
            w.schedule(k, 30 + k % 3);
        }
        let mut out = vec![];
        for now in 0..400 {
            out.clear();
            w.advance(now, &mut out);
            for &k in &out {
                w.schedule(k, now + 30);
            }
        }
        let held: usize = w.slots.iter().map(Vec::capacity).sum();
        assert!(
            held <= 2 * w.len() + 64 * 16,
            "slots hold {held} for {} entries",
            w.len()
        );
    }

    #[test]
    fn many_entries_seeded_simulation() {
        // Every key fires exactly once, never before its deadline, and at most one span late
        // only when its deadline was beyond the span (the caller re-arms those).
        let mut w = TimerWheel::new(64, 0);
        let mut rng = 0x9E3779B97F4A7C15u64;
        let mut deadline = vec![0u64; 10_000];
        for (k, d) in deadline.iter_mut().enumerate() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *d = rng % 60;
            w.schedule(k as u64, *d);
        }
        let mut seen = vec![false; deadline.len()];
        let mut out = vec![];
        for now in 0..70 {
            out.clear();
            w.advance(now, &mut out);
            for &k in &out {
                assert!(deadline[k as usize] <= now);
                assert!(!seen[k as usize]);
                seen[k as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
