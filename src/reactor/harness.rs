//! A reactor driven by hand, without a poll loop or peers, for fuzz targets and tests
//! (feature `testing`): bytes go through the real read path (handshake, JWT, frames, the
//! handler) exactly as if each chunk had arrived in one read.
//!
//! Owns: a one-reactor runtime and a socket the connections borrow. Does not touch: writing (the
//! queued output is dropped with the connection, so nothing is ever sent on the socket).

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use mio::{Poll, Waker};

use super::{Link, Reactor, Runtime, WAKER};
use crate::auth::Verifier;
use crate::config::{AuthMode, Config};
use crate::handler::Handler;
use crate::limits::{Admission, PerIpAdmission};

pub struct Harness<H: Handler> {
    reactor: Reactor<crate::embed::Shared<H>>,
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
        let rt = Arc::new(Runtime {
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
        });
        let mut listener = listener;
        super::register_listeners(&poll, &mut listener, None)?;
        let handler = crate::embed::HandlerFactory::make(Arc::new(handler), 0);
        Ok(Harness {
            reactor: Reactor::new(0, rt, handler, poll, listener, None),
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
        let idx = r.core.insert_conn(sock, bucket);
        let generation = r.core.conns[idx].generation;
        let mut buf = Vec::new();
        for chunk in chunks {
            if r.core.live(super::conn_token(idx, generation)).is_none() {
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
    pub fn census(&self) -> super::Census {
        self.reactor.core.census()
    }
}
