//! What every reactor of a node shares, and how other threads reach one: the [`Runtime`]
//! (configuration, verifier, admission, the node's topology, links, engine, metrics), each
//! reactor's [`Link`] (an inbox of [`Command`]s and a waker), the reserved tokens, the tick.
//!
//! Owns: these shared values and the inbox protocol (post, lossy post, abandon, reply). Does
//! not touch: a reactor's own state or loop (`core`, the parent module), which read it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use mio::{Token, Waker};

use crate::ask::{Answer, Ask, ReplyTo};
use crate::auth::{Claims, Verifier};
use crate::config::Config;
use crate::limits::Admission;
use crate::metrics::ReactorMetrics;
use crate::topology::Topology;

/// Reserved tokens sit at the top of the token space; connection tokens are
/// `generation << 32 | slab index` and never reach them.
pub(crate) const LISTENER: Token = Token(usize::MAX);
pub(crate) const WAKER: Token = Token(usize::MAX - 1);
pub(crate) const ADMIN_LISTENER: Token = Token(usize::MAX - 2);

thread_local! {
    /// Set on reactor threads: calls that would wait for reactors must not wait there.
    static ON_REACTOR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on a reactor thread (inside a handler callback).
pub(crate) fn on_reactor_thread() -> bool {
    ON_REACTOR.with(|c| c.get())
}

/// Timer resolution.
pub(crate) const TICK: Duration = Duration::from_millis(100);

pub(crate) fn conn_token(idx: usize, generation: u32) -> Token {
    Token(((generation as usize) << 32) | idx)
}

pub(crate) fn split_token(t: Token) -> (usize, u32) {
    (t.0 & 0xFFFF_FFFF, (t.0 >> 32) as u32)
}

/// Unix milliseconds by the system clock (the loop reads it once per turn).
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Marks this thread as a reactor's (for [`on_reactor_thread`]).
pub(crate) fn mark_reactor_thread() {
    set_reactor_thread(true);
}

/// Marks (or unmarks) this thread as running a reactor's turn: an embedder that drives a
/// reactor turn by turn is on a reactor thread only during a turn.
pub(crate) fn set_reactor_thread(on: bool) {
    ON_REACTOR.with(|c| c.set(on));
}

/// Tokens of embedders' own sources: this bit plus the `SourceId` (never a connection token,
/// whose top bit is clear, nor a reserved one, whose bits 32-62 are set).
pub(crate) const SOURCE_BIT: usize = 1 << 63;
/// With `SOURCE_BIT`: a source of the cluster engine, not the handler.
pub(crate) const ENGINE_SOURCE_BIT: usize = 1 << 62;

/// A socket that authenticated on one reactor and belongs to its user's home reactor.
pub(crate) struct Handover {
    pub sock: crate::transport::Stream,
    /// The peer's per-IP bucket, already counted (the socket keeps its place).
    pub ip_bucket: u16,
    pub claims: Claims,
    pub accept: String,
    pub bearer: bool,
    /// permessage-deflate was negotiated.
    pub deflate: bool,
    /// The connection's TLS session (TLS listeners).
    pub tls: Option<crate::transport::tls::TlsSession>,
    /// Frames the client sent right after its request.
    pub leftover: Vec<u8>,
    /// Where to recover the user's channel from (query `recover_offset`, `recover_epoch`).
    pub recover: Option<(u64, String)>,
}

pub(crate) enum Command {
    Adopt(Box<Handover>),
    /// Carry out `ask` and send the answer to `reply` (none: fire and forget).
    Ask {
        ask: Ask,
        reply: Option<ReplyTo>,
    },
    /// The answer of reactor `from` to an ask this reactor made (`ticket` names its request in
    /// flight).
    Answer {
        ticket: u64,
        from: usize,
        answer: Answer,
    },
    /// Another reactor's interest in a cluster channel rose or fell (to reactor 0, which holds
    /// the node's subscriptions).
    Interest {
        channel: Box<[u8]>,
        on: bool,
    },
    /// Carry out a plan's asks as this reactor's own (the cluster's part included) and send
    /// every answer to a waiting thread.
    Plan {
        asks: Vec<(Ask, Vec<usize>)>,
        reply: mpsc::Sender<crate::admin::Answers>,
    },
    /// Panic on the reactor thread outside any handler (tests of reactor death).
    #[cfg(feature = "testing")]
    InjectPanic,
    /// Stop accepting and close everything; say when the listener is closed.
    Shutdown {
        listener_closed: Option<mpsc::Sender<()>>,
    },
}

/// How other threads reach a reactor.
pub(crate) struct Link {
    inbox: Mutex<Vec<Command>>,
    waker: Waker,
    pub metrics: Arc<ReactorMetrics>,
    pub stopped: AtomicBool,
    /// The reactor thread panicked (outside any handler callback).
    pub dead: AtomicBool,
    /// Fire-and-forget commands dropped because the inbox was full.
    pub inbox_drops: std::sync::atomic::AtomicU64,
}

/// Fire-and-forget commands a reactor may have waiting before more are dropped.
const INBOX_LIMIT: usize = 65_536;

impl Link {
    pub fn new(waker: Waker) -> Self {
        Link {
            inbox: Mutex::new(Vec::new()),
            waker,
            metrics: Arc::default(),
            stopped: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            inbox_drops: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Posts a command; wakes the reactor only if its inbox was empty. Returns false if the
    /// reactor has stopped.
    pub fn send(&self, cmd: Command) -> bool {
        self.post(cmd, usize::MAX)
    }

    /// Posts a fire-and-forget command unless `INBOX_LIMIT` commands are already waiting (the
    /// reactor is far behind); a dropped command is counted. Returns false if not posted.
    pub fn send_lossy(&self, cmd: Command) -> bool {
        let posted = self.post(cmd, INBOX_LIMIT);
        if !posted {
            self.inbox_drops.fetch_add(1, Ordering::Relaxed);
        }
        posted
    }

    fn post(&self, cmd: Command, limit: usize) -> bool {
        if self.stopped.load(Ordering::Acquire) {
            return false;
        }
        let was_empty = {
            let mut q = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= limit {
                return false;
            }
            q.push(cmd);
            q.len() == 1
        };
        if was_empty && let Err(e) = self.waker.wake() {
            log::error!("waking reactor failed: {e}");
        }
        true
    }

    /// Answers every waiting ask with `Lost` (the reactor will never carry them out), so no
    /// caller, thread or reactor, waits for it.
    pub fn abandon_inbox(&self, me: usize, links: &[Link]) {
        let cmds = std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        abandon(cmds, me, links);
    }

    pub(crate) fn take_all(&self, into: &mut Vec<Command>) {
        let mut q = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *q, into);
    }
}

/// Sends reactor `from`'s `answer` where `to` says: to a waiting thread, or into the asking
/// reactor's inbox.
pub(crate) fn reply(links: &[Link], from: usize, to: ReplyTo, answer: Answer) {
    match to {
        ReplyTo::Thread(tx) => {
            let _ = tx.send((from, answer));
        }
        ReplyTo::Reactor { reactor, ticket } => {
            if let Some(link) = links.get(reactor) {
                link.send(Command::Answer { ticket, from, answer });
            }
        }
    }
}

/// Answers the asks among reactor `from`'s `cmds` as lost (it stopped before carrying them
/// out).
pub(crate) fn abandon(cmds: Vec<Command>, from: usize, links: &[Link]) {
    for cmd in cmds {
        if let Command::Ask { ask, reply: Some(to) } = cmd {
            reply(links, from, to, Answer::lost_for(&ask));
        }
    }
}

/// What every reactor shares (read-only after start, except atomics).
pub(crate) struct Runtime {
    pub config: Config,
    pub verifier: Option<Verifier>,
    pub admission: Admission,
    pub per_ip: crate::limits::PerIpAdmission,
    pub links: Vec<Link>,
    pub local_addr: SocketAddr,
    /// Set when draining starts (`/ready` answers 503).
    pub draining: AtomicBool,
    /// The cluster engine (`None`: this node runs alone).
    pub engine: Option<Arc<dyn crate::cluster::broker::Engine>>,
    pub cluster_metrics: Arc<crate::metrics::ClusterMetrics>,
    /// Unix seconds.
    pub started_at: u64,
    /// The epoch of every channel's history since this process started.
    pub history_epoch: String,
    /// `--tls-cert`/`--tls-key`: the main listeners speak TLS.
    pub tls: Option<crate::transport::tls::TlsConfig>,
    /// The node's message rates of the last minutes (the dashboard's chart).
    pub rates: crate::metrics::RateHistory,
    /// Where users, connections and channels live on this node.
    pub topology: Topology,
}

impl crate::admin::AdminHost for Runtime {
    fn config(&self) -> &Config {
        &self.config
    }

    fn topology(&self) -> &Topology {
        &self.topology
    }

    fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    fn stats(&self) -> crate::metrics::Snapshot {
        let metrics: Vec<_> = self.links.iter().map(|l| l.metrics.clone()).collect();
        let mut snapshot = crate::metrics::Snapshot::collect(&metrics);
        snapshot.dead_reactors = self.dead_reactors() as u64;
        snapshot.inbox_drops = self.links.iter().map(|l| l.inbox_drops.load(Ordering::Relaxed)).sum();
        snapshot
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn dead_reactors(&self) -> usize {
        self.links.iter().filter(|l| l.dead.load(Ordering::Acquire)).count()
    }

    fn cluster_metrics(&self) -> Option<&crate::metrics::ClusterMetrics> {
        self.engine.as_ref().map(|_| &*self.cluster_metrics)
    }

    fn rate_history(&self) -> Vec<crate::metrics::RateSample> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.rates.samples(now)
    }

    fn started_at(&self) -> u64 {
        self.started_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::Poll;

    #[test]
    fn lossy_posts_stop_at_the_inbox_limit_and_are_counted() {
        let poll = Poll::new().unwrap();
        let link = Link::new(Waker::new(poll.registry(), WAKER).unwrap());
        for _ in 0..INBOX_LIMIT {
            assert!(link.send_lossy(Command::Shutdown { listener_closed: None }));
        }
        assert!(!link.send_lossy(Command::Shutdown { listener_closed: None }));
        assert_eq!(link.inbox_drops.load(Ordering::Relaxed), 1);
        assert!(
            link.send(Command::Shutdown { listener_closed: None }),
            "commands callers wait on are never dropped"
        );
    }
}
