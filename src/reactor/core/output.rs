//! The write side of the reactor's connections, and their incomplete input: queuing bytes
//! (raw, framed, urgent, shared frames under the outbound cap), the dirty list, and one
//! vectored write per connection at the end of a turn; the side table of partial requests and
//! frames.
//!
//! Owns: `OutQueue`s (borrowed from the pool, returned when drained) and `inputs`. Does not
//! touch: what the bytes mean, or reading.

use mio::Token;
use tungstenite::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use super::Core;
use crate::conn::{NONE, OutQueue, Phase, Pool, flags};

impl Core {
    /// Takes the connection's incomplete input out (to add to it and put it back).
    pub fn take_input(&mut self, idx: usize) -> Option<Box<crate::conn::Input>> {
        if self.inputs.is_empty() {
            None
        } else {
            self.inputs.remove(&idx)
        }
    }
    /// Keeps (or with `None`, forgets) the connection's incomplete input.
    pub fn set_input(&mut self, idx: usize, input: Option<Box<crate::conn::Input>>) {
        match input {
            Some(i) => {
                self.inputs.insert(idx, i);
            }
            None if !self.inputs.is_empty() => {
                self.inputs.remove(&idx);
            }
            None => {}
        }
    }
    pub fn input_mut(&mut self, idx: usize) -> Option<&mut crate::conn::Input> {
        if self.inputs.is_empty() {
            None
        } else {
            self.inputs.get_mut(&idx).map(|b| &mut **b)
        }
    }
    pub fn mark_dirty(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        if !c.has(flags::DIRTY) {
            c.flags |= flags::DIRTY;
            self.dirty.push(idx as u32);
        }
    }
    /// Pushes onto the connection's outbound queue (taken from the pool if it has none),
    /// counts the bytes `push` reports, and marks the connection for the end-of-turn flush.
    pub(super) fn enqueue(&mut self, idx: usize, push: impl FnOnce(&mut OutQueue, &mut Pool) -> usize) {
        let pool = &mut self.pool;
        let out = self.conns[idx].output.get_or_insert_with(|| pool.queue());
        self.queued += push(out, pool);
        self.mark_dirty(idx);
    }
    /// Queues raw bytes (an HTTP response).
    pub fn queue_raw(&mut self, idx: usize, bytes: &[u8]) {
        self.enqueue(idx, |out, pool| {
            out.push_owned(bytes, pool);
            bytes.len()
        });
    }
    /// Frames `payload` and queues it behind earlier output (encoded straight into the queue).
    pub fn queue_frame(&mut self, idx: usize, opcode: OpCode, payload: &[u8]) {
        let first = match opcode {
            OpCode::Data(Data::Text) => 0x81,
            OpCode::Data(Data::Binary) => 0x82,
            _ => 0,
        };
        if first != 0
            && payload.len() >= self.rt.config.compression_min_size
            && !self.codecs.deflate_slots.is_empty()
            && self.codecs.deflate_slots.contains(idx)
        {
            // Negotiated permessage-deflate: compressed with the reactor's compressor.
            let mut d = self.codecs.deflater.take().unwrap_or_default();
            let frame = d.frame(first, payload);
            self.enqueue(idx, |out, pool| {
                out.push_owned(frame, pool);
                frame.len()
            });
            self.codecs.deflater = Some(d);
        } else {
            self.enqueue(idx, |out, pool| out.push_frame(opcode, payload, pool));
        }
        self.metrics.messages_out.inc();
        self.enforce_cap(idx);
    }
    /// Queues a control frame (pong, ping) at the next frame boundary, ahead of any backlog.
    /// Its bytes count against the outbound cap like any other (a client that sends pings and
    /// never reads is a slow consumer).
    pub fn queue_urgent(&mut self, idx: usize, frame: &[u8]) {
        self.enqueue(idx, |out, pool| {
            out.push_urgent(frame, pool);
            frame.len()
        });
        self.enforce_cap(idx);
    }
    /// Queues a shared frame to an open connection; false if it was not open or belongs to
    /// user `excluded` (a user index, `NONE` for nobody).
    /// `frame` may hold several messages (`messages`, for the counters).
    pub(super) fn push_shared(&mut self, idx: usize, frame: &Bytes, excluded: u32, messages: u64) -> bool {
        let c = &self.conns[idx];
        if c.phase != Phase::Open || (excluded != NONE && c.user == excluded) {
            return false;
        }
        if !self.channels.replays.is_empty() && self.divert_to_replay(idx, frame) {
            return true;
        }
        let frame = if self.codecs.deflates(idx) {
            let min = self.rt.config.compression_min_size;
            self.fanout
                .deflated_form(frame, &mut self.codecs.deflater, min, &self.metrics)
        } else {
            frame.clone()
        };
        self.enqueue(idx, |out, _| {
            let n = frame.len();
            out.push_shared(frame);
            n
        });
        self.metrics.fanout_deliveries.add(messages);
        self.metrics.messages_out.add(messages);
        self.enforce_cap(idx);
        true
    }
    /// Closes a consumer whose backlog is over `max_outbound_bytes`.
    pub(super) fn enforce_cap(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        if c.queued_bytes() <= self.rt.config.max_outbound_bytes || c.phase != Phase::Open {
            return;
        }
        if let Some(out) = c.output.as_mut() {
            self.queued -= out.discard_backlog(&mut self.pool);
        }
        self.metrics.slow_consumer_closes.inc();
        noisy!(
            self,
            Info,
            "closing slow consumer (outbound queue over {} bytes)",
            self.rt.config.max_outbound_bytes
        );
        self.close_with(idx, 1008, "slow consumer: outbound queue limit exceeded");
    }
    pub fn on_writable(&mut self, token: Token) {
        if let Some(idx) = self.live(token) {
            self.flush(idx);
        }
    }
    pub fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &idx in &dirty {
            let idx = idx as usize;
            if let Some(c) = self.conns.get_mut(idx) {
                c.flags &= !flags::DIRTY;
                self.flush(idx);
            }
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        self.metrics.queued_bytes.set(self.queued as u64);
    }
    /// Writes what the socket takes; finishes closes whose output is done.
    pub(crate) fn flush(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        let mut tls = if self.codecs.tls_sessions.is_empty() {
            None
        } else {
            self.codecs.tls_sessions.get_mut(&idx)
        };
        if let Some(t) = tls.as_deref_mut()
            && c.output.is_none()
            && let Err(e) = t.flush(&mut c.sock, &mut self.codecs.tls_shared)
        {
            // Handshake records or a close_notify with no output behind them.
            log::debug!("tls write failed: {e}");
            self.drop_conn(idx, 1006);
            return;
        }
        if let Some(out) = c.output.as_mut() {
            let written = match tls {
                Some(t) => out.write_to(
                    &mut crate::transport::tls::Writer {
                        session: t,
                        shared: &mut self.codecs.tls_shared,
                        sock: &mut c.sock,
                    },
                    &mut self.pool,
                ),
                None => out.write_to(&mut c.sock, &mut self.pool),
            };
            match written {
                Ok(n) => {
                    self.queued -= n;
                    self.metrics.bytes_out.add(n as u64);
                }
                Err(e) => {
                    log::debug!("write failed: {e}");
                    self.drop_conn(idx, 1006);
                    return;
                }
            }
            let drained = out.is_empty();
            if c.phase == Phase::Http {
                self.wake_http(idx);
            }
            if drained && !self.embedder.writable_watch.is_empty() && self.embedder.writable_watch.remove(&idx) {
                let token = self.token_of(idx);
                self.embedder.writable_again.push(token);
            }
            let c = &mut self.conns[idx];
            if !drained {
                return;
            }
            if let Some(q) = c.output.take() {
                self.pool.recycle(q);
            }
        }
        let c = &mut self.conns[idx];
        if matches!(c.phase, Phase::Closing | Phase::Discarding) {
            if !c.has(flags::FIN_SENT) {
                if let Some(t) = self.codecs.tls_sessions.get_mut(&idx) {
                    // close_notify, then FIN once every record is out.
                    t.close_notify();
                    if !t.flush(&mut c.sock, &mut self.codecs.tls_shared).unwrap_or(true) {
                        return;
                    }
                }
                // FIN after the close frame (or response): the peer reads everything, then EOF.
                c.sock.shutdown_write();
                c.flags |= flags::FIN_SENT;
            }
            if c.has(flags::CLOSE_RECEIVED) {
                self.drop_conn(idx, 1000);
            }
        }
    }
}
