//! A real `redis-server` for cluster tests: a free port, a temporary directory, no
//! persistence; stopped (by its PID) when dropped. `redis-cli` talks to it.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Installs Debian's `redis-server` (which brings `redis-cli`) once if it is missing, so
/// `cargo test` works on a fresh machine (as root; `.ci/run` installs it up front).
fn ensure_installed() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let present = |cmd: &str| {
            Command::new(cmd)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        if present("redis-server") && present("redis-cli") {
            return;
        }
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(
            apt(&["update"]) && apt(&["install", "-y", "redis-server"]),
            "cluster tests need redis-server; install it with: apt-get install redis-server"
        );
    });
}

impl Redis {
    /// Starts a fresh server and waits until it answers PING.
    pub fn start() -> Redis {
        ensure_installed();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("wsedge-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis { port, child: None, dir };
        r.restart();
        r
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
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (Debian package redis-server; .ci/run installs it)");
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
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy in front of Redis that can make subscription connections go silent: bytes from
/// Redis are read and dropped while the connection stays open (the failure mode a probe must
/// catch). Connections made after `freeze_subscriptions` pass normally.
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    next_id: std::sync::atomic::AtomicUsize,
    /// Subscription connections with an id below this are silenced.
    frozen_below: std::sync::atomic::AtomicUsize,
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
                let id = st.next_id.fetch_add(1, Ordering::SeqCst);
                let subscriber = std::sync::Arc::new(AtomicBool::new(false));
                let (mut c_in, mut c_out) = (client.try_clone().unwrap(), client);
                let (mut u_in, mut u_out) = (upstream.try_clone().unwrap(), upstream);
                let sub = subscriber.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = c_in.read(&mut buf) {
                        if buf[..n].windows(9).any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE")) {
                            sub.store(true, Ordering::SeqCst);
                        }
                        if u_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = u_out.shutdown(std::net::Shutdown::Both);
                });
                let st2 = st.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = u_in.read(&mut buf) {
                        let silenced =
                            subscriber.load(Ordering::SeqCst) && id < st2.frozen_below.load(Ordering::SeqCst);
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
