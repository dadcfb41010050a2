//! A reactor driven by hand, without a poll loop or peers, for fuzz targets and tests
//! (feature `testing`): bytes go through the real read path (handshake, JWT, frames, the
//! handler) exactly as if each chunk had arrived in one read.
//!
//! Owns: a one-reactor runtime and a socket the connections borrow. Does not touch: writing (the
//! queued output is dropped with the connection, so nothing is ever sent on the socket).
//!
//! Also a deterministic simulation (`sim_*`): connections on simulated streams
//! (`transport::sim`), and loop turns run with the loop's own turn (`begin_turn`, readiness,
//! `end_turn`), each stream read while it has bytes and written while it has output, every
//! read and write of the reactor short, refused or reset as the stream's seed decides. Time is
//! virtual: it starts when the harness is made and moves only by [`Harness::advance`], so
//! heartbeats, timeouts, token expiry, rate windows and history TTL run deterministically.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use mio::{Poll, Waker};

use super::Reactor;
use crate::auth::Verifier;
use crate::config::{AuthMode, Config};
use crate::limits::{Admission, PerIpAdmission};
use crate::reactor::handler::Handler;
use crate::runtime::{Link, Runtime, WAKER};
use crate::transport::sim::{self, SimClient};

pub struct Harness<H: Handler> {
    reactor: Reactor<crate::reactor::embed::Shared<H>>,
    /// The virtual clock: its origin, how far it has moved, and Unix time at the origin.
    origin: Instant,
    elapsed: std::time::Duration,
    unix_origin_ms: u64,
    /// Simulated connections: their token and the test's end.
    sims: Vec<(mio::Token, SimClient)>,
    /// The server side of one loopback connection; every fed connection uses a duplicate.
    socket: std::net::TcpStream,
    _client: std::net::TcpStream,
}

impl<H: Handler> Harness<H> {
    /// One reactor with `config` (its `workers` is forced to 1).
    pub fn new(mut config: Config, handler: H) -> io::Result<Self> {
        config.workers = 1;
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let verifier = match &config.auth {
            AuthMode::Jwt(j) => Some(Verifier::new(j).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?),
            AuthMode::Anonymous => None,
        };
        let poll = Poll::new()?;
        let link = Link::new(Waker::new(poll.registry(), WAKER)?);
        let listener = mio::net::TcpListener::bind("127.0.0.1:0".parse().map_err(io::Error::other)?)?;
        let local_addr = listener.local_addr()?;
        let client = std::net::TcpStream::connect(local_addr)?;
        let socket = loop {
            match listener.accept() {
                Ok((s, _)) => break std::net::TcpStream::from(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => return Err(e),
            }
        };
        let topology = crate::topology::Topology::new(&config, 1, verifier.is_some(), false);
        let rt = Arc::new(Runtime {
            topology,
            config,
            verifier,
            admission: Admission::default(),
            per_ip: PerIpAdmission::default(),
            links: vec![link],
            local_addr,
            draining: AtomicBool::new(false),
            engine: None,
            cluster_metrics: Arc::default(),
            started_at: 0,
            history_epoch: "test".into(),
            tls: None,
            rates: Default::default(),
        });
        let mut listener = listener;
        super::register_listeners(&poll, &mut listener, None)?;
        let handler = crate::reactor::embed::HandlerFactory::make(Arc::new(handler), 0);
        // Virtual time starts now (tokens are checked against the system clock when they
        // arrive, so their expiry must be measured from the same origin).
        let (origin, unix_origin_ms) = (Instant::now(), crate::runtime::unix_ms_now());
        let mut reactor = Reactor::new(0, rt, handler, poll, (listener, None), (origin, unix_origin_ms));
        reactor.start();
        Ok(Harness {
            reactor,
            origin,
            elapsed: std::time::Duration::ZERO,
            unix_origin_ms,
            sims: Vec::new(),
            socket,
            _client: client,
        })
    }

    /// Feeds `chunks` to a fresh connection, each as one read, then drops the connection (and
    /// everything it queued). Timers due by now fire first, so state does not pile up.
    pub fn feed(&mut self, chunks: &[&[u8]]) -> io::Result<()> {
        let (now, unix_ms) = self.now();
        let r = &mut self.reactor;
        r.begin_turn(now, unix_ms);
        r.fire_timers();
        let sock = mio::net::TcpStream::from_std(self.socket.try_clone()?);
        let bucket = r.core.rt.per_ip.bucket(std::net::Ipv4Addr::LOCALHOST.into());
        r.core.rt.per_ip.try_admit(bucket, 0);
        let idx = r.core.insert_conn(crate::transport::Stream::Tcp(sock), bucket);
        let generation = r.core.conns[idx].generation;
        let mut buf = Vec::new();
        for chunk in chunks {
            if r.core.live(crate::runtime::conn_token(idx, generation)).is_none() {
                break;
            }
            buf.clear();
            buf.extend_from_slice(chunk);
            r.on_bytes(idx, generation, &mut buf);
        }
        r.core.forget_dirty();
        let open: Vec<usize> = r.core.conns.iter().map(|(i, _)| i).collect();
        for i in open {
            r.core.drop_conn(i, 1006);
        }
        r.report_closed();
        Ok(())
    }

    /// Connections, users and rooms still held (all should be gone after `feed`, users once
    /// their rate window cools).
    pub fn census(&self) -> crate::ask::Census {
        self.reactor.core.census()
    }

    /// A new connection on a simulated stream whose faults come from `seed`, as if just
    /// accepted: the test writes its handshake with the returned end.
    pub fn sim_connect(&mut self, seed: u64) -> Option<SimClient> {
        let r = &mut self.reactor;
        let peer = std::net::SocketAddr::from(([127, 0, 0, 2], 40000 + (seed % 20000) as u16));
        let bucket = r.core.rt.per_ip.bucket(peer.ip());
        if !r.core.rt.per_ip.try_admit(bucket, 0) || !r.core.rt.admission.try_admit(r.core.rt.config.max_connections) {
            return None;
        }
        let (end, client) = sim::pair(seed, peer);
        let idx = r.core.insert_conn(crate::transport::Stream::Sim(end), bucket);
        self.sims.push((r.core.token_of(idx), client.clone()));
        Some(client)
    }

    /// [`sim_connect`](Self::sim_connect) on a TLS listener: the connection gets a TLS session
    /// of `configs` (as the loop's accept gives one on a `--tls-cert` listener), and the test
    /// speaks TLS on the returned end (a rustls client over its bytes).
    pub fn sim_connect_tls(
        &mut self,
        seed: u64,
        configs: &Arc<crate::transport::tls::ServerConfigs>,
    ) -> Option<SimClient> {
        let client = self.sim_connect(seed)?;
        let r = &mut self.reactor;
        let (token, _) = self.sims.last()?;
        let idx = r.core.live(*token)?;
        r.core
            .codecs
            .tls_sessions
            .insert(idx, crate::transport::tls::TlsSession::new(configs.clone()));
        Some(client)
    }

    /// One loop turn over the simulated connections: each with bytes (or its EOF, or its
    /// reset) is read, timers and queued work run, output is written (and written again for
    /// each stream that has some left: its writable edge).
    pub fn sim_turn(&mut self) {
        let (now, unix_ms) = self.now();
        let r = &mut self.reactor;
        r.begin_turn(now, unix_ms);
        // The poll's events: every stream with bytes (or its end) is readable; every stream
        // may have room, so each gets a writable edge (a spurious one writes nothing).
        r.drain_inbox();
        for (token, client) in &self.sims {
            r.on_ready(*token, client.readable(), false, true);
        }
        r.end_turn(&|| now);
        self.sims.retain(|(t, _)| r.core.live(*t).is_some());
    }

    /// Moves the virtual clock forward by `by`, in turns of at most one tick each (as a
    /// reactor with timers wakes every tick), so every timer due on the way fires in order.
    pub fn advance(&mut self, by: std::time::Duration) {
        let target = self.elapsed + by;
        while self.elapsed < target {
            self.elapsed = (self.elapsed + crate::runtime::TICK).min(target);
            self.sim_turn();
        }
    }

    /// The virtual clock: this instant and Unix milliseconds.
    fn now(&self) -> (Instant, u64) {
        (
            self.origin + self.elapsed,
            self.unix_origin_ms + self.elapsed.as_millis() as u64,
        )
    }

    /// Virtual time since the harness was made.
    pub fn elapsed(&self) -> std::time::Duration {
        self.elapsed
    }

    /// Publishes `data` as event `event` to its subscribers (as `ServerHandle::publish` does,
    /// carried out here at once). Returns false for an unknown event.
    pub fn sim_publish(&mut self, event: &str, data: serde_json::Value) -> bool {
        let r = &mut self.reactor;
        let Some(bit) = r.core.rt.config.event_bit(event) else {
            return false;
        };
        let o = crate::outgoing::Outgoing::envelope(crate::ask::Target::Subscribers(bit), event, data);
        for (ask, _) in r.core.rt.clone().topology.deliver_asks(&o, r.core.clock.instant) {
            r.core.carry_out(ask, None);
        }
        r.core.fan_out_groups();
        true
    }

    /// Simulated connections the reactor still holds.
    pub fn sim_open(&self) -> usize {
        self.sims.len()
    }
}
