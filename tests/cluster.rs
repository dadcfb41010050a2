//! Nodes joined over a real `redis-server`: every publish route reaches every node, one PUBLISH
//! per message, cluster-wide presence, rooms, stats, disconnects and per-user limits, and what
//! happens when Redis goes away and comes back.
mod common;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use common::http::json;
use common::redis::Redis;
use common::*;
use serde_json::{Value, json};
use wsedge::{Config, LimitPolicy, RunningServer};

fn node(redis: &Redis, prefix: &str, id: &str, tweak: impl FnOnce(&mut Config)) -> RunningServer {
    common::redis::cluster_node(redis.url(), prefix, id, |c| {
        c.max_connections_per_user = 10;
        tweak(c);
    })
}

fn admin() -> String {
    admin_token("root")
}

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    json(addr, "POST", path, Some(&admin()), Some(body))
}

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    json(addr, "GET", path, Some(&admin()), None)
}

/// Connects `user` to `addr` and waits until the cluster routes the user's messages to it.
fn connect_user(redis: &Redis, prefix: &str, addr: SocketAddr, user: &str) -> (Ws, String) {
    let (ws, hello) = connect(addr, &token(user));
    let channel = format!("{prefix}:user:{user}");
    wait_until("the user's channel is subscribed", || redis.numsub(&channel) >= 1);
    (ws, hello["data"]["connection_id"].as_str().unwrap().to_string())
}

#[test]
fn every_route_reaches_every_node_with_one_publish_per_message() {
    let redis = Redis::start();
    let p = "routes";
    let n1 = node(&redis, p, "n1", |_| {});
    let n2 = node(&redis, p, "n2", |_| {});
    let n3 = node(&redis, p, "n3", |_| {});
    let a1 = n1.local_addr();
    let (mut carol, _) = connect_user(&redis, p, a1, "carol");
    let (mut alice, alice_id) = connect_user(&redis, p, n2.local_addr(), "alice");
    let (mut bob, _) = connect_user(&redis, p, n3.local_addr(), "bob");

    // A user on another node.
    let (status, body) = post(a1, "/ws/users/alice/messages", json!({"type": "hi", "data": {"n": 1}}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["connections_reached"], 0, "none on this node");
    assert_eq!(body["data"]["nodes_reached"], 1, "{body}");
    let m = recv_json(&mut alice);
    assert_eq!((m["type"].as_str(), m["data"]["n"].as_i64()), (Some("hi"), Some(1)));
    assert_eq!(m["id"], body["data"]["message_id"]);

    // Everyone: every node, including the publishing one.
    let (_, body) = post(a1, "/ws/broadcast", json!({"type": "all", "text": "x"}));
    assert_eq!(body["data"]["nodes_reached"], 3, "{body}");
    assert_eq!(body["data"]["connections_reached"], 1, "carol is on this node");
    for ws in [&mut carol, &mut alice, &mut bob] {
        assert_eq!(recv_json(ws)["source"], "admin_broadcast");
    }

    // An event's subscribers on another node.
    send_json(
        &mut bob,
        json!({"type": "subscribe", "data": {"events": ["review.updated"]}}),
    );
    assert_eq!(recv_json(&mut bob)["type"], "subscription.acknowledged");
    wait_until("the event channel is subscribed", || {
        redis.numsub(&format!("{p}:event:review.updated")) == 1
    });
    let (_, body) = post(a1, "/ws/events/review.updated", json!({"data": {"r": 7}}));
    assert_eq!(body["data"]["nodes_reached"], 1, "{body}");
    assert_eq!(recv_json(&mut bob)["data"]["r"], 7);

    // A room whose member is on another node; membership changed from this one.
    let (status, body) = json(a1, "PUT", "/ws/rooms/lobby/members/bob", Some(&admin()), None);
    assert_eq!((status, body["data"]["connections"].as_i64()), (200, Some(1)), "{body}");
    assert_eq!(recv_json(&mut bob)["type"], "room.joined");
    wait_until("the room channel is subscribed", || {
        redis.numsub(&format!("{p}:room:lobby")) == 1
    });
    assert_eq!(get(a1, "/ws/rooms/lobby/members").1["data"]["members"], json!(["bob"]));
    let (_, body) = post(a1, "/ws/rooms/lobby/messages", json!({"data": {"t": "yo"}}));
    assert_eq!(body["data"]["nodes_reached"], 1);
    let m = recv_json(&mut bob);
    assert_eq!(
        (m["type"].as_str(), m["data"]["t"].as_str()),
        (Some("room.message"), Some("yo"))
    );
    let (status, _) = json(a1, "DELETE", "/ws/rooms/lobby/members/nobody", Some(&admin()), None);
    assert_eq!(status, 404, "a user connected nowhere");

    // One connection by id, from the library on a third node.
    let id: uuid::Uuid = alice_id.parse().unwrap();
    let d = n3
        .handle()
        .send_envelope(wsedge::Target::Connection(id), "direct", json!({"only": "alice"}))
        .expect("the cluster is up");
    assert_eq!((d.recipients, d.nodes_reached), (0, 3));
    assert_eq!(recv_json(&mut alice)["data"]["only"], "alice");

    // Presence and stats answered over the cluster.
    let (_, body) = get(a1, "/ws/users/alice/presence");
    assert_eq!(body["data"]["online"], true);
    assert_eq!(body["data"]["connections"][0]["node_id"], "n2");
    assert_eq!(body["data"]["connections"][0]["connection_id"], alice_id.as_str());
    assert_eq!(get(a1, "/ws/users/nobody/presence").1["data"]["online"], false);
    let (_, body) = get(n3.local_addr(), "/ws/stats");
    assert_eq!(body["data"]["total_connections"], 3, "{body}");
    let nodes: Vec<&str> = body["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["n3", "n1", "n2"], "this node first, then the others by id");
    assert_eq!(body["data"]["nodes"][1]["connections"], 1);

    // One PUBLISH per message: 100 messages to alice, in order, exactly once each. Probes
    // (one per node every half second) are counted when sent and may reach Redis just before
    // or after a reading: up to one per node either way.
    let metric = |s: &RunningServer, probes: bool| {
        let m = s.handle();
        let c = m.cluster_metrics().unwrap();
        if probes { c.probes.get() } else { c.publishes.get() }
    };
    let total = |probes: bool| -> u64 { [&n1, &n2, &n3].iter().map(|s| metric(s, probes)).sum() };
    let (redis_before, publishes_before, probes_before) = (redis.calls("PUBLISH"), total(false), total(true));
    let h1 = n1.handle();
    for i in 0..100 {
        h1.send_to_user("alice", "seq", json!({"i": i})).unwrap();
    }
    for i in 0..100 {
        assert_eq!(recv_json(&mut alice)["data"]["i"], i);
    }
    let publishes = total(false) - publishes_before;
    let probes = total(true) - probes_before;
    let seen = redis.calls("PUBLISH") - redis_before;
    assert_eq!(publishes, 100, "100 messages, 100 publishes");
    assert!(
        seen >= 100 && (seen - 100).abs_diff(probes) <= 3,
        "Redis saw {seen} PUBLISHes for 100 messages and {probes} probes"
    );

    // Disconnects from any node.
    let (status, body) = json(a1, "DELETE", "/ws/users/bob", Some(&admin()), None);
    assert_eq!(
        (status, body["data"]["disconnected"].as_i64()),
        (200, Some(1)),
        "{body}"
    );
    assert_eq!(expect_close(&mut bob).0, 1000);
    let path = format!("/ws/connections/{alice_id}");
    assert_eq!(get(n3.local_addr(), &path).1["data"]["node_id"], "n2");
    let (status, _) = json(n3.local_addr(), "DELETE", &path, Some(&admin()), None);
    assert_eq!(status, 200);
    assert_eq!(expect_close(&mut alice).0, 1000);
    assert_eq!(
        json(a1, "DELETE", &path, Some(&admin()), None).0,
        404,
        "gone everywhere"
    );
    assert_eq!(json(a1, "DELETE", "/ws/users/bob", Some(&admin()), None).0, 404);
}

#[test]
fn per_user_limit_holds_across_nodes() {
    let redis = Redis::start();
    let evict = |c: &mut Config| {
        c.max_connections_per_user = 2;
        c.per_user_limit_policy = LimitPolicy::EvictOldest;
    };
    let n1 = node(&redis, "evict", "e1", evict);
    let n2 = node(&redis, "evict", "e2", evict);
    let (mut first, _) = connect(n1.local_addr(), &token("dora"));
    let (_second, _) = connect(n2.local_addr(), &token("dora"));
    let (_third, _) = connect(n2.local_addr(), &token("dora"));
    assert_eq!(
        expect_close(&mut first),
        (1008, "connection limit exceeded".to_string()),
        "the oldest, on the other node"
    );
    let reject = |c: &mut Config| {
        c.max_connections_per_user = 2;
        c.per_user_limit_policy = LimitPolicy::Reject;
    };
    let r1 = node(&redis, "reject", "r1", reject);
    let r2 = node(&redis, "reject", "r2", reject);
    let (mut a, _) = connect(r1.local_addr(), &token("eve"));
    let (_b, _) = connect(r2.local_addr(), &token("eve"));
    let mut c = try_connect(r2.local_addr(), &format!("/ws?token={}", token("eve")), &[]).unwrap();
    let m = recv_json(&mut c);
    assert_eq!(m["data"]["code"], "CONNECTION_LIMIT_EXCEEDED", "{m}");
    assert_eq!(expect_close(&mut c).0, 1008);
    // The refused one never counted; the first one still works.
    send_json(&mut a, json!({"type": "ping", "data": {}}));
    assert_eq!(recv_json(&mut a)["type"], "pong");
    // A closed connection stops counting at once.
    drop(a);
    let mut fresh = None;
    wait_until("a slot frees up when a connection closes", || {
        let mut ws = try_connect(r1.local_addr(), &format!("/ws?token={}", token("eve")), &[]).unwrap();
        let ok = recv_json(&mut ws)["type"] == "connection.established";
        fresh = Some(ws);
        ok
    });
}

#[test]
fn a_killed_node_stops_counting_and_leaves_the_stats() {
    let redis = Redis::start();
    let mut killed = std::process::Command::new(env!("CARGO_BIN_EXE_wsedge"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--jwt-secret", SECRET, "--node-id", "doomed", "--node-ttl", "1"])
        .args([
            "--redis",
            &format!("redis://127.0.0.1:{}", redis.port),
            "--redis-prefix",
            "kill",
        ])
        .args(["--max-connections-per-user", "1", "--per-user-limit-policy", "reject"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut killed);
    wait_until("the process joins", || redis.numsub("kill:node:doomed") == 1);
    let (_gone, _) = connect(addr, &token("finn"));
    let survivor = node(&redis, "kill", "alive", |c| {
        c.max_connections_per_user = 1;
        c.per_user_limit_policy = LimitPolicy::Reject;
    });
    let a = survivor.local_addr();
    let mut refused = try_connect(a, &format!("/ws?token={}", token("finn")), &[]).unwrap();
    assert_eq!(recv_json(&mut refused)["data"]["code"], "CONNECTION_LIMIT_EXCEEDED");
    assert_eq!(get(a, "/ws/stats").1["data"]["nodes"].as_array().unwrap().len(), 2);

    killed.kill().unwrap();
    killed.wait().unwrap();
    assert_eq!(
        get(a, "/ws/stats").1["data"]["nodes"].as_array().unwrap().len(),
        1,
        "a dead node does not answer"
    );
    let mut admitted = None;
    wait_until("the dead node's connection stops counting (node ttl)", || {
        let mut ws = try_connect(a, &format!("/ws?token={}", token("finn")), &[]).unwrap();
        let ok = recv_json(&mut ws)["type"] == "connection.established";
        admitted = Some(ws);
        ok
    });
}

/// The address a `wsedge serve` child listens on, from its log.

#[test]
fn redis_going_away_fails_publishes_and_delivery_resumes_without_duplicates() {
    let mut redis = Redis::start();
    let p = "outage";
    let one_each = |c: &mut Config| {
        c.max_connections_per_user = 1;
        c.per_user_limit_policy = LimitPolicy::Reject;
    };
    let n1 = node(&redis, p, "o1", one_each);
    let n2 = node(&redis, p, "o2", one_each);
    let (mut gus, _) = connect_user(&redis, p, n2.local_addr(), "gus");
    let (mut local, _) = connect(n1.local_addr(), &token("hal"));
    assert_eq!(
        post(
            n1.local_addr(),
            "/ws/users/gus/messages",
            json!({"type": "m", "data": {"i": 0}})
        )
        .0,
        200
    );
    assert_eq!(recv_json(&mut gus)["data"]["i"], 0);

    redis.kill();
    let m1 = n1.handle();
    wait_until("the node notices", || {
        !m1.cluster_metrics().unwrap().up.load(Ordering::Acquire)
    });
    let (status, body) = post(
        n1.local_addr(),
        "/ws/users/gus/messages",
        json!({"type": "m", "data": {"i": 1}}),
    );
    assert_eq!((status, body["detail"].as_str()), (503, Some("cluster unavailable")));
    assert_eq!(
        m1.broadcast("lost", json!({})),
        Err(wsedge::HandleError::ClusterUnavailable),
        "the library says so too"
    );
    // The per-user limit falls back to the node's own count: a second connection of hal here
    // is refused, a new user is let in.
    let mut again = try_connect(n1.local_addr(), &format!("/ws?token={}", token("hal")), &[]).unwrap();
    assert_eq!(recv_json(&mut again)["data"]["code"], "CONNECTION_LIMIT_EXCEEDED");
    let (mut ida, _) = connect(n1.local_addr(), &token("ida"));
    // Nodes keep serving their own clients meanwhile.
    send_json(&mut local, json!({"type": "ping", "data": {}}));
    assert_eq!(recv_json(&mut local)["type"], "pong");
    let (_, _, metrics) =
        common::http::request(n1.local_addr(), "GET", "/metrics", Some(&admin_token("metrics")), None);
    assert!(metrics.contains("wsedge_cluster_up 0"), "{metrics}");

    redis.restart();
    for s in [&n1, &n2] {
        let h = s.handle();
        wait_until("the node is back", || {
            h.cluster_metrics().unwrap().up.load(Ordering::Acquire)
        });
    }
    wait_until("interest is subscribed again", || {
        redis.numsub(&format!("{p}:user:gus")) == 1
    });
    assert!(m1.cluster_metrics().unwrap().reconnects.get() >= 1);
    // Redis came back empty, yet gus's connection counts again toward the limit of one.
    wait_until("connections are registered again", || {
        redis.cli(&["ZCARD", &format!("{p}:conns:gus")]).trim() == "1"
    });
    let mut second = try_connect(n1.local_addr(), &format!("/ws?token={}", token("gus")), &[]).unwrap();
    assert_eq!(recv_json(&mut second)["data"]["code"], "CONNECTION_LIMIT_EXCEEDED");
    for i in 2..12 {
        let (status, _) = post(
            n1.local_addr(),
            "/ws/users/gus/messages",
            json!({"type": "m", "data": {"i": i}}),
        );
        assert_eq!(status, 200);
    }
    for i in 2..12 {
        assert_eq!(
            recv_json(&mut gus)["data"]["i"],
            i,
            "in order, once each, nothing from the outage"
        );
    }
    let local_broadcast = m1.broadcast("after", json!({})).unwrap();
    assert_eq!(local_broadcast, 2, "hal and ida");
    assert_eq!(recv_json(&mut local)["type"], "after");
    assert_eq!(recv_json(&mut ida)["type"], "after");
    assert_eq!(recv_json(&mut gus)["type"], "after");
}

#[test]
fn nodes_sharing_one_port_serve_one_cluster() {
    let redis = Redis::start();
    let first = node(&redis, "shared", "s1", |c| c.reuse_port = true);
    let addr = first.local_addr();
    let second = node(&redis, "shared", "s2", |c| {
        c.reuse_port = true;
        c.listen = addr;
    });
    assert_eq!(second.local_addr(), addr);
    let mut clients: Vec<Ws> = (0..40).map(|i| connect(addr, &token(&format!("u{i}"))).0).collect();
    let per_node = |s: &RunningServer| s.handle().stats().connections;
    wait_until("both nodes hold connections", || {
        per_node(&first) + per_node(&second) == 40
    });
    assert!(per_node(&first) > 0 && per_node(&second) > 0, "the kernel spreads them");
    let (_, body) = post(addr, "/ws/broadcast", json!({"type": "everyone"}));
    assert_eq!(body["data"]["nodes_reached"], 2, "{body}");
    for ws in &mut clients {
        assert_eq!(recv_json(ws)["type"], "everyone");
    }
}

#[test]
fn a_subscription_that_goes_silent_is_caught_by_the_probe_and_reconnected() {
    let redis = Redis::start();
    let proxy = common::redis::Proxy::new(redis.port);
    let p = "silent";
    let publisher = node(&redis, p, "direct", |_| {});
    let behind = node(&redis, p, "proxied", |c| c.redis = Some(proxy.url()));
    let (mut ivy, _) = connect_user(&redis, p, behind.local_addr(), "ivy");
    let send = |i: i64| {
        post(
            publisher.local_addr(),
            "/ws/users/ivy/messages",
            json!({"type": "m", "data": {"i": i}}),
        )
    };
    assert_eq!(send(1).1["data"]["nodes_reached"], 1);
    assert_eq!(recv_json(&mut ivy)["data"]["i"], 1);

    proxy.freeze_subscriptions();
    let m = behind.handle();
    // The probe goes out every second and is given 3 s: allow a generous margin.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while m.cluster_metrics().unwrap().probe_failures.get() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the silent subscription was never noticed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(m.cluster_metrics().unwrap().up.load(Ordering::Acquire) && redis.numsub(&format!("{p}:user:ivy")) == 1) {
        // The silenced connection was closed (so Redis dropped it) and a new one subscribed.
        assert!(
            std::time::Instant::now() < deadline,
            "the subscription was not made again"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(send(2).0, 200);
    assert_eq!(
        recv_json(&mut ivy)["data"]["i"],
        2,
        "delivered over the new subscription, once"
    );
    send_json(&mut ivy, json!({"type": "ping", "data": {}}));
    assert_eq!(recv_json(&mut ivy)["type"], "pong", "and not twice");
}

#[test]
fn a_handler_broadcast_reaches_every_node() {
    let redis = Redis::start();
    let echo = |id: &str| {
        let c = Config {
            workers: 2,
            redis: Some(redis.url()),
            redis_prefix: "echo".into(),
            node_id: id.into(),
            auth: wsedge::AuthMode::Anonymous,
            ..config()
        };
        let s = wsedge::Server::start(c, wsedge::app::EchoApp).unwrap();
        let h = s.handle();
        wait_until("the node joins", || {
            h.cluster_metrics().unwrap().up.load(Ordering::Acquire)
        });
        s
    };
    let (n1, n2) = (echo("e1"), echo("e2"));
    let mut a = try_connect(n1.local_addr(), "/ws", &[]).unwrap();
    let mut b = try_connect(n2.local_addr(), "/ws", &[]).unwrap();
    a.send(tungstenite::Message::text("broadcast from a")).unwrap();
    for ws in [&mut a, &mut b] {
        assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), "broadcast from a");
    }
}

/// An engine of the embedder's own: every publish "reaches 7 nodes" and is delivered here.
struct Solo {
    applied: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    timers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct SoloHalf {
    applied: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    timers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl wsedge::cluster::Engine for Solo {
    fn reactor_half(&self, _reactor: usize) -> Box<dyn wsedge::cluster::ReactorEngine> {
        Box::new(SoloHalf {
            applied: self.applied.clone(),
            timers: self.timers.clone(),
        })
    }
}

impl wsedge::cluster::ReactorEngine for SoloHalf {
    fn on_start(&mut self, r: &mut dyn wsedge::cluster::EngineHost) {
        r.set_timer(1, std::time::Duration::from_millis(100));
    }
    fn on_source(
        &mut self,
        _: &mut dyn wsedge::cluster::EngineHost,
        _: wsedge::SourceId,
        _: &wsedge::mio::event::Event,
    ) {
    }
    fn on_timer(&mut self, _: &mut dyn wsedge::cluster::EngineHost, _: wsedge::TimerId) {
        self.timers.fetch_add(1, Ordering::SeqCst);
    }
    fn apply(&mut self, r: &mut dyn wsedge::cluster::EngineHost, op: wsedge::cluster::EngineOp) {
        use wsedge::cluster::{Admission, EngineOp};
        self.applied.fetch_add(1, Ordering::SeqCst);
        match op {
            EngineOp::Publish { id, .. } => r.published(id, Ok(7)),
            EngineOp::Admit { id, .. } => r.admitted(id, Admission::Admitted),
            _ => {}
        }
    }
    fn flush(&mut self, _: &mut dyn wsedge::cluster::EngineHost) {}
}

#[test]
fn an_embedders_own_engine_is_driven_by_the_reactors() {
    let (applied, timers) = (std::sync::Arc::default(), std::sync::Arc::default());
    let engine = Solo {
        applied: std::sync::Arc::clone(&applied),
        timers: std::sync::Arc::clone(&timers),
    };
    let server = wsedge::Server::start_with_engine(
        Config { workers: 2, ..config() },
        wsedge::app::ProtocolApp::default(),
        Some(std::sync::Arc::new(engine)),
    )
    .unwrap();
    let addr = server.local_addr();
    let (mut jo, _) = connect(addr, &token("jo"));
    let (status, body) = post(addr, "/ws/users/jo/messages", json!({"type": "t", "data": {}}));
    assert_eq!(status, 200);
    assert_eq!(
        (
            body["data"]["nodes_reached"].as_i64(),
            body["data"]["connections_reached"].as_i64()
        ),
        (Some(7), Some(1))
    );
    assert_eq!(recv_json(&mut jo)["type"], "t");
    assert!(
        applied.load(Ordering::SeqCst) >= 3,
        "interest, admission and the publish went to the engine"
    );
    wait_until("the engine's timer fires on each reactor", || {
        timers.load(Ordering::SeqCst) >= 2
    });
}
