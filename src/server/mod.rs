//! Starting and stopping reactors; the thread-safe `ServerHandle` is in `handle`.
//!
//! Owns: listener creation (`SO_REUSEPORT`, one per reactor, all on one port), the cluster
//! engine's choice, thread spawning, reactors run on the embedder's threads, and reactor death.
//! Does not touch: connection state (commands go through each reactor's inbox).

mod handover;

pub use crate::handle::{Delivery, HandleError, ServerHandle};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

use crate::auth::Verifier;
use crate::cluster::{Engine, RedisEngine};
use crate::config::{AuthMode, Config, ConfigError};
use crate::embed::HandlerFactory;
use crate::limits::Admission;
use crate::metrics::ClusterMetrics;
use crate::reactor::Reactor;
use crate::runtime::{Link, Runtime, WAKER};

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
    #[error("redis: {0}")]
    Redis(std::io::Error),
    #[error("handover socket: {0}")]
    Handover(std::io::Error),
    #[error("tls: {0}")]
    Tls(#[from] crate::transport::tls::TlsError),
    #[error("tls: --tls-cert and --tls-key go together")]
    TlsPair,
    /// The handler factory cannot make a handler for every reactor (see
    /// [`HandlerFactory::check`]).
    #[error("handler factory: {0}")]
    Factory(String),
}

/// Entry point: [`Server::start`] (reactor threads owned by the server), or
/// [`Server::prepare`] (reactors run on threads you create).
pub struct Server;

impl Server {
    /// Validates `config`, binds the listeners and starts one reactor thread per worker.
    /// `factory` is a shared [`crate::Handler`] or any [`HandlerFactory`] (one handler per reactor).
    pub fn start<F: HandlerFactory>(config: Config, factory: F) -> Result<RunningServer, ServerError> {
        Self::start_with_engine(config, factory, None)
    }

    /// [`start`](Self::start) on a cluster engine of yours (`None`: the one `config` names,
    /// Redis with `redis`, else none).
    pub fn start_with_engine<F: HandlerFactory>(
        config: Config,
        factory: F,
        engine: Option<Arc<dyn Engine>>,
    ) -> Result<RunningServer, ServerError> {
        let prepared = Self::prepare_with_engine(config, factory, engine)?;
        let (handle, admin_addr) = (prepared.handle.clone(), prepared.admin_addr);
        let mut threads = Vec::new();
        for runner in prepared.reactors {
            let t = std::thread::Builder::new()
                .name(format!("wsedge-reactor-{}", runner.index))
                .spawn(move || {
                    let _ = runner.run();
                })?;
            threads.push(t);
        }
        log::info!("listening on {} with {} reactor(s)", handle.local_addr(), threads.len());
        if let Some(a) = admin_addr {
            log::info!("admin API also on http://{a}");
        }
        Ok(RunningServer {
            handle,
            threads,
            admin_addr,
        })
    }

    /// Validates `config` and binds the listeners, without starting anything: run each of the
    /// returned reactors on a thread of yours (or one on the current thread) with
    /// [`ReactorRunner::run`]. Connections are accepted (by the kernel) from now on and served
    /// once their reactor runs.
    pub fn prepare<F: HandlerFactory>(config: Config, factory: F) -> Result<Prepared<F>, ServerError> {
        Self::prepare_with_engine(config, factory, None)
    }

    /// [`prepare`](Self::prepare) on a cluster engine of yours (see
    /// [`start_with_engine`](Self::start_with_engine)).
    pub fn prepare_with_engine<F: HandlerFactory>(
        config: Config,
        factory: F,
        engine: Option<Arc<dyn Engine>>,
    ) -> Result<Prepared<F>, ServerError> {
        config.validate()?;
        let cluster_metrics = Arc::new(ClusterMetrics::default());
        let engine = match (engine, &config.redis) {
            (Some(e), _) => Some(e),
            (None, Some(url)) => Some(Arc::new(
                RedisEngine::new(&config, url, cluster_metrics.clone()).map_err(ServerError::Redis)?,
            ) as Arc<dyn Engine>),
            (None, None) => None,
        };
        let mut config = config;
        if engine.as_ref().is_some_and(|e| !e.keeps_history()) && config.history_enabled() {
            log::info!("the cluster engine keeps no history: history is off on this node");
            config.history_size = 0;
        }
        let verifier = match &config.auth {
            AuthMode::Jwt(j) => Some(Verifier::new(j)?),
            AuthMode::Anonymous => None,
        };
        let exclusive = !config.reuse_port;
        // `--handover-socket`: the sockets of a running predecessor, if there is one.
        let handover_path = config.handover_socket.clone();
        let mut inherited = match &handover_path {
            Some(p) => handover::take_over(p, config.listen, config.admin_listen).map_err(ServerError::Handover)?,
            None => None,
        };
        let mut main = match inherited.as_mut() {
            Some(i) => std::mem::take(&mut i.main),
            None => vec![bind_first(config.listen, exclusive)?],
        };
        let mut admin_std = inherited
            .as_mut()
            .map(|i| std::mem::take(&mut i.admin))
            .unwrap_or_default();
        // Every inherited socket is served (connections may wait in any of their queues).
        config.workers = config.workers.max(main.len()).max(admin_std.len());
        // After a handover the successor runs as many reactors as sockets it was given.
        factory.check(config.workers).map_err(ServerError::Factory)?;
        let local_addr = main[0].local_addr()?;
        while main.len() < config.workers {
            main.push(bind_reuseport(local_addr)?);
        }
        if let Some(addr) = config.admin_listen
            && admin_std.is_empty()
        {
            admin_std.push(bind_first(addr, exclusive)?);
        }
        let mut admin_addr = None;
        if let Some(bound) = admin_std.first().map(std::net::TcpListener::local_addr).transpose()? {
            while admin_std.len() < config.workers {
                admin_std.push(bind_reuseport(bound)?);
            }
            admin_addr = Some(bound);
        }
        // Copies of the listening sockets, for the next successor.
        let passable = match &handover_path {
            Some(_) => Some((
                main.iter()
                    .map(std::net::TcpListener::try_clone)
                    .collect::<Result<Vec<_>, _>>()?,
                admin_std
                    .iter()
                    .map(std::net::TcpListener::try_clone)
                    .collect::<Result<Vec<_>, _>>()?,
            )),
            None => None,
        };
        let listeners: Vec<mio::net::TcpListener> = main.into_iter().map(mio::net::TcpListener::from_std).collect();
        let mut polls = Vec::new();
        let mut links = Vec::new();
        for _ in 0..config.workers {
            let poll = Poll::new()?;
            links.push(Link::new(Waker::new(poll.registry(), WAKER)?));
            polls.push(poll);
        }
        // `--admin-listen`: one listener per reactor on the same port, like the main one, so
        // admin requests are served by every reactor's loop.
        let mut admin_listeners: Vec<Option<mio::net::TcpListener>> = admin_std
            .into_iter()
            .map(|l| Some(mio::net::TcpListener::from_std(l)))
            .collect();
        admin_listeners.resize_with(config.workers, || None);
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::transport::tls::TlsConfig::load(cert, key)?),
            (None, None) => None,
            _ => return Err(ServerError::TlsPair),
        };
        let topology = crate::topology::Topology::new(&config, links.len(), verifier.is_some(), engine.is_some());
        let rt = Arc::new(Runtime {
            topology,
            config,
            verifier,
            admission: Admission::default(),
            per_ip: crate::limits::PerIpAdmission::default(),
            links,
            local_addr,
            draining: AtomicBool::new(false),
            engine,
            cluster_metrics,
            started_at: crate::runtime::unix_ms_now() / 1000,
            history_epoch: crate::history::History::process_epoch(),
            tls,
            rates: Default::default(),
        });
        let factory = Arc::new(factory);
        let mut reactors = Vec::new();
        let sockets = listeners.into_iter().zip(admin_listeners);
        for (index, (poll, (mut listener, mut admin))) in polls.into_iter().zip(sockets).enumerate() {
            crate::reactor::register_listeners(&poll, &mut listener, admin.as_mut())?;
            reactors.push(ReactorRunner {
                index,
                rt: rt.clone(),
                factory: factory.clone(),
                poll,
                listener,
                admin,
            });
        }
        let handle = ServerHandle::from_runtime(rt);
        if let Some(i) = inherited {
            // Registered: the predecessor may stop accepting (what it leaves queued is ours).
            i.ready();
        }
        if let (Some(path), Some((main, admin))) = (handover_path, passable) {
            handover::serve(path, main, admin, handle.clone()).map_err(ServerError::Handover)?;
        }
        Ok(Prepared {
            handle,
            reactors,
            admin_addr,
        })
    }
}

/// A server whose reactors you run yourself (see [`Server::prepare`]).
pub struct Prepared<F> {
    pub handle: ServerHandle,
    /// One per worker; each must be run (on any thread) for its share of connections to be
    /// served.
    pub reactors: Vec<ReactorRunner<F>>,
    /// The separate admin address, if `admin_listen` was set.
    pub admin_addr: Option<SocketAddr>,
}

/// One reactor, ready to run on the thread that calls [`run`](Self::run).
pub struct ReactorRunner<F> {
    index: usize,
    rt: Arc<Runtime>,
    factory: Arc<F>,
    poll: Poll,
    listener: mio::net::TcpListener,
    admin: Option<mio::net::TcpListener>,
}

impl<F: HandlerFactory> ReactorRunner<F> {
    /// This reactor's index (0-based; connection ids and `/metrics` name it).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Makes this reactor's handler (on this thread) and runs the loop until the server has
    /// drained. An `Err` says the reactor died of a panic outside any handler callback; the
    /// rest of the server is then drained (see [`RunningServer::wait`]).
    pub fn run(self) -> Result<(), ServerError> {
        let ReactorRunner {
            index,
            rt,
            factory,
            poll,
            listener,
            admin,
        } = self;
        let died = rt.clone();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let handler = factory.make(index);
            let clock = (std::time::Instant::now(), crate::runtime::unix_ms_now());
            Reactor::new(index, rt, handler, poll, (listener, admin), clock).run();
        }));
        crate::runtime::set_reactor_thread(false);
        if ran.is_err() {
            reactor_died(&died, index);
            return Err(ServerError::ReactorDied(1));
        }
        Ok(())
    }

    /// Makes this reactor's handler (on this thread) and hands the loop to you, to run one
    /// turn at a time with [`ReactorDriver::turn`] (from the thread that will drive it; the
    /// handler never leaves it). Its poll's descriptor ([`AsRawFd`](std::os::fd::AsRawFd))
    /// can sit in your own epoll or `mio::Poll`: when it is readable, a turn has work.
    pub fn into_driver(self) -> ReactorDriver<F::Handler> {
        let ReactorRunner {
            index,
            rt,
            factory,
            poll,
            listener,
            admin,
        } = self;
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory.make(index)));
        let reactor = match made {
            Ok(handler) => {
                let clock = (std::time::Instant::now(), crate::runtime::unix_ms_now());
                Some(Reactor::new(index, rt.clone(), handler, poll, (listener, admin), clock))
            }
            Err(_) => {
                reactor_died(&rt, index);
                None
            }
        };
        // The driving thread is this reactor's thread from now on (until the driver is
        // dropped): a ServerHandle call there that would wait for reactors is refused, since
        // this reactor cannot turn while its thread waits.
        crate::runtime::set_reactor_thread(true);
        ReactorDriver {
            reactor,
            events: mio::Events::with_capacity(1024),
            started: false,
            rt,
            index,
        }
    }
}

/// A reactor run turn by turn by its embedder (see [`ReactorRunner::into_driver`]).
pub struct ReactorDriver<H: crate::embed::ReactorHandler> {
    /// `None` once finished (drained, or died of a panic).
    reactor: Option<Reactor<H>>,
    events: mio::Events,
    started: bool,
    rt: Arc<Runtime>,
    index: usize,
}

impl<H: crate::embed::ReactorHandler> ReactorDriver<H> {
    /// Runs one turn: waits for events at most `timeout` (`Some(Duration::ZERO)`: not at
    /// all; `None`: until there is work or a timer is due), then handles them, fires due
    /// timers and writes. `Ok(true)` while the reactor runs; `Ok(false)` once it has drained
    /// and stopped (every connection closed, `on_stop` called); `Err` if it died of a panic
    /// outside any handler callback (the rest of the server then drains).
    pub fn turn(&mut self, timeout: Option<std::time::Duration>) -> Result<bool, ServerError> {
        let Some(reactor) = self.reactor.as_mut() else {
            return Ok(false);
        };
        let (events, started) = (&mut self.events, &mut self.started);
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::runtime::set_reactor_thread(true);
            if !*started {
                *started = true;
                // Timers set in on_start count from now, not from when the driver was made.
                reactor.begin_turn(std::time::Instant::now(), crate::runtime::unix_ms_now());
                reactor.start();
            }
            let go_on = reactor.poll_turn(events, timeout);
            if !go_on {
                reactor.stop();
            }
            go_on
        }));
        match ran {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.reactor = None;
                Ok(false)
            }
            Err(_) => {
                self.reactor = None;
                reactor_died(&self.rt, self.index);
                Err(ServerError::ReactorDied(1))
            }
        }
    }

    /// This reactor's index.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl<H: crate::embed::ReactorHandler> Drop for ReactorDriver<H> {
    /// A driver dropped before its reactor finished stops it there: its connections close
    /// (1006), its asks are answered as lost, and nobody waits for it any more.
    fn drop(&mut self) {
        if let Some(mut reactor) = self.reactor.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reactor.stop()));
        }
        crate::runtime::set_reactor_thread(false);
    }
}

impl<H: crate::embed::ReactorHandler> std::os::fd::AsRawFd for ReactorDriver<H> {
    /// The reactor's poll (an epoll descriptor); -1 once the reactor has finished.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.reactor.as_ref().map_or(-1, |r| r.poll_fd())
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
    link.abandon_inbox(i, &rt.links);
    ServerHandle::from_runtime(rt.clone()).shutdown();
}

/// The first listener on `addr`. Every reactor binds its own with `SO_REUSEPORT`; unless the
/// port is to be shared with other processes (`exclusive`), a probe bound without the option
/// first makes a port another process holds an error instead of a silent split of its traffic.
fn bind_first(addr: SocketAddr, exclusive: bool) -> Result<std::net::TcpListener, ServerError> {
    if exclusive && addr.port() != 0 {
        let probe = || -> std::io::Result<()> {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            s.set_reuse_address(true)?;
            s.bind(&addr.into())
        };
        probe().map_err(|source| ServerError::Bind { addr, source })?;
    }
    bind_reuseport(addr)
}

fn bind_reuseport(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let bind = || -> std::io::Result<std::net::TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        Ok(s.into())
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
