//! The reactor's state and every operation that needs no handler: queueing, closing, dropping,
//! flushing and timers (fan-out by target: `fanout`; user and room bookkeeping: `membership`).
//!
//! Owns: the slab, the wheel, the user table, the pool and the dirty list of one reactor. Does
//! not touch: the poll loop or the application's callbacks (closes are recorded in `closed` and
//! reported by the loop).

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use mio::Token;
use slab::Slab;

mod asks;
mod backend;
mod channels;
pub(crate) mod cluster;
mod fanout;
mod http;
mod hub;
mod hub_recovery;
pub(crate) mod state;
mod timers;

pub(crate) use state::asks::ReplyKind;
pub(crate) use state::channels::RecoveryFinish;
#[cfg(feature = "testing")]
pub use state::channels::with_position;
pub(crate) use state::fanout::Waiter;
pub(crate) use state::rpc::CheckFinish;
mod membership;
mod output;

use super::users::Users;
use crate::ask::Target;
use crate::conn::{Conn, NONE, Phase, Pool, flags};
use crate::metrics::ReactorMetrics;
use crate::protocol::IdGen;
use crate::rooms::Rooms;
use crate::runtime::{Runtime, conn_token, split_token};
use crate::ws::encode_close;

/// Close reason (with code 1008) when the user's token expires.
pub(crate) const TOKEN_EXPIRED: &str = "token expired";

/// Ticks a pending handshake must have waited before the pending limit may evict it (1 s).
const PENDING_MIN_AGE: u32 = 10;

/// A closed connection, reported to `Handler::on_close` by the loop.
pub(crate) struct ClosedRecord {
    pub id: [u8; 16],
    pub user: Option<Box<str>>,
    pub code: u16,
    pub messages: u32,
}

/// One reactor's state. The core itself owns the sessions (the slab of connections, the
/// user table, rooms, partial input, output scheduling); each other side is an object owning
/// its fields, with its own methods, in `state`.
pub(crate) struct Core {
    pub id: usize,
    pub rt: Arc<Runtime>,
    pub metrics: Arc<ReactorMetrics>,
    pub conns: Slab<Conn>,
    pub users: Users,
    pub rooms: Rooms,
    dirty: Vec<u32>,
    /// Scratch for serializing one message before framing it.
    pub scratch: Vec<u8>,
    pub pool: Pool,
    /// Incomplete input (a partial request or frame, a fragmented message's state) of the
    /// connections that have some: an idle connection holds none, and its record keeps no
    /// pointer for it (8 bytes each).
    inputs: crate::conn::BySlot<Box<crate::conn::Input>>,
    pub ids: IdGen,
    /// Key of the connection-id hash.
    id_key: std::hash::RandomState,
    next_generation: u32,
    queued: usize,
    pub closed: Vec<ClosedRecord>,
    /// Budget for log lines about client-triggered events.
    pub noisy: super::noisy::NoisyLog,
    /// This turn's time, as the caller gave it.
    pub clock: state::clock::Clock,
    /// Every deadline of the reactor, on one wheel.
    pub timers: state::timers::Timers,
    /// Who a publish reaches, deliveries waiting to be fanned out, messages in flight.
    fanout: state::fanout::Fanout,
    /// TLS sessions and permessage-deflate state (side tables by slot).
    pub codecs: state::codecs::Codecs,
    /// The embedder's per-connection data, anonymous rooms, writable watches, handler replies.
    pub embedder: state::embedder::EmbedderTables,
    /// Accepted connections in accept order, for the pending-handshake limit.
    pending: state::pending::PendingHandshakes,
    /// The plain HTTP connections (see `http`).
    pub http: state::http::HttpConns,
    /// Admin plans and handler calls waiting for other reactors' answers.
    asks: state::asks::AskTable,
    /// The cluster side of this reactor (`None`: the node runs alone).
    pub cluster: Option<Box<state::cluster::CoreCluster>>,
    /// History of the channels homed here and recoveries in progress (see `channels`).
    pub channels: state::channels::ChannelState,
    /// Items for the backend bridge made this turn (see `backend`); empty without one.
    outbox: Vec<crate::bridge::Item>,
    /// Rpcs the backend took and will answer through the admin route (see `backend`).
    rpcs: state::rpc::PendingRpcs,
    /// Items written to the backend's Redis stream, not yet confirmed (see `backend`).
    appends: state::rpc::Appends,
    /// Permission checks waiting for the auth proxy, and the items asking them.
    checks: state::rpc::Checks,
    auth_outbox: Vec<crate::bridge::Item>,
    /// Permission-check verdicts from the bridge, applied by the loop outside the bridge's
    /// callback (a request's continuation is the handler's code).
    pub check_verdicts: Vec<(uuid::Uuid, Result<(), String>)>,
    /// The auth proxy's verdicts on handshakes this turn, for the loop.
    pub auth_answers: Vec<(Token, crate::bridge::wire::AuthVerdict)>,
}

impl Core {
    /// A core whose clock starts at `start` (tick 0), Unix time `unix_ms`.
    pub fn new(id: usize, rt: Arc<Runtime>, start: Instant, unix_ms: u64) -> Self {
        // The connection and user tables are sized once for this reactor's share of
        // `max_connections` (untouched capacity costs no memory): growing by doubling would
        // copy them, and the allocator keeps the old copies resident.
        let per_reactor = rt
            .config
            .max_connections
            .div_ceil(rt.config.workers.max(1))
            .min(1 << 20);
        let c = &rt.config;
        let history = crate::history::History::new(
            c.history_size,
            c.history_ttl.as_millis() as u64,
            c.history_max_bytes / c.workers.max(1),
            &rt.history_epoch,
        );
        let cluster = rt
            .engine
            .as_ref()
            .map(|_| Box::new(state::cluster::CoreCluster::new(&c.redis_prefix, &c.node_id)));
        Core {
            id,
            metrics: rt.links[id].metrics.clone(),
            clock: state::clock::Clock::new(&rt.config, start, unix_ms),
            rt,
            conns: Slab::with_capacity(per_reactor),
            users: Users::with_capacity(per_reactor),
            rooms: Rooms::default(),
            dirty: Vec::new(),
            scratch: Vec::new(),
            pool: Pool::default(),
            inputs: Default::default(),
            ids: IdGen::from_os(),
            id_key: std::hash::RandomState::new(),
            next_generation: 1,
            queued: 0,
            closed: Vec::new(),
            noisy: Default::default(),
            timers: Default::default(),
            fanout: Default::default(),
            codecs: Default::default(),
            embedder: Default::default(),
            pending: Default::default(),
            http: Default::default(),
            asks: Default::default(),
            cluster,
            channels: state::channels::ChannelState::new(history),
            outbox: Vec::new(),
            rpcs: Default::default(),
            appends: Default::default(),
            auth_answers: Vec::new(),
            checks: Default::default(),
            auth_outbox: Vec::new(),
            check_verdicts: Vec::new(),
        }
    }

    /// The connection at `token`, if it is still the same connection.
    pub fn live(&self, token: Token) -> Option<usize> {
        let (idx, generation) = split_token(token);
        self.conns.get(idx).filter(|c| c.generation == generation).map(|_| idx)
    }

    /// Forgets the dirty list without writing (the fuzz harness never writes).
    #[cfg(feature = "testing")]
    pub fn forget_dirty(&mut self) {
        for idx in std::mem::take(&mut self.dirty) {
            if let Some(c) = self.conns.get_mut(idx as usize) {
                c.flags &= !flags::DIRTY;
            }
        }
    }

    pub fn token_of(&self, idx: usize) -> Token {
        conn_token(idx, self.conns[idx].generation)
    }

    /// Adds a fresh socket in the handshake phase with its handshake deadline. `ip_bucket` has
    /// already been counted in the per-IP table; the connection releases it when dropped.
    pub fn insert_conn(&mut self, sock: crate::transport::Stream, ip_bucket: u16) -> usize {
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & state::timers::GENERATION_MASK;
        let idx = self
            .conns
            .insert(Conn::new(sock, generation, self.clock.now, ip_bucket));
        // The connection's one wheel entry: due at whichever check comes first after accept.
        self.schedule(
            idx,
            generation,
            self.clock.now + self.clock.ticks.handshake.min(self.clock.ticks.heartbeat),
        );
        idx
    }

    /// Remembers a freshly accepted connection; past this reactor's share of
    /// `max_pending_handshakes`, the oldest connections still in their handshake after a second
    /// are dropped (legitimate clients finish in milliseconds; idle ones would hold descriptors
    /// until the handshake timeout).
    pub fn track_pending(&mut self, idx: usize) {
        let limit = (self.rt.config.max_pending_handshakes / self.rt.links.len()).max(1);
        let token = self.token_of(idx);
        if !self.pending.push(token, limit) {
            return;
        }
        // Forget the connections that finished (or gave up) their handshake, then evict.
        let conns = &self.conns;
        self.pending.compact(|t| {
            let (i, g) = split_token(t);
            conns
                .get(i)
                .is_some_and(|c| c.generation == g && c.phase == Phase::Handshake)
        });
        while self.pending.len() > limit {
            // Only connections pending for a while are evicted: a burst of young ones (a
            // reconnect storm after a restart) is let through; idle sockets age past this.
            let Some(t) = self.pending.oldest() else { break };
            if self
                .live(t)
                .is_some_and(|i| self.clock.now.wrapping_sub(self.conns[i].mark) < PENDING_MIN_AGE)
            {
                break;
            }
            self.pending.forget_oldest();
            if let Some(i) = self.live(t) {
                self.metrics.refused_with(408);
                log::debug!("dropping the oldest pending handshake (over {limit} on this reactor)");
                self.drop_conn(i, 1006);
            }
        }
    }

    /// The connection's public id, shaped as a v4 UUID: its slot and reactor in the clear (so a
    /// lookup is O(1)), the rest a keyed hash of slot and generation (unique per connection,
    /// unguessable without this reactor's key). Derived, not stored: 16 bytes less per
    /// connection.
    pub fn conn_id(&self, idx: usize) -> [u8; 16] {
        let g = self.conns.get(idx).map_or(0, |c| c.generation);
        let a = self.id_key.hash_one((idx as u32, g, 1u8)).to_le_bytes();
        let b = self.id_key.hash_one((idx as u32, g, 2u8)).to_le_bytes();
        let i = (idx as u32).to_be_bytes();
        [
            i[0],
            i[1],
            i[2],
            i[3],
            self.id as u8,
            a[0],
            0x40 | (a[1] & 0x0F),
            a[2],
            0x80 | (a[3] & 0x3F),
            a[4],
            a[5],
            a[6],
            a[7],
            b[0],
            b[1],
            b[2],
        ]
    }

    /// The open connection with this public id, if it lives here.
    pub fn find_by_id(&self, id: &uuid::Uuid) -> Option<usize> {
        let b = id.as_bytes();
        if b[4] as usize != self.id {
            return None;
        }
        let idx = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        self.conns
            .get(idx)
            .filter(|c| c.phase == Phase::Open)
            .filter(|_| &self.conn_id(idx) == b)
            .map(|_| idx)
    }

    /// Counts a control frame from the peer; false once it sent more than
    /// `max_control_frames_per_second` in the current second (the caller closes it).
    pub fn control_frame_allowed(&mut self, idx: usize) -> bool {
        let limit = self.rt.config.max_control_frames_per_second;
        if limit == 0 {
            return true;
        }
        let second = (self.clock.now / 10) as u8;
        let c = &mut self.conns[idx];
        if c.control_second != second {
            c.control_second = second;
            c.control_count = 0;
        }
        c.control_count = c.control_count.saturating_add(1);
        u32::from(c.control_count) <= limit
    }

    /// Gives back the connection's place in the global count (at the start of a close, so
    /// connections waiting for a close handshake never keep anyone else out).
    fn release_slot(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        if c.has(flags::COUNTED) {
            c.flags &= !flags::COUNTED;
            self.rt.admission.release();
        }
    }

    /// Starts the close handshake: queues a close frame after pending output, then waits for
    /// the peer's close (or the close timeout).
    pub fn close_with(&mut self, idx: usize, code: u16, reason: &str) {
        self.begin_close(idx, Some(code), reason);
    }

    /// Answers the peer's close by echoing its code (an empty close for an empty one).
    pub fn echo_close(&mut self, idx: usize, code: Option<u16>) {
        self.begin_close(idx, code, "");
        self.conns[idx].close_code = code.unwrap_or(1005);
    }

    fn begin_close(&mut self, idx: usize, code: Option<u16>, reason: &str) {
        let c = &mut self.conns[idx];
        if c.phase != Phase::Open {
            return;
        }
        self.enter_closing(idx);
        let mut frame = Vec::with_capacity(4 + reason.len().min(123));
        encode_close(&mut frame, code, reason);
        self.queue_raw(idx, &frame);
        self.conns[idx].close_code = code.unwrap_or(1005);
    }

    /// Open -> Closing: the connection stops counting as open (global slot, user, rooms) and
    /// gets the close timeout; what it still has queued goes out.
    fn enter_closing(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        c.phase = Phase::Closing;
        c.mark = self.clock.now;
        let generation = c.generation;
        self.release_slot(idx);
        self.unlink_user(idx);
        self.schedule(idx, generation, self.clock.now + self.clock.ticks.close);
    }

    /// Closes an open WebSocket with a close frame; drops anything else at once.
    pub fn close_or_drop(&mut self, idx: usize, code: u16, reason: &str) {
        match self.conns[idx].phase {
            Phase::Open => self.close_with(idx, code, reason),
            Phase::Closing => {}
            Phase::Http => self.http_close(idx),
            Phase::Handshake | Phase::Discarding => self.drop_conn(idx, 1006),
        }
    }

    /// Answers an HTTP request and closes after the response is written.
    pub fn respond_http(&mut self, idx: usize, response: &[u8]) {
        self.queue_raw(idx, response);
        self.enter_discarding(idx);
    }

    /// The connection's last response is queued: input is discarded from now on, and the
    /// socket closes once the output is written (or the close timeout passes).
    pub(super) fn enter_discarding(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        c.phase = Phase::Discarding;
        c.mark = self.clock.now;
        let generation = c.generation;
        self.set_input(idx, None);
        self.schedule(idx, generation, self.clock.now + self.clock.ticks.close);
        self.mark_dirty(idx);
    }

    /// Removes the connection now: its socket closes, every index forgets it.
    pub fn drop_conn(&mut self, idx: usize, code: u16) {
        if !self.conns.contains(idx) {
            return;
        }
        self.unlink_user(idx);
        let user = self.embedder.departed_users.remove(&idx);
        let id = self.conn_id(idx);
        let subscriptions = self.subscriptions_of(idx);
        self.set_input(idx, None);
        self.leave_connection_rooms(idx);
        let c = self.conns.remove(idx);
        if c.phase == Phase::Http {
            self.http.remove(idx);
        }
        if !self.channels.replays.is_empty() {
            self.channels.replays.remove(&idx);
        }
        if !self.channels.connect_recoveries.is_empty() {
            self.channels.connect_recoveries.remove(&idx);
        }
        if !self.embedder.writable_watch.is_empty() {
            self.embedder.writable_watch.remove(&idx);
        }
        self.index_subscriptions(idx, subscriptions, 0);
        self.fanout.index.close(idx);
        if !self.codecs.tls_sessions.is_empty() {
            self.codecs.tls_sessions.remove(&idx);
        }
        if !self.codecs.deflate_slots.is_empty() {
            self.codecs.deflate_slots.remove(idx);
        }
        if c.has(flags::HAS_DATA) {
            self.embedder.conn_data.remove(&idx);
        }
        if c.has(flags::COUNTED) {
            self.rt.admission.release();
        }
        self.rt.per_ip.release(c.ip_bucket);
        if c.opened_at != 0 {
            let n = self.metrics.connections.get();
            self.metrics.connections.set(n.saturating_sub(1));
            let code = if c.close_code != 0 { c.close_code } else { code };
            log::debug!(
                "connection closed: id={} user={} code={code} duration={}s messages={}",
                uuid::Uuid::from_bytes(id),
                user.as_deref().unwrap_or("-"),
                (self.clock.unix_now as u32).saturating_sub(c.opened_at),
                c.messages
            );
            if self.rt.config.backend_events.disconnect {
                let fields = serde_json::json!({
                    "code": code,
                    "reason": close_meaning(code),
                    "duration_ms": u64::from((self.clock.unix_now as u32).saturating_sub(c.opened_at)) * 1000,
                    "messages_in": c.messages,
                });
                self.backend_disconnect(id, user.as_deref(), fields);
            }
            self.closed.push(ClosedRecord {
                id,
                user,
                code,
                messages: c.messages,
            });
        }
        if let Some(out) = c.output {
            self.queued -= out.bytes;
            self.pool.recycle(out);
        }
    }

    /// The peer half-closed its side (a read returned 0). No more input will come, but whatever
    /// we owe it (an HTTP response, the 101 and first messages, a close frame) is still
    /// written before the socket closes: a half-close is not a reset.
    pub fn peer_eof(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        c.flags |= flags::CLOSE_RECEIVED;
        match c.phase {
            // Nothing complete to answer.
            Phase::Handshake => self.drop_conn(idx, 1006),
            Phase::Open => {
                // Gone without a close frame: deliver what is queued, then close (1006).
                c.close_code = 1006;
                self.set_input(idx, None);
                self.enter_closing(idx);
                self.mark_dirty(idx);
            }
            Phase::Closing | Phase::Discarding => self.mark_dirty(idx),
            Phase::Http => self.http_peer_eof(idx),
        }
    }
}

/// What a close code means, for the `disconnect` event (the reason text sent on the wire is
/// not kept per connection).
fn close_meaning(code: u16) -> &'static str {
    match code {
        1000 => "normal closure",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1005 => "no status",
        1006 => "abnormal closure",
        1007 => "invalid payload",
        1008 => "policy violation",
        1009 => "message too big",
        1011 => "internal error",
        1012 => "service restart",
        1013 => "try again later",
        _ => "other",
    }
}
