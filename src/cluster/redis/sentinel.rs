//! Redis Sentinel: which Redis is the master, asked of the sentinels by reactor 0.
//!
//! Owns: one connection to a sentinel at a time (the next one after a failure), the question
//! `SENTINEL get-master-addr-by-name` every half second, and publishing the answer to every
//! reactor (`Shared::master`, `master_moves`), and each reactor following a move
//! (`follow_master`: on its next tick it drops the connections made to the old master and
//! makes waiting ones at once). Does not touch: what the connections carry (every connection
//! checks ROLE before it is used).
//!
//! Polling rather than subscribing to `+switch-master` keeps the connection a plain
//! request/reply one; a failover is seen within half a second of a sentinel knowing it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::BytesFrame;

use super::state::{CMD, Half, RECONNECT_WATCH, SUB};
use crate::cluster::broker::EngineHost;
use crate::cluster::resp::bytes_of;

const ASK_EVERY: Duration = Duration::from_millis(500);

/// A master address from the sentinel's reply (`[ip, port]`).
fn master_of(f: &BytesFrame) -> Option<SocketAddr> {
    let BytesFrame::Array(parts) = f else { return None };
    let ip: IpAddr = std::str::from_utf8(bytes_of(parts.first()?)?).ok()?.parse().ok()?;
    let port: u16 = std::str::from_utf8(bytes_of(parts.get(1)?)?).ok()?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

impl Half {
    /// Every tick on reactor 0: keeps a sentinel connection and asks it for the master.
    pub(super) fn watch_tick(&mut self, r: &mut dyn EngineHost) {
        let timeout = self.shared.timeout;
        let Some(w) = self.watch.as_mut() else { return };
        if w.asked.is_some_and(|t| t.elapsed() >= timeout) {
            w.link
                .failed(self.reactor, "sentinel", format!("no answer within {timeout:?}"));
            return self.watch_lost(r);
        }
        if !w.link.conn.is_open() {
            if w.link.retrying {
                // Backstop for a missed timer: the tick ends a finished backoff too.
                if !w.link.retry_due() {
                    return;
                }
                w.link.retrying = false;
            }
            let Some(&addr) = self.shared.sentinels.get(w.next) else {
                return;
            };
            // Sentinels are asked in plain TCP unless the URL says rediss+sentinel.
            if let Err(e) = w.link.conn.connect(r, addr, self.shared.tls.as_ref()) {
                w.link
                    .failed(self.reactor, "sentinel", format!("connecting to sentinel {addr}: {e}"));
                return self.watch_lost(r);
            }
            w.link.addr = Some(addr);
        }
        if w.asked.is_none() && w.last_asked.is_none_or(|t| t.elapsed() >= ASK_EVERY) {
            let name = self.shared.url.sentinels.as_ref().map_or("", |s| s.master.as_str());
            w.link
                .conn
                .command(&[b"SENTINEL", b"get-master-addr-by-name", name.as_bytes()]);
            let now = Instant::now();
            w.asked = Some(now);
            w.last_asked = Some(now);
        }
    }

    /// The sentinel answered (or its connection broke).
    pub(super) fn on_watch_frames(&mut self, r: &mut dyn EngineHost, broken: Option<String>) {
        let frames = std::mem::take(&mut self.frames);
        let Some(w) = self.watch.as_mut() else { return };
        for f in frames {
            w.asked = None;
            let Some(addr) = master_of(&f) else {
                let name = self.shared.url.sentinels.as_ref().map_or("", |s| s.master.as_str());
                w.link.failed(
                    self.reactor,
                    "sentinel",
                    format!("the sentinel does not name master {name:?}: {f:?}"),
                );
                return self.watch_lost(r);
            };
            w.link.works(self.reactor, "sentinel");
            let mut master = self.shared.master.lock().unwrap_or_else(|e| e.into_inner());
            if *master != Some(addr) {
                log::info!("cluster: the sentinels name {addr} as the master");
                *master = Some(addr);
                self.shared.master_moves.fetch_add(1, Ordering::AcqRel);
            }
        }
        if let Some(why) = broken {
            if let Some(w) = self.watch.as_mut() {
                w.link.failed(self.reactor, "sentinel", why);
            }
            self.watch_lost(r);
        }
    }

    /// Drops the sentinel connection; the next one is asked after a backoff.
    fn watch_lost(&mut self, r: &mut dyn EngineHost) {
        let n = self.shared.sentinels.len().max(1);
        let Some(w) = self.watch.as_mut() else { return };
        w.link.conn.close(r);
        w.asked = None;
        w.next = (w.next + 1) % n;
        if !w.link.retrying {
            let delay = w.link.retry_later();
            r.set_timer(RECONNECT_WATCH, delay);
        }
    }

    /// The backoff after a sentinel failure is over.
    pub(super) fn watch_retry(&mut self, r: &mut dyn EngineHost) {
        match self.watch.as_mut().and_then(|w| w.link.retry_left()) {
            Some(left) if left.is_zero() => {}
            Some(left) => return r.set_timer(RECONNECT_WATCH, left),
            None => return,
        }
        if let Some(w) = self.watch.as_mut() {
            w.link.retrying = false;
        }
        self.watch_tick(r);
    }

    /// With sentinels: when they name another master, connections made to the old one are
    /// dropped, and connections waiting for a master are made at once.
    pub(super) fn follow_master(&mut self, r: &mut dyn EngineHost) {
        let moves = self.shared.master_moves.load(Ordering::Acquire);
        if moves == self.seen_moves {
            return;
        }
        self.seen_moves = moves;
        let master = *self.shared.master.lock().unwrap_or_else(|e| e.into_inner());
        if self.cmd.conn.is_open() && self.cmd.addr != master {
            self.cmd
                .failed(self.reactor, "command", "the sentinels named another master".into());
            self.lost(r, CMD);
        }
        if self.cmd.retrying {
            self.connect(r, CMD);
        }
        let Some(sub) = self.sub.as_mut() else { return };
        if sub.link.conn.is_open() && sub.link.addr != master {
            sub.link.failed(
                self.reactor,
                "subscription",
                "the sentinels named another master".into(),
            );
            self.sub_lost(r);
        }
        if self.sub.as_ref().is_some_and(|s| s.link.retrying) {
            self.connect(r, SUB);
        }
    }
}
