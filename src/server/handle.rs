//! `ServerHandle`: the thread-safe API of a running server (publish, send, disconnect, rooms,
//! stats, shutdown) and what its calls return.
//!
//! Owns: turning calls into asks and waiting for their answers on the calling thread (in a
//! cluster, a reactor carries the asks out, since the engine lives on reactors). Does not
//! touch: reactors' state (asks go through each reactor's inbox) or sockets.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;
use tungstenite::Bytes;

use crate::ask::{Answer, Ask, Census, ConnectionInfo, ReplyTo, Target, merge_pages};
use crate::auth::Verifier;
use crate::config::Config;
use crate::metrics::{ClusterMetrics, Snapshot};
use crate::outgoing::Outgoing;
use crate::reactor::{Command, Runtime};

/// Errors of [`ServerHandle`] calls.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandleError {
    #[error("unknown event type {0:?}")]
    UnknownEvent(String),
    /// The message could not be handed to the cluster, so it was delivered nowhere.
    #[error("cluster unavailable")]
    ClusterUnavailable,
    /// The message was handed to the cluster and no word came back (Redis stalled or the
    /// connection broke): it may have reached some, all or none of the other nodes. Retry
    /// with the same message id to have it delivered at most once.
    #[error("cluster outcome unknown")]
    ClusterOutcomeUnknown,
}

/// The outcome of a send: how many connections it reached and the message's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Connections reached on this node.
    pub recipients: usize,
    pub message_id: uuid::Uuid,
    /// Nodes that received the message: in a cluster, Redis' count of the nodes subscribed to
    /// its channel when it was published (this node among them if it had a matching
    /// connection, or for messages to everyone); alone, 1.
    pub nodes_reached: usize,
    /// In a cluster: a message with this idempotency key was published within the window, so
    /// this one was not delivered (`recipients` and `nodes_reached` are 0).
    pub duplicate: bool,
}

/// Thread-safe access to a running server: `Clone + Send + Sync`.
#[derive(Clone)]
pub struct ServerHandle {
    rt: Arc<Runtime>,
}

/// How long a handle call waits for reactors to report delivery counts.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A send's outcome from its answers: recipients on this node, nodes reached, or
/// `ClusterUnavailable` if the cluster refused any part of it (that part reached no one).
pub(crate) fn delivery_of(answers: &[Vec<(usize, Answer)>], message_id: uuid::Uuid) -> Result<Delivery, HandleError> {
    let all = || answers.iter().flatten().map(|(_, a)| a);
    if all().any(|a| matches!(a, Answer::Unknown)) {
        return Err(HandleError::ClusterOutcomeUnknown);
    }
    if all().any(|a| matches!(a, Answer::Unavailable)) {
        return Err(HandleError::ClusterUnavailable);
    }
    if all().any(|a| matches!(a, Answer::Duplicate)) {
        return Ok(Delivery {
            recipients: 0,
            message_id,
            nodes_reached: 0,
            duplicate: true,
        });
    }
    let nodes = all().filter_map(|a| match a {
        Answer::Nodes(n) => Some(*n),
        _ => None,
    });
    Ok(Delivery {
        recipients: all().map(Answer::count).sum(),
        message_id,
        nodes_reached: nodes.max().unwrap_or(1),
        duplicate: false,
    })
}

/// A membership change's outcome: the user's connections over every answer (`None`: not
/// connected anywhere).
pub(crate) fn member_count(answers: &[(usize, Answer)]) -> Option<usize> {
    answers
        .iter()
        .filter_map(|(_, a)| match a {
            Answer::Member(n) => *n,
            _ => None,
        })
        .reduce(|a, b| a + b)
}

/// How long a call may wait for reactors' replies: not at all on a reactor thread (a handler
/// callback), since a reactor waiting for itself, or for a reactor waiting for it, would stall
/// every connection it holds. The command is still carried out.
fn reply_wait() -> Duration {
    if crate::reactor::on_reactor_thread() {
        Duration::ZERO
    } else {
        REPLY_TIMEOUT
    }
}

impl ServerHandle {
    pub(crate) fn from_runtime(rt: Arc<Runtime>) -> Self {
        ServerHandle { rt }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.rt.local_addr
    }

    pub fn config(&self) -> &Config {
        &self.rt.config
    }

    /// Counters summed over reactors.
    pub fn stats(&self) -> Snapshot {
        let metrics: Vec<_> = self.rt.links.iter().map(|l| l.metrics.clone()).collect();
        let mut snapshot = Snapshot::collect(&metrics);
        snapshot.dead_reactors = self.dead_reactors() as u64;
        snapshot.inbox_drops = self
            .rt
            .links
            .iter()
            .map(|l| l.inbox_drops.load(Ordering::Relaxed))
            .sum();
        snapshot
    }

    /// Open WebSockets server-wide.
    pub fn open_connections(&self) -> usize {
        self.rt.admission.open()
    }

    /// Describes an open connection by its public id (`None` if unknown or closed).
    pub fn connection_info(&self, id: uuid::Uuid) -> Option<ConnectionInfo> {
        let reactor = self.reactor_of(id)?;
        match self.ask_wait(&Ask::Inspect { id }, &[reactor]).pop() {
            Some((_, Answer::Info(info))) => info,
            _ => None,
        }
    }

    /// The reactor a connection id names, if there is one.
    pub(crate) fn reactor_of(&self, id: uuid::Uuid) -> Option<usize> {
        self.rt.reactor_of(&id)
    }

    /// One page of open connections, in a stable order (reactor, then slot), optionally only
    /// `user`'s: at most `limit` entries after the connection `after` (a previous page's
    /// last id). Returns the page and the id to continue after, `None` at the end.
    pub fn list_connections(
        &self,
        user: Option<&str>,
        after: Option<uuid::Uuid>,
        limit: usize,
    ) -> (Vec<ConnectionInfo>, Option<uuid::Uuid>) {
        let asks = self.page_asks(user, after, limit);
        let pages = asks
            .into_iter()
            .flat_map(|(ask, reactors)| self.ask_wait(&ask, &reactors))
            .filter_map(|(r, a)| match a {
                Answer::Page(p) => Some((r, p)),
                _ => None,
            })
            .collect();
        merge_pages(pages, limit.clamp(1, 1000))
    }

    /// The asks that make up one page of connections: every reactor from the one `after`
    /// names on is asked for a full page at once (the first from just past `after`), and the
    /// answers are merged in order.
    pub(crate) fn page_asks(
        &self,
        user: Option<&str>,
        after: Option<uuid::Uuid>,
        limit: usize,
    ) -> Vec<(Ask, Vec<usize>)> {
        let limit = limit.clamp(1, 1000);
        // A connection id carries its slot (bytes 0-3) and reactor (byte 4) in the clear.
        let (first, start) = after.map_or((0, 0), |id| {
            let b = id.as_bytes();
            (b[4] as usize, u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize + 1)
        });
        let only = user.filter(|_| self.rt.verifier.is_some()).map(|u| self.rt.home_of(u));
        (first..self.rt.links.len())
            .filter(|r| only.is_none_or(|h| h == *r))
            .map(|r| {
                let ask = Ask::List {
                    start: if r == first { start } else { 0 },
                    limit,
                    user: user.map(Into::into),
                };
                (ask, vec![r])
            })
            .collect()
    }

    /// Users and connections per user, over every reactor.
    pub fn census(&self) -> Census {
        let mut total = Census::default();
        for (_, a) in self.ask_all(Ask::Census, self.all_reactors()) {
            match a {
                Answer::Census(c) => total.merge(c),
                Answer::Node(n) => total.merge(n.census),
                _ => {}
            }
        }
        total
    }

    pub(crate) fn all_reactors(&self) -> Vec<usize> {
        (0..self.rt.links.len()).collect()
    }

    /// Sends `{"type": event_type, "data": data, ...}` to every connection subscribed to
    /// `event_type`; returns the number of recipients.
    pub fn publish<D: Serialize>(&self, event_type: &str, data: D) -> Result<usize, HandleError> {
        self.publish_delivery(event_type, data).map(|d| d.recipients)
    }

    /// The cluster engine's counters (`None`: this node runs alone).
    pub fn cluster_metrics(&self) -> Option<&ClusterMetrics> {
        self.rt.engine.as_ref().map(|_| &*self.rt.cluster_metrics)
    }

    /// This node's message totals once a second over the last five minutes, oldest first (the
    /// dashboard's chart; see [`crate::metrics::RateHistory`]).
    pub fn rate_history(&self) -> Vec<crate::metrics::RateSample> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.rt.rates.samples(now)
    }

    /// When this node started (Unix seconds).
    pub fn started_at(&self) -> u64 {
        self.rt.started_at
    }

    /// True if this node is a cluster member (a `--redis` engine, or one of yours).
    pub fn is_clustered(&self) -> bool {
        self.rt.engine.is_some()
    }

    /// [`publish`](Self::publish), also returning the message id.
    pub fn publish_delivery<D: Serialize>(&self, event_type: &str, data: D) -> Result<Delivery, HandleError> {
        let bit = self
            .rt
            .config
            .event_bit(event_type)
            .ok_or_else(|| HandleError::UnknownEvent(event_type.into()))?;
        self.send_envelope(Target::Subscribers(bit), event_type, data)
    }

    /// Sends an envelope to every open connection; returns the number of recipients (on this
    /// node).
    pub fn broadcast<D: Serialize>(&self, kind: &str, data: D) -> Result<usize, HandleError> {
        self.send_envelope(Target::All, kind, data).map(|d| d.recipients)
    }

    /// Sends an envelope to every connection of `user_id`; returns the number of recipients
    /// (on this node).
    pub fn send_to_user<D: Serialize>(&self, user_id: &str, kind: &str, data: D) -> Result<usize, HandleError> {
        self.send_envelope(Target::User(user_id.into()), kind, data)
            .map(|d| d.recipients)
    }

    /// Sends an envelope to every member of `room`; returns the number of recipients (on this
    /// node).
    pub fn send_to_room<D: Serialize>(&self, room: &str, kind: &str, data: D) -> Result<usize, HandleError> {
        self.send_envelope(Target::Room(room.into()), kind, data)
            .map(|d| d.recipients)
    }

    /// Sends `{"type": kind, "data": data, "timestamp", "id"}` to `target`, serialized and framed
    /// once for every recipient on every reactor.
    pub fn send_envelope<D: Serialize>(&self, target: Target, kind: &str, data: D) -> Result<Delivery, HandleError> {
        self.send(Outgoing::envelope(target, kind, data))
    }

    /// [`send_envelope`](Self::send_envelope), skipping every connection of `exclude_user`.
    pub fn send_envelope_excluding<D: Serialize>(
        &self,
        target: Target,
        kind: &str,
        data: D,
        exclude_user: Option<&str>,
    ) -> Result<Delivery, HandleError> {
        self.send(Outgoing::envelope(target, kind, data).excluding(exclude_user))
    }

    /// The admin broadcast: the given object plus `timestamp`, `id` and
    /// `source: "admin_broadcast"`, to everyone.
    pub fn admin_broadcast(
        &self,
        message: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Delivery, HandleError> {
        self.admin_broadcast_excluding(message, None)
    }

    /// [`admin_broadcast`](Self::admin_broadcast), skipping every connection of `exclude_user`.
    pub fn admin_broadcast_excluding(
        &self,
        message: serde_json::Map<String, serde_json::Value>,
        exclude_user: Option<&str>,
    ) -> Result<Delivery, HandleError> {
        self.send(Outgoing::admin_broadcast(message).excluding(exclude_user))
    }

    // ---- event helpers ----

    /// `upload.progress` `{upload_id, progress, timestamp}` to the user.
    pub fn upload_progress(&self, user_id: &str, upload_id: &str, progress: u64) -> Result<Delivery, HandleError> {
        self.send(Outgoing::upload_progress(user_id, upload_id, progress))
    }

    /// `upload.completed` `{upload_id, result, timestamp}` to the user.
    pub fn upload_completed(
        &self,
        user_id: &str,
        upload_id: &str,
        result: serde_json::Value,
    ) -> Result<Delivery, HandleError> {
        self.send(Outgoing::upload_completed(user_id, upload_id, result))
    }

    /// `upload.error` `{upload_id, error, timestamp}` to the user.
    pub fn upload_error(&self, user_id: &str, upload_id: &str, error: &str) -> Result<Delivery, HandleError> {
        self.send(Outgoing::upload_error(user_id, upload_id, error))
    }

    /// `system.notification` `{message, level, timestamp}` to the given users, or to everyone.
    pub fn system_notification(
        &self,
        message: &str,
        level: &str,
        target_users: Option<&[String]>,
    ) -> Result<Delivery, HandleError> {
        self.send(Outgoing::system_notification(message, level, target_users))
    }

    /// `review.updated` `{review_id, changes, timestamp}` to the given users, or to the
    /// subscribers of `review.updated`.
    pub fn review_updated(
        &self,
        review_id: &str,
        changes: serde_json::Value,
        target_users: Option<&[String]>,
    ) -> Result<Delivery, HandleError> {
        let bit = self.rt.config.event_bit("review.updated");
        self.send(Outgoing::review_updated(review_id, changes, target_users, bit))
    }

    /// `file.processing` (status "processing") or `file.ready` (any other status)
    /// `{file_id, status, progress?, timestamp}` to the user.
    pub fn file_status(
        &self,
        user_id: &str,
        file_id: &str,
        status: &str,
        progress: Option<u64>,
    ) -> Result<Delivery, HandleError> {
        self.send(Outgoing::file_status(user_id, file_id, status, progress))
    }

    /// Delivers a message to its targets and waits for the recipient count.
    fn send(&self, o: Outgoing) -> Result<Delivery, HandleError> {
        let message_id = o.message_id;
        let answers = self.carry_out_waiting(self.deliver_asks(&o));
        delivery_of(&answers, message_id)
    }

    /// The asks that deliver `o`: one per target, to each reactor that may hold it.
    pub(crate) fn deliver_asks(&self, o: &Outgoing) -> Vec<(Ask, Vec<usize>)> {
        let now = std::time::Instant::now();
        o.targets
            .iter()
            .map(|t| {
                let reactors = self.reactors_for(t);
                let ask = crate::reactor::core::deliver_ask(
                    &self.rt,
                    t.clone(),
                    o.frame.clone(),
                    o.exclude_user.clone(),
                    now,
                    &reactors,
                    o.dedupe.clone(),
                );
                (ask, reactors)
            })
            .collect()
    }

    /// Carries out a plan's asks by waiting for each reactor's answers (threads only; on a
    /// reactor thread nothing is waited for). In a cluster a reactor carries the plan out (the
    /// cluster's part runs on reactors) and sends every answer back.
    pub(crate) fn carry_out_waiting(&self, asks: Vec<(Ask, Vec<usize>)>) -> Vec<Vec<(usize, Answer)>> {
        if self.rt.engine.is_none() {
            return asks
                .iter()
                .map(|(ask, reactors)| self.ask_wait(ask, reactors))
                .collect();
        }
        let n = asks.len();
        let (tx, rx) = mpsc::channel();
        let posted = self
            .rt
            .links
            .first()
            .is_some_and(|l| l.send(Command::Plan { asks, reply: tx }));
        let answers = if posted {
            rx.recv_timeout(reply_wait()).ok()
        } else {
            None
        };
        answers.unwrap_or_else(|| (0..n).map(|_| Vec::new()).collect())
    }

    /// One ask, answered by this node's reactors (and in a cluster, by every node).
    fn ask_all(&self, ask: Ask, reactors: Vec<usize>) -> Vec<(usize, Answer)> {
        if self.rt.engine.is_none() {
            return self.ask_wait(&ask, &reactors);
        }
        self.carry_out_waiting(vec![(ask, reactors)]).pop().unwrap_or_default()
    }

    /// True once every reactor has stopped.
    pub fn is_stopped(&self) -> bool {
        self.rt.links.iter().all(|l| l.stopped.load(Ordering::Acquire))
    }

    /// Reads `--tls-cert` and `--tls-key` again (as on SIGHUP): new connections get the new
    /// certificate, open ones keep theirs. `Ok(false)`: the server has no TLS. On error the old
    /// certificate stays.
    pub fn reload_tls(&self) -> Result<bool, crate::transport::tls::TlsError> {
        match &self.rt.tls {
            Some(t) => t.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// True while draining (and after).
    pub fn is_draining(&self) -> bool {
        self.rt.draining.load(Ordering::Acquire)
    }

    pub(crate) fn verifier(&self) -> Option<&Verifier> {
        self.rt.verifier.as_ref()
    }

    /// Adds a connected user to a room (no token check: this is the server's decision). Returns
    /// the user's open connections, or `None` if the user is not connected.
    pub fn add_to_room(&self, room: &str, user_id: &str) -> Option<usize> {
        self.membership(room, user_id, true)
    }

    /// Removes a user from a room; `None` if the user is not connected.
    pub fn remove_from_room(&self, room: &str, user_id: &str) -> Option<usize> {
        self.membership(room, user_id, false)
    }

    fn membership(&self, room: &str, user_id: &str, add: bool) -> Option<usize> {
        let ask = Ask::Membership {
            room: room.into(),
            user: user_id.into(),
            add,
        };
        let answers = self.ask_all(ask, vec![self.rt.home_of(user_id)]);
        member_count(&answers)
    }

    /// The reactor holding `user_id`'s connections.
    pub(crate) fn home_of(&self, user_id: &str) -> usize {
        self.rt.home_of(user_id)
    }

    /// Queues a pre-encoded frame to `target` (encoded once, shared by every recipient);
    /// returns the recipients on this node.
    pub fn deliver(&self, target: Target, frame: Bytes) -> Result<usize, HandleError> {
        self.deliver_excluding(target, frame, None)
    }

    /// [`deliver`](Self::deliver), skipping every connection of `exclude_user` (for example
    /// the sender of a chat message).
    pub fn deliver_excluding(
        &self,
        target: Target,
        frame: Bytes,
        exclude_user: Option<&str>,
    ) -> Result<usize, HandleError> {
        let reactors = self.reactors_for(&target);
        let ask = Ask::Deliver {
            target,
            frame,
            exclude_user: exclude_user.map(Into::into),
            published_at: std::time::Instant::now(),
            dedupe: None,
        };
        let answers = self.ask_all(ask, reactors);
        delivery_of(&[answers], uuid::Uuid::nil()).map(|d| d.recipients)
    }

    /// Starts the close handshake on every connection matching `target`; returns how many.
    pub fn disconnect(&self, target: Target, code: u16, reason: &str) -> usize {
        let reactors = self.reactors_for(&target);
        let ask = Ask::Disconnect {
            target,
            code,
            reason: reason.into(),
        };
        self.ask_all(ask, reactors).iter().map(|(_, a)| a.count()).sum()
    }

    /// The reactors that may hold connections matching `target`.
    pub(crate) fn reactors_for(&self, target: &Target) -> Vec<usize> {
        self.rt.reactors_for(target)
    }

    /// Posts `ask` to each of `reactors` and collects their answers (a reactor that stopped
    /// is left out). On a reactor thread it does not wait at all (see `reply_wait`).
    fn ask_wait(&self, ask: &Ask, reactors: &[usize]) -> Vec<(usize, Answer)> {
        let (tx, rx) = mpsc::channel();
        let post = |r: usize| {
            self.rt.links.get(r).is_some_and(|l| {
                l.send(Command::Ask {
                    ask: ask.clone(),
                    reply: Some(ReplyTo::Thread(tx.clone())),
                })
            })
        };
        // A channel's asks go to its home reactor; a sequenced message is answered from there
        // by every reactor it fans out to.
        let asked: Vec<usize> = match ask {
            Ask::Sequence { channel, .. } if post(self.rt.channel_home(channel)) => reactors.to_vec(),
            Ask::Sequence { .. } => Vec::new(),
            Ask::ReadHistory { channel, .. } | Ask::ClearHistory { channel } => {
                let home = self.rt.channel_home(channel);
                if post(home) { vec![home] } else { Vec::new() }
            }
            _ => reactors.iter().copied().filter(|&r| post(r)).collect(),
        };
        drop(tx);
        let wait = reply_wait();
        let deadline = std::time::Instant::now() + wait;
        let mut answers = Vec::with_capacity(asked.len());
        while answers.len() < asked.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(a) => answers.push(a),
                Err(_) => break,
            }
        }
        answers
    }

    /// Drains: `/ready` turns 503, reactors stop accepting and close connections with 1001 in
    /// batches over `drain_window`, then exit once their connections are gone (or
    /// `shutdown_timeout` after the window). Same as [`shutdown`](Self::shutdown).
    ///
    /// Returns once every reactor has closed its listener, so from then on the port refuses
    /// new connections (or a successor bound with `SO_REUSEPORT` gets them all); the open
    /// connections are still being closed. Called from inside a handler callback it returns at
    /// once, and the listeners close as soon as the callback returns.
    pub fn drain(&self) {
        self.shutdown();
    }

    /// See [`drain`](Self::drain).
    pub fn shutdown(&self) {
        self.rt.draining.store(true, Ordering::Release);
        let (tx, rx) = mpsc::channel();
        let asked = self
            .rt
            .links
            .iter()
            .filter(|l| {
                l.send(Command::Shutdown {
                    listener_closed: Some(tx.clone()),
                })
            })
            .count();
        drop(tx);
        let wait = reply_wait();
        for _ in (0..asked).map_while(|_| rx.recv_timeout(wait).ok()) {}
    }

    /// Makes reactor `i` panic outside any handler callback (for tests of reactor death).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn inject_reactor_panic(&self, i: usize) {
        if let Some(l) = self.rt.links.get(i) {
            l.send(Command::InjectPanic);
        }
    }

    /// Reactors that stopped because of a panic. While any has, `/ready` answers 503.
    pub fn dead_reactors(&self) -> usize {
        self.rt.links.iter().filter(|l| l.dead.load(Ordering::Acquire)).count()
    }
}
