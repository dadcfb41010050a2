//! User and room bookkeeping of a reactor: linking connections to their users, room
//! membership and authorization, and the inspection views (connection info, census).
//!
//! Owns: the consistency between `Conn::user`/`next_of_user`, the user table and the room index.
//! Does not touch: sockets, queues or timers beyond scheduling a user entry's cleanup.

use super::{Core, NONE, Phase, flags};
use crate::reactor::users::{Extras, NO_EXPIRY};
use crate::rooms::{glob_match, valid_room_name};

/// A room member with this bit is an anonymous connection (its slot), not a user index.
const ANON_MEMBER: u32 = 1 << 31;

impl Core {
    /// Open connections of every member of `room` on this reactor.
    pub(super) fn room_connections(&self, room: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let Some(r) = self.rooms.find(room).and_then(|r| self.rooms.get(r)) else {
            return out;
        };
        for &m in &r.members {
            if m & ANON_MEMBER != 0 {
                let idx = (m & !ANON_MEMBER) as usize;
                if self.conns.get(idx).is_some_and(|c| c.phase == Phase::Open) {
                    out.push(idx);
                }
            } else {
                self.user_connections(m, &mut out);
            }
        }
        out
    }

    /// Puts the anonymous connection `idx` in `room` (or takes it out): its membership is the
    /// connection's own, gone when it closes. True if anything changed.
    pub fn set_connection_room(&mut self, idx: usize, room: &str, add: bool) -> bool {
        if !valid_room_name(room) {
            return false;
        }
        let existing = self.rooms.find(room);
        let at = existing.and_then(|r| self.embedder.anon_rooms.get(&idx)?.iter().position(|&(x, _)| x == r));
        match (add, at) {
            (true, Some(_)) | (false, None) => false,
            (true, None) => {
                let (r, pos) = self.rooms.add(room, ANON_MEMBER | idx as u32);
                self.embedder.anon_rooms.entry(idx).or_default().push((r, pos));
                if existing.is_none() {
                    self.room_interest(room, true);
                }
                true
            }
            (false, Some(i)) => {
                let Some(list) = self.embedder.anon_rooms.get_mut(&idx) else {
                    return false;
                };
                let (r, pos) = list.swap_remove(i);
                if list.is_empty() {
                    self.embedder.anon_rooms.remove(&idx);
                }
                self.room_member_removed(r, pos);
                true
            }
        }
    }

    /// Rooms the anonymous connection `idx` is in.
    pub fn connection_rooms(&self, idx: usize) -> Vec<String> {
        let rooms = self.embedder.anon_rooms.get(&idx).map_or(&[][..], |v| &v[..]);
        rooms
            .iter()
            .filter_map(|&(r, _)| self.rooms.get(r))
            .map(|r| r.name.to_string())
            .collect()
    }

    /// Takes a closing anonymous connection out of its rooms.
    pub(super) fn leave_connection_rooms(&mut self, idx: usize) {
        if self.embedder.anon_rooms.is_empty() {
            return;
        }
        for (r, pos) in self.embedder.anon_rooms.remove(&idx).unwrap_or_default() {
            self.room_member_removed(r, pos);
        }
    }

    /// The ids of the users in `room` that have connections here.
    pub fn room_members(&self, room: &str) -> Vec<String> {
        let Some(r) = self.rooms.find(room).and_then(|r| self.rooms.get(r)) else {
            return Vec::new();
        };
        r.members
            .iter()
            .filter(|&&m| m & ANON_MEMBER == 0)
            .filter_map(|&u| self.users.get(u))
            .filter(|u| u.count > 0)
            .map(|u| u.id.to_string())
            .collect()
    }

    /// Appends the open connections of user `u`.
    pub(super) fn user_connections(&self, u: u32, out: &mut Vec<usize>) {
        let mut cur = self.users.get(u).map_or(NONE, |u| u.head);
        while cur != NONE {
            out.push(cur as usize);
            cur = self.conns[cur as usize].next_of_user;
        }
    }

    /// May connection `idx`'s user join `room`? Admins may join any; others need a matching
    /// `rooms` claim.
    pub fn may_join(&self, idx: usize, room: &str) -> bool {
        let c = &self.conns[idx];
        if c.has(flags::ADMIN) {
            return true;
        }
        let allowed = self
            .users
            .get(c.user)
            .and_then(|u| u.extras.as_deref())
            .and_then(|e| e.allowed_rooms.as_ref());
        allowed.is_some_and(|patterns| patterns.iter().any(|p| glob_match(p, room)))
    }

    /// Adds or removes user `u` to/from `room`; returns whether anything changed.
    pub fn set_user_room(&mut self, u: u32, room: &str, add: bool) -> bool {
        if !valid_room_name(room) {
            return false;
        }
        let Some(user) = self.users.get_mut(u) else {
            return false;
        };
        let extras = user.extras.get_or_insert_with(Box::default);
        let existing = self.rooms.find(room);
        let member_at = existing.and_then(|r| extras.rooms.iter().position(|&(x, _)| x == r));
        match (add, member_at) {
            (true, Some(_)) | (false, None) => false,
            (true, None) => {
                let (r, pos) = self.rooms.add(room, u);
                extras.rooms.push((r, pos));
                if existing.is_none() {
                    self.room_interest(room, true);
                }
                true
            }
            (false, Some(i)) => {
                let (r, pos) = extras.rooms.swap_remove(i);
                self.room_member_removed(r, pos);
                true
            }
        }
    }

    /// Removes the member at `pos` of room `r` and updates the position stored by the member
    /// moved into its place.
    fn room_member_removed(&mut self, r: u32, pos: u32) {
        let name = self
            .cluster
            .as_ref()
            .and_then(|_| self.rooms.get(r))
            .map(|room| room.name.clone());
        let moved = self.rooms.remove_at(r, pos);
        if let Some(name) = name
            && self.rooms.get(r).is_none_or(|room| room.name != name)
        {
            // Its last member here left.
            self.room_interest(&name, false);
        }
        let Some(moved) = moved else {
            return;
        };
        if moved & ANON_MEMBER != 0 {
            let slot = (moved & !ANON_MEMBER) as usize;
            if let Some(entry) = self
                .embedder
                .anon_rooms
                .get_mut(&slot)
                .and_then(|list| list.iter_mut().find(|(x, _)| *x == r))
            {
                entry.1 = pos;
            }
            return;
        }
        if let Some(e) = self.users.get_mut(moved).and_then(|m| m.extras.as_mut())
            && let Some(entry) = e.rooms.iter_mut().find(|(x, _)| *x == r)
        {
            entry.1 = pos;
        }
    }

    /// Rooms user `u` is in.
    pub fn user_rooms(&self, u: u32) -> Vec<String> {
        let rooms = self
            .users
            .get(u)
            .and_then(|u| u.extras.as_deref())
            .map_or(&[][..], |e| &e.rooms[..]);
        rooms
            .iter()
            .filter_map(|&(r, _)| self.rooms.get(r))
            .map(|r| r.name.to_string())
            .collect()
    }

    pub(super) fn leave_all_rooms(&mut self, u: u32) {
        let Some(extras) = self.users.get_mut(u).and_then(|u| u.extras.as_mut()) else {
            return;
        };
        for (r, pos) in std::mem::take(&mut extras.rooms) {
            self.room_member_removed(r, pos);
        }
    }

    /// Admin/server membership change for a connected user; `None` if not connected here.
    pub fn set_membership(&mut self, room: &str, user: &str, add: bool) -> Option<usize> {
        let u = self
            .users
            .find(user)
            .filter(|&u| self.users.get(u).is_some_and(|x| x.count > 0))?;
        if self.set_user_room(u, room, add) {
            self.notify_membership(u, user, room, add);
        }
        self.users.get(u).map(|x| x.count as usize)
    }

    /// Tells every connection of user `u` that the server added it to (or removed it from)
    /// `room`: the same `room.joined` / `room.left` a client's own request gets, with
    /// `"by": "server"`. Encoded once for all of the user's connections.
    fn notify_membership(&mut self, u: u32, user: &str, room: &str, add: bool) {
        #[derive(serde::Serialize)]
        struct Changed<'a> {
            rooms: [&'a str; 1],
            refused: [(); 0],
            memberships: Vec<String>,
            by: &'static str,
        }
        let data = Changed {
            rooms: [room],
            refused: [],
            memberships: self.user_rooms(u),
            by: "server",
        };
        let kind = if add { "room.joined" } else { "room.left" };
        let mut json = Vec::new();
        crate::protocol::write_envelope(&mut json, &mut self.ids, kind, data);
        let mut frame = Vec::with_capacity(json.len() + 10);
        crate::ws::encode_frame(
            &mut frame,
            tungstenite::protocol::frame::coding::OpCode::Data(tungstenite::protocol::frame::coding::Data::Text),
            &json,
        );
        self.deliver(
            &crate::ask::Target::User(user.into()),
            &frame.into(),
            None,
            self.clock.instant,
        );
    }

    /// Records a verified token's profile and room claims on its user.
    pub fn record_claims(&mut self, u: u32, claims: &crate::auth::Claims) {
        let Some(user) = self.users.get_mut(u) else { return };
        let exp = match claims.expires_at {
            // Checked at connect only (--token-expiry connect): nothing closes it later.
            _ if !self.rt.config.close_at_token_expiry => NO_EXPIRY,
            Some(e) => e.min(u32::MAX as u64 - 1) as u32,
            None => NO_EXPIRY,
        };
        user.expires_at = user.expires_at.max(exp);
        if claims.email.is_none() && claims.name.is_none() && claims.rooms.is_none() && user.extras.is_none() {
            return;
        }
        let e = user.extras.get_or_insert_with(|| Box::new(Extras::default()));
        e.email = claims.email.clone().or(e.email.take());
        e.name = claims.name.clone().or(e.name.take());
        e.allowed_rooms = claims.rooms.clone();
    }

    /// Appends connection `idx` as the newest of user `u`.
    pub fn link_user(&mut self, idx: usize, u: u32) {
        let Some(user) = self.users.get_mut(u) else { return };
        let prev_tail = user.tail;
        user.tail = idx as u32;
        if user.head == NONE {
            user.head = idx as u32;
        }
        user.count += 1;
        if user.count == 1 {
            self.metrics.users.add(1);
        }
        if user.count == 1 && self.cluster.is_some() {
            let id = user.id.as_str().to_string();
            self.user_interest(&id, true);
        }
        if prev_tail != NONE {
            self.conns[prev_tail as usize].next_of_user = idx as u32;
        }
        let c = &mut self.conns[idx];
        c.user = u;
        c.next_of_user = NONE;
    }

    /// Removes connection `idx` from its user's list; a user left with no connections is
    /// forgotten once its rate window has cooled down.
    pub fn unlink_user(&mut self, idx: usize) {
        let u = self.conns[idx].user;
        if u == NONE {
            return;
        }
        let next = self.conns[idx].next_of_user;
        let Some(user) = self.users.get(u) else { return };
        // Find the predecessor (lists are as long as the per-user limit: short).
        let mut prev = NONE;
        let mut cur = user.head;
        while cur != NONE && cur as usize != idx {
            prev = cur;
            cur = self.conns[cur as usize].next_of_user;
        }
        if cur == NONE {
            return;
        }
        if prev != NONE {
            self.conns[prev as usize].next_of_user = next;
        }
        let Some(user) = self.users.get_mut(u) else { return };
        if user.head == idx as u32 {
            user.head = next;
        }
        if user.tail == idx as u32 {
            user.tail = prev;
        }
        user.count -= 1;
        let empty = user.count == 0;
        if empty {
            self.metrics.users.set(self.metrics.users.get().saturating_sub(1));
        }
        if self.conns[idx].opened_at != 0 {
            // Remembered for `on_close`: the user entry may be gone by the time the socket is.
            self.embedder.departed_users.insert(idx, user.id.as_str().into());
        }
        if self.cluster.is_some() {
            let id = user.id.as_str().to_string();
            self.cluster_release(idx, &id);
            if empty {
                self.user_interest(&id, false);
            }
        }
        let c = &mut self.conns[idx];
        c.user = NONE;
        c.next_of_user = NONE;
        if empty {
            self.leave_all_rooms(u);
            if self.rt.config.rate_limit_messages == 0 {
                self.users.remove(u);
            } else {
                self.timers
                    .schedule_user(u, self.clock.now + self.clock.ticks.rate_window);
            }
        }
    }

    /// Tick `tick` of this reactor's clock as an RFC 3339 time.
    fn tick_time(&self, tick: u32) -> String {
        let ago_ms = u64::from(self.clock.now.wrapping_sub(tick)) * crate::runtime::TICK.as_millis() as u64;
        let ms = self.clock.unix_ms.saturating_sub(ago_ms);
        crate::protocol::Timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
    }

    pub fn connection_info(&self, idx: usize) -> crate::ask::ConnectionInfo {
        let c = &self.conns[idx];
        let user = (c.user != NONE).then(|| self.users.get(c.user)).flatten();
        let profile = user.and_then(|u| u.extras.as_deref());
        let events = &self.rt.config.subscribable_events;
        let subscriptions = self.subscriptions_of(idx);
        crate::ask::ConnectionInfo {
            node_id: self.rt.config.node_id.clone(),
            connection_id: uuid::Uuid::from_bytes(self.conn_id(idx)).to_string(),
            user_id: user.map(|u| u.id.to_string()),
            email: profile.and_then(|p| p.email.as_deref()).map(str::to_string),
            name: profile.and_then(|p| p.name.as_deref()).map(str::to_string),
            is_admin: c.has(flags::ADMIN),
            connected_at: crate::protocol::Timestamp(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(c.opened_at)),
            )
            .to_string(),
            last_activity: self.tick_time(c.last_seen),
            last_heartbeat: self.tick_time(c.mark),
            message_count: c.messages as u64,
            subscriptions: events
                .iter()
                .enumerate()
                .filter(|(i, _)| subscriptions & (1 << i) != 0)
                .map(|(_, e)| e.clone())
                .collect(),
            rooms: if c.user == NONE {
                self.connection_rooms(idx)
            } else {
                self.user_rooms(c.user)
            },
            queued_bytes: c.queued_bytes(),
            peer_address: c.sock.peer_addr().map(|a| a.to_string()),
            reactor: self.id,
        }
    }

    pub fn census(&self) -> crate::ask::Census {
        let mut census = crate::ask::Census {
            histogram: vec![0],
            rooms: self.rooms.len(),
            ..Default::default()
        };
        census.connections = self.conns.iter().filter(|(_, c)| c.phase == Phase::Open).count();
        census.user_entries = self.users.iter().count();
        for (_, u) in self.users.iter().filter(|(_, u)| u.count > 0) {
            let n = u.count as usize;
            census.unique_users += 1;
            census.max_connections_per_user = census.max_connections_per_user.max(n);
            if census.histogram.len() <= n {
                census.histogram.resize(n + 1, 0);
            }
            census.histogram[n] += 1;
        }
        census
    }
}
