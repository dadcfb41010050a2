//! A real `redis-server` for cluster tests: a port reserved for it, a temporary directory, no
//! persistence; stopped (by its PID) when dropped. `redis-cli` talks to it.
//!
//! Ports: a test run may be one of many test processes at once (`cargo test` runs binaries
//! one by one, but people and CI run suites side by side). A port picked by binding port 0
//! and then given to `redis-server` can be picked by another process in between, and two
//! tests then share one Redis (with the same key prefix and node ids: answers from the other
//! test's nodes). So each server's port is reserved: below the kernel's ephemeral range (no
//! socket bound to port 0 gets it), locked by a file every test process checks, for as long as
//! the server's owner lives (restarts on the same port included), and the server that answers
//! is checked to be our child.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    _reserved: ReservedPort,
    child: Option<Child>,
    dir: PathBuf,
    /// Extra `redis-server` arguments (a password, persistence), kept across restarts.
    args: Vec<String>,
    /// `redis-cli` arguments (a password).
    cli_args: Vec<String>,
}

/// A port held for one test server (see the module comment).
pub struct ReservedPort {
    pub port: u16,
    _lock: std::fs::File,
}

/// Reserves a free port in 20000..32000 (under Linux's default ephemeral range, 32768-60999).
pub fn reserve_port() -> ReservedPort {
    let dir = std::env::temp_dir().join("wsedge-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut x = u64::from(std::process::id()) << 32 | u64::from(nanos) | 1;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
        else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // another test process holds it
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue; // something else listens there
        }
        return ReservedPort { port, _lock: file };
    }
    panic!("no free port in 20000..32000 for a test server");
}

/// `redis-server` and `redis-cli` are there (Debian's `redis-server` package brings both), or
/// the test stops naming the package.
fn ensure_installed() {
    super::require("redis-server", "redis-server");
    super::require("redis-cli", "redis-server");
}

impl Redis {
    /// Starts a fresh server and waits until it answers PING.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts a fresh server with extra arguments (`--requirepass`, `--appendonly yes`, ...).
    pub fn start_with(args: &[&str]) -> Redis {
        Redis::start_on(reserve_port(), args)
    }

    /// Starts a fresh server on a port reserved beforehand (a node may be pointed at it first).
    pub fn start_on(reserved: ReservedPort, args: &[&str]) -> Redis {
        ensure_installed();
        let port = reserved.port;
        let dir = std::env::temp_dir().join(format!("wsedge-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            port,
            _reserved: reserved,
            child: None,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            cli_args: Vec::new(),
        };
        if let Some(i) = args.iter().position(|a| *a == "--requirepass") {
            r.cli_args = vec!["--no-auth-warning".into(), "-a".into(), args[i + 1].into()];
        }
        r.restart();
        r
    }

    /// A server that speaks only TLS on its port, with this certificate and key (PEM files;
    /// the certificate is also the CA `redis-cli` trusts).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Redis {
        ensure_installed();
        let reserved = reserve_port();
        let port = reserved.port;
        let dir = std::env::temp_dir().join(format!("wsedge-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let mut r = Redis {
            port,
            _reserved: reserved,
            child: None,
            dir,
            args: [
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &cert,
                "--tls-auth-clients",
                "no",
            ]
            .map(String::from)
            .to_vec(),
            cli_args: ["--tls", "--cacert", &cert].map(String::from).to_vec(),
        };
        r.restart();
        r
    }

    /// Stops the server at once (SIGKILL) and does not wait for its port: a master that dies.
    pub fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay open, nothing is
    /// answered meanwhile (a stalled Redis).
    pub fn freeze(&self, on: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sig = if on { "-STOP" } else { "-CONT" };
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    /// The password `redis-cli` uses from now on.
    pub fn cli_password(&mut self, password: &str) {
        self.cli_args = vec!["--no-auth-warning".into(), "-a".into(), password.into()];
    }

    /// Starts the server again on the same port (after `kill`).
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.args)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (Debian package redis-server; .ci/run installs it)");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The server answering is ours, not another test's.
        let info = self.cli(&["INFO", "server"]);
        let answering = info.lines().find_map(|l| l.trim().strip_prefix("process_id:"));
        assert_eq!(
            answering,
            Some(pid.to_string().as_str()),
            "another process's Redis answers on port {}",
            self.port
        );
    }

    /// Stops the server at once (SIGKILL): connections break as when Redis dies.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Until the port refuses connections, nodes could still be talking to it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> wsedge::config::RedisUrl {
        format!("redis://127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Runs `redis-cli` with `args`; its output (empty if the server is down).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(&self.cli_args)
            .args(args)
            .output()
            .expect("redis-cli is installed (with redis-server)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Subscribers of `channel` (nodes subscribed to it).
    pub fn numsub(&self, channel: &str) -> u64 {
        let out = self.cli(&["PUBSUB", "NUMSUB", channel]);
        out.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0)
    }

    /// Calls of one command so far (`INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        let key = format!("cmdstat_{}:calls=", command.to_lowercase());
        info.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Sentinel (`redis-server --sentinel`) watching one master as `mymaster`, quick to
/// fail over (1 s without an answer).
pub struct Sentinel {
    pub port: u16,
    _reserved: ReservedPort,
    child: Child,
    dir: PathBuf,
}

impl Sentinel {
    pub fn start(master_port: u16) -> Sentinel {
        ensure_installed();
        let reserved = reserve_port();
        let port = reserved.port;
        let dir = std::env::temp_dir().join(format!("wsedge-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 4000\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let s = Sentinel {
            port,
            _reserved: reserved,
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.master_port() != Some(master_port) {
            assert!(Instant::now() < deadline, "the sentinel did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed (with redis-server)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port of the master the sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        let out = self.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"]);
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Replicas the sentinel knows of.
    pub fn replicas(&self) -> usize {
        self.cli(&["SENTINEL", "replicas", "mymaster"])
            .lines()
            .filter(|l| l.trim() == "name")
            .count()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy in front of Redis for fault injection, one node's link at a time: it can make
/// subscription connections go silent (bytes from Redis read and dropped while the connection
/// stays open: what a probe must catch), stall every connection (nothing forwarded either way,
/// like a frozen network path), cut every connection, and refuse command connections (those
/// whose first command is not SUBSCRIBE) while letting subscriptions through.
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    next_id: std::sync::atomic::AtomicUsize,
    /// Subscription connections with an id below this are silenced.
    frozen_below: std::sync::atomic::AtomicUsize,
    /// Command connections are closed as they come.
    refuse_commands: std::sync::atomic::AtomicBool,
    /// Nothing is forwarded while true.
    stalled: std::sync::Mutex<bool>,
    unstalled: std::sync::Condvar,
    /// Both ends of every connection, to cut them.
    sockets: std::sync::Mutex<Vec<TcpStream>>,
    /// Replies to command connections wait while closed.
    replies: Gate,
    /// Commands from command connections wait while closed.
    commands: Gate,
    /// Counted in what subscription connections receive.
    marker: std::sync::Mutex<Vec<u8>>,
    marker_seen: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Gate {
    closed: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }

    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
    }
}

impl ProxyState {
    fn wait_while_stalled(&self) {
        let mut stalled = self.stalled.lock().unwrap();
        while *stalled {
            stalled = self.unstalled.wait(stalled).unwrap();
        }
    }
}

impl Proxy {
    pub fn new(redis_port: u16) -> Proxy {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(ProxyState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", redis_port)) else {
                    continue;
                };
                {
                    let mut all = st.sockets.lock().unwrap();
                    all.push(client.try_clone().unwrap());
                    all.push(upstream.try_clone().unwrap());
                }
                let id = st.next_id.fetch_add(1, Ordering::SeqCst);
                let subscriber = std::sync::Arc::new(AtomicBool::new(false));
                let (mut c_in, mut c_out) = (client.try_clone().unwrap(), client);
                let (mut u_in, mut u_out) = (upstream.try_clone().unwrap(), upstream);
                let sub = subscriber.clone();
                let st1 = st.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    let mut first = true;
                    while let Ok(n @ 1..) = c_in.read(&mut buf) {
                        let has = |w: &[u8]| buf[..n].windows(w.len()).any(|x| x.eq_ignore_ascii_case(w));
                        if has(b"SUBSCRIBE") {
                            sub.store(true, Ordering::SeqCst);
                        }
                        if first && !has(b"SUBSCRIBE") && st1.refuse_commands.load(Ordering::SeqCst) {
                            break;
                        }
                        first = false;
                        st1.wait_while_stalled();
                        if !sub.load(Ordering::SeqCst) {
                            st1.commands.pass();
                        }
                        if u_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = u_out.shutdown(std::net::Shutdown::Both);
                    let _ = c_in.shutdown(std::net::Shutdown::Both);
                });
                let st2 = st.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = u_in.read(&mut buf) {
                        let is_sub = subscriber.load(Ordering::SeqCst);
                        let silenced = is_sub && id < st2.frozen_below.load(Ordering::SeqCst);
                        st2.wait_while_stalled();
                        if is_sub {
                            let marker = st2.marker.lock().unwrap();
                            if !marker.is_empty() {
                                let seen = buf[..n].windows(marker.len()).filter(|w| *w == &marker[..]).count();
                                st2.marker_seen.fetch_add(seen, Ordering::SeqCst);
                            }
                        } else {
                            st2.replies.pass();
                        }
                        if !silenced && c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy { port, state }
    }

    pub fn url(&self) -> wsedge::config::RedisUrl {
        format!("redis://127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// From now on, every subscription connection made so far receives nothing.
    pub fn freeze_subscriptions(&self) {
        use std::sync::atomic::Ordering;
        let n = self.state.next_id.load(Ordering::SeqCst);
        self.state.frozen_below.store(n, Ordering::SeqCst);
    }

    /// Stops (or resumes) forwarding on every connection, which all stay open.
    pub fn stall(&self, on: bool) {
        *self.state.stalled.lock().unwrap() = on;
        self.state.unstalled.notify_all();
    }

    /// Closes every connection made so far (new ones are accepted).
    pub fn cut(&self) {
        for s in self.state.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Holds (or lets go) what Redis sends to command connections; subscriptions pass.
    pub fn hold_replies(&self, on: bool) {
        self.state.replies.set(on);
    }

    /// Holds (or lets go) what command connections send to Redis; subscriptions pass.
    pub fn hold_commands(&self, on: bool) {
        self.state.commands.set(on);
    }

    /// From now on, counts `marker` in what subscription connections receive.
    pub fn count_on_subscriptions(&self, marker: &[u8]) {
        *self.state.marker.lock().unwrap() = marker.to_vec();
        self.state.marker_seen.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many times the marker passed so far.
    pub fn marker_seen(&self) -> usize {
        self.state.marker_seen.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Command connections made from now on are closed at their first command (or let through
    /// again); subscriptions pass.
    pub fn refuse_commands(&self, on: bool) {
        self.state
            .refuse_commands
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A node of the cluster on `url` (two reactors), made as `tweak` says; returned once it has
/// joined.
pub fn cluster_node(
    url: wsedge::config::RedisUrl,
    prefix: &str,
    id: &str,
    tweak: impl FnOnce(&mut wsedge::Config),
) -> wsedge::RunningServer {
    let mut c = wsedge::Config {
        workers: 2,
        redis: Some(url),
        redis_prefix: prefix.to_string(),
        node_id: id.to_string(),
        ..super::config()
    };
    tweak(&mut c);
    let server = super::start(c);
    let h = server.handle();
    super::wait_until("the node joins the cluster", || {
        h.cluster_metrics()
            .is_some_and(|m| m.up.load(std::sync::atomic::Ordering::Acquire))
    });
    server
}

/// Faults take a backoff (up to 5 s) and a timeout to heal: waits for them are longer than
/// `common::wait_until`'s (30 s at most).
pub fn wait_long(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A node for fault tests: two reactors, a short Redis timeout (faults show quickly), made as
/// `tweak` says; not waiting to join.
pub fn fault_config(
    url: wsedge::config::RedisUrl,
    prefix: &str,
    id: &str,
    tweak: impl FnOnce(&mut wsedge::Config),
) -> wsedge::Config {
    let mut c = wsedge::Config {
        workers: 2,
        redis: Some(url),
        redis_prefix: prefix.to_string(),
        node_id: id.to_string(),
        redis_timeout: Duration::from_millis(500),
        ..super::config()
    };
    tweak(&mut c);
    c
}

/// `fault_config`'s node, returned once it has joined.
pub fn fault_node(
    url: wsedge::config::RedisUrl,
    prefix: &str,
    id: &str,
    tweak: impl FnOnce(&mut wsedge::Config),
) -> wsedge::RunningServer {
    let server = super::start(fault_config(url, prefix, id, tweak));
    let h = server.handle();
    wait_long("the node joins", || {
        h.cluster_metrics()
            .is_some_and(|m| m.up.load(std::sync::atomic::Ordering::Acquire))
    });
    server
}
