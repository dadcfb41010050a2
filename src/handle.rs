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
use tungstenite::Bytes;

use crate::admin::AdminHost;
use crate::ask::{Answer, Ask, Census, ConnectionInfo, ReplyTo, Target, merge_pages};
pub use crate::ask::{Delivery, HandleError};
use crate::ask::{delivery_of, member_count};
use crate::config::Config;
use crate::metrics::{ClusterMetrics, Snapshot};
use crate::outgoing::Outgoing;
use crate::runtime::{Command, Runtime};

/// Thread-safe access to a running server: `Clone + Send + Sync`.
#[derive(Clone)]
pub struct ServerHandle {
    rt: Arc<Runtime>,
}

/// How long a handle call waits for reactors to report delivery counts.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls that wait for reactors refuse to run on a reactor thread (inside a handler callback):
/// the reactor would wait for itself, so the answer could only be wrong. They return
/// [`HandleError::OnReactorThread`] and do nothing; callbacks use `ctx.asks()`, whose answers
/// arrive as `on_reply`.
fn off_reactor() -> Result<(), HandleError> {
    if crate::runtime::on_reactor_thread() {
        return Err(HandleError::OnReactorThread);
    }
    Ok(())
}

/// How long a call may wait for reactors' replies: not at all on a reactor thread (a handler
/// callback), since a reactor waiting for itself, or for a reactor waiting for it, would stall
/// every connection it holds. The command is still carried out.
fn reply_wait() -> Duration {
    if crate::runtime::on_reactor_thread() {
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
        self.rt.stats()
    }

    /// Open WebSockets server-wide.
    pub fn open_connections(&self) -> usize {
        self.rt.admission.open()
    }

    /// Describes an open connection by its public id (`None` if unknown or closed).
    pub fn connection_info(&self, id: uuid::Uuid) -> Result<Option<ConnectionInfo>, HandleError> {
        off_reactor()?;
        let Some(reactor) = self.rt.topology.reactor_of(&id) else {
            return Ok(None);
        };
        Ok(match self.ask_wait(&Ask::Inspect { id }, &[reactor]).pop() {
            Some((_, Answer::Info(info))) => info,
            _ => None,
        })
    }

    /// One page of open connections, in a stable order (reactor, then slot), optionally only
    /// `user`'s: at most `limit` entries after the connection `after` (a previous page's
    /// last id). Returns the page and the id to continue after, `None` at the end.
    pub fn list_connections(
        &self,
        user: Option<&str>,
        after: Option<uuid::Uuid>,
        limit: usize,
    ) -> Result<(Vec<ConnectionInfo>, Option<uuid::Uuid>), HandleError> {
        off_reactor()?;
        let asks = self.rt.topology.page_asks(user, after, limit);
        let pages = asks
            .into_iter()
            .flat_map(|(ask, reactors)| self.ask_wait(&ask, &reactors))
            .filter_map(|(r, a)| match a {
                Answer::Page(p) => Some((r, p)),
                _ => None,
            })
            .collect();
        Ok(merge_pages(pages, limit.clamp(1, 1000)))
    }

    /// Users and connections per user, over every reactor.
    pub fn census(&self) -> Result<Census, HandleError> {
        off_reactor()?;
        let mut total = Census::default();
        for (_, a) in self.ask_all(Ask::Census, self.rt.topology.all_reactors()) {
            match a {
                Answer::Census(c) => total.merge(c),
                Answer::Node(n) => total.merge(n.census),
                _ => {}
            }
        }
        Ok(total)
    }

    /// Sends `{"type": event_type, "data": data, ...}` to every connection subscribed to
    /// `event_type`; returns the number of recipients.
    pub fn publish<D: Serialize>(&self, event_type: &str, data: D) -> Result<usize, HandleError> {
        self.publish_delivery(event_type, data).map(|d| d.recipients)
    }

    /// The cluster engine's counters (`None`: this node runs alone).
    pub fn cluster_metrics(&self) -> Option<&ClusterMetrics> {
        self.rt.cluster_metrics()
    }

    /// This node's message totals once a second over the last five minutes, oldest first (the
    /// dashboard's chart).
    pub fn rate_history(&self) -> Vec<crate::metrics::RateSample> {
        self.rt.rate_history()
    }

    /// When this node started (Unix seconds).
    pub fn started_at(&self) -> u64 {
        self.rt.started_at
    }

    /// True if this node is a cluster member (a `--redis` engine, or one of yours).
    pub fn is_clustered(&self) -> bool {
        self.rt.topology.is_clustered()
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

    /// Delivers a message to its targets and waits for the recipient count.
    pub(crate) fn send(&self, o: Outgoing) -> Result<Delivery, HandleError> {
        off_reactor()?;
        let message_id = o.message_id;
        let answers = self.carry_out_waiting(self.rt.topology.deliver_asks(&o, std::time::Instant::now()));
        delivery_of(&answers, message_id)
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
        self.rt.is_draining()
    }

    /// Adds a connected user to a room (no token check: this is the server's decision). Returns
    /// the user's open connections, or `None` if the user is not connected.
    pub fn add_to_room(&self, room: &str, user_id: &str) -> Result<Option<usize>, HandleError> {
        self.membership(room, user_id, true)
    }

    /// Removes a user from a room; `None` if the user is not connected.
    pub fn remove_from_room(&self, room: &str, user_id: &str) -> Result<Option<usize>, HandleError> {
        self.membership(room, user_id, false)
    }

    fn membership(&self, room: &str, user_id: &str, add: bool) -> Result<Option<usize>, HandleError> {
        off_reactor()?;
        let ask = Ask::Membership {
            room: room.into(),
            user: user_id.into(),
            add,
        };
        let answers = self.ask_all(ask, vec![self.rt.topology.home_of(user_id)]);
        Ok(member_count(&answers))
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
        off_reactor()?;
        let reactors = self.rt.topology.reactors_for(&target);
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
    pub fn disconnect(&self, target: Target, code: u16, reason: &str) -> Result<usize, HandleError> {
        off_reactor()?;
        let reactors = self.rt.topology.reactors_for(&target);
        let ask = Ask::Disconnect {
            target,
            code,
            reason: reason.into(),
        };
        Ok(self.ask_all(ask, reactors).iter().map(|(_, a)| a.count()).sum())
    }

    /// Posts `ask` to each of `reactors` and collects their answers (a reactor that stopped
    /// is left out). Never reached on a reactor thread (see `off_reactor`); `reply_wait` would
    /// not wait there either.
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
            Ask::Sequence { channel, .. } if post(self.rt.topology.channel_home(channel)) => reactors.to_vec(),
            Ask::Sequence { .. } => Vec::new(),
            Ask::ReadHistory { channel, .. } | Ask::ClearHistory { channel } => {
                let home = self.rt.topology.channel_home(channel);
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
        self.rt.dead_reactors()
    }
}

/// For fuzz targets: the status and body the admin API gives a complete request (carrying a
/// plan out by waiting for the reactors), or `None` if the bytes are not a complete request.
#[cfg(feature = "testing")]
pub fn respond_for_testing(handle: &ServerHandle, bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    use crate::admin::{self, Plan, Response};
    use crate::http::upgrade::{self, Parsed};
    let cfg = handle.config();
    let r = match upgrade::parse(bytes, cfg.max_request_bytes, cfg.ws_path.as_deref()) {
        Parsed::Partial => return None,
        Parsed::Reject(r) => Response::error(r.status, r.message),
        Parsed::Upgrade(..) => Response::error(400, "WebSocket upgrades are served on the main listener"),
        Parsed::Plain(req) => match admin::check_head(&*handle.rt, &req) {
            Some(r) => r,
            None if bytes.len() < req.head_len + req.content_length => return None,
            None => match admin::plan(
                &*handle.rt,
                &req,
                &bytes[req.head_len..req.head_len + req.content_length],
            ) {
                Plan::Now(r) => r,
                Plan::Later { asks, finish } => finish(handle.carry_out_waiting(asks), &*handle.rt),
            },
        },
    };
    Some((r.status, r.body))
}
