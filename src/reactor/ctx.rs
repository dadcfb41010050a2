//! `Ctx`: what a handler callback may do with its connection and its reactor.
//!
//! Owns: the handler-facing API (send, close, rate check, subscriptions, fan-out). Does not
//! touch: sockets directly; everything is queued and flushed at the end of the loop turn.

use serde::Serialize;
use tungstenite::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use super::core::Core;
use crate::ask::Ask;
use crate::ask::Target;
use crate::callback::SendStatus;
use crate::config::Config;
use crate::conn::{NONE, Phase, flags};
use crate::handle::ServerHandle;
use crate::limits::RateLimited;
use crate::protocol::{ErrorCode, write_envelope, write_error, write_rate_limited};
use crate::reactor::users::NO_EXPIRY;
use crate::runtime::Command;
use crate::ws::encode_frame;

/// Why a room join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomRefusal {
    #[error("not allowed by token")]
    NotAllowed,
    #[error("invalid room name")]
    InvalidName,
    #[error("anonymous connections cannot join rooms")]
    Anonymous,
    #[error("room limit reached")]
    TooManyRooms,
}

/// Why a `token.refresh` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("authentication failed: {0}")]
    Invalid(crate::auth::AuthError),
    #[error("token is for another user")]
    OtherUser,
    #[error("anonymous connections have no token")]
    Anonymous,
}

/// The connection a callback is about, and its reactor.
pub struct Ctx<'r> {
    pub(crate) core: &'r mut Core,
    pub(crate) idx: usize,
}

/// Makes a subscription's acknowledgement once every channel has answered.
pub type RecoveryFinish = Box<dyn FnOnce(&mut Ctx<'_>, Vec<crate::history::RecoveryOutcome>) + Send>;

impl Ctx<'_> {
    /// The public connection id (a UUID).
    pub fn connection_id(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.core.conn_id(self.idx))
    }

    /// The authenticated user (`sub`), or `None` for anonymous connections.
    pub fn user_id(&self) -> Option<&str> {
        let u = self.core.conns[self.idx].user;
        (u != NONE).then(|| self.core.users.get(u).map(|u| &*u.id)).flatten()
    }

    /// The position of this connection's user channel (`user:<id>`), where a later
    /// [`recover_user`](Self::recover_user) can start from; `None` without a user or history,
    /// and on a cluster node (the position lives in Redis: `recover_user` answers it).
    pub fn user_position(&self) -> Option<(String, crate::history::Position)> {
        if !self.keeps_history() || self.core.cluster.is_some() {
            return None;
        }
        let channel = format!("user:{}", self.user_id()?);
        let pos = self.core.channels.history.position(&channel);
        Some((channel, pos))
    }

    /// True if this connection's channels keep history (history on, and a user).
    pub fn keeps_history(&self) -> bool {
        self.core.rt.config.history_enabled() && self.user_id().is_some()
    }

    /// Subscribes this connection to the event channels of `items`, each at its exact position
    /// and, when asked, recovering the messages after the client's offset. `finish(ctx,
    /// outcomes)` runs once every channel's reactor has answered (send the acknowledgement
    /// there); then the replays follow, then the live messages that came meanwhile.
    /// Items with a `room` join that room (for the whole user) instead of subscribing an event;
    /// check them with [`may_join_room`](Self::may_join_room) first.
    pub fn subscribe_with_positions(&mut self, items: Vec<crate::history::RecoverItem>, finish: RecoveryFinish) {
        let finish: crate::reactor::core::RecoveryFinish =
            Box::new(move |core, idx, outcomes| match core.downcast_mut::<Core>() {
                Some(core) => finish(&mut Ctx { core, idx }, outcomes),
                None => log::error!("a recovery finished on something other than a reactor core"),
            });
        self.core.recover_events(self.idx, items, finish);
    }

    /// In `on_open`: the outcome of the recovery the upgrade request asked for
    /// (`recover_offset`, `recover_epoch`): recovered or not, and the user channel's position.
    /// When recovered, the missing messages are queued right after `on_open` returns.
    pub fn opening_recovery(&self) -> Option<(bool, crate::history::Position)> {
        self.core.channels.opening_recovery.clone()
    }

    /// True on a cluster node.
    pub fn is_clustered(&self) -> bool {
        self.core.cluster.is_some()
    }

    /// In `on_open` on a cluster node: the recovery the upgrade request asked for
    /// (`recover_offset`, `recover_epoch`), for [`recover_user_from`](Self::recover_user_from).
    pub fn take_recovery_request(&mut self) -> Option<(u64, String)> {
        self.core.channels.connect_recoveries.remove(&self.idx)
    }

    /// On a cluster node: the position of this connection's user channel and, with `from`
    /// (offset, epoch), the messages after it, like [`recover_user`](Self::recover_user). The
    /// connection's live messages of the channel wait meanwhile; `ack(ctx, recovered,
    /// position)` runs when Redis answered (`recovered` is false without `from`), then the
    /// replay, then the live messages after `position`. Returns false without a user or history.
    pub fn recover_user_from(
        &mut self,
        from: Option<(u64, String)>,
        until: Option<u64>,
        ack: impl for<'c> FnOnce(&mut Ctx<'c>, bool, &crate::history::Position) + Send + 'static,
    ) -> bool {
        let Some(user) = self.user_id().map(str::to_string) else {
            return false;
        };
        if !self.core.rt.config.history_enabled() {
            return false;
        }
        let item = crate::history::RecoverItem {
            channel: format!("user:{user}"),
            bit: 0,
            room: None,
            from,
            until,
        };
        let finish: RecoveryFinish = Box::new(move |ctx, outcomes| {
            let o = outcomes.into_iter().next();
            let recovered = o.as_ref().and_then(|o| o.recovered).unwrap_or(false);
            let position = o.and_then(|o| o.position).unwrap_or_default();
            ack(ctx, recovered, &position);
        });
        self.subscribe_with_positions(vec![item], finish);
        true
    }

    /// Recovers the messages of this connection's user channel after `offset` of `epoch`.
    /// `ack(ctx, recovered, position)` runs first (send the acknowledgement there); then, if
    /// recovered, exactly the missing messages are queued, before any later message and paced
    /// under the outbound cap. Not recovered: another epoch, trimmed past `offset`, or more
    /// than `recovery_max` missing; nothing is queued. `None` without a user or history.
    /// With `until`, only the messages up to that offset are replayed (those after it were
    /// already sent live on this connection).
    ///
    /// On a cluster node the answer comes later, from Redis: `ack` runs then, and this returns
    /// `Some(false)` at once.
    pub fn recover_user(
        &mut self,
        offset: u64,
        epoch: &str,
        until: Option<u64>,
        ack: impl for<'c> FnOnce(&mut Ctx<'c>, bool, &crate::history::Position) + Send + 'static,
    ) -> Option<bool> {
        let user = self.user_id()?.to_string();
        if !self.core.rt.config.history_enabled() {
            return None;
        }
        if self.core.cluster.is_some() {
            self.recover_user_from(Some((offset, epoch.to_string())), until, ack);
            return Some(false);
        }
        let (frames, pos) = self.core.user_channel_since(&user, offset, epoch, until);
        let recovered = frames.is_some();
        ack(self, recovered, &pos);
        if let Some(frames) = frames {
            self.core.replay(self.idx, frames);
        }
        Some(recovered)
    }

    pub fn is_admin(&self) -> bool {
        self.core.conns[self.idx].has(flags::ADMIN)
    }

    /// Still open (not closing).
    pub fn is_open(&self) -> bool {
        self.core.conns[self.idx].phase == Phase::Open
    }

    pub fn config(&self) -> &Config {
        &self.core.rt.config
    }

    /// A handle for work beyond this callback (to give to other threads): its calls that wait
    /// for reactors answer `Err(HandleError::OnReactorThread)` here; use [`asks`](Self::asks).
    pub fn handle(&self) -> ServerHandle {
        ServerHandle::from_runtime(self.core.rt.clone())
    }

    /// Queues a text message (written at the end of this loop turn). See [`SendStatus`].
    pub fn send_text(&mut self, text: &str) -> SendStatus {
        self.send_frame(OpCode::Data(Data::Text), text.as_bytes())
    }

    /// Queues a binary message. See [`SendStatus`].
    pub fn send_binary(&mut self, data: &[u8]) -> SendStatus {
        self.send_frame(OpCode::Data(Data::Binary), data)
    }

    /// Sends `{"type": kind, "data": data, "timestamp", "id"}`. See [`SendStatus`].
    pub fn send_message<D: Serialize>(&mut self, kind: &str, data: D) -> SendStatus {
        let mut buf = std::mem::take(&mut self.core.scratch);
        buf.clear();
        write_envelope(&mut buf, &mut self.core.ids, kind, data);
        let status = self.send_frame(OpCode::Data(Data::Text), &buf);
        self.core.scratch = buf;
        status
    }

    fn send_frame(&mut self, opcode: OpCode, payload: &[u8]) -> SendStatus {
        if !self.is_open() {
            return SendStatus::Dropped;
        }
        self.core.queue_frame(self.idx, opcode, payload);
        if !self.is_open() {
            // This message took it over `max_outbound_bytes`: closed as a slow consumer.
            return SendStatus::Dropped;
        }
        if self.buffered_amount() > self.core.rt.config.max_outbound_bytes / 4 {
            self.core.embedder.writable_watch.insert(self.idx);
            SendStatus::Backpressure
        } else {
            SendStatus::Sent
        }
    }

    /// Bytes queued for this connection and not yet written to its socket (what the kernel
    /// did not take). Over a quarter of `max_outbound_bytes`, sends report
    /// [`SendStatus::Backpressure`]; over `max_outbound_bytes` the connection is closed as a
    /// slow consumer.
    pub fn buffered_amount(&self) -> usize {
        self.core.conns[self.idx].queued_bytes()
    }

    /// Calls on every reactor that answer later through `on_reply` (see
    /// [`crate::reactor::reactor_ctx::Asks`]); this reactor never waits for itself.
    pub fn asks(&mut self) -> crate::reactor::reactor_ctx::Asks<'_> {
        crate::reactor::reactor_ctx::Asks { core: self.core }
    }

    /// Sends an error envelope (`type: "error"`).
    pub fn send_error(&mut self, code: ErrorCode, message: &str) -> SendStatus {
        let mut buf = std::mem::take(&mut self.core.scratch);
        buf.clear();
        write_error(&mut buf, &mut self.core.ids, code, message);
        let status = self.send_frame(OpCode::Data(Data::Text), &buf);
        self.core.scratch = buf;
        status
    }

    /// Counts one message against the user's rate limit. Anonymous connections and a limit of
    /// 0 are never limited.
    pub fn check_rate(&mut self) -> Result<(), RateLimited> {
        let cfg = &self.core.rt.config;
        let (limit, window) = (cfg.rate_limit_messages, cfg.rate_limit_window.as_millis() as u64);
        let u = self.core.conns[self.idx].user;
        if limit == 0 || u == NONE {
            return Ok(());
        }
        let now = self.core.clock.now_ms;
        let Some(user) = self.core.users.get_mut(u) else {
            return Ok(());
        };
        let r = user.rate.try_acquire(now, limit, window);
        if r.is_err() {
            self.core.metrics.rate_limited.inc();
        }
        r
    }

    /// Sends `RATE_LIMIT_EXCEEDED` with `reset_time` and `retry_after`.
    pub fn send_rate_limited(&mut self, limited: RateLimited) {
        let mut buf = std::mem::take(&mut self.core.scratch);
        buf.clear();
        write_rate_limited(&mut buf, &mut self.core.ids, limited.retry_after_ms);
        self.core.queue_frame(self.idx, OpCode::Data(Data::Text), &buf);
        self.core.scratch = buf;
    }

    /// The event-type bit set (bit i = `config().subscribable_events[i]`).
    pub fn subscriptions(&self) -> u64 {
        self.core.subscriptions_of(self.idx)
    }

    pub fn set_subscriptions(&mut self, bits: u64) {
        self.core.set_subscriptions(self.idx, bits);
    }

    /// Starts the close handshake with `code` and `reason` (after queued output).
    pub fn close(&mut self, code: u16, reason: &str) {
        self.core.close_with(self.idx, code, reason);
    }

    /// Sends a text frame to every open connection on every reactor (in a cluster, on every
    /// node), encoding it once. Returns the recipients on this reactor (others are reached
    /// asynchronously); in a cluster 0, since delivery waits for Redis to take the message (use
    /// [`crate::ReactorCtx::asks`] for counts and failures).
    pub fn broadcast_text(&mut self, text: &str) -> usize {
        let mut v = Vec::with_capacity(text.len() + 10);
        encode_frame(&mut v, OpCode::Data(Data::Text), text.as_bytes());
        let frame = Bytes::from(v);
        let now = self.core.clock.instant;
        if self.core.cluster.is_some() {
            let all: Vec<usize> = (0..self.core.rt.links.len()).collect();
            let ask = self
                .core
                .rt
                .topology
                .deliver_ask(Target::All, frame, None, now, &all, None);
            self.core.fire_and_forget(vec![(ask, all)]);
            return 0;
        }
        for (i, link) in self.core.rt.links.iter().enumerate() {
            if i != self.core.id {
                let ask = Ask::Deliver {
                    target: Target::All,
                    frame: frame.clone(),
                    exclude_user: None,
                    published_at: now,
                    dedupe: None,
                };
                link.send_lossy(Command::Ask { ask, reply: None });
            }
        }
        self.core.deliver(&Target::All, &frame, None, now)
    }

    /// Joins `room` if this connection's token allows it (a `rooms` claim with the name or a
    /// matching `*` pattern; admins may join any). The whole user joins: every connection of
    /// the user receives the room's messages. `Ok(false)`: already a member.
    pub fn join_room(&mut self, room: &str) -> Result<bool, RoomRefusal> {
        self.may_join_room(room)?;
        let u = self.core.conns[self.idx].user;
        Ok(self.core.set_user_room(u, room, true))
    }

    /// Whether [`join_room`](Self::join_room) would accept `room`, without joining.
    pub fn may_join_room(&self, room: &str) -> Result<(), RoomRefusal> {
        let u = self.core.conns[self.idx].user;
        if u == NONE {
            return Err(RoomRefusal::Anonymous);
        }
        if !crate::rooms::valid_room_name(room) {
            return Err(RoomRefusal::InvalidName);
        }
        if !self.core.may_join(self.idx, room) {
            return Err(RoomRefusal::NotAllowed);
        }
        let rooms = self
            .core
            .users
            .get(u)
            .and_then(|x| x.extras.as_deref())
            .map_or(0, |e| e.rooms.len());
        if rooms >= self.core.rt.config.max_rooms_per_user && !self.rooms().iter().any(|r| r == room) {
            return Err(RoomRefusal::TooManyRooms);
        }
        Ok(())
    }

    /// Puts this connection in `room` because the application decides so: no token check
    /// (rooms name whatever topics the application wants). An authenticated connection's
    /// whole user joins, as with [`join_room`](Self::join_room); an anonymous connection
    /// joins on its own, until it closes. `Ok(false)`: already a member. Refused only for an
    /// invalid name or `max_rooms_per_user` rooms already.
    pub fn add_to_room(&mut self, room: &str) -> Result<bool, RoomRefusal> {
        if !crate::rooms::valid_room_name(room) {
            return Err(RoomRefusal::InvalidName);
        }
        let mine = self.rooms();
        if mine.len() >= self.core.rt.config.max_rooms_per_user && !mine.iter().any(|r| r == room) {
            return Err(RoomRefusal::TooManyRooms);
        }
        let u = self.core.conns[self.idx].user;
        Ok(if u == NONE {
            self.core.set_connection_room(self.idx, room, true)
        } else {
            self.core.set_user_room(u, room, true)
        })
    }

    /// Leaves `room` (the whole user, or an anonymous connection alone); false if not in it.
    pub fn leave_room(&mut self, room: &str) -> bool {
        let u = self.core.conns[self.idx].user;
        if u == NONE {
            self.core.set_connection_room(self.idx, room, false)
        } else {
            self.core.set_user_room(u, room, false)
        }
    }

    /// Rooms this connection is in (its user's, or its own when anonymous).
    pub fn rooms(&self) -> Vec<String> {
        let u = self.core.conns[self.idx].user;
        if u == NONE {
            self.core.connection_rooms(self.idx)
        } else {
            self.core.user_rooms(u)
        }
    }

    /// This connection's data of type `T`, created with `T::default()` on first use. Stored
    /// beside the connection only once used; a different `T` replaces it.
    pub fn data<T: std::any::Any + Send + Default>(&mut self) -> &mut T {
        let c = &mut self.core.conns[self.idx];
        c.flags |= flags::HAS_DATA;
        let slot = self
            .core
            .embedder
            .conn_data
            .entry(self.idx)
            .or_insert_with(|| Box::new(T::default()));
        if !slot.is::<T>() {
            *slot = Box::new(T::default());
        }
        // Just checked (or replaced) to hold a T.
        slot.downcast_mut::<T>().expect("slot holds T")
    }

    /// Replaces this connection's token with a fresh one for the same user (`sub`): the user's
    /// expiry moves to the new `exp` if that is later, its room claims and this connection's
    /// admin role follow the new token. Returns the user's expiry (Unix seconds; `None`: the
    /// token has no `exp`).
    pub fn refresh_token(&mut self, token: &str) -> Result<Option<u64>, RefreshError> {
        let u = self.core.conns[self.idx].user;
        let Some(verifier) = self.core.rt.verifier.as_ref().filter(|_| u != NONE) else {
            return Err(RefreshError::Anonymous);
        };
        let claims = verifier.verify(Some(token)).map_err(RefreshError::Invalid)?;
        if self.core.users.get(u).is_none_or(|user| *user.id != *claims.user_id) {
            return Err(RefreshError::OtherUser);
        }
        self.core.record_claims(u, &claims);
        let c = &mut self.core.conns[self.idx];
        if claims.admin {
            c.flags |= flags::ADMIN;
        } else {
            c.flags &= !flags::ADMIN;
        }
        let expiry = self.core.users.get(u).map_or(NO_EXPIRY, |user| user.expires_at);
        Ok((expiry != NO_EXPIRY).then_some(u64::from(expiry)))
    }

    /// True if client messages of type `kind` go to the backend (`--forward`).
    pub(crate) fn forwards(&self, kind: &str) -> bool {
        let c = &self.core.rt.config;
        c.backend.is_some() && c.forward.forwards(kind)
    }

    /// Queues this connection's message (or rpc) for the backend; returns its message id.
    pub(crate) fn forward(
        &mut self,
        client_id: Option<&serde_json::value::RawValue>,
        what: crate::bridge::Forwarded<'_>,
    ) -> uuid::Uuid {
        self.core.forward(self.idx, client_id, what)
    }

    /// Whether joins and subscribes are checked with the auth proxy (`--auth-proxy-check`).
    pub(crate) fn permission_checks(&self) -> (bool, bool) {
        (self.core.rt.config.auth_proxy.as_ref()).map_or((false, false), |a| (a.check_joins, a.check_subscribes))
    }

    /// Asks the auth proxy whether this connection may `kind` (`may_join`, `may_subscribe`)
    /// each of `names`; `finish` runs with the verdicts (allowed, or the refusal's reason).
    pub(crate) fn check_permissions(
        &mut self,
        kind: &str,
        names: Vec<String>,
        finish: impl FnOnce(&mut Ctx<'_>, Vec<Result<(), String>>) + Send + 'static,
    ) {
        let finish: crate::reactor::core::CheckFinish =
            Box::new(move |core, idx, verdicts| match core.downcast_mut::<Core>() {
                Some(core) => finish(&mut Ctx { core, idx }, verdicts),
                None => log::error!("a permission check finished on something other than a reactor core"),
            });
        self.core.check_permissions(self.idx, kind, names, finish);
    }

    /// The lifecycle events the backend wants (`--backend-events`).
    pub(crate) fn lifecycle(&self) -> crate::config::LifecycleEvents {
        self.core.rt.config.backend_events
    }

    /// Queues lifecycle event `event` of this connection for the backend.
    pub(crate) fn backend_event(&mut self, event: &str, fields: serde_json::Value) {
        self.core.backend_event(self.idx, event, fields);
    }

    /// Counts an `upload.cancel` handed to the application (for metrics).
    pub fn count_upload_cancel(&mut self) {
        self.core.metrics.upload_cancels.inc();
    }
}
