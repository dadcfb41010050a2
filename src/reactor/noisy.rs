//! Log lines for events any client can trigger at will (authentication failures, evictions,
//! slow-consumer closes, floods): a few per second per reactor get through, the rest are
//! counted and summarized, so an attacker cannot make the reactor spend its time writing logs.
//!
//! Owns: the per-reactor line budget. Does not touch: metrics (every event is still counted
//! there) or what is logged.

/// Lines per second per reactor before the rest are only counted.
const LINES_PER_SECOND: u32 = 5;

#[derive(Default)]
pub(crate) struct NoisyLog {
    second: u32,
    lines: u32,
    suppressed: u64,
}

impl NoisyLog {
    /// Whether one more line may be written at tick `now` (ticks are 100 ms). The first line
    /// of a new second reports how many were held back before it.
    pub fn allow(&mut self, now: u32) -> bool {
        let second = now / 10;
        if second != self.second {
            if self.suppressed > 0 {
                log::info!(
                    "{} more log lines about client-triggered events suppressed (see /metrics)",
                    self.suppressed
                );
                self.suppressed = 0;
            }
            self.second = second;
            self.lines = 0;
        }
        if self.lines < LINES_PER_SECOND {
            self.lines += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// `noisy!(core, level, fmt, args...)`: logs through `core.noisy`'s budget; the arguments are
/// not even formatted when the line is held back.
macro_rules! noisy {
    ($core:expr, $level:ident, $($arg:tt)*) => {{
        let core = &mut *$core;
        if log::log_enabled!(log::Level::$level) && core.noisy.allow(core.clock.now) {
            log::log!(log::Level::$level, $($arg)*);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_per_second_then_counted() {
        let mut n = NoisyLog::default();
        let allowed = (0..100).filter(|_| n.allow(3)).count();
        assert_eq!(allowed, LINES_PER_SECOND as usize);
        assert_eq!(n.suppressed, 100 - LINES_PER_SECOND as u64);
        assert!(n.allow(10), "a new second has a new budget");
        assert_eq!(n.suppressed, 0, "and the held-back lines were reported");
    }
}
