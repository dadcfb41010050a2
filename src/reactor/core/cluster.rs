//! The reactor's side of a cluster: what goes to the engine, and what comes back from it.
//!
//! Owns: turning a plan's asks into engine work (a delivery is published first and carried
//! out here only once the cluster has it; a request to every node runs beside this node's own
//! share), publishes waiting for the engine, requests from other nodes carried out here and
//! answered, messages from other nodes delivered here, and this reactor's interest in channels.
//! Does not touch: Redis or sockets (the engine does, fed from `ops` by the loop).

use tungstenite::Bytes;

use super::Core;
use super::state::asks::{Owner, ticket};
use super::state::cluster::Pending;
use crate::ask::{Answer, Ask, CLUSTER, NodeCensus, REMOTE, RemoteAsk, Target, merge_answers};
use crate::cluster::broker::{Admission, EngineError, EngineOp};
use crate::cluster::channels::ChannelKind;
use crate::cluster::wire::{self, Wire};
use crate::runtime::Command;

impl Core {
    fn node(&self) -> &str {
        &self.rt.config.node_id
    }

    /// The reactors of this node that may hold what `ask` is about.
    pub(super) fn reactors_for_ask(&self, ask: &Ask) -> Vec<usize> {
        let rt = &self.rt;
        match ask {
            Ask::Deliver { target, .. } | Ask::Disconnect { target, .. } => rt.topology.reactors_for(target),
            Ask::Membership { user, .. } => vec![rt.topology.home_of(user)],
            Ask::List { user: Some(u), .. } => rt.topology.reactors_for(&Target::User(u.clone())),
            Ask::Inspect { id } | Ask::RpcReply { connection: id, .. } => {
                rt.topology.reactor_of(id).into_iter().collect()
            }
            _ => (0..rt.links.len()).collect(),
        }
    }

    /// The cluster's part of ask `index` of in-flight entry `key`. Returns the ask if this
    /// node's reactors are to carry it out now; a delivery waits for the cluster instead.
    pub(super) fn cluster_step(
        &mut self,
        key: usize,
        serial: u32,
        index: usize,
        ask: Ask,
        reactors: Vec<usize>,
    ) -> Option<(Ask, Vec<usize>)> {
        let rt = std::sync::Arc::clone(&self.rt);
        let node = rt.config.node_id.as_str();
        let me = self.id;
        let Some(c) = self.cluster.as_mut() else {
            return Some((ask, reactors));
        };
        let (channel, payload, dedupe, pending, now) = match &ask {
            Ask::Deliver {
                target,
                frame,
                exclude_user,
                dedupe,
                ..
            } => {
                let Some(channel) = c.channel_of(target, &self.rt.config.subscribable_events) else {
                    return Some((ask, reactors));
                };
                let connection = match target {
                    Target::Connection(id) => Some(*id),
                    _ => None,
                };
                let payload = wire::deliver(node, exclude_user.as_deref(), connection, frame);
                let dedupe = dedupe.clone();
                (
                    channel,
                    payload,
                    dedupe,
                    Pending::Deliver {
                        key,
                        serial,
                        index,
                        ask,
                        reactors,
                    },
                    None,
                )
            }
            other => {
                let Some(remote) = RemoteAsk::of(other) else {
                    return Some((ask, reactors));
                };
                let ticket = ticket(key, index, serial);
                let body = serde_json::to_vec(&remote).unwrap_or_default();
                let payload = wire::request(node, me, ticket, &body);
                (
                    c.channels.nodes(),
                    payload,
                    None,
                    Pending::Request { key, serial, index },
                    Some((ask, reactors)),
                )
            }
        };
        let id = c.next_id();
        let request = matches!(pending, Pending::Request { .. });
        c.pending.insert(id, pending);
        c.ops.push(EngineOp::Publish {
            id,
            channel,
            payload,
            dedupe,
        });
        if let Some(f) = self.asks.get_mut(key) {
            f.waiting += 1;
            if request {
                f.uncounted_requests = f.uncounted_requests.saturating_add(1);
            }
        }
        now
    }

    /// The engine's word on publish `id`.
    pub fn cluster_published(&mut self, id: u64, result: Result<usize, EngineError>) {
        let Some(pending) = self.cluster.as_mut().and_then(|c| c.pending.remove(&id)) else {
            return;
        };
        let (key, serial, index) = match &pending {
            Pending::Deliver { key, serial, index, .. } | Pending::Request { key, serial, index } => {
                (*key, *serial, *index)
            }
        };
        if self.asks.get(key).is_none_or(|f| f.serial != serial) {
            // The asker stopped waiting, but Redis took the message: the other nodes have it,
            // so this node's share still goes out.
            if let (Pending::Deliver { ask, .. }, Ok(_)) = (pending, &result) {
                self.carry_out_on_node(ask);
            }
            return;
        }
        let word = match result {
            Ok(n) => Answer::Nodes(n),
            Err(EngineError::Unavailable) => Answer::Unavailable,
            Err(EngineError::Unknown) => Answer::Unknown,
            Err(EngineError::Duplicate) => Answer::Duplicate,
        };
        match (pending, result) {
            (
                Pending::Deliver {
                    ask, reactors, index, ..
                },
                Ok(_),
            ) => self.distribute(key, index, serial, ask, reactors),
            (Pending::Request { .. }, result) => {
                // Every node is subscribed to the request channel, this one included (and it
                // carried out its own share already): the others answer; a failed publish
                // reaches none. Answers that came before a count are credited now: as many as
                // this count allows while other requests are still uncounted (they may be
                // theirs), all of them once none is.
                if let Some(f) = self.asks.get_mut(key) {
                    f.uncounted_requests = f.uncounted_requests.saturating_sub(1);
                    let expected = result.as_ref().map_or(0, |n| n.saturating_sub(1));
                    f.waiting += expected;
                    let owed = if f.uncounted_requests == 0 {
                        f.early_answers
                    } else {
                        f.early_answers.min(expected)
                    };
                    // The publish's own slot stays: it is answered just below.
                    let credit = owed.min(f.waiting.saturating_sub(1));
                    f.waiting -= credit;
                    f.early_answers -= credit;
                    if f.uncounted_requests == 0 {
                        f.early_answers = 0;
                    }
                }
            }
            _ => {}
        }
        if let Some(slot) = self.asks.get_mut(key).and_then(|f| f.answers.get_mut(index)) {
            slot.push((CLUSTER, word));
        }
        self.answer_local(key, usize::MAX, Answer::Lost);
    }

    /// A message another node published (or one of ours coming back).
    pub fn cluster_received(&mut self, channel: &[u8], payload: Bytes) {
        let Some(c) = self.cluster.as_ref() else { return };
        let Some(kind) = c.channels.parse(channel) else {
            return;
        };
        let target = match kind {
            ChannelKind::All => Some(Target::All),
            ChannelKind::Event(name) => self.rt.config.event_bit(name).map(Target::Subscribers),
            ChannelKind::User(u) => Some(Target::User(u.into())),
            ChannelKind::Room(r) => Some(Target::Room(r.into())),
            ChannelKind::Nodes | ChannelKind::ThisNode => None,
        };
        let me = self.node().as_bytes();
        match wire::parse(&payload) {
            Some(Wire::Deliver { origin, .. }) | Some(Wire::Request { origin, .. }) if origin == me => {
                // Ours: delivered (or carried out) here when it was published.
            }
            Some(Wire::Deliver {
                exclude_user,
                connection,
                frame_at,
                ..
            }) => {
                let Some(target) = connection.map(Target::Connection).or(target) else {
                    return self.malformed("a delivery on a channel with no target");
                };
                let frame = payload.slice(frame_at..);
                self.deliver_from_cluster(target, frame, exclude_user.map(Into::into));
            }
            Some(Wire::Request {
                origin,
                reactor,
                ticket,
                body,
            }) => {
                let Ok(remote) = serde_json::from_slice::<RemoteAsk>(body) else {
                    return self.malformed("a request this node does not understand");
                };
                let origin: Box<str> = String::from_utf8_lossy(origin).into();
                let ask = remote.into_ask();
                let reactors = self.reactors_for_ask(&ask);
                let owner = Owner::Remote {
                    origin,
                    reactor: reactor as usize,
                    ticket,
                };
                if self.send_asks(owner, vec![(ask, reactors)]).is_none() {
                    log::warn!("cluster: too many requests in flight; one from another node is dropped");
                }
                self.fan_out_groups();
            }
            Some(Wire::Answer {
                reactor, ticket, body, ..
            }) => {
                let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
                    return self.malformed("an answer this node does not understand");
                };
                let reactor = reactor as usize;
                if reactor == self.id {
                    self.on_answer(ticket, REMOTE, answer);
                } else if let Some(link) = self.rt.links.get(reactor) {
                    link.send(Command::Answer {
                        ticket,
                        from: REMOTE,
                        answer,
                    });
                }
            }
            Some(Wire::Evict { connection }) => self.cluster_evict(connection),
            Some(Wire::History {
                origin,
                exclude_user,
                id,
                offset,
                epoch,
                frame_at,
            }) => {
                let (Some(target), Some(name)) = (target, c.channels.history_name(channel)) else {
                    return self.malformed("a message with history on a channel that keeps none");
                };
                let m = super::state::hub::Incoming::Message {
                    offset,
                    epoch: epoch.into(),
                    target,
                    frame: payload.slice(frame_at..),
                    exclude_user: exclude_user.map(Into::into),
                    own: (origin == me).then_some(id),
                };
                let name = name.to_string();
                self.hub_incoming(&name, m);
            }
            Some(Wire::Marker { origin, id }) => {
                if let (true, Some(name)) = (origin == me, c.channels.history_name(channel)) {
                    let name = name.to_string();
                    self.hub_incoming(&name, super::state::hub::Incoming::Marker(id));
                }
            }
            Some(Wire::Probe { .. }) => {}
            None => self.malformed("a message this node does not understand"),
        }
    }

    /// The per-user limit closes this node's connection `connection` (for a newer one
    /// elsewhere, or as the excess after nodes counted alone).
    pub fn cluster_evict(&mut self, connection: uuid::Uuid) {
        let ask = Ask::Disconnect {
            target: Target::Connection(connection),
            code: 1008,
            reason: "connection limit exceeded".into(),
        };
        self.metrics.evictions.inc();
        self.carry_out_on_node(ask);
    }

    /// The subscription is back after it was lost: with history off nothing can tell or fill
    /// what it missed, so every connection here is told to reconnect and reload (with history
    /// on, each channel's gap is filled from its stream instead).
    pub fn cluster_subscription_restored(&mut self) {
        if self.rt.config.history_enabled() {
            return;
        }
        log::warn!("cluster: the subscription was lost with history off; closing this node's connections (1012)");
        self.rt.cluster_metrics.missed_closes.inc();
        self.carry_out_on_node(Ask::Disconnect {
            target: Target::All,
            code: 1012,
            reason: "missed messages: reconnect and reload".into(),
        });
    }

    fn malformed(&mut self, what: &str) {
        self.rt.cluster_metrics.malformed.inc();
        log::debug!("cluster: dropped {what}");
    }

    /// Queues a delivery from another node on this node's reactors (grouped with the others of
    /// the same read: fanned out once by the loop).
    fn deliver_from_cluster(&mut self, target: Target, frame: Bytes, exclude_user: Option<Box<str>>) {
        let now = self.clock.instant;
        let ask = Ask::Deliver {
            target,
            frame,
            exclude_user,
            published_at: now,
            dedupe: None,
        };
        self.carry_out_on_node(ask);
    }

    /// Carries out `ask` (nobody waits) on each of this node's reactors it concerns: here at
    /// once, elsewhere through their inboxes (a delivery may be dropped by a full inbox, and is
    /// counted; anything else is not).
    pub(super) fn carry_out_on_node(&mut self, ask: Ask) {
        for r in self.reactors_for_ask(&ask) {
            if r == self.id {
                self.carry_out(ask.clone(), None);
            } else if let Some(link) = self.rt.links.get(r) {
                let cmd = Command::Ask {
                    ask: ask.clone(),
                    reply: None,
                };
                if matches!(ask, Ask::Deliver { .. }) {
                    link.send_lossy(cmd);
                } else {
                    link.send(cmd);
                }
            }
        }
    }

    /// A request from another node is done here: its answer goes back to the asking node.
    pub(super) fn answer_remote(&mut self, origin: &str, reactor: usize, ticket: u64, answers: Vec<(usize, Answer)>) {
        let node = NodeCensus {
            node_id: self.rt.config.node_id.clone(),
            started_at: self.rt.started_at,
            census: Default::default(),
        };
        let answer = merge_answers(answers, node);
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        let payload = wire::answer(&self.rt.config.node_id, reactor, ticket, &body);
        if let Some(c) = self.cluster.as_mut() {
            let channel = c.channels.node(origin);
            c.ops.push(EngineOp::Send { channel, payload });
        }
    }

    /// This reactor's interest in `channel` rose or fell: the node's subscriptions live on
    /// reactor 0, which counts interest over every reactor.
    pub fn cluster_interest(&mut self, channel: Box<[u8]>, on: bool) {
        if self.id == 0 {
            if let Some(c) = self.cluster.as_mut() {
                c.ops.push(EngineOp::Interest { channel, on });
            }
        } else if let Some(link) = self.rt.links.first() {
            link.send(Command::Interest { channel, on });
        }
    }

    /// A user got its first connection here (or lost its last).
    pub(super) fn user_interest(&mut self, user: &str, on: bool) {
        if let Some(ch) = self.cluster.as_ref().map(|c| c.channels.user(user)) {
            self.cluster_interest(ch, on);
        }
    }

    /// A room got its first member here (or lost its last).
    pub(super) fn room_interest(&mut self, room: &str, on: bool) {
        if let Some(ch) = self.cluster.as_ref().map(|c| c.channels.room(room)) {
            self.cluster_interest(ch, on);
        }
    }

    /// An event got its first subscriber here (or lost its last).
    pub(super) fn event_interest(&mut self, bit: usize, on: bool) {
        let Some(name) = self.rt.config.subscribable_events.get(bit) else {
            return;
        };
        if let Some(ch) = self.cluster.as_ref().map(|c| c.channels.event(name)) {
            self.cluster_interest(ch, on);
        }
    }

    /// The engine decided admission `id`.
    pub fn cluster_admitted(&mut self, id: u64, verdict: Admission) {
        if let Some(c) = self.cluster.as_mut() {
            c.admitted.push((id, verdict));
        }
    }

    /// Asks the cluster to count connection `idx` of `user`; the verdict comes back as
    /// `admitted` with the returned id (`None`: no cluster).
    pub fn cluster_admit(&mut self, idx: usize, user: &str) -> Option<u64> {
        let connection = uuid::Uuid::from_bytes(self.conn_id(idx));
        let limit = self.rt.config.max_connections_per_user;
        let evict = self.rt.config.per_user_limit_policy == crate::config::LimitPolicy::EvictOldest;
        let c = self.cluster.as_mut()?;
        let id = c.next_id();
        c.ops.push(EngineOp::Admit {
            id,
            user: user.into(),
            connection,
            limit,
            evict,
        });
        Some(id)
    }

    /// Connection `idx` of `user` is gone: it no longer counts toward the cluster-wide limit.
    pub(super) fn cluster_release(&mut self, idx: usize, user: &str) {
        let connection = uuid::Uuid::from_bytes(self.conn_id(idx));
        self.cluster_release_id(user, connection);
    }

    /// Connection `idx` was admitted on this node's own count.
    pub(crate) fn cluster_admitted_alone(&mut self, idx: usize) {
        let id = uuid::Uuid::from_bytes(self.conn_id(idx));
        if let Some(c) = self.cluster.as_mut() {
            c.admitted_alone.insert(id);
        }
    }

    /// See `cluster_release`.
    pub fn cluster_release_id(&mut self, user: &str, connection: uuid::Uuid) {
        if let Some(c) = self.cluster.as_mut() {
            c.admitted_alone.remove(&connection);
            c.ops.push(EngineOp::Release {
                user: user.into(),
                connection,
            });
        }
    }

    /// A `ServerHandle` call from a thread, carried out as this reactor's own plan (so the
    /// cluster's part runs here); every answer goes back to the waiting thread.
    pub fn thread_plan(&mut self, asks: Vec<(Ask, Vec<usize>)>, reply: std::sync::mpsc::Sender<crate::admin::Answers>) {
        // If the table is full the sender is dropped with the entry: the thread sees no answers.
        let _ = self.send_asks(Owner::Thread(reply), asks);
        self.fan_out_groups();
    }

    /// Asks nobody waits for (in a cluster: published first, like any other).
    pub fn fire_and_forget(&mut self, asks: Vec<(Ask, Vec<usize>)>) {
        let _ = self.send_asks(Owner::Nobody, asks);
    }

    /// Queues every open connection of an authenticated user here for registering again.
    pub fn cluster_register_all(&mut self) {
        let mut ops = Vec::new();
        let mut slots = Vec::new();
        let limit = self.rt.config.max_connections_per_user;
        let evict = self.rt.config.per_user_limit_policy == crate::config::LimitPolicy::EvictOldest;
        let now_ms = self.clock.unix_ms;
        self.index_open_slots(&mut slots);
        for idx in slots {
            let Some(c) = self.conns.get(idx).filter(|c| c.phase == crate::conn::Phase::Open) else {
                continue;
            };
            let Some(user) = self.users.get(c.user) else { continue };
            let connection = uuid::Uuid::from_bytes(self.conn_id(idx));
            let alone = self
                .cluster
                .as_ref()
                .is_some_and(|cl| cl.admitted_alone.contains(&connection));
            ops.push(EngineOp::Register {
                user: user.id.as_str().into(),
                connection,
                since: if alone { now_ms } else { u64::from(c.opened_at) * 1000 },
                limit,
                evict,
            });
        }
        if let Some(c) = self.cluster.as_mut() {
            c.ops.extend(ops);
        }
    }

    /// Work queued for the engine.
    pub fn take_engine_ops(&mut self) -> Vec<EngineOp> {
        self.cluster
            .as_mut()
            .map(|c| std::mem::take(&mut c.ops))
            .unwrap_or_default()
    }

    pub fn has_engine_ops(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| !c.ops.is_empty())
    }
}
