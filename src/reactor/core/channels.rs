//! Channels with history on the reactor: giving a message its channel's next offset (on the
//! channel's home reactor, which then fans it out, so every reactor sees a channel's messages
//! in offset order), recovery replays paced under the outbound cap, and reading or deleting a
//! channel's history.
//!
//! Owns: `Ask::Sequence`, the replays in progress, and the envelope fields `channel`,
//! `offset`, `epoch`. Does not touch: what is kept and for how long (`crate::history`) or the
//! protocol messages around a recovery (the application).

use tungstenite::Bytes;

use super::Core;
use super::state::channels::{Join, PendingRecovery, RecoveryFinish, Replay, drop_through, frame_json, with_position};
use super::state::fanout::Waiter;
use crate::ask::{Answer, Ask, ReplyTo};
use crate::conn::Phase;
use crate::history::{Position, Recovery};
use crate::history::{RecoverItem, RecoveryOutcome};
use crate::runtime::Command;

impl Core {
    /// Where the answers of the reactors a sequenced message fans out to go: the same place
    /// as the asker's own.
    fn reply_to_of(&self, w: &Waiter) -> ReplyTo {
        match w {
            Waiter::Reply(r) => r.clone(),
            Waiter::Local { key, ask } => ReplyTo::Reactor {
                reactor: self.id,
                ticket: super::state::asks::ticket(*key, *ask, self.serial_of(*key)),
            },
        }
    }

    /// Carries out `Ask::Sequence` here, the channel's home: next offset, kept, fanned out in
    /// order to `reactors`; each answers `Count` to `waiter`.
    pub(super) fn sequence(&mut self, ask: Ask, waiter: Option<Waiter>) {
        let Ask::Sequence {
            channel,
            target,
            frame,
            exclude_user,
            published_at,
            reactors,
            dedupe,
        } = ask
        else {
            return;
        };
        if self.cluster.is_some() {
            return self.hub_publish(channel, frame, exclude_user, dedupe, waiter);
        }
        let now_ms = self.clock.now_ms;
        let (frame, _) = self
            .channels
            .history
            .append(&channel, now_ms, exclude_user.clone(), |pos| {
                with_position(&frame, &channel, pos)
            });
        let reply = waiter.as_ref().map(|w| self.reply_to_of(w));
        for r in reactors {
            if r == self.id {
                let w = match &waiter {
                    Some(Waiter::Reply(to)) => Some(Waiter::Reply(to.clone())),
                    Some(Waiter::Local { key, ask }) => Some(Waiter::Local { key: *key, ask: *ask }),
                    None => None,
                };
                self.carry_out(
                    Ask::Deliver {
                        target: target.clone(),
                        frame: frame.clone(),
                        exclude_user: exclude_user.clone(),
                        published_at,
                        dedupe: None,
                    },
                    w,
                );
                continue;
            }
            let deliver = Ask::Deliver {
                target: target.clone(),
                frame: frame.clone(),
                exclude_user: exclude_user.clone(),
                published_at,
                dedupe: None,
            };
            let posted = self.rt.links.get(r).is_some_and(|l| {
                l.send(Command::Ask {
                    ask: deliver,
                    reply: reply.clone(),
                })
            });
            if !posted && let Some(to) = &reply {
                crate::runtime::reply(&self.rt.links, r, to.clone(), Answer::Count(0));
            }
        }
    }

    /// This reactor's share of a sequenced message goes to the channel's home reactor, which
    /// answers for every reactor in `reactors`; `waiting` grows by that many.
    pub(super) fn send_sequence(&mut self, key: usize, i: usize, serial: u32, ask: Ask, reactors: Vec<usize>) {
        let Ask::Sequence { channel, .. } = &ask else { return };
        let home = self.rt.topology.channel_home(channel);
        // On a cluster node the hub answers twice: the cluster's word and the count here.
        let n = if self.cluster.is_some() { 2 } else { reactors.len() };
        if let Some(f) = self.asks.get_mut(key) {
            f.waiting += n;
        }
        if home == self.id {
            self.sequence(ask, Some(Waiter::Local { key, ask: i }));
            return;
        }
        let reply = Some(ReplyTo::Reactor {
            reactor: self.id,
            ticket: super::state::asks::ticket(key, i, serial),
        });
        let posted = self
            .rt
            .links
            .get(home)
            .is_some_and(|l| l.send(Command::Ask { ask, reply }));
        if !posted {
            let t = super::state::asks::ticket(key, i, serial);
            if self.cluster.is_some() {
                self.on_answer(t, crate::ask::CLUSTER, Answer::Unavailable);
                self.on_answer(t, home, Answer::Count(0));
                return;
            }
            for r in reactors {
                self.on_answer(t, r, Answer::Count(0));
            }
        }
    }

    /// The messages of `user`'s channel after `offset` of `epoch` (`None`: not recoverable),
    /// with the channel's position; counted in the recovery metrics.
    pub fn user_channel_since(
        &mut self,
        user: &str,
        offset: u64,
        epoch: &str,
        until: Option<u64>,
    ) -> (Option<Vec<Bytes>>, Position) {
        // Deliveries still grouped hold messages the replay covers: out first, so the replay's
        // connection (already linked to its user) does not get them twice.
        self.fan_out_groups();
        let channel = format!("user:{user}");
        let max = self.rt.config.recovery_max;
        match self
            .channels
            .history
            .since(&channel, offset, epoch, until, max, self.clock.now_ms, Some(user))
        {
            Recovery::Replay(frames, pos) => {
                self.metrics.recoveries.inc();
                (Some(frames), pos)
            }
            Recovery::Lost(pos) => {
                self.metrics.recoveries_lost.inc();
                (None, pos)
            }
        }
    }

    /// The recovery connection `idx` asked for in its upgrade request, if any: its outcome is
    /// kept in `opening_recovery` for the handler's greeting; returns the frames to replay.
    pub fn begin_connect_recovery(&mut self, idx: usize) -> Option<Vec<Bytes>> {
        if self.channels.connect_recoveries.is_empty() {
            return None;
        }
        if self.cluster.is_some() {
            // Answered later, from Redis: the handler takes the request (`Ctx::recover_user`).
            return None;
        }
        let (offset, epoch) = self.channels.connect_recoveries.remove(&idx)?;
        let user = self.users.get(self.conns[idx].user)?.id.as_str().to_string();
        if !self.rt.config.history_enabled() {
            return None;
        }
        let (frames, pos) = self.user_channel_since(&user, offset, &epoch, None);
        self.channels.opening_recovery = Some((frames.is_some(), pos));
        frames
    }

    /// Queues `frames` for `idx` as its backlog allows; the rest waits in its replay.
    pub fn replay(&mut self, idx: usize, frames: Vec<Bytes>) {
        if frames.is_empty() {
            return;
        }
        let generation = self.conns[idx].generation;
        let r = self
            .channels
            .replays
            .entry(idx)
            .or_insert_with(|| Replay::new(generation));
        r.frames.extend(frames);
        if !self.replay_within_bounds(idx) {
            return;
        }
        self.feed_replay(idx);
    }

    /// A connection whose waiting messages (replays and the live ones behind them) grow past
    /// four times `--recovery-max` (at least 1,024) is not reading: it asked for more than it
    /// takes, so it is closed as a slow consumer. Returns false if it was.
    fn replay_within_bounds(&mut self, idx: usize) -> bool {
        let limit = self.rt.config.recovery_max.max(256) * 4;
        let waiting = self
            .channels
            .replays
            .get(&idx)
            .map_or(0, |r| r.frames.len() + r.live.len());
        if waiting <= limit {
            return true;
        }
        self.channels.replays.remove(&idx);
        self.metrics.slow_consumer_closes.inc();
        self.close_with(idx, 1008, "slow consumer: outbound queue limit exceeded");
        false
    }

    /// A live message for a connection whose replay is still being fed waits behind it.
    /// Returns true if it was taken.
    pub(super) fn divert_to_replay(&mut self, idx: usize, frame: &Bytes) -> bool {
        match self.channels.replays.get_mut(&idx) {
            Some(r) if r.held => r.live.push_back(frame.clone()),
            Some(r) => r.frames.push_back(frame.clone()),
            None => return false,
        }
        self.replay_within_bounds(idx);
        true
    }

    /// Moves replay frames into the connection's queue while it holds under half the cap.
    fn feed_replay(&mut self, idx: usize) {
        let cap = self.rt.config.max_outbound_bytes / 2;
        if self.channels.replays.get(&idx).is_some_and(|r| r.held) {
            return;
        }
        let Some(mut r) = self.channels.replays.remove(&idx) else {
            return;
        };
        let alive = self
            .conns
            .get(idx)
            .is_some_and(|c| c.generation == r.generation && c.phase == Phase::Open);
        if !alive {
            return;
        }
        while self.conns[idx].queued_bytes() < cap {
            let Some(frame) = r.frames.pop_front() else { break };
            self.enqueue(idx, |out, _| {
                out.push_shared(frame.clone());
                frame.len()
            });
            self.metrics.messages_out.inc();
        }
        if !r.frames.is_empty() {
            self.channels.replays.insert(idx, r);
        }
    }

    pub fn has_replays(&self) -> bool {
        !self.channels.replays.is_empty()
    }

    /// After a flush: feeds every replay whose connection has room again.
    pub fn feed_replays(&mut self) {
        if self.channels.replays.is_empty() {
            return;
        }
        let idxs: Vec<usize> = self.channels.replays.keys().copied().collect();
        for idx in idxs {
            self.feed_replay(idx);
        }
    }

    /// Answers a recovery (or, without `from`, only the position) here, the channel's home.
    pub(super) fn recover_here(
        &mut self,
        channel: &str,
        from: Option<(u64, Box<str>)>,
        reader: Option<&str>,
    ) -> Answer {
        let Some((offset, epoch)) = from else {
            return Answer::Recovered {
                frames: None,
                position: self.channels.history.position(channel),
            };
        };
        let max = self.rt.config.recovery_max;
        match self
            .channels
            .history
            .since(channel, offset, &epoch, None, max, self.clock.now_ms, reader)
        {
            Recovery::Replay(frames, position) => Answer::Recovered {
                frames: Some(frames),
                position,
            },
            Recovery::Lost(position) => Answer::Recovered { frames: None, position },
        }
    }

    /// Subscribes connection `idx` to the events of `items` (channel, bit), each recovered
    /// from its (offset, epoch): the acknowledgement `finish` makes goes out once every
    /// channel has answered, then exactly the missing messages of each recovered one, then
    /// the live messages that came meanwhile. No gap, no duplicate: a channel's home reactor
    /// sends its later messages after its answer, and the connection joins each channel on
    /// that answer.
    pub fn recover_events(&mut self, idx: usize, items: Vec<RecoverItem>, finish: RecoveryFinish) {
        // Deliveries queued before now go to the subscribers they were meant for.
        self.fan_out_groups();
        let reader: Option<Box<str>> = self.users.get(self.conns[idx].user).map(|u| u.id.as_str().into());
        let asks = items
            .iter()
            .map(|item| {
                let home = self.rt.topology.channel_home(&item.channel);
                let ask = Ask::Recover {
                    channel: item.channel.as_str().into(),
                    from: item.from.as_ref().map(|(o, e)| (*o, e.as_str().into())),
                    until: item.until,
                    reader: reader.clone(),
                };
                (ask, vec![home])
            })
            .collect();
        if items.iter().any(|i| i.room.is_none() && i.channel.starts_with("user:")) {
            // Its own user channel: the connection is in it already, so its live messages wait
            // from now on (those the replay also holds are dropped when it is answered).
            let generation = self.conns[idx].generation;
            self.channels
                .replays
                .entry(idx)
                .or_insert_with(|| Replay::new(generation))
                .held = true;
        }
        let pending = PendingRecovery {
            conn: self.token_of(idx),
            items: items
                .into_iter()
                .map(|i| {
                    let join = match i.room {
                        Some(room) => Join::Room(room),
                        None if i.channel.starts_with("user:") => Join::Already,
                        None => Join::Event(i.bit),
                    };
                    (i.channel, join, i.from.is_some())
                })
                .collect(),
            finish,
        };
        let _ = self.send_asks(super::state::asks::Owner::Recovery(Box::new(pending)), asks);
    }

    /// One channel of a pending recovery answered: the connection joins it now (later
    /// messages are held behind the acknowledgement) and its replay waits for the others.
    pub(super) fn recovery_answer(&mut self, key: usize, i: usize, answer: Answer) -> Answer {
        let Answer::Recovered { frames, position } = answer else {
            return answer;
        };
        let Some(super::state::asks::Owner::Recovery(p)) = self.asks.get(key).and_then(|f| f.owner.as_ref()) else {
            return Answer::Recovered { frames, position };
        };
        let conn = p.conn;
        let join = match p.items.get(i) {
            Some((_, Join::Event(bit), _)) => Join::Event(*bit),
            Some((_, Join::Room(room), _)) => Join::Room(room.clone()),
            Some((_, Join::Already, _)) => Join::Already,
            None => return Answer::Recovered { frames: None, position },
        };
        let Some(idx) = self.live(conn) else {
            return Answer::Recovered { frames: None, position };
        };
        let recovered = frames.is_some();
        // Deliveries queued before this answer (in this inbox drain) hold messages the answer
        // covers: out to the current subscribers first, before this connection joins.
        self.fan_out_groups();
        let generation = self.conns[idx].generation;
        let r = self
            .channels
            .replays
            .entry(idx)
            .or_insert_with(|| Replay::new(generation));
        r.held = true;
        r.answered.push((i, frames.unwrap_or_default()));
        match join {
            Join::Event(bit) => {
                let bits = self.subscriptions_of(idx) | 1 << bit;
                self.set_subscriptions(idx, bits);
            }
            Join::Room(room) => {
                let u = self.conns[idx].user;
                self.set_user_room(u, &room, true);
            }
            Join::Already => {}
        }
        // The answer kept for the acknowledgement says only whether it recovered.
        Answer::Recovered {
            frames: recovered.then(Vec::new),
            position,
        }
    }

    /// Every channel answered: the acknowledgement, then the replays in request order, then
    /// what came live meanwhile.
    pub(super) fn finish_recovery(&mut self, p: PendingRecovery, answers: crate::admin::Answers) {
        let Some(idx) = self.live(p.conn) else { return };
        let outcomes = p
            .items
            .iter()
            .zip(answers)
            .map(|((channel, _, recovering), a)| {
                let (recovered, position) = match a.into_iter().next() {
                    Some((_, Answer::Recovered { frames, position })) => (frames.is_some(), Some(position)),
                    _ => (false, None),
                };
                RecoveryOutcome {
                    channel: channel.clone(),
                    recovered: recovering.then_some(recovered),
                    position,
                }
            })
            .collect::<Vec<RecoveryOutcome>>();
        let already: Vec<(String, u64)> = p
            .items
            .iter()
            .zip(&outcomes)
            .filter(|((_, join, _), _)| matches!(join, Join::Already))
            .filter_map(|((channel, _, _), o)| Some((channel.clone(), o.position.as_ref()?.offset)))
            .collect();
        (p.finish)(self as &mut dyn std::any::Any, idx, outcomes);
        if let Some(mut r) = self.channels.replays.remove(&idx) {
            for (channel, through) in already {
                r.live = r
                    .live
                    .drain(..)
                    .filter_map(|f| drop_through(&f, &channel, through))
                    .collect();
            }
            r.answered.sort_by_key(|(i, _)| *i);
            for (i, frames) in std::mem::take(&mut r.answered) {
                if p.items.get(i).is_some_and(|(_, _, recovering)| *recovering) {
                    self.metrics.recoveries.inc();
                }
                r.frames.extend(frames);
            }
            let live = std::mem::take(&mut r.live);
            r.frames.extend(live);
            r.held = false;
            if !r.frames.is_empty() {
                self.channels.replays.insert(idx, r);
                self.feed_replay(idx);
            }
        }
    }

    /// Reads a channel's history here (its home): messages after `since`, at most `limit`.
    pub(super) fn read_history(&mut self, channel: &str, since: u64, limit: usize) -> Answer {
        let (entries, pos) = self.channels.history.read(channel, since, limit, self.clock.now_ms);
        let messages = entries.into_iter().map(|e| frame_json(&e.frame)).collect();
        Answer::History {
            messages,
            position: pos,
        }
    }

    /// Deletes a channel's history here (its home); its next message starts a new epoch.
    pub(super) fn clear_history(&mut self, channel: &str) -> Answer {
        let existed = self.channels.history.clear(channel);
        Answer::Cleared {
            existed,
            position: self.channels.history.position(channel),
        }
    }

    /// Drops expired history (about once a second) and reports what is kept.
    pub fn expire_history(&mut self) {
        if self.cluster.is_some() {
            if self.id == 0 && self.clock.now_ms.saturating_sub(self.channels.history_swept_ms) >= 1000 {
                self.channels.history_swept_ms = self.clock.now_ms;
                self.hub_tick();
            }
            return;
        }
        if self.clock.now_ms.saturating_sub(self.channels.history_swept_ms) >= 1000 {
            self.channels.history_swept_ms = self.clock.now_ms;
            self.channels.history.expire(self.clock.now_ms);
        }
        // Every turn: three stores, so /metrics is current after a publish.
        let (channels, messages, bytes) = self.channels.history.usage();
        self.metrics.history_channels.set(channels as u64);
        self.metrics.history_messages.set(messages as u64);
        self.metrics.history_bytes.set(bytes as u64);
    }
}
