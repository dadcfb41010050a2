//! The core's clock: this turn's time as its caller gave it (real or virtual), in the units the
//! core works in (ticks for the wheel, milliseconds for rate windows, Unix seconds for tokens).
//!
//! Owns: the turn's time and the configured durations converted to ticks. Does not touch: any
//! clock of its own (the loop or the simulation passes `now`), or the wheel (`state::timers`).

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::runtime::TICK;

/// Durations converted to ticks once.
pub(crate) struct Ticks {
    pub(crate) heartbeat: u32,
    pub(crate) timeout: u32,
    pub(crate) handshake: u32,
    pub(crate) close: u32,
    pub(crate) rate_window: u32,
}

/// What a clock update crossed, for the work done once per period.
pub(crate) struct Crossed {
    /// A new second of ticks (the pool is trimmed once a second).
    pub(crate) second_of_ticks: bool,
    /// A new Unix second: the node's rate sample is taken.
    pub(crate) unix_second: Option<u64>,
}

pub(crate) struct Clock {
    /// Tick 0.
    pub(crate) start: Instant,
    /// This turn's instant, as the caller gave it (the loop reads the clock once per turn;
    /// the simulation passes a virtual one). Nothing in the core reads a clock itself.
    pub(crate) instant: Instant,
    /// Unix milliseconds at the start of this turn, as the caller gave it.
    pub(crate) unix_ms: u64,
    /// Current tick (TICK units since `start`).
    pub(crate) now: u32,
    /// Milliseconds since `start`, for rate windows.
    pub(crate) now_ms: u64,
    /// Unix seconds at the start of this turn, for token expiry.
    pub(crate) unix_now: u64,
    pub(crate) ticks: Ticks,
}

/// `d` in ticks, at least one, small enough that sums of a few never overflow.
pub(crate) fn ticks(d: Duration) -> u32 {
    (d.as_millis().div_ceil(TICK.as_millis())).clamp(1, u32::MAX as u128 / 4) as u32
}

impl Clock {
    /// A clock at tick 0 at `start`, Unix time `unix_ms`.
    pub(crate) fn new(c: &Config, start: Instant, unix_ms: u64) -> Self {
        Clock {
            start,
            instant: start,
            unix_ms,
            now: 0,
            now_ms: 0,
            unix_now: unix_ms / 1000,
            ticks: Ticks {
                heartbeat: ticks(c.heartbeat_interval),
                timeout: ticks(c.connection_timeout),
                handshake: ticks(c.handshake_timeout),
                close: ticks(c.close_timeout),
                rate_window: ticks(c.rate_limit_window),
            },
        }
    }

    /// Moves to `now`, Unix time `unix_ms`.
    pub(crate) fn update(&mut self, now: Instant, unix_ms: u64) -> Crossed {
        self.instant = now;
        self.unix_ms = unix_ms;
        self.now_ms = now.saturating_duration_since(self.start).as_millis() as u64;
        let tick = (self.now_ms / TICK.as_millis() as u64) as u32;
        let second_of_ticks = tick / 10 != self.now / 10;
        self.now = tick;
        let unix = unix_ms / 1000;
        let unix_second = (unix != self.unix_now).then_some(unix);
        self.unix_now = unix;
        Crossed {
            second_of_ticks,
            unix_second,
        }
    }
}
