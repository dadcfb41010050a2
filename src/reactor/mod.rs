//! The reactor: one thread, one `mio::Poll`, one slab of connections, one timer wheel.
//!
//! Owns: the poll loop, tokens (connections, listeners, the waker, embedders' sources), the
//! command inbox, and the order of work in a loop turn (events, paused HTTP connections
//! resumed, re-reads, timers, replies to handler asks and close callbacks, then one flush of
//! every dirty connection, then `on_writable`). Does not touch: other reactors' state (it only
//! posts commands to their inboxes) or the application's meaning of messages (that is the
//! handler).

#[macro_use]
mod noisy;
mod auth_proxy;
mod auth_state;
mod bridge_ctx;
pub(crate) mod core;
pub mod ctx;
pub(crate) mod embed;
mod engine_ctx;
pub(crate) mod handler;
#[cfg(feature = "testing")]
pub mod harness;
pub mod reactor_ctx;
mod read;
mod session;
mod slots;
pub(crate) mod users;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use self::core::Core;
use self::ctx::Ctx;
use crate::bridge::{Bridge, Role};
use crate::conn::Phase;
use crate::reactor::embed::ReactorHandler;
use crate::runtime::{ADMIN_LISTENER, Command, ENGINE_SOURCE_BIT, LISTENER, Runtime, SOURCE_BIT, TICK, WAKER, abandon};

pub(crate) struct Reactor<H: ReactorHandler> {
    core: Core,
    handler: H,
    poll: Poll,
    listener: Option<TcpListener>,
    /// `--admin-listen`: plain HTTP connections only.
    admin_listener: Option<TcpListener>,
    accept_paused: bool,
    /// One read buffer for every connection of this reactor.
    read_buf: Vec<u8>,
    /// Connections that hit the per-turn read budget and still have bytes.
    read_again: Vec<Token>,
    fired: Vec<u64>,
    inbox: Vec<Command>,
    draining_until: Option<Instant>,
    drain: Drain,
    /// This reactor's half of the cluster engine.
    engine: Option<Box<dyn crate::cluster::broker::ReactorEngine>>,
    /// This reactor's backend bridge (`--backend-url`).
    bridge: Option<Box<crate::bridge::Bridge>>,
    /// This reactor's bridge to the auth proxy (`--auth-proxy`), and the handshakes waiting.
    auth_bridge: Option<Box<crate::bridge::Bridge>>,
    auth: auth_state::AuthProxyState,
    /// Handshakes waiting for the cluster's per-user limit, by admission id.
    admitting: std::collections::HashMap<u64, Box<Admitting>>,
    /// Their slots (their bytes stay unread until the verdict).
    admitting_slots: std::collections::HashSet<usize>,
}

/// A handshake waiting for the cluster's per-user limit.
struct Admitting {
    idx: usize,
    generation: u32,
    connection: uuid::Uuid,
    claims: crate::auth::Claims,
    accept: String,
    leftover: Vec<u8>,
}

/// Connections still to be closed by a drain.
struct Drain {
    queue: Vec<Token>,
    total: usize,
    started: Instant,
}

const READ_BUF: usize = 64 * 1024;
/// Reads per connection per turn before yielding to others.
const READ_BUDGET: usize = 16;

/// Registers a reactor's listeners on its poll (before the reactor is built on its thread).
pub(crate) fn register_listeners(
    poll: &Poll,
    listener: &mut TcpListener,
    admin: Option<&mut TcpListener>,
) -> std::io::Result<()> {
    poll.registry().register(listener, LISTENER, Interest::READABLE)?;
    if let Some(l) = admin {
        poll.registry().register(l, ADMIN_LISTENER, Interest::READABLE)?;
    }
    Ok(())
}

impl<H: ReactorHandler> Reactor<H> {
    /// A reactor whose listeners are already registered on `poll`, its clock starting at
    /// `start` (Unix time `unix_ms`).
    pub fn new(
        id: usize,
        rt: Arc<Runtime>,
        handler: H,
        poll: Poll,
        (listener, admin_listener): (TcpListener, Option<TcpListener>),
        (start, unix_ms): (Instant, u64),
    ) -> Self {
        let engine = rt.engine.as_ref().map(|e| e.reactor_half(id));
        let metrics = rt.links[id].metrics.clone();
        let node = rt.config.node_id.clone();
        let bridge = (rt.config.backend.clone())
            .and_then(|b| Bridge::new(Role::Backend, b, node.clone(), metrics.clone()))
            .map(Box::new);
        let auth_bridge = rt.config.auth_proxy.as_ref().and_then(|a| {
            let mut b = a.backend.clone();
            let wait = rt.config.auth_proxy_wait();
            (b.timeout, b.deadline) = (wait, wait);
            b.queue = rt.config.max_pending_handshakes;
            Bridge::new(Role::AuthProxy, b, node.clone(), metrics.clone()).map(Box::new)
        });
        Reactor {
            engine,
            bridge,
            auth_bridge,
            auth: Default::default(),
            admitting: std::collections::HashMap::new(),
            admitting_slots: std::collections::HashSet::new(),
            core: Core::new(id, rt, start, unix_ms),
            handler,
            poll,
            listener: Some(listener),
            admin_listener,
            accept_paused: false,
            read_buf: vec![0; READ_BUF],
            read_again: Vec::new(),
            fired: Vec::new(),
            inbox: Vec::new(),
            draining_until: None,
            drain: Drain {
                queue: Vec::new(),
                total: 0,
                started: start,
            },
        }
    }

    /// Runs until shutdown completes.
    pub fn run(mut self) {
        crate::runtime::mark_reactor_thread();
        self.begin_turn(Instant::now(), crate::runtime::unix_ms_now());
        self.start();
        let mut events = Events::with_capacity(1024);
        while self.poll_turn(&mut events, None) {}
        self.stop();
        crate::runtime::set_reactor_thread(false);
    }

    /// The poll's descriptor (for an embedder's own event loop).
    pub(crate) fn poll_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.poll.as_raw_fd()
    }

    /// Before the first turn: the engine and the handler start.
    pub(crate) fn start(&mut self) {
        self.with_engine(|e, r| e.on_start(r));
        self.with_reactor_ctx(|h, r| h.on_start(r));
        self.after_callbacks();
    }

    /// One turn on the real clock: waits for events (at most `limit`, and no longer than the
    /// next timer), then runs the turn. False once the reactor has finished (drained, or its
    /// poll failed).
    pub(crate) fn poll_turn(&mut self, events: &mut Events, limit: Option<Duration>) -> bool {
        let timeout = match (self.poll_timeout(), limit) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (t, l) => t.or(l),
        };
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                return true;
            }
            log::error!("reactor {}: poll failed: {e}", self.core.id);
            return false;
        }
        let turn_start = Instant::now();
        self.begin_turn(turn_start, crate::runtime::unix_ms_now());
        for event in events.iter() {
            self.on_poll_event(event);
        }
        let go_on = self.end_turn(&Instant::now);
        self.core
            .metrics
            .loop_busy_us
            .set(turn_start.elapsed().as_micros() as u64);
        go_on
    }

    /// A turn starts at `now` (Unix time `unix_ms`): the clock every decision of the turn uses.
    pub(crate) fn begin_turn(&mut self, now: Instant, unix_ms: u64) {
        self.core.update_clock(now, unix_ms);
    }

    fn on_poll_event(&mut self, event: &mio::event::Event) {
        match event.token() {
            LISTENER => self.accept_all(false),
            ADMIN_LISTENER => self.accept_all(true),
            WAKER => self.drain_inbox(),
            token if token == reactor_ctx::source_token(bridge_ctx::BRIDGE_ID, true) => {
                self.with_bridge(false, |b, r| b.on_event(r, event));
            }
            token if token == reactor_ctx::source_token(bridge_ctx::AUTH_ID, true) => {
                self.with_bridge(true, |b, r| b.on_event(r, event));
                self.finish_auths();
            }
            token if token.0 & (SOURCE_BIT | ENGINE_SOURCE_BIT) == SOURCE_BIT | ENGINE_SOURCE_BIT => {
                let source = token.0 as u32;
                self.with_engine(|e, r| e.on_source(r, source, event));
                // Deliveries from other nodes in this read go out as groups.
                self.core.fan_out_groups();
                self.finish_admissions();
            }
            token if token.0 & SOURCE_BIT != 0 => {
                let source = token.0 as u32;
                self.with_reactor_ctx(|h, r| h.on_source(r, source, event));
            }
            token => self.on_ready(
                token,
                event.is_readable() || event.is_read_closed() || event.is_error(),
                event.is_read_closed() || event.is_error(),
                event.is_writable(),
            ),
        }
    }

    /// A connection's readiness: bytes (or its end) to read, room to write.
    pub(crate) fn on_ready(&mut self, token: Token, readable: bool, closed: bool, writable: bool) {
        if readable {
            self.on_readable(token, closed);
        }
        if writable {
            self.core.on_writable(token);
        }
    }

    /// The rest of a turn, after its events: paused work resumed, timers, queued work, one
    /// flush of every dirty connection, callbacks told what closed or drained. `clock` is read
    /// once the writes are done (publish latency, the drain's end): the real clock in the
    /// loop, the virtual one in the simulation. False once the reactor has finished draining.
    pub(crate) fn end_turn(&mut self, clock: &dyn Fn() -> Instant) -> bool {
        if self.core.has_http_resumes() {
            let again = self.core.resume_http();
            self.read_again.extend(again);
        }
        for token in std::mem::take(&mut self.read_again) {
            self.on_readable(token, true);
        }
        if self.accept_paused {
            self.accept_paused = false;
            self.accept_all(false);
            self.accept_all(true);
        }
        self.fire_timers();
        self.drain_batch();
        self.after_callbacks();
        self.pump_engine();
        self.pump_bridge();
        self.core.flush_dirty();
        if !self.core.http.reupgrades.is_empty() {
            // Upgrades that waited for earlier answers to be written.
            self.take_reupgrades();
            self.core.flush_dirty();
        }
        if self.core.has_replays() {
            // Recoveries continue as their connections' backlogs drain.
            self.core.feed_replays();
            self.core.flush_dirty();
        }
        let now = clock();
        self.core.observe_written(now);
        self.report_writable();
        self.report_closed();
        !self
            .draining_until
            .is_some_and(|until| (self.core.conns.is_empty() && self.drain.queue.is_empty()) || now >= until)
    }

    /// After the last turn: anything still asked is answered as lost, every connection is
    /// dropped and reported closed.
    pub(crate) fn stop(&mut self) {
        let link = &self.core.rt.links[self.core.id];
        link.stopped.store(true, Ordering::Release);
        // Answer anything still queued so no caller waits for a reply that never comes.
        link.take_all(&mut self.inbox);
        abandon(std::mem::take(&mut self.inbox), self.core.id, &self.core.rt.links);
        let open: Vec<usize> = self.core.conns.iter().map(|(i, _)| i).collect();
        for idx in open {
            self.core.drop_conn(idx, 1006);
        }
        self.report_closed();
        self.with_reactor_ctx(|h, r| h.on_stop(r));
        log::debug!("reactor {} stopped", self.core.id);
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.core.has_http_resumes()
            || !self.core.embedder.handler_replies.is_empty()
            || self.core.has_engine_ops()
            || self.core.has_outbox()
        {
            return Some(Duration::ZERO);
        }
        if !self.read_again.is_empty() || self.accept_paused || !self.drain.queue.is_empty() {
            return Some(if self.read_again.is_empty() {
                TICK
            } else {
                Duration::ZERO
            });
        }
        let mut t = self.core.until_next_timer();
        if let Some(until) = self.draining_until {
            let left = until.saturating_duration_since(self.core.clock.instant);
            t = Some(t.map_or(left, |x| x.min(left)));
        }
        t
    }

    fn drain_inbox(&mut self) {
        let mut cmds = std::mem::take(&mut self.inbox);
        self.core.rt.links[self.core.id].take_all(&mut cmds);
        for cmd in cmds.drain(..) {
            if !matches!(
                cmd,
                Command::Ask { .. } | Command::Answer { .. } | Command::Interest { .. } | Command::Plan { .. }
            ) {
                // Deliveries queued so far go out before anything else changes connections.
                self.core.fan_out_groups();
            }
            match cmd {
                Command::Adopt(h) => self.adopt(*h),
                Command::Ask { ask, reply } => self.core.carry_out(ask, reply.map(core::Waiter::Reply)),
                Command::Answer { ticket, from, answer } => self.core.on_answer(ticket, from, answer),
                Command::Interest { channel, on } => self.core.cluster_interest(channel, on),
                Command::Plan { asks, reply } => self.core.thread_plan(asks, reply),
                #[cfg(feature = "testing")]
                Command::InjectPanic => panic!("injected reactor panic"),
                Command::Shutdown { listener_closed } => {
                    self.begin_shutdown();
                    if let Some(ack) = listener_closed {
                        let _ = ack.send(());
                    }
                }
            }
        }
        self.core.fan_out_groups();
        self.inbox = cmds;
    }

    /// Stops accepting and queues every open connection for closing in batches over the drain
    /// window; the reactor exits when all are gone, or `shutdown_timeout` after the window.
    fn begin_shutdown(&mut self) {
        if self.draining_until.is_some() {
            return;
        }
        let cfg = &self.core.rt.config;
        log::info!("reactor {}: draining over {:?}", self.core.id, cfg.drain_window);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        // The admin listener stays open until the reactor exits: probes keep hearing "draining"
        // and metrics keep being scraped.
        let now = self.core.clock.instant;
        self.draining_until = Some(now + cfg.drain_window + cfg.shutdown_timeout);
        let mut open = Vec::new();
        let all: Vec<usize> = self.core.conns.iter().map(|(i, _)| i).collect();
        for idx in all {
            match self.core.conns[idx].phase {
                // A handshake in progress completes (the client is not refused), then closes
                // with 1001 in a batch like the open ones.
                Phase::Open | Phase::Handshake => open.push(self.core.token_of(idx)),
                _ => self.core.close_or_drop(idx, 1001, "server shutting down"),
            }
        }
        self.drain = Drain {
            total: open.len(),
            queue: open,
            started: now,
        };
        self.drain_batch();
    }

    /// Closes the share of drained connections due by now (all of them once the window ends).
    fn drain_batch(&mut self) {
        if self.drain.queue.is_empty() {
            return;
        }
        let window = self.core.rt.config.drain_window.as_secs_f64();
        let elapsed = self
            .core
            .clock
            .instant
            .saturating_duration_since(self.drain.started)
            .as_secs_f64();
        let due = if window <= 0.0 || elapsed >= window {
            self.drain.total
        } else {
            // One batch per tick, at least one connection per batch.
            ((self.drain.total as f64 * elapsed / window).ceil() as usize).max(1)
        };
        let mut upgrading = Vec::new();
        while self.drain.total - self.drain.queue.len() - upgrading.len() < due {
            let Some(token) = self.drain.queue.pop() else { break };
            let Some(idx) = self.core.live(token) else { continue };
            match self.core.conns[idx].phase {
                // Still upgrading (its handshake timeout bounds the wait): later.
                Phase::Handshake => upgrading.push(token),
                Phase::Open => {
                    self.with_ctx(idx, |h, ctx| h.on_server_draining(ctx));
                    self.core.close_or_drop(idx, 1001, "server shutting down");
                }
                _ => {}
            }
        }
        self.drain.queue.extend(upgrading);
    }

    pub(super) fn fire_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.core.advance_wheel(&mut fired);
        for key in fired.drain(..) {
            self.core.on_timer(key);
        }
        self.fired = fired;
        self.core.expire_asks();
        self.core.expire_history();
        self.core.expire_rpcs();
        for (timer, epoch) in std::mem::take(&mut self.core.timers.fired_timers) {
            // A timer cancelled by an earlier callback of this same turn does not fire.
            if self.core.app_timer_live(timer, epoch) {
                self.with_reactor_ctx(|h, r| h.on_timer(r, timer));
            }
        }
        for timer in std::mem::take(&mut self.core.timers.fired_engine_timers) {
            if timer == bridge_ctx::BRIDGE_ID {
                self.with_bridge(false, |b, r| b.on_timer(r));
            } else if timer == bridge_ctx::AUTH_ID {
                self.with_bridge(true, |b, r| b.on_timer(r));
                self.finish_auths();
            } else {
                self.with_engine(|e, r| e.on_timer(r, timer));
            }
        }
    }

    pub(super) fn report_closed(&mut self) {
        while let Some(c) = self.core.closed.pop() {
            let closed = crate::callback::Closed {
                connection_id: uuid::Uuid::from_bytes(c.id),
                user_id: c.user.as_deref(),
                code: c.code,
                messages: c.messages,
            };
            self.with_reactor_ctx(|h, r| h.on_close(r, &closed));
        }
    }

    /// Runs a handler callback about connection `idx`. A panic in it is contained: counted,
    /// logged, and that connection is closed with 1011; the reactor and every other connection
    /// carry on.
    pub(super) fn with_ctx(&mut self, idx: usize, f: impl FnOnce(&mut H, &mut Ctx<'_>)) {
        let handler = &mut self.handler;
        let core = &mut self.core;
        if catch_unwind(AssertUnwindSafe(|| f(handler, &mut Ctx { core, idx }))).is_err() {
            self.handler_panicked(Some(idx));
        }
    }

    /// Runs a handler callback about the reactor (sources, timers, replies); a panic is
    /// contained and counted.
    pub(super) fn with_reactor_ctx(&mut self, f: impl FnOnce(&mut H, &mut reactor_ctx::ReactorCtx<'_>)) {
        let handler = &mut self.handler;
        let core = &mut self.core;
        let registry = self.poll.registry();
        if catch_unwind(AssertUnwindSafe(|| {
            f(handler, &mut reactor_ctx::ReactorCtx { core, registry })
        }))
        .is_err()
        {
            self.handler_panicked(None);
        }
    }

    /// Runs a cluster engine callback; a panic is contained, counted and logged (the engine
    /// half stays: its state is whatever the panic left).
    fn with_engine(
        &mut self,
        f: impl FnOnce(&mut dyn crate::cluster::broker::ReactorEngine, &mut engine_ctx::EngineCtx<'_>),
    ) {
        let Some(mut engine) = self.engine.take() else { return };
        let core = &mut self.core;
        let registry = self.poll.registry();
        let r = catch_unwind(AssertUnwindSafe(|| {
            f(&mut *engine, &mut engine_ctx::EngineCtx { core, registry })
        }));
        self.engine = Some(engine);
        if r.is_err() {
            self.core.metrics.handler_panics.inc();
            log::error!("reactor {}: the cluster engine panicked", self.core.id);
        }
    }

    /// Hands the engine what this turn asked of it, then lets it write. What it answers at
    /// once (a publish refused while the cluster is down) may ask for more: bounded rounds.
    fn pump_engine(&mut self) {
        if self.engine.is_none() {
            return;
        }
        for _ in 0..8 {
            let ops = self.core.take_engine_ops();
            if ops.is_empty() {
                break;
            }
            self.with_engine(|e, r| {
                for op in ops {
                    e.apply(r, op);
                }
            });
            self.core.fan_out_groups();
            self.finish_admissions();
            self.after_callbacks();
        }
        self.with_engine(|e, r| e.flush(r));
    }

    /// Runs a callback of the backend bridge (or, with `auth`, the auth proxy's); a panic is
    /// contained, counted and logged.
    fn with_bridge(&mut self, auth: bool, f: impl FnOnce(&mut Bridge, &mut bridge_ctx::BridgeCtx<'_>)) {
        let slot = if auth { &mut self.auth_bridge } else { &mut self.bridge };
        let Some(mut bridge) = slot.take() else { return };
        let core = &mut self.core;
        let registry = self.poll.registry();
        let id = if auth {
            bridge_ctx::AUTH_ID
        } else {
            bridge_ctx::BRIDGE_ID
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            f(&mut bridge, &mut bridge_ctx::BridgeCtx { core, registry, id })
        }));
        *(if auth { &mut self.auth_bridge } else { &mut self.bridge }) = Some(bridge);
        if r.is_err() {
            self.core.metrics.handler_panics.inc();
            log::error!("reactor {}: the backend bridge panicked", self.core.id);
        }
    }

    /// Hands the bridge the items this turn made, then lets it send what waits.
    fn pump_bridge(&mut self) {
        if self.auth_bridge.is_some() {
            let checks = self.core.take_auth_outbox();
            self.with_bridge(true, |b, r| {
                for item in checks {
                    b.push(r, item);
                }
                b.flush(r);
            });
            self.finish_auths();
        }
        if self.bridge.is_none() {
            return;
        }
        let items = self.core.take_outbox();
        self.with_bridge(false, |b, r| {
            for item in items {
                b.push(r, item);
            }
            b.flush(r);
        });
    }

    /// Hands the handler its answered asks, then reports closed connections.
    fn after_callbacks(&mut self) {
        // Replies may lead to more asks, answered locally at once: bounded rounds per turn.
        for _ in 0..16 {
            if self.core.embedder.handler_replies.is_empty() {
                break;
            }
            for (ticket, reply) in std::mem::take(&mut self.core.embedder.handler_replies) {
                self.with_reactor_ctx(|h, r| h.on_reply(r, ticket, reply));
            }
        }
        self.report_closed();
    }

    /// `on_writable` for connections whose backlog drained after a `Backpressure` send; what
    /// they send is written at once.
    fn report_writable(&mut self) {
        if self.core.embedder.writable_again.is_empty() {
            return;
        }
        for token in std::mem::take(&mut self.core.embedder.writable_again) {
            if let Some(idx) = self
                .core
                .live(token)
                .filter(|&i| self.core.conns[i].phase == Phase::Open)
            {
                self.with_ctx(idx, |h, ctx| h.on_writable(ctx));
            }
        }
        self.core.flush_dirty();
    }

    pub(super) fn handler_panicked(&mut self, idx: Option<usize>) {
        self.core.metrics.handler_panics.inc();
        log::error!("reactor {}: a handler callback panicked", self.core.id);
        if let Some(idx) = idx.filter(|&i| self.core.conns.contains(i)) {
            self.core.close_or_drop(idx, 1011, "internal error");
        }
    }
}
