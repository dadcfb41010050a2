//! What the timer wheel's entries mean when they fire: a connection's deadlines (handshake,
//! heartbeat, idle timeout, token expiry, close handshake), a user entry's cleanup, and
//! embedders' and the engine's own timers.
//!
//! Owns: the decision on each fired key (act now, or re-arm at the real deadline). Does not
//! touch: the wheel and its key layout (`state::timers`) or the handler (fired embedder timers
//! are listed for the loop).

use std::io::Write;
use std::time::{Duration, Instant};

use super::state::timers::FiredKey;
use super::{Core, TOKEN_EXPIRED};
use crate::conn::Phase;
use crate::reactor::users::NO_EXPIRY;
use crate::runtime::{TICK, conn_token};

/// The JSON-level heartbeat (`--json-heartbeat`): the seed systems' clients answer it with
/// `{"type": "pong"}`, which (like any message) counts as liveness.
const JSON_PING: &[u8] = br#"{"type":"ping","data":{}}"#;

impl Core {
    /// Starts a turn at `now`, Unix time `unix_ms` (the caller's clock: real or virtual).
    pub fn update_clock(&mut self, now: Instant, unix_ms: u64) {
        let crossed = self.clock.update(now, unix_ms);
        if crossed.second_of_ticks {
            self.pool.trim();
        }
        if let Some(unix) = crossed.unix_second {
            // A new second: the node's rate sample, before this turn's work (one reactor takes it).
            self.rt.rates.sample(unix, self.rt.links.iter().map(|l| &*l.metrics));
        }
    }
    /// Time until the next timer could be due (`None`: no timers at all).
    pub fn until_next_timer(&self) -> Option<Duration> {
        (!self.timers.is_empty()).then_some(TICK)
    }
    pub fn advance_wheel(&mut self, fired: &mut Vec<u64>) {
        self.timers.advance(self.clock.now, fired);
    }
    pub(super) fn schedule(&mut self, idx: usize, generation: u32, at: u32) {
        self.timers.schedule_conn(conn_token(idx, generation), at);
    }

    /// A timer fired for `key`; acts if the connection's real deadline has come, else re-arms.
    pub fn on_timer(&mut self, key: u64) {
        let token = match self.timers.sort(key) {
            FiredKey::Listed => return,
            FiredKey::User(u) => {
                let window = self.rt.config.rate_limit_window.as_millis() as u64;
                match self.users.get(u) {
                    Some(user) if user.count == 0 && user.rate.is_cold(self.clock.now_ms, window) => {
                        self.users.remove(u)
                    }
                    // Fired early (window longer than the wheel's span): look again later.
                    Some(user) if user.count == 0 => self
                        .timers
                        .schedule_user(u, self.clock.now + self.clock.ticks.rate_window),
                    _ => {}
                }
                return;
            }
            FiredKey::Conn(token) => token,
        };
        let Some(idx) = self.live(token) else {
            return;
        };
        let now = self.clock.now;
        let c = &mut self.conns[idx];
        let generation = c.generation;
        let idle = now.wrapping_sub(c.last_seen);
        match c.phase {
            Phase::Handshake => {
                // From accept (`mark`), not last bytes: trickling bytes buys no time.
                if now.wrapping_sub(c.mark) >= self.clock.ticks.handshake {
                    self.metrics.refused_with(408);
                    // Plain sockets get a 408 written as is; a TLS one (no session to write it
                    // through at this point of its handshake, perhaps) is only closed.
                    if !self.codecs.is_tls(idx) {
                        let _ = c
                            .sock
                            .write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                    self.drop_conn(idx, 1006);
                } else {
                    let at = c.mark + self.clock.ticks.handshake;
                    self.schedule(idx, generation, at);
                }
            }
            Phase::Open => {
                let (user, mark, last_seen) = (c.user, c.mark, c.last_seen);
                let expiry = self.users.get(user).map_or(NO_EXPIRY, |u| u.expires_at);
                if expiry != NO_EXPIRY && u64::from(expiry) <= self.clock.unix_now {
                    self.metrics.token_expirations.inc();
                    self.close_with(idx, 1008, TOKEN_EXPIRED);
                    return;
                }
                let next = if idle >= self.clock.ticks.timeout {
                    self.metrics.timeouts.inc();
                    self.close_with(idx, 1000, "Connection timeout");
                    return;
                } else if idle >= self.clock.ticks.heartbeat {
                    if mark <= last_seen {
                        // No ping since the last activity: send one.
                        self.conns[idx].mark = now;
                        self.queue_urgent(idx, &crate::ws::PING_FRAME);
                        if self.rt.config.json_heartbeat {
                            // Clients that watch for a JSON ping (and answer {"type": "pong"}).
                            self.queue_frame(
                                idx,
                                tungstenite::protocol::frame::coding::OpCode::Data(
                                    tungstenite::protocol::frame::coding::Data::Text,
                                ),
                                JSON_PING,
                            );
                        }
                    }
                    last_seen + self.clock.ticks.timeout
                } else {
                    last_seen + self.clock.ticks.heartbeat
                };
                let at = next.min(self.expiry_tick(expiry));
                self.schedule(idx, generation, at);
            }
            Phase::Http => self.http_timer(idx),
            Phase::Closing | Phase::Discarding => {
                if now.wrapping_sub(c.mark) >= self.clock.ticks.close {
                    self.drop_conn(idx, 1006);
                } else {
                    let at = c.mark + self.clock.ticks.close;
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
        let secs = u64::from(expiry).saturating_sub(self.clock.unix_now);
        let ticks = secs.saturating_mul(1000 / TICK.as_millis() as u64) + 1;
        self.clock.now.saturating_add(ticks.min(u32::MAX as u64 / 4) as u32)
    }

    /// Makes sure an open connection's timer fires when its user's token expires, if that comes
    /// before the connection's next regular check.
    pub fn arm_expiry(&mut self, idx: usize) {
        let expiry = self.users.get(self.conns[idx].user).map_or(NO_EXPIRY, |u| u.expires_at);
        if expiry == NO_EXPIRY {
            return;
        }
        let at = self.expiry_tick(expiry);
        if at
            < self
                .clock
                .now
                .saturating_add(self.clock.ticks.heartbeat.min(self.clock.ticks.handshake))
        {
            let generation = self.conns[idx].generation;
            self.schedule(idx, generation, at);
        }
    }

    /// An embedder's (or, with `engine`, the cluster engine's) timer `id`, due `after` from
    /// now (see `Timers::set_app`).
    pub fn set_app_timer(&mut self, id: u32, after: Duration, engine: bool) {
        self.timers
            .set_app(id, after, engine, self.clock.now, self.clock.now_ms);
    }

    /// True if timer `id` armed in `epoch` has not been cancelled since.
    pub fn app_timer_live(&self, id: u32, epoch: u32) -> bool {
        self.timers.app_live(id, epoch)
    }

    /// Cancels every firing of the handler's timer `id` set so far (see `Timers::cancel_app`).
    pub fn cancel_app_timer(&mut self, id: u32) {
        self.timers.cancel_app(id);
    }
}
