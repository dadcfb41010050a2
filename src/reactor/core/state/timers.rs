//! The core's timers: one wheel holding every deadline of the reactor, and what a wheel key
//! names (a connection, a user entry, an embedder's timer or the cluster engine's).
//!
//! Owns: the wheel, the key layout, embedder timers' cancellation epochs and the timers that
//! fired this turn for the loop. Does not touch: what a fired connection or user key means
//! (`core::timers` decides that).

use std::time::Duration;

use mio::Token;

use crate::runtime::TICK;
use crate::timer::TimerWheel;

/// Keys with this bit name a user entry (cleanup of a cooled-down rate window), not a
/// connection.
const USER_KEY: u64 = 1 << 63;
/// Keys with these bits name an embedder's timer (`ReactorCtx::set_timer`); user-entry keys
/// never set bit 62.
const APP_TIMER_KEY: u64 = USER_KEY | 1 << 62;
/// With `APP_TIMER_KEY`: a timer of the cluster engine, not the handler.
const ENGINE_TIMER_BIT: u64 = 1 << 32;
/// An embedder timer's key carries the timer's epoch (bits 33-61): `cancel_app` moves the
/// epoch on, and entries of an older one are dropped when they fire.
const TIMER_EPOCH_SHIFT: u32 = 33;
const TIMER_EPOCH_MASK: u32 = (1 << 29) - 1;
/// Generations stay below 2^31 so a connection key never sets `USER_KEY`.
pub(crate) const GENERATION_MASK: u32 = 0x7FFF_FFFF;
const WHEEL_SLOTS: usize = 1024;

/// What a fired key names, once embedder and engine timers are set aside.
pub(crate) enum FiredKey {
    /// A connection's regular check (its token: slot and generation).
    Conn(Token),
    /// A user entry's cleanup.
    User(u32),
    /// An embedder's or the engine's timer, listed in `fired_timers`/`fired_engine_timers`
    /// (or dropped: cancelled since it was set).
    Listed,
}

pub(crate) struct Timers {
    wheel: TimerWheel,
    /// Epochs of the embedder timers ever cancelled.
    cancelled_timers: std::collections::HashMap<u32, u32>,
    /// Embedder timers that fired this turn (with their epoch), for `on_timer`.
    pub(crate) fired_timers: Vec<(u32, u32)>,
    /// The cluster engine's timers that fired this turn.
    pub(crate) fired_engine_timers: Vec<u32>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            wheel: TimerWheel::new(WHEEL_SLOTS, 0),
            cancelled_timers: Default::default(),
            fired_timers: Vec::new(),
            fired_engine_timers: Vec::new(),
        }
    }
}

impl Timers {
    pub(crate) fn is_empty(&self) -> bool {
        self.wheel.is_empty()
    }

    /// Collects the keys due at tick `now`.
    pub(crate) fn advance(&mut self, now: u32, fired: &mut Vec<u64>) {
        self.wheel.advance(u64::from(now), fired);
    }

    /// A connection's next check, at tick `at`.
    pub(crate) fn schedule_conn(&mut self, token: Token, at: u32) {
        self.wheel.schedule(token.0 as u64, u64::from(at));
    }

    /// A user entry's cleanup, at tick `at`.
    pub(crate) fn schedule_user(&mut self, user: u32, at: u32) {
        self.wheel.schedule(USER_KEY | u64::from(user), u64::from(at));
    }

    /// Sorts a fired key: embedder and engine timers still live go to their lists here.
    pub(crate) fn sort(&mut self, key: u64) -> FiredKey {
        if key & APP_TIMER_KEY == APP_TIMER_KEY {
            if key & ENGINE_TIMER_BIT != 0 {
                self.fired_engine_timers.push(key as u32);
            } else {
                let id = key as u32;
                let epoch = (key >> TIMER_EPOCH_SHIFT) as u32 & TIMER_EPOCH_MASK;
                if self.app_live(id, epoch) {
                    self.fired_timers.push((id, epoch));
                }
            }
            FiredKey::Listed
        } else if key & USER_KEY != 0 {
            FiredKey::User((key & !USER_KEY) as u32)
        } else {
            FiredKey::Conn(Token(key as usize))
        }
    }

    /// An embedder's (or, with `engine`, the cluster engine's) timer `id`, due `after` from
    /// `now_ms` (at least one tick after tick `now`), and never before within the wheel's span
    /// (1,023 ticks, about 102 s): the tick is counted from the turn's time in milliseconds,
    /// not from the start of its tick (a timer set late in a tick would otherwise fire up to a
    /// tick early, and a caller that checks its own deadline would find it not yet due). A
    /// longer timer fires at the span's end: its owner checks its own deadline and sets it
    /// again.
    pub(crate) fn set_app(&mut self, id: u32, after: Duration, engine: bool, now: u32, now_ms: u64) {
        let at = app_timer_tick(now_ms, after).max(now.saturating_add(1));
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
    pub(crate) fn app_live(&self, id: u32, epoch: u32) -> bool {
        self.cancelled_timers.get(&id).map_or(0, |e| e & TIMER_EPOCH_MASK) == epoch
    }

    /// Cancels every firing of the handler's timer `id` set so far (later `set_timer` calls
    /// arm it again). The wheel keeps the entries until they come due; each then finds its
    /// epoch stale and is dropped. Only timers ever cancelled have an entry here (one per
    /// distinct id: reuse ids rather than cancelling a new one per connection).
    pub(crate) fn cancel_app(&mut self, id: u32) {
        let epoch = self.cancelled_timers.entry(id).or_insert(0);
        *epoch = epoch.wrapping_add(1);
    }
}

/// The first tick at or after `now_ms + after` (ticks of `TICK`, counted from the reactor's
/// start). Both are whole milliseconds rounded down from the real instants, so a millisecond is
/// added for each: a timer never fires before its time, even when the sum lands on a tick.
fn app_timer_tick(now_ms: u64, after: Duration) -> u32 {
    let due_ms = u128::from(now_ms) + 1 + after.as_micros().div_ceil(1000);
    due_ms.div_ceil(TICK.as_millis()).min(u128::from(u32::MAX / 4)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_timers_never_fire_before_their_time() {
        // Set 199 ms into the run for 100 ms: due at 299 ms, so tick 3 (300 ms), not tick 2.
        assert_eq!(app_timer_tick(199, Duration::from_millis(100)), 3);
        assert_eq!(app_timer_tick(198, Duration::from_millis(100)), 3);
        // 200 ms into the run (really 200.x) plus 100 ms lands past tick 3.
        assert_eq!(app_timer_tick(200, Duration::from_millis(100)), 4);
        assert_eq!(app_timer_tick(0, Duration::from_millis(1)), 1);
        for now_ms in [0u64, 1, 99, 100, 101, 12_345] {
            for after in [1u64, 50, 99, 100, 101, 2_500] {
                let tick = u64::from(app_timer_tick(now_ms, Duration::from_millis(after)));
                assert!(tick * TICK.as_millis() as u64 >= now_ms + after, "{now_ms} + {after}");
            }
        }
    }

    #[test]
    fn cancelled_timers_are_dropped_when_they_fire() {
        let mut t = Timers::default();
        t.set_app(7, Duration::from_millis(100), false, 0, 0);
        t.cancel_app(7);
        t.set_app(7, Duration::from_millis(100), false, 0, 0);
        let mut fired = Vec::new();
        t.advance(2, &mut fired);
        for key in fired {
            assert!(matches!(t.sort(key), FiredKey::Listed));
        }
        assert_eq!(t.fired_timers, vec![(7, 1)]);
    }
}
