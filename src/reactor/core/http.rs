//! Plain HTTP connections on a reactor (the admin API, health checks, metrics): keep-alive,
//! pipelining, deadlines, and admin plans carried out as state in the event loop.
//!
//! Owns: per-connection HTTP state (responses owed, in request order), the asks this reactor
//! has in flight on other reactors and their tickets, and the HTTP deadlines. Does not touch:
//! routing or response bodies (the `admin` module plans them) or WebSocket connections.
//!
//! A request is read in full (head, then body) within `REQUEST_DEADLINE` of its first byte; the
//! head alone decides limits and authorization, so an unauthorized client never makes us wait
//! for its body. Its plan either answers at once or asks reactors: this one carries its share
//! out on the spot, the others answer through this reactor's inbox. Nothing waits.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use mio::Token;

use super::state::asks::Owner;
use super::state::clock::ticks;
use super::state::http::Owed;
use super::{Core, Phase};
use crate::admin::{self, Answers, Finish, Plan, Response};
use crate::ask::Ask;
use crate::conn::{Input, flags};
use crate::http::upgrade::{self, Parsed};

/// A request must be complete this long after its first byte (trickling buys no time).
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A kept-alive connection with nothing in progress is closed after this long.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(30);
/// Responses a connection may be owed before its further requests wait unread.
const PIPELINE_DEPTH: usize = 64;
/// Response bytes queued unwritten before further requests wait unread.
const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Plain HTTP connections a reactor keeps; past it, the longest-idle one between requests is
/// closed to make room (idle keep-alive sockets cannot crowd out health checks).
const HTTP_CONNECTIONS: usize = 1024;

impl Core {
    /// Turns a connection whose first request is plain HTTP (or one accepted on the admin
    /// listener, with `bytes` empty) into an HTTP connection and serves what it sent.
    pub fn start_http(&mut self, idx: usize, bytes: Vec<u8>) {
        if self.http.len() >= HTTP_CONNECTIONS {
            self.close_longest_idle_http();
        }
        let c = &mut self.conns[idx];
        c.phase = Phase::Http;
        c.mark = self.clock.now;
        let generation = c.generation;
        let started = (!bytes.is_empty()).then_some(c.last_seen);
        let input = (!bytes.is_empty()).then(|| {
            Box::new(Input {
                pending: bytes,
                ..Input::default()
            })
        });
        self.set_input(idx, input);
        self.http.open(idx, started, self.clock.instant);
        self.schedule(
            idx,
            generation,
            self.clock.now + ticks(REQUEST_DEADLINE).min(self.clock.ticks.handshake),
        );
        self.serve_http(idx);
    }

    /// Closes the HTTP connection idle (between requests, nothing owed) the longest.
    fn close_longest_idle_http(&mut self) {
        if let Some(i) = self.http.longest_idle() {
            log::debug!("closing the longest-idle HTTP connection (over {HTTP_CONNECTIONS} on this reactor)");
            self.drop_conn(i, 1006);
        }
    }

    /// Bytes read from an HTTP connection.
    pub fn on_http_bytes(&mut self, idx: usize, data: &[u8]) {
        if self.http.get(idx).is_none_or(|h| h.closing) {
            // No further request will be read: what follows is dropped, never buffered.
            return;
        }
        let now = self.clock.now;
        let input = self.inputs.entry(idx).or_default();
        if input.pending.try_reserve(data.len()).is_err() {
            self.drop_conn(idx, 1006);
            return;
        }
        input.pending.extend_from_slice(data);
        if let Some(h) = self.http.get_mut(idx)
            && h.request_started.is_none()
        {
            h.request_started = Some(now);
            h.request_clock = self.clock.instant;
        }
        self.serve_http(idx);
    }

    /// Reading is paused for this connection (its requests wait in the socket).
    pub fn http_paused(&self, idx: usize) -> bool {
        self.conns[idx].phase == Phase::Http && self.http.get(idx).is_some_and(|h| h.paused)
    }

    /// Parses and plans every complete request in the connection's input, in order.
    fn serve_http(&mut self, idx: usize) {
        let rt = self.rt.clone();
        let (max_head, ws_path) = (self.rt.config.max_request_bytes, self.rt.config.ws_path.clone());
        loop {
            let Some(h) = self.http.get(idx) else { return };
            if h.closing {
                break;
            }
            let unwritten = self.conns[idx].queued_bytes();
            if h.owed.len() >= PIPELINE_DEPTH || unwritten >= OUTPUT_HIGH_WATER {
                if let Some(h) = self.http.get_mut(idx) {
                    h.paused = true;
                }
                break;
            }
            let Some(input) = self.inputs.get(&idx).filter(|i| !i.pending.is_empty()) else {
                break;
            };
            let buf = &input.pending;
            if h.body_until.is_some_and(|n| buf.len() < n) {
                break;
            }
            let admin_port = self.conns[idx].has(flags::ADMIN_PORT);
            let idle = h.owed.is_empty() && unwritten == 0;
            let (req, plan) = match upgrade::parse(buf, max_head, ws_path.as_deref()) {
                Parsed::Partial => break,
                Parsed::Reject(r) => {
                    self.metrics.refused_with(r.status);
                    let mut resp = Response::error(r.status, r.message);
                    if let Some((k, v)) = r.header {
                        resp = resp.with_header(k, v);
                    }
                    self.owe_final(idx, resp, None);
                    break;
                }
                Parsed::Upgrade(..) if !admin_port && idle => {
                    // A keep-alive connection that served plain requests now upgrades (Node's
                    // fetch and WebSocket share one connection pool): it becomes a handshake
                    // like a new connection's, with the same timeout and limits.
                    let bytes = self.take_input(idx).map(|i| i.pending).unwrap_or_default();
                    self.http.remove(idx);
                    let now = self.clock.now;
                    let c = &mut self.conns[idx];
                    c.phase = Phase::Handshake;
                    c.mark = now;
                    let generation = c.generation;
                    self.track_pending(idx);
                    self.schedule(idx, generation, now + self.clock.ticks.handshake);
                    self.http.reupgrades.push((idx, generation, bytes));
                    return;
                }
                Parsed::Upgrade(..) if !admin_port => {
                    // Pipelined behind answers still owed: it waits (reading paused) until they
                    // are written, then upgrades as above.
                    if let Some(h) = self.http.get_mut(idx) {
                        h.paused = true;
                    }
                    break;
                }
                Parsed::Upgrade(..) => {
                    self.owe_final(
                        idx,
                        Response::error(400, "WebSocket upgrades are served on the main listener"),
                        None,
                    );
                    break;
                }
                Parsed::Plain(mut req) => {
                    req.admin_port = admin_port;
                    if let Some(refusal) = admin::check_head(&*rt, &req) {
                        // The body (if any) is never read: the connection closes after this.
                        self.owe_final(idx, refusal, Some((&req.method, &req.path)));
                        break;
                    }
                    let end = req.head_len + req.content_length;
                    if buf.len() < end {
                        let mut go_ahead = false;
                        if let Some(h) = self.http.get_mut(idx) {
                            h.body_until = Some(end);
                            // Only when nothing is owed ahead of it: a `100` between pipelined
                            // responses would break their framing (the client then sends the
                            // body after its own wait, as RFC 9110 allows).
                            go_ahead = req.expect_continue && h.owed.is_empty();
                        }
                        if go_ahead {
                            self.queue_raw(idx, b"HTTP/1.1 100 Continue\r\n\r\n");
                        }
                        break;
                    }
                    let body = &buf[req.head_len..end];
                    let plan = catch_unwind(AssertUnwindSafe(|| admin::plan(&*rt, &req, body)))
                        .unwrap_or_else(|_| Plan::Now(internal_error()));
                    (req, plan)
                }
            };
            let end = req.head_len + req.content_length;
            let now = self.clock.now;
            let more = match self.input_mut(idx) {
                Some(i) => {
                    i.pending.drain(..end);
                    !i.pending.is_empty()
                }
                None => false,
            };
            if !more {
                self.set_input(idx, None);
            }
            let c = &mut self.conns[idx];
            c.mark = now;
            let order = self.http.next_request();
            let Some(h) = self.http.get_mut(idx) else { return };
            let keep_alive = req.keep_alive && !self.rt.draining.load(std::sync::atomic::Ordering::Acquire);
            let seq = h.next_seq;
            h.next_seq += 1;
            h.served += 1;
            h.owed.push_back(Owed {
                seq,
                head_only: req.method == "HEAD",
                keep_alive,
                bytes: None,
                method: req.method.as_str().into(),
                path: req.path.as_str().into(),
                started: h.request_clock,
            });
            h.request_started = more.then_some(now);
            h.request_clock = self.clock.instant;
            h.body_until = None;
            h.last_request = order;
            if !keep_alive {
                h.closing = true;
            }
            match plan {
                Plan::Now(resp) => self.fulfil(idx, seq, resp),
                Plan::Later { asks, finish } => self.launch(idx, seq, asks, finish),
            }
        }
        // The deliveries of every request read so far go out together (and answer their plans).
        self.fan_out_groups();
        self.pump_http(idx);
    }

    /// Owes `resp` as the connection's last response (it closes once that is written).
    /// (`request`: its method and path when the head was read, for the access log.)
    fn owe_final(&mut self, idx: usize, resp: Response, request: Option<(&str, &str)>) {
        let Some(h) = self.http.get_mut(idx) else { return };
        let seq = h.next_seq;
        h.next_seq += 1;
        h.closing = true;
        h.owed.push_back(Owed {
            seq,
            head_only: false,
            keep_alive: false,
            bytes: None,
            method: request.map_or("-", |r| r.0).into(),
            path: request.map_or("-", |r| r.1).into(),
            started: h.request_clock,
        });
        if let Some(i) = self.input_mut(idx) {
            i.pending = Vec::new();
        }
        self.fulfil(idx, seq, resp);
    }

    /// Serializes the response owed as `seq`.
    fn fulfil(&mut self, idx: usize, seq: u64, resp: Response) {
        let peer = self.conns[idx].sock.peer_addr();
        let Some(h) = self.http.get_mut(idx) else { return };
        let Some(o) = h.owed.iter_mut().find(|o| o.seq == seq) else {
            return;
        };
        admin::access_log(peer, &o.method, &o.path, &resp, o.started);
        let mut bytes = Vec::with_capacity(resp.body.len() + 160);
        resp.write(&mut bytes, o.head_only, o.keep_alive);
        o.bytes = Some(bytes);
    }

    /// Queues every response that is ready and not behind one still waiting; closes once the
    /// last owed response is queued on a closing connection.
    fn pump_http(&mut self, idx: usize) {
        loop {
            let Some(h) = self.http.get_mut(idx) else { return };
            match h.owed.front_mut() {
                Some(o) if o.bytes.is_some() => {
                    let bytes = o.bytes.take().unwrap_or_default();
                    h.owed.pop_front();
                    self.queue_raw(idx, &bytes);
                }
                Some(_) => return,
                None if h.closing => {
                    self.http.remove(idx);
                    self.enter_discarding(idx);
                    return;
                }
                None => return,
            }
        }
    }

    /// Sends a plan's asks (see `asks`); a table too full to take it answers 503.
    fn launch(&mut self, idx: usize, seq: u64, asks: Vec<(Ask, Vec<usize>)>, finish: Finish) {
        let owner = Owner::Http {
            conn: self.token_of(idx),
            seq,
            finish,
        };
        if self.send_asks(owner, asks).is_none() {
            self.fulfil(idx, seq, Response::error(503, "too many admin requests in flight"));
        }
    }

    /// A plan's answers are in: its response goes to its connection (if still there).
    pub(super) fn http_plan_done(&mut self, conn: Token, seq: u64, finish: Finish, answers: Answers) {
        let rt = self.rt.clone();
        let resp = catch_unwind(AssertUnwindSafe(|| finish(answers, &*rt))).unwrap_or_else(|_| internal_error());
        if let Some(idx) = self.live(conn).filter(|&i| self.conns[i].phase == Phase::Http) {
            self.fulfil(idx, seq, resp);
            self.pump_http(idx);
            self.wake_http(idx);
        }
    }

    /// After output was written or a response completed: a paused connection whose backlog
    /// has come down is queued to read and serve again.
    pub fn wake_http(&mut self, idx: usize) {
        let unwritten = self.conns[idx].queued_bytes();
        let Some(h) = self.http.get_mut(idx) else { return };
        if h.paused && h.owed.len() < PIPELINE_DEPTH && unwritten < OUTPUT_HIGH_WATER {
            h.paused = false;
            let token = self.token_of(idx);
            self.http.resume_later(token);
        }
    }

    /// Serves the requests already buffered by connections that were paused; returns the
    /// tokens whose sockets should be read again.
    pub fn resume_http(&mut self) -> Vec<Token> {
        let tokens = self.http.take_resumes();
        let mut read = Vec::with_capacity(tokens.len());
        for t in tokens {
            if let Some(idx) = self.live(t).filter(|&i| self.conns[i].phase == Phase::Http) {
                self.serve_http(idx);
                // One that turned into a handshake is read after its request (`reupgrades`).
                if self.conns[idx].phase == Phase::Http && !self.http_paused(idx) {
                    read.push(t);
                }
            }
        }
        read
    }

    pub fn has_http_resumes(&self) -> bool {
        self.http.has_resumes()
    }

    /// The peer half-closed: answer what it asked, then close.
    pub fn http_peer_eof(&mut self, idx: usize) {
        self.conns[idx].flags |= flags::CLOSE_RECEIVED;
        if let Some(h) = self.http.get_mut(idx) {
            h.closing = true;
        }
        self.pump_http(idx);
        self.mark_dirty(idx);
    }

    /// Draining or closing the server: no further requests; close once what is owed is out.
    pub fn http_close(&mut self, idx: usize) {
        if let Some(h) = self.http.get_mut(idx) {
            h.closing = true;
        }
        self.pump_http(idx);
    }

    /// The connection's timer: the whole-request deadline (408), or the keep-alive idle limit.
    pub fn http_timer(&mut self, idx: usize) {
        let now = self.clock.now;
        let generation = self.conns[idx].generation;
        let mark = self.conns[idx].mark;
        let Some(h) = self.http.get(idx) else { return };
        let request = ticks(REQUEST_DEADLINE);
        let at = match h.request_started {
            Some(t) if now.wrapping_sub(t) >= request => {
                self.metrics.refused_with(408);
                log::debug!("admin request not received within {REQUEST_DEADLINE:?}; answering 408");
                self.owe_final(idx, Response::error(408, "request not received in time"), None);
                self.pump_http(idx);
                return;
            }
            Some(t) => t + request,
            None if !h.owed.is_empty() || h.closing => now + request,
            None => {
                // Idle: before the first request as long as a handshake may take, then the
                // keep-alive limit.
                let idle = if h.served == 0 {
                    self.clock.ticks.handshake
                } else {
                    ticks(KEEP_ALIVE_IDLE)
                };
                if now.wrapping_sub(mark) >= idle {
                    self.drop_conn(idx, 1006);
                    return;
                }
                mark + idle
            }
        };
        self.schedule(idx, generation, at.max(now + 1));
    }
}

fn internal_error() -> Response {
    log::error!("admin request handling panicked; answering 500");
    Response::error(500, "internal error")
}

impl Core {
    /// Queues the 101 response as urgent bytes: nothing (a pong for a ping sent along with the
    /// request) may overtake it, and a slow-consumer discard never drops it.
    pub(crate) fn write_101(&mut self, idx: usize, accept: &str) {
        let mut resp = Vec::with_capacity(160);
        let deflate = self.codecs.deflates(idx);
        crate::http::write_switching_protocols(&mut resp, accept, self.conns[idx].has(flags::BEARER), deflate);
        self.queue_urgent(idx, &resp);
    }
}
