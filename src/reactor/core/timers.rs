//! What the timer wheel's entries mean when they fire: a connection's deadlines (handshake,
//! heartbeat, idle timeout, token expiry, close handshake), a user entry's cleanup, and
//! embedders' and the engine's own timers.
//!
//! Owns: the decision on each fired key (act now, or re-arm at the real deadline). Does not
//! touch: the wheel itself (`crate::timer`) or the handler (fired embedder timers are listed
//! for the loop).

use std::io::Write;
use std::time::{Duration, Instant};

use mio::Token;

use super::{APP_TIMER_KEY, Core, ENGINE_TIMER_BIT, TOKEN_EXPIRED, USER_KEY};
use crate::conn::Phase;
use crate::reactor::users::NO_EXPIRY;
use crate::runtime::{TICK, conn_token};

/// An embedder timer's key carries the timer's epoch (bits 33-61): `cancel_timer` moves the
/// epoch on, and entries of an older one are dropped when they fire.
const TIMER_EPOCH_SHIFT: u32 = 33;
const TIMER_EPOCH_MASK: u32 = (1 << 29) - 1;

impl Core {
    /// Starts a turn at `now`, Unix time `unix_ms` (the caller's clock: real or virtual).
    pub fn update_clock(&mut self, now: Instant, unix_ms: u64) {
        self.instant = now;
        self.unix_ms = unix_ms;
        let elapsed = now.saturating_duration_since(self.start);
        self.now_ms = elapsed.as_millis() as u64;
        let now = (self.now_ms / TICK.as_millis() as u64) as u32;
        if now / 10 != self.now / 10 {
            self.pool.trim();
        }
        self.now = now;
        let unix = unix_ms / 1000;
        if unix != self.unix_now {
            // A new second: the node's rate sample, before this turn's work (one reactor takes it).
            self.rt.rates.sample(unix, self.rt.links.iter().map(|l| &*l.metrics));
        }
        self.unix_now = unix;
    }
    /// Time until the next timer could be due (`None`: no timers at all).
    pub fn until_next_timer(&self) -> Option<Duration> {
        (!self.wheel.is_empty()).then_some(TICK)
    }
    pub fn advance_wheel(&mut self, fired: &mut Vec<u64>) {
        self.wheel.advance(self.now as u64, fired);
    }
    pub(super) fn schedule(&mut self, idx: usize, generation: u32, at: u32) {
        self.wheel.schedule(conn_token(idx, generation).0 as u64, at as u64);
    }

    /// A timer fired for `key`; acts if the connection's real deadline has come, else re-arms.
    pub fn on_timer(&mut self, key: u64) {
        if key & APP_TIMER_KEY == APP_TIMER_KEY {
            if key & ENGINE_TIMER_BIT != 0 {
                self.fired_engine_timers.push(key as u32);
            } else {
                let id = key as u32;
                let epoch = (key >> TIMER_EPOCH_SHIFT) as u32 & TIMER_EPOCH_MASK;
                if self.app_timer_live(id, epoch) {
                    self.fired_timers.push((id, epoch));
                }
            }
            return;
        }
        if key & USER_KEY != 0 {
            let u = (key & !USER_KEY) as u32;
            let window = self.rt.config.rate_limit_window.as_millis() as u64;
            match self.users.get(u) {
                Some(user) if user.count == 0 && user.rate.is_cold(self.now_ms, window) => self.users.remove(u),
                // Fired early (window longer than the wheel's span): look again later.
                Some(user) if user.count == 0 => self.wheel.schedule(key, (self.now + self.ticks.rate_window) as u64),
                _ => {}
            }
            return;
        }
        let Some(idx) = self.live(Token(key as usize)) else {
            return;
        };
        let now = self.now;
        let c = &mut self.conns[idx];
        let generation = c.generation;
        let idle = now.wrapping_sub(c.last_seen);
        match c.phase {
            Phase::Handshake => {
                // From accept (`mark`), not last bytes: trickling bytes buys no time.
                if now.wrapping_sub(c.mark) >= self.ticks.handshake {
                    self.metrics.refused_with(408);
                    // Plain sockets get a 408 written as is; a TLS one (no session to write it
                    // through at this point of its handshake, perhaps) is only closed.
                    if self.tls_sessions.is_empty() || !self.tls_sessions.contains_key(&idx) {
                        let _ = c
                            .sock
                            .write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                    self.drop_conn(idx, 1006);
                } else {
                    let at = c.mark + self.ticks.handshake;
                    self.schedule(idx, generation, at);
                }
            }
            Phase::Open => {
                let (user, mark, last_seen) = (c.user, c.mark, c.last_seen);
                let expiry = self.users.get(user).map_or(NO_EXPIRY, |u| u.expires_at);
                if expiry != NO_EXPIRY && u64::from(expiry) <= self.unix_now {
                    self.metrics.token_expirations.inc();
                    self.close_with(idx, 1008, TOKEN_EXPIRED);
                    return;
                }
                let next = if idle >= self.ticks.timeout {
                    self.metrics.timeouts.inc();
                    self.close_with(idx, 1000, "Connection timeout");
                    return;
                } else if idle >= self.ticks.heartbeat {
                    if mark <= last_seen {
                        // No ping since the last activity: send one.
                        self.conns[idx].mark = now;
                        self.queue_urgent(idx, &crate::ws::PING_FRAME);
                    }
                    last_seen + self.ticks.timeout
                } else {
                    last_seen + self.ticks.heartbeat
                };
                let at = next.min(self.expiry_tick(expiry));
                self.schedule(idx, generation, at);
            }
            Phase::Http => self.http_timer(idx),
            Phase::Closing | Phase::Discarding => {
                if now.wrapping_sub(c.mark) >= self.ticks.close {
                    self.drop_conn(idx, 1006);
                } else {
                    let at = c.mark + self.ticks.close;
                    self.schedule(idx, generation, at);
                }
            }
        }
    }

    /// The tick at which a user's token expiry passes (`u32::MAX` for none).
    fn expiry_tick(&self, expiry: u32) -> u32 {
        if expiry == NO_EXPIRY {
            return u32::MAX;
        }
        let secs = u64::from(expiry).saturating_sub(self.unix_now);
        let ticks = secs.saturating_mul(1000 / TICK.as_millis() as u64) + 1;
        self.now.saturating_add(ticks.min(u32::MAX as u64 / 4) as u32)
    }

    /// Makes sure an open connection's timer fires when its user's token expires, if that comes
    /// before the connection's next regular check.
    pub fn arm_expiry(&mut self, idx: usize) {
        let expiry = self.users.get(self.conns[idx].user).map_or(NO_EXPIRY, |u| u.expires_at);
        if expiry == NO_EXPIRY {
            return;
        }
        let at = self.expiry_tick(expiry);
        if at < self.now.saturating_add(self.ticks.heartbeat.min(self.ticks.handshake)) {
            let generation = self.conns[idx].generation;
            self.schedule(idx, generation, at);
        }
    }

    /// An embedder's (or, with `engine`, the cluster engine's) timer `id`, due `after` from
    /// now (at least one tick), and never before within the wheel's span (1,023 ticks, about
    /// 102 s): the tick is counted from this turn's time in milliseconds, not from the start
    /// of its tick (a timer set late in a tick would otherwise fire up to a tick early, and a
    /// caller that checks its own deadline would find it not yet due). A longer timer fires
    /// at the span's end: its owner checks its own deadline and sets it again.
    pub fn set_app_timer(&mut self, id: u32, after: Duration, engine: bool) {
        let at = app_timer_tick(self.now_ms, after).max(self.now.saturating_add(1));
        let ns = if engine { ENGINE_TIMER_BIT } else { 0 };
        let epoch = if engine {
            0
        } else {
            self.cancelled_timers.get(&id).copied().unwrap_or(0)
        };
        let key = APP_TIMER_KEY | ns | u64::from(epoch & TIMER_EPOCH_MASK) << TIMER_EPOCH_SHIFT | u64::from(id);
        self.wheel.schedule(key, u64::from(at));
    }

    /// True if timer `id` armed in `epoch` has not been cancelled since.
    pub fn app_timer_live(&self, id: u32, epoch: u32) -> bool {
        self.cancelled_timers.get(&id).map_or(0, |e| e & TIMER_EPOCH_MASK) == epoch
    }

    /// Cancels every firing of the handler's timer `id` set so far (later `set_timer` calls
    /// arm it again). The wheel keeps the entries until they come due; each then finds its
    /// epoch stale and is dropped. Only timers ever cancelled have an entry here (one per
    /// distinct id: reuse ids rather than cancelling a new one per connection).
    pub fn cancel_app_timer(&mut self, id: u32) {
        let epoch = self.cancelled_timers.entry(id).or_insert(0);
        *epoch = epoch.wrapping_add(1);
    }
}

/// The first tick at or after `now_ms + after` (ticks of `TICK`, counted from the reactor's start).
fn app_timer_tick(now_ms: u64, after: Duration) -> u32 {
    let due_ms = u128::from(now_ms) + after.as_millis();
    due_ms.div_ceil(TICK.as_millis()).min(u128::from(u32::MAX / 4)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_timers_never_fire_before_their_time() {
        // Set 199 ms into the run for 100 ms: due at 299 ms, so tick 3 (300 ms), not tick 2.
        assert_eq!(app_timer_tick(199, Duration::from_millis(100)), 3);
        assert_eq!(app_timer_tick(200, Duration::from_millis(100)), 3);
        assert_eq!(app_timer_tick(0, Duration::from_millis(1)), 1);
        for now_ms in [0u64, 1, 99, 100, 101, 12_345] {
            for after in [1u64, 50, 99, 100, 101, 2_500] {
                let tick = u64::from(app_timer_tick(now_ms, Duration::from_millis(after)));
                assert!(tick * TICK.as_millis() as u64 >= now_ms + after, "{now_ms} + {after}");
            }
        }
    }
}
