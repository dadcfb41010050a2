//! Starting and stopping reactors, and the thread-safe `ServerHandle`.
//!
//! Owns: listener creation (`SO_REUSEPORT`, one per reactor, all on one port), thread spawning,
//! and the cross-thread API (publish, send, disconnect, stats, shutdown). Does not touch:
//! connection state (commands go through each reactor's inbox).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Poll, Waker};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tungstenite::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::auth::Verifier;
use crate::config::{AuthMode, Config, ConfigError};
use crate::handler::Handler;
use crate::limits::Admission;
use crate::metrics::Snapshot;
use crate::protocol::{IdGen, write_envelope};
use crate::reactor::{Census, Command, ConnectionInfo, Link, Reactor, Runtime, Target, WAKER};
use crate::ws::encode_frame;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start reactor: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} reactor(s) stopped after a panic")]
    ReactorDied(usize),
}

/// Errors of [`ServerHandle`] calls.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandleError {
    #[error("unknown event type {0:?}")]
    UnknownEvent(String),
}

/// The outcome of a send: how many connections it reached and the message's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub recipients: usize,
    pub message_id: uuid::Uuid,
}

/// Entry point: `Server::start(config, handler)`.
pub struct Server;

impl Server {
    /// Validates `config`, binds the listeners and starts one reactor thread per worker.
    pub fn start<H: Handler>(config: Config, handler: H) -> Result<RunningServer, ServerError> {
        config.validate()?;
        let verifier = match &config.auth {
            AuthMode::Jwt(j) => Some(Verifier::new(j)?),
            AuthMode::Anonymous => None,
        };
        let first = bind_reuseport(config.listen)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..config.workers {
            listeners.push(bind_reuseport(local_addr)?);
        }
        let mut polls = Vec::new();
        let mut links = Vec::new();
        for _ in 0..config.workers {
            let poll = Poll::new()?;
            links.push(Link::new(Waker::new(poll.registry(), WAKER)?));
            polls.push(poll);
        }
        let (admin_tx, admin_rx) = mpsc::sync_channel(ADMIN_QUEUE);
        let admin_listener = match config.admin_listen {
            Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?),
            None => None,
        };
        let rt = Arc::new(Runtime {
            config,
            verifier,
            admission: Admission::default(),
            per_ip: crate::limits::PerIpAdmission::default(),
            links,
            local_addr,
            admin: admin_tx.clone(),
            draining: AtomicBool::new(false),
            admin_addr: std::sync::OnceLock::new(),
        });
        let handle = ServerHandle { rt: rt.clone() };
        crate::admin::spawn_pool(handle.clone(), admin_rx)?;
        let admin_addr = match admin_listener {
            Some(l) => {
                let addr = crate::admin::spawn_listener(l, admin_tx, handle.clone())?;
                let _ = rt.admin_addr.set(addr);
                Some(addr)
            }
            None => None,
        };
        let handler = Arc::new(handler);
        let mut threads = Vec::new();
        for (i, (poll, listener)) in polls.into_iter().zip(listeners).enumerate() {
            let reactor = Reactor::new(i, rt.clone(), handler.clone(), poll, listener)?;
            let rt = rt.clone();
            let t = std::thread::Builder::new()
                .name(format!("wsedge-reactor-{i}"))
                .spawn(move || {
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reactor.run())).is_err() {
                        reactor_died(&rt, i);
                    }
                })?;
            threads.push(t);
        }
        log::info!("listening on {local_addr} with {} reactor(s)", threads.len());
        if let Some(a) = admin_addr {
            log::info!("admin API also on http://{a}");
        }
        Ok(RunningServer {
            handle,
            threads,
            admin_addr,
        })
    }
}

/// A reactor thread panicked outside any handler callback: its connections are gone and its
/// users cannot connect. Mark it dead (`/ready` 503, `wsedge_dead_reactors`), answer whatever
/// waits in its inbox, and drain the rest of the server so clients reconnect to a healthy
/// process; [`RunningServer::wait`] then reports the failure.
fn reactor_died(rt: &Arc<Runtime>, i: usize) {
    log::error!("reactor {i} panicked and stopped; draining the server");
    let link = &rt.links[i];
    link.dead.store(true, Ordering::Release);
    link.stopped.store(true, Ordering::Release);
    // Dropping queued commands drops their reply senders: nobody waits for a dead reactor.
    link.discard_inbox();
    ServerHandle { rt: rt.clone() }.shutdown();
}

fn bind_reuseport(addr: SocketAddr) -> Result<mio::net::TcpListener, ServerError> {
    let bind = || -> std::io::Result<mio::net::TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        Ok(mio::net::TcpListener::from_std(s.into()))
    };
    bind().map_err(|source| ServerError::Bind { addr, source })
}

/// A started server. Dropping it shuts the server down and waits for its threads.
pub struct RunningServer {
    handle: ServerHandle,
    threads: Vec<JoinHandle<()>>,
    admin_addr: Option<SocketAddr>,
}

impl RunningServer {
    /// The separate admin address, if `admin_listen` was set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Blocks until every reactor has stopped (after [`ServerHandle::shutdown`]). An error
    /// says a reactor died of a panic (the process should exit with a failure status).
    pub fn wait(mut self) -> Result<(), ServerError> {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        match self.handle.dead_reactors() {
            0 => Ok(()),
            n => Err(ServerError::ReactorDied(n)),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.handle.shutdown();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

/// Thread-safe access to a running server: `Clone + Send + Sync`.
#[derive(Clone)]
pub struct ServerHandle {
    rt: Arc<Runtime>,
}

/// Admin requests waiting for the admin pool before reactors answer 503.
const ADMIN_QUEUE: usize = 256;

/// How long a handle call waits for reactors to report delivery counts.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

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
        let link = self.rt.links.get(id.as_bytes()[4] as usize)?;
        let (tx, rx) = mpsc::channel();
        if !link.send(Command::Inspect { id, reply: tx }) {
            return None;
        }
        rx.recv_timeout(reply_wait()).ok().flatten()
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
        let limit = limit.clamp(1, 1000);
        // A connection id carries its slot (bytes 0-3) and reactor (byte 4) in the clear.
        let (mut reactor, mut start) = after.map_or((0, 0), |id| {
            let b = id.as_bytes();
            (b[4] as usize, u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize + 1)
        });
        let only = user.filter(|_| self.rt.verifier.is_some()).map(|u| self.rt.home_of(u));
        let mut page = Vec::new();
        while reactor < self.rt.links.len() && page.len() < limit {
            if only.is_none_or(|h| h == reactor) {
                let (tx, rx) = mpsc::channel();
                let asked = self.rt.links[reactor].send(Command::List {
                    start,
                    limit: limit - page.len(),
                    user: user.map(Into::into),
                    reply: tx,
                });
                if asked && let Ok(mut part) = rx.recv_timeout(reply_wait()) {
                    page.append(&mut part);
                }
            }
            reactor += 1;
            start = 0;
        }
        let more = page.len() == limit;
        let next = more
            .then(|| page.last().and_then(|c| c.connection_id.parse().ok()))
            .flatten();
        (page, next)
    }

    /// Users and connections per user, over every reactor.
    pub fn census(&self) -> Census {
        let (tx, rx) = mpsc::channel();
        let asked = self
            .rt
            .links
            .iter()
            .filter(|l| l.send(Command::Census { reply: tx.clone() }))
            .count();
        drop(tx);
        let mut total = Census::default();
        for c in (0..asked).map_while(|_| rx.recv_timeout(reply_wait()).ok()) {
            total.merge(c);
        }
        total
    }

    /// Sends `{"type": event_type, "data": data, ...}` to every connection subscribed to
    /// `event_type`; returns the number of recipients.
    pub fn publish<D: Serialize>(&self, event_type: &str, data: D) -> Result<usize, HandleError> {
        self.publish_delivery(event_type, data).map(|d| d.recipients)
    }

    /// [`publish`](Self::publish), also returning the message id.
    pub fn publish_delivery<D: Serialize>(&self, event_type: &str, data: D) -> Result<Delivery, HandleError> {
        let bit = self
            .rt
            .config
            .event_bit(event_type)
            .ok_or_else(|| HandleError::UnknownEvent(event_type.into()))?;
        Ok(self.send_envelope(Target::Subscribers(bit), event_type, data))
    }

    /// Sends an envelope to every open connection; returns the number of recipients.
    pub fn broadcast<D: Serialize>(&self, kind: &str, data: D) -> usize {
        self.send_envelope(Target::All, kind, data).recipients
    }

    /// Sends an envelope to every connection of `user_id`; returns the number of recipients.
    pub fn send_to_user<D: Serialize>(&self, user_id: &str, kind: &str, data: D) -> usize {
        self.send_envelope(Target::User(user_id.into()), kind, data).recipients
    }

    /// Sends an envelope to every member of `room`; returns the number of recipients.
    pub fn send_to_room<D: Serialize>(&self, room: &str, kind: &str, data: D) -> usize {
        self.send_envelope(Target::Room(room.into()), kind, data).recipients
    }

    /// Sends `{"type": kind, "data": data, "timestamp", "id"}` to `target`, serialized and framed
    /// once for every recipient on every reactor.
    pub fn send_envelope<D: Serialize>(&self, target: Target, kind: &str, data: D) -> Delivery {
        self.send_envelope_excluding(target, kind, data, None)
    }

    /// [`send_envelope`](Self::send_envelope), skipping every connection of `exclude_user`.
    pub fn send_envelope_excluding<D: Serialize>(
        &self,
        target: Target,
        kind: &str,
        data: D,
        exclude_user: Option<&str>,
    ) -> Delivery {
        let (frame, message_id) = envelope_frame(kind, data);
        Delivery {
            recipients: self.deliver_excluding(target, frame, exclude_user),
            message_id,
        }
    }

    /// The seed's admin broadcast: the given object plus `timestamp`, `id` and
    /// `source: "admin_broadcast"`, to everyone.
    pub fn admin_broadcast(&self, message: serde_json::Map<String, serde_json::Value>) -> Delivery {
        self.admin_broadcast_excluding(message, None)
    }

    /// [`admin_broadcast`](Self::admin_broadcast), skipping every connection of `exclude_user`.
    pub fn admin_broadcast_excluding(
        &self,
        mut message: serde_json::Map<String, serde_json::Value>,
        exclude_user: Option<&str>,
    ) -> Delivery {
        let message_id = IdGen::from_os().uuid();
        message.insert("timestamp".into(), now_text().into());
        message.insert("id".into(), message_id.to_string().into());
        message.insert("source".into(), "admin_broadcast".into());
        let json = serde_json::Value::Object(message).to_string();
        let mut frame = Vec::with_capacity(json.len() + 10);
        encode_frame(&mut frame, OpCode::Data(Data::Text), json.as_bytes());
        Delivery {
            recipients: self.deliver_excluding(Target::All, Bytes::from(frame), exclude_user),
            message_id,
        }
    }

    // ---- the seed's event helpers ----

    /// `upload.progress` `{upload_id, progress, timestamp}` to the user.
    pub fn upload_progress(&self, user_id: &str, upload_id: &str, progress: u64) -> Delivery {
        let data = serde_json::json!({"upload_id": upload_id, "progress": progress, "timestamp": now_text()});
        self.send_envelope(Target::User(user_id.into()), "upload.progress", data)
    }

    /// `upload.completed` `{upload_id, result, timestamp}` to the user.
    pub fn upload_completed(&self, user_id: &str, upload_id: &str, result: serde_json::Value) -> Delivery {
        let data = serde_json::json!({"upload_id": upload_id, "result": result, "timestamp": now_text()});
        self.send_envelope(Target::User(user_id.into()), "upload.completed", data)
    }

    /// `upload.error` `{upload_id, error, timestamp}` to the user.
    pub fn upload_error(&self, user_id: &str, upload_id: &str, error: &str) -> Delivery {
        let data = serde_json::json!({"upload_id": upload_id, "error": error, "timestamp": now_text()});
        self.send_envelope(Target::User(user_id.into()), "upload.error", data)
    }

    /// `system.notification` `{message, level, timestamp}` to the given users, or to everyone.
    pub fn system_notification(&self, message: &str, level: &str, target_users: Option<&[String]>) -> Delivery {
        let data = serde_json::json!({"message": message, "level": level, "timestamp": now_text()});
        self.to_users_or(target_users, Target::All, "system.notification", data)
    }

    /// `review.updated` `{review_id, changes, timestamp}` to the given users, or to the
    /// subscribers of `review.updated`.
    pub fn review_updated(
        &self,
        review_id: &str,
        changes: serde_json::Value,
        target_users: Option<&[String]>,
    ) -> Delivery {
        let data = serde_json::json!({"review_id": review_id, "changes": changes, "timestamp": now_text()});
        let Some(bit) = self.rt.config.event_bit("review.updated") else {
            return Delivery {
                recipients: 0,
                message_id: uuid::Uuid::nil(),
            };
        };
        self.to_users_or(target_users, Target::Subscribers(bit), "review.updated", data)
    }

    /// `file.processing` (status "processing") or `file.ready` (any other status)
    /// `{file_id, status, progress?, timestamp}` to the user.
    pub fn file_status(&self, user_id: &str, file_id: &str, status: &str, progress: Option<u64>) -> Delivery {
        let mut data = serde_json::json!({"file_id": file_id, "status": status, "timestamp": now_text()});
        if let Some(p) = progress {
            data["progress"] = p.into();
        }
        let kind = if status == "processing" {
            "file.processing"
        } else {
            "file.ready"
        };
        self.send_envelope(Target::User(user_id.into()), kind, data)
    }

    /// One message (one id) to each listed user, or to `otherwise` when no list is given.
    fn to_users_or(
        &self,
        users: Option<&[String]>,
        otherwise: Target,
        kind: &str,
        data: serde_json::Value,
    ) -> Delivery {
        let Some(users) = users else {
            return self.send_envelope(otherwise, kind, data);
        };
        let (frame, message_id) = envelope_frame(kind, data);
        let recipients = users
            .iter()
            .map(|u| self.deliver(Target::User(u.as_str().into()), frame.clone()))
            .sum();
        Delivery { recipients, message_id }
    }

    /// True once every reactor has stopped.
    pub fn is_stopped(&self) -> bool {
        self.rt.links.iter().all(|l| l.stopped.load(Ordering::Acquire))
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
        let link = self.rt.links.get(self.rt.home_of(user_id))?;
        let (tx, rx) = mpsc::channel();
        let cmd = Command::Membership {
            room: room.into(),
            user: user_id.into(),
            add,
            reply: tx,
        };
        if !link.send(cmd) {
            return None;
        }
        rx.recv_timeout(reply_wait()).ok().flatten()
    }

    /// Queues a pre-encoded frame to `target` (encoded once, shared by every recipient).
    pub fn deliver(&self, target: Target, frame: Bytes) -> usize {
        self.deliver_excluding(target, frame, None)
    }

    /// [`deliver`](Self::deliver), skipping every connection of `exclude_user` (for example
    /// the sender of a chat message).
    pub fn deliver_excluding(&self, target: Target, frame: Bytes, exclude_user: Option<&str>) -> usize {
        self.ask(&target, |reply| Command::Deliver {
            target: target.clone(),
            frame: frame.clone(),
            exclude_user: exclude_user.map(Into::into),
            reply: Some(reply),
        })
    }

    /// Starts the close handshake on every connection matching `target`; returns how many.
    pub fn disconnect(&self, target: Target, code: u16, reason: &str) -> usize {
        self.ask(&target, |reply| Command::Disconnect {
            target: target.clone(),
            code,
            reason: reason.to_string(),
            reply: Some(reply),
        })
    }

    /// Sends a command to every reactor that may hold `target` and sums their replies.
    fn ask(&self, target: &Target, make: impl Fn(mpsc::Sender<usize>) -> Command) -> usize {
        let (tx, rx) = mpsc::channel();
        let reactors: Vec<usize> = match target {
            Target::User(u) if self.rt.verifier.is_some() => vec![self.rt.home_of(u)],
            Target::Connection(id) => vec![id.as_bytes()[4] as usize],
            _ => (0..self.rt.links.len()).collect(),
        };
        let mut asked = 0;
        for r in reactors {
            if let Some(link) = self.rt.links.get(r)
                && link.send(make(tx.clone()))
            {
                asked += 1;
            }
        }
        drop(tx);
        (0..asked).map_while(|_| rx.recv_timeout(reply_wait()).ok()).sum()
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

/// Serializes an envelope once and frames it once.
fn envelope_frame<D: Serialize>(kind: &str, data: D) -> (Bytes, uuid::Uuid) {
    let mut json = Vec::new();
    let id = write_envelope(&mut json, &mut IdGen::from_os(), kind, data);
    let mut frame = Vec::with_capacity(json.len() + 10);
    encode_frame(&mut frame, OpCode::Data(Data::Text), &json);
    (Bytes::from(frame), id)
}

fn now_text() -> String {
    crate::protocol::Timestamp::now().to_string()
}
