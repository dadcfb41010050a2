//! A reactor driven by hand, without a poll loop or peers, for fuzz targets and tests
//! (feature `testing`): bytes go through the real read path (handshake, JWT, frames, the
//! handler) exactly as if each chunk had arrived in one read.
//!
//! Owns: a one-reactor runtime and a socket the connections borrow. Does not touch: writing (the
//! queued output is dropped with the connection, so nothing is ever sent on the socket).
//!
//! Also a deterministic simulation (`sim_*`): connections on simulated streams
//! (`transport::sim`), and loop turns run by hand with the loop's own steps, each stream read
//! while it has bytes and written while it has output, every read and write of the reactor
//! short, refused or reset as the stream's seed decides.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use mio::{Poll, Waker};

use super::Reactor;
use super::runtime::{Link, Runtime, WAKER};
use crate::auth::Verifier;
use crate::config::{AuthMode, Config};
use crate::handler::Handler;
use crate::limits::{Admission, PerIpAdmission};
use crate::transport::sim::{self, SimClient};

pub struct Harness<H: Handler> {
    reactor: Reactor<crate::embed::Shared<H>>,
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
        let handler = crate::embed::HandlerFactory::make(Arc::new(handler), 0);
        Ok(Harness {
            reactor: Reactor::new(0, rt, handler, poll, listener, None),
            sims: Vec::new(),
            socket,
            _client: client,
        })
    }

    /// Feeds `chunks` to a fresh connection, each as one read, then drops the connection (and
    /// everything it queued). Timers due by now fire first, so state does not pile up.
    pub fn feed(&mut self, chunks: &[&[u8]]) -> io::Result<()> {
        let r = &mut self.reactor;
        r.core.update_clock(Instant::now());
        r.fire_timers();
        let sock = mio::net::TcpStream::from_std(self.socket.try_clone()?);
        let bucket = r.core.rt.per_ip.bucket(std::net::Ipv4Addr::LOCALHOST.into());
        r.core.rt.per_ip.try_admit(bucket, 0);
        let idx = r.core.insert_conn(crate::transport::Stream::Tcp(sock), bucket);
        let generation = r.core.conns[idx].generation;
        let mut buf = Vec::new();
        for chunk in chunks {
            if r.core.live(super::runtime::conn_token(idx, generation)).is_none() {
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

    /// One loop turn over the simulated connections: each with bytes (or its EOF, or its
    /// reset) is read, timers and queued work run, output is written (and written again for
    /// each stream that has some left: its writable edge).
    pub fn sim_turn(&mut self) {
        let r = &mut self.reactor;
        r.core.update_clock(Instant::now());
        let readable: Vec<mio::Token> = self
            .sims
            .iter()
            .filter(|(_, c)| c.readable())
            .map(|(t, _)| *t)
            .collect();
        for token in readable {
            r.on_readable(token, false);
        }
        for token in std::mem::take(&mut r.read_again) {
            r.on_readable(token, true);
        }
        r.drain_inbox();
        r.fire_timers();
        r.drain_batch();
        r.after_callbacks();
        r.core.flush_dirty();
        if !r.core.reupgrades.is_empty() {
            r.take_reupgrades();
            r.core.flush_dirty();
        }
        if r.core.has_replays() {
            r.core.feed_replays();
            r.core.flush_dirty();
        }
        for (token, _) in &self.sims {
            r.core.on_writable(*token);
        }
        r.report_writable();
        r.report_closed();
        self.sims.retain(|(t, _)| r.core.live(*t).is_some());
    }

    /// Publishes `data` as event `event` to its subscribers (as `ServerHandle::publish` does,
    /// carried out here at once). Returns false for an unknown event.
    pub fn sim_publish(&mut self, event: &str, data: serde_json::Value) -> bool {
        let r = &mut self.reactor;
        let Some(bit) = r.core.rt.config.event_bit(event) else {
            return false;
        };
        let o = crate::outgoing::Outgoing::envelope(crate::ask::Target::Subscribers(bit), event, data);
        for (ask, _) in r.core.rt.clone().topology.deliver_asks(&o) {
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
