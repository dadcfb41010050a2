//! The read path: socket bytes into the per-reactor buffer, frames out, events to the handler.
//!
//! Owns: draining sockets, keeping only incomplete bytes per connection, control-frame replies
//! and the peer-initiated close. Does not touch: writing (queued, flushed by the loop).

use std::io::{self, Read};

use mio::Token;

use super::{READ_BUDGET, Reactor};
use crate::conn::{Input, Phase, flags};
use crate::reactor::embed::ReactorHandler;
use crate::ws::{Event, Violation};

impl<H: ReactorHandler> Reactor<H> {
    /// `drain` forces reading until `WouldBlock` (needed when the peer half-closed: its FIN
    /// raises no further edge).
    pub(super) fn on_readable(&mut self, token: Token, drain: bool) {
        let Some(idx) = self.core.live(token) else { return };
        if self.core.http_paused(idx) {
            // Its requests wait in the socket until the responses it is owed go out.
            return;
        }
        if self.core.conns[idx].phase == Phase::Handshake && self.is_admitting(idx) {
            // Read once the cluster has decided (see `finish_admissions`).
            return;
        }
        let generation = self.core.conns[idx].generation;
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut reads = 0;
        let is_tls = self.core.codecs.is_tls(idx);
        while let Some(c) = self.core.conns.get_mut(idx).filter(|c| c.generation == generation) {
            // A TLS connection's incomplete record from its last read goes in front of the new
            // bytes (copied there once the read brought some).
            let kept = match is_tls {
                true => self.core.codecs.tls_sessions.get(&idx).map_or(0, |t| t.kept_len()),
                false => 0,
            };
            match c.sock.read(&mut buf[kept..]) {
                Ok(0) => {
                    self.core.peer_eof(idx);
                    break;
                }
                Ok(n) => {
                    c.last_seen = self.core.clock.now;
                    self.core.metrics.bytes_in.add(n as u64);
                    if is_tls {
                        if let Some(t) = self.core.codecs.tls_sessions.get_mut(&idx) {
                            t.restore_kept(&mut buf[..kept], &mut self.core.codecs.tls_shared);
                        }
                        if !self.on_tls_bytes(idx, generation, &mut buf[..kept + n]) {
                            break;
                        }
                    } else {
                        self.on_bytes(idx, generation, &mut buf[..n]);
                    }
                    reads += 1;
                    if self.core.conns.get(idx).is_some_and(|c| c.phase == Phase::Handshake) && self.is_admitting(idx) {
                        // The upgrade now waits for a verdict: the rest stays in the socket.
                        break;
                    }
                    if self.core.conns.get(idx).is_some() && self.core.http_paused(idx) {
                        // Its answers are backed up: the rest waits in the socket.
                        break;
                    }
                    // A short read drained the socket; new bytes raise a new edge.
                    if n < buf.len() - kept && !drain {
                        break;
                    }
                    if reads >= READ_BUDGET {
                        self.read_again.push(token);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.core.drop_conn(idx, 1006);
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    /// Ciphertext from a TLS connection (after any incomplete record kept from before): the
    /// plaintext it carried is handled as any connection's bytes, in place; records the session
    /// owes the peer (handshake, alerts) are written now. False if the connection is gone.
    fn on_tls_bytes(&mut self, idx: usize, generation: u32, cipher: &mut [u8]) -> bool {
        let Some(t) = self.core.codecs.tls_sessions.get_mut(&idx) else {
            return false;
        };
        // A panic inside the TLS stack (a rustls bug an input found) ends this connection, not
        // the reactor and with it the server; the session, in a state nobody knows, is dropped
        // unflushed.
        let shared = &mut self.core.codecs.tls_shared;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.receive(cipher, shared)));
        let received = match outcome {
            Err(_) => {
                log::error!("tls: the TLS layer panicked on a connection's bytes; that connection is dropped");
                self.core.metrics.protocol_errors.inc();
                self.core.codecs.tls_sessions.remove(&idx);
                if self.core.conns.get(idx).is_some_and(|c| c.generation == generation) {
                    self.core.drop_conn(idx, 1006);
                }
                return false;
            }
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                log::debug!("tls: {e}");
                self.core.metrics.protocol_errors.inc();
                // Whatever alert the session made goes out before the socket closes.
                self.core.flush(idx);
                if self.core.conns.get(idx).is_some_and(|c| c.generation == generation) {
                    self.core.drop_conn(idx, 1006);
                }
                return false;
            }
        };
        if received.plain > 0 {
            self.on_bytes(idx, generation, &mut cipher[..received.plain]);
        }
        let alive = self.core.conns.get(idx).is_some_and(|c| c.generation == generation);
        if alive && self.core.codecs.tls_sessions.get(&idx).is_some_and(|t| t.wants_write()) {
            self.core.flush(idx);
        }
        let alive = self.core.conns.get(idx).is_some_and(|c| c.generation == generation);
        if alive && received.closed {
            // close_notify: the peer sends nothing more, as if it had half-closed.
            self.core.peer_eof(idx);
            return false;
        }
        alive
    }

    /// Keep-alive HTTP connections that asked to upgrade: their request goes through the
    /// WebSocket handshake now.
    pub(super) fn take_reupgrades(&mut self) {
        while let Some((idx, generation, bytes)) = self.core.http.reupgrades.pop() {
            if self
                .core
                .conns
                .get(idx)
                .is_some_and(|c| c.generation == generation && c.phase == Phase::Handshake)
            {
                self.on_handshake_bytes(idx, &bytes);
            }
        }
    }

    pub(super) fn on_bytes(&mut self, idx: usize, generation: u32, data: &mut [u8]) {
        match self.core.conns[idx].phase {
            Phase::Handshake => self.on_handshake_bytes(idx, data),
            Phase::Open | Phase::Closing => self.on_frame_bytes(idx, generation, data),
            Phase::Http => {
                self.core.on_http_bytes(idx, data);
                self.take_reupgrades();
            }
            Phase::Discarding => {}
        }
    }

    /// Decodes frames from `data` (after any incomplete bytes kept from before). Complete frames
    /// in `data` are handled in place; only a trailing incomplete frame is copied.
    pub(super) fn on_frame_bytes(&mut self, idx: usize, generation: u32, data: &mut [u8]) {
        let max = self.core.rt.config.max_message_size;
        let deflate = self.core.codecs.deflates(idx);
        let mut boxed = self.core.take_input(idx);
        let mut local = Input::default();
        let keep = {
            let inp = boxed.as_deref_mut().unwrap_or(&mut local);
            let from_pending = !inp.pending.is_empty();
            if from_pending {
                inp.pending.extend_from_slice(data);
            }
            let Input { pending, decoder } = inp;
            let mut pos = 0;
            let mut alive = true;
            {
                let buf: &mut [u8] = if from_pending { pending } else { data };
                while pos < buf.len() {
                    match decoder.decode_ext(&mut buf[pos..], max, deflate) {
                        Ok(None) => break,
                        Ok(Some((Event::Compressed { text, payload }, n))) => {
                            pos += n;
                            if !self.on_compressed(idx, generation, text, payload) {
                                alive = false;
                                break;
                            }
                        }
                        Ok(Some((event, n))) => {
                            pos += n;
                            if !self.on_event(idx, generation, event) {
                                alive = false;
                                break;
                            }
                        }
                        Err(v) => {
                            self.fail(idx, v);
                            alive = false;
                            break;
                        }
                    }
                }
            }
            if !alive {
                return;
            }
            if from_pending {
                pending.drain(..pos);
            } else if pos < data.len() {
                // Grows with the bytes that actually arrived, never with a length the peer
                // declared; a failed allocation closes this connection instead of aborting.
                if pending.try_reserve(data.len() - pos).is_err() {
                    log::warn!("out of memory buffering a frame; closing the connection");
                    self.fail(idx, Violation::TooBig);
                    return;
                }
                pending.extend_from_slice(&data[pos..]);
            }
            if let Err(v) = decoder.check_incomplete(pending, max) {
                self.fail(idx, v);
                return;
            }
            !(pending.is_empty() && decoder.is_idle())
        };
        if self.core.conns.get(idx).is_none_or(|c| c.generation != generation) {
            return;
        }
        if keep {
            self.core.set_input(idx, Some(boxed.unwrap_or_else(|| Box::new(local))));
        }
    }

    /// A whole compressed message: inflated with the reactor's decompressor (at most
    /// `max_message_size` bytes come out: a deflate bomb is closed with 1009 there), then
    /// handled as the text or binary message it is.
    fn on_compressed(&mut self, idx: usize, generation: u32, text: bool, payload: &[u8]) -> bool {
        let max = self.core.rt.config.max_message_size;
        let mut inflater = self.core.codecs.inflater.take().unwrap_or_default();
        self.core.metrics.inflations.inc();
        let alive = match inflater.inflate(payload, max) {
            Err(v) => {
                self.fail(idx, v);
                false
            }
            Ok(message) if text => match std::str::from_utf8(message) {
                Ok(s) => self.on_event(idx, generation, Event::Text(s)),
                Err(_) => {
                    self.fail(idx, Violation::InvalidUtf8);
                    false
                }
            },
            Ok(message) => self.on_event(idx, generation, Event::Binary(message)),
        };
        self.core.codecs.inflater = Some(inflater);
        alive
    }

    /// Handles one frame; false stops decoding this connection's input.
    fn on_event(&mut self, idx: usize, generation: u32, event: Event<'_>) -> bool {
        let phase = self.core.conns[idx].phase;
        match event {
            Event::Fragment | Event::Compressed { .. } => true,
            Event::Pong | Event::Ping(_) if phase == Phase::Open && !self.core.control_frame_allowed(idx) => {
                self.core.metrics.control_frame_closes.inc();
                self.close_discarding(idx, 1008, "control frame rate limit exceeded");
                false
            }
            Event::Pong => true,
            Event::Ping(payload) => {
                if phase == Phase::Open {
                    let mut pong = [0u8; 2 + 125];
                    pong[0] = 0x8A;
                    pong[1] = payload.len() as u8;
                    pong[2..2 + payload.len()].copy_from_slice(payload);
                    self.core.queue_urgent(idx, &pong[..2 + payload.len()]);
                }
                true
            }
            Event::Close(close) => {
                self.core.conns[idx].flags |= flags::CLOSE_RECEIVED;
                if phase == Phase::Open {
                    self.core.echo_close(idx, close.map(|(code, _)| code));
                } else {
                    // Our close was answered: done once our output is written.
                    self.core.mark_dirty(idx);
                }
                false
            }
            Event::Text(text) => {
                if phase != Phase::Open {
                    return true;
                }
                self.core.conns[idx].messages += 1;
                self.core.metrics.messages_in.inc();
                self.with_ctx(idx, |h, ctx| h.on_text(ctx, text));
                self.core.conns.get(idx).is_some_and(|c| c.generation == generation)
            }
            Event::Binary(data) => {
                if phase != Phase::Open {
                    return true;
                }
                self.core.conns[idx].messages += 1;
                self.core.metrics.messages_in.inc();
                self.with_ctx(idx, |h, ctx| h.on_binary(ctx, data));
                self.core.conns.get(idx).is_some_and(|c| c.generation == generation)
            }
        }
    }

    /// An RFC 6455 violation: close with its code (or drop if already closing).
    fn fail(&mut self, idx: usize, v: Violation) {
        self.core.metrics.protocol_errors.inc();
        log::debug!("closing connection: {}", v.reason());
        if self.core.conns[idx].phase != Phase::Open {
            self.core.drop_conn(idx, v.close_code());
            return;
        }
        self.with_ctx(idx, |h, ctx| h.on_violation(ctx, v));
        self.close_discarding(idx, v.close_code(), v.reason());
    }

    /// Closes with `code` (unless the handler already closed it) and stops reading frames: the
    /// stream is no longer trusted to be framed (the rest of an oversized or broken frame
    /// follows), so input is discarded while the close frame is written and the socket
    /// half-closed; the connection is dropped at EOF or the close timeout.
    fn close_discarding(&mut self, idx: usize, code: u16, reason: &str) {
        self.core.set_input(idx, None);
        self.core.close_with(idx, code, reason);
        self.core.conns[idx].phase = Phase::Discarding;
    }
}
